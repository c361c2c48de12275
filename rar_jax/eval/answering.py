"""Policy answers for the evaluations: greedy, batched, with progress, in input order.

The evaluations (:mod:`rar_jax.eval.healthbench_eval`, :mod:`rar_jax.eval.gpqa_eval`) take any
:class:`Policy`: an object whose ``answer(conversations)`` returns one text and one finish reason
per conversation. :class:`SamplerPolicy` is the real one: a
:class:`~rar_jax.models.sampler.Sampler` over a checkpoint, decoding greedily as the paper's
evaluation does. Conversations are sorted by prompt length before they are cut into batches (a
batch then pads little and few prompt-length buckets compile); the answers come back in the
order of the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["PolicyAnswers", "Policy", "SamplerPolicy", "length_sorted_batches"]

Conversation = Sequence[Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class PolicyAnswers:
    """n answers of a policy, in input order.

    Attributes:
        texts: the answer texts.
        finish_reasons: "eos", "stop" or "length" per answer (see ``rar_jax.models.sampler``).
    """

    texts: list[str]
    finish_reasons: list[str]


class Policy(Protocol):
    """Answers chat conversations (each ending with a user turn)."""

    def answer(self, conversations: Sequence[Conversation]) -> PolicyAnswers:
        """One answer per conversation, in input order."""
        ...


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, shortest prompts first.

    Args:
        lengths: int[n] prompt lengths.
        batch_size: most indices per batch (>= 1).

    Returns:
        Lists of indices covering 0..n-1 once; ties keep input order (stable sort).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, np.int64), kind="stable").tolist()
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SamplerPolicy:
    """A checkpoint answering greedily through :class:`~rar_jax.models.sampler.Sampler`.

    Args:
        model: the policy decoder.
        tokenizer: its tokenizer (with a chat template).
        batch_size: prompts per ``Sampler.generate`` call (config ``eval.batch_size``).
        max_new_tokens: most tokens per answer (config ``eval.max_new_tokens``).
        description: label of the progress bar.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int,
        max_new_tokens: int,
        description: str = "answering",
    ):
        from rar_jax.models.sampler import Sampler, SamplingParams

        if batch_size < 1:
            raise ValueError(f"eval.batch_size: expected >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.sampling = SamplingParams(max_new_tokens=int(max_new_tokens), greedy=True)
        self.sampler = Sampler(model, tokenizer)
        self.description = description

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The chat-formatted prompt of one conversation as token ids."""
        return self.tokenizer.encode_chat(list(conversation))

    def answer(self, conversations: Sequence[Conversation]) -> PolicyAnswers:
        """Greedy answers, length-sorted batches, a tqdm bar over prompts."""
        import jax
        from tqdm import tqdm

        ids = [self.prompt_ids(conversation) for conversation in conversations]
        texts: list[str] = [""] * len(ids)
        reasons: list[str] = [""] * len(ids)
        key = jax.random.key(0)  # Greedy decoding does not use it.
        with tqdm(total=len(ids), desc=self.description, unit="prompt") as progress:
            for batch in length_sorted_batches([len(i) for i in ids], self.batch_size):
                output = self.sampler.generate([ids[i] for i in batch], self.sampling, key)
                for offset, index in enumerate(batch):
                    texts[index] = output.texts[offset]
                    reasons[index] = output.finish_reasons[offset]
                progress.update(len(batch))
        return PolicyAnswers(texts, reasons)
