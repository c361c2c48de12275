"""What a judge is: the protocols every judge backend implements.

:class:`JudgeBackend` is what the reward methods need (verdicts and ratings for judge prompts);
:class:`TextGenerationBackend` is what rubric generation, the HealthBench grader and the GPQA
verifier need (written replies). The in-process :class:`~rar_jax.judges.jax_backend.JaxJudge`
and the HTTP :class:`~rar_jax.judges.rewards.HttpJudgeBackend` implement both;
:func:`rar_jax.judges.factory.build_judge` is the one place that builds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rar_jax.judges.jax_backend import GenerationResult, Judgments
    from rar_jax.judges.prompts import JudgePrompt


class JudgeBackend(Protocol):
    """Judges m prompts; one value or one reason each (see :class:`Judgments`)."""

    def score_binary(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """P(true) (or a parsed 1.0 / 0.0) per prompt; ``groups`` marks prompts sharing a prefix."""
        ...

    def score_rating(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """A 1-10 rating (expected or parsed) per prompt."""
        ...


class TextGenerationBackend(Protocol):
    """A judge backend that writes replies to chat conversations (``JaxJudge`` and
    ``rar_jax.judges.rewards.HttpJudgeBackend``): rubric generation, the HealthBench grader, the
    GPQA verifier."""

    def generate_texts(
        self,
        list_of_messages: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> GenerationResult:
        """Replies to chat conversations, in input order."""
        ...
