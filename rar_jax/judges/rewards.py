"""Reward functions of every paper method behind one interface: (examples, answers) -> rewards.

A reward function takes n examples (anything with the fields of :class:`JudgeExample`:
``conversation``, ``rubric``, ``reference``, ``example_id``; :class:`rar_jax.data.examples.Example`
fits as is) and one answer per example, asks a judge backend, and returns a
:class:`RewardOutput`: rewards f32[n] (NaN where the judgment failed), per-criterion verdicts
f32[n, k_max] with their mask, a failed flag and a reason per row, and the ratings of rating
methods.

Methods (``REWARD_METHODS``, config ``reward.method``):

- ``direct_likert``: a 1-10 rating without rubric or reference, reward by
  ``reward.rating_normalization`` (:func:`rar_jax.judges.aggregation.rating_to_reward`).
- ``reference_likert``: a 1-10 rating against the reference answer (an example without one is a
  ValueError naming it: filter such records first).
- ``rar_implicit``: one holistic 1-10 rating against the whole rubric (``judge.show_categories``,
  ``judge.show_weights``), reward by the rating normalisation.
- ``rar_explicit``: one polarity-neutral true/false verdict per criterion, reward by
  :func:`rar_jax.judges.aggregation.explicit_reward` with ``reward.explicit_normalization`` and
  ``reward.category_weights``.
- ``rar_predefined``: the same with the fixed 4-item rubric of
  :func:`rar_jax.judges.prompts.predefined_rubric` for every example (the example's rubric is
  not used).
- ``healthbench_points``: per-criterion verdicts with the explicit prompt, reward =
  :func:`rar_jax.judges.aggregation.healthbench_points_score` with the criteria's raw weights as
  points (met points / positive points, unclipped, as HealthBench defines the per-example score).
- ``programmatic``: no judge; the function named by ``reward.programmatic_fn`` from
  :data:`rar_jax.judges.programmatic.PROGRAMMATIC_REWARDS` scores (reference, answer), e.g. exact
  match of the boxed answer (RLVR, a rubric of one criterion).

Every method works with any :class:`JudgeBackend`: the in-process
:class:`rar_jax.judges.jax_backend.JaxJudge` (verdict probabilities or generate-and-parse) or
:class:`HttpJudgeBackend` (generate-and-parse through an OpenAI-compatible server). A backend
returns one value or one reason per prompt; a verdict method's row is scored over its
judged criteria when at least ``reward.min_judged_fraction`` of them were judged, else it fails
(reason: the failed criteria and why), a rating method's row when the rating
failed. Nothing failed ever becomes 0.

An empty answer (nothing but whitespace) is not sent to the judge: it answers nothing, so it gets
the lowest reward of the [0, 1] range, ``EMPTY_ANSWER_REWARD = 0.0`` (rating 1 of a rating
method; no criterion met, which is also its HealthBench points score), with no verdicts. This is
a score, not a failure: a policy must not escape the penalty of a bad answer by writing nothing
(a NaN reward would give it advantage 0). The trainer counts them (``reward/empty_answers``).

Prompts are sent with group ids for prefix reuse: the criterion prompts of one answer form a
group (they share system text, conversation and answer); rating prompts are grouped by
``example_id`` (GRPO's G answers to one prompt share system text, conversation and the rubric or
reference, which the rating templates place before the response for that reason).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ml_collections import config_dict

from rar_jax.judges import aggregation, parsing, prompts
from rar_jax.judges.backend import JudgeBackend
from rar_jax.judges.http_backend import Completion, HttpJudgeClient
from rar_jax.judges.jax_backend import (
    RESAMPLE_TEMPERATURE,
    GenerationResult,
    Judgments,
    judge_with_resamples,
)
from rar_jax.judges.programmatic import PROGRAMMATIC_REWARDS
from rar_jax.judges.prompts import JudgePrompt
from rar_jax.rubrics.schema import Rubric, rubric_arrays

__all__ = [
    "REWARD_METHODS",
    "HttpJudgeBackend",
    "JudgeExample",
    "RewardOutput",
    "RewardSettings",
    "compute_rewards",
    "make_reward_fn",
    "reward_settings",
]

logger = logging.getLogger(__name__)

ChatMessage = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class JudgeExample:
    """What an answer is judged against (the fields of ``rar_jax.data.examples.Example``).

    Attributes:
        conversation: chat messages ``{"role", "content"}`` ending with a user turn.
        rubric: the checklist, or None (rubric-free methods).
        reference: the reference answer, or None.
        example_id: a stable id, used in error messages.
    """

    conversation: tuple[ChatMessage, ...]
    rubric: Rubric | None
    reference: str | None
    example_id: str


@dataclasses.dataclass
class RewardOutput:
    """Rewards of n answers and what they came from.

    Attributes:
        rewards: f32[n]; NaN where the judgment failed.
        verdicts: f32[n, k_max], P(statement true) (or 0/1 parsed) per criterion of verdict
            methods, NaN where there is no verdict (a failed one, or padding); [n, 0] for
            rating methods.
        verdict_mask: bool[n, k_max], True at each row's real criteria.
        failed: bool[n], the reward is NaN.
        reasons: per row, why it failed (None where it did not).
        ratings: f32[n] ratings of rating methods (expected rating under verdict scoring), NaN
            where failed; None for verdict methods.
        verdict_mass: f32[n, k_max] (verdict methods) or f32[n] (rating methods): probability
            mass the verdict options got under verdict scoring (a diagnostic); NaN where not
            measured (generate-and-parse, HTTP) or padding.
        criterion_failures: verdict methods: per row, ``(criterion index, reason)`` of every
            criterion left unjudged, whether or not the row was still scored (for counting
            failures per criterion); empty lists otherwise.
    """

    rewards: np.ndarray
    verdicts: np.ndarray
    verdict_mask: np.ndarray
    failed: np.ndarray
    reasons: list[str | None]
    ratings: np.ndarray | None
    verdict_mass: np.ndarray
    criterion_failures: list[list[tuple[int, str]]] = dataclasses.field(default_factory=list)


class HttpJudgeBackend:
    """:class:`JudgeBackend` over an OpenAI-compatible server: generate (temperature 0) and parse.

    A failed request gives NaN with the :class:`~rar_jax.judges.http_backend.Completion`'s error
    as the reason; an unparseable reply NaN with the parser's reason.

    Args:
        client: the HTTP client.
        max_tokens: most tokens per reply.
        max_resamples: re-ask a prompt whose reply has no usable verdict up to this many times,
            sampled (:func:`rar_jax.judges.jax_backend.judge_with_resamples`).
    """

    def __init__(self, client: HttpJudgeClient, *, max_tokens: int = 512, max_resamples: int = 0):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"judge max_tokens: expected an integer >= 1, got {max_tokens!r}")
        self.client = client
        self.max_tokens = max_tokens
        self.max_resamples = int(max_resamples)

    def _judge(
        self,
        judge_prompts: Sequence[JudgePrompt],
        parse: Callable[[str], parsing.ParseResult[Any]],
    ) -> Judgments:
        def ask(rows: list[int], attempt: int) -> list[tuple[str | None, str | None, str]]:
            completions: list[Completion] = self.client.complete_many(
                [judge_prompts[row].messages for row in rows], max_tokens=self.max_tokens,
                temperature=RESAMPLE_TEMPERATURE if attempt else 0.0,
                seed=attempt if attempt else None,
            )
            return [(c.text if c.ok else None, None if c.ok else c.error,
                     c.finish_reason or "stop") for c in completions]

        return judge_with_resamples(len(judge_prompts), ask, parse, self.max_resamples)

    def generate_texts(
        self,
        list_of_messages: Sequence[Sequence[ChatMessage]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> GenerationResult:
        """Replies to chat conversations (e.g. rubric generation), concurrently, in input order.

        ``seed`` is sent with every request and is part of the cache key, so another seed is a new
        request. A failed request gives the text "" with its error in ``errors``.
        """
        completions = (
            self.client.complete_many(
                list_of_messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
            if list_of_messages
            else []
        )
        return GenerationResult(
            texts=[c.text if c.ok and c.text is not None else "" for c in completions],
            finish_reasons=[
                c.finish_reason or ("stop" if c.ok else "error") for c in completions
            ],
            errors=[None if c.ok else c.error for c in completions],
        )

    def score_binary(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """Parsed ``criteria_met`` per prompt as 1.0 / 0.0 (``groups`` is not needed here)."""
        del groups
        return self._judge(prompts, parsing.parse_criteria_met)

    def score_rating(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """Parsed ``rating`` per prompt (``groups`` is not needed here)."""
        del groups
        return self._judge(prompts, parsing.parse_rating)


@dataclasses.dataclass(frozen=True)
class RewardSettings:
    """Options of the reward methods (bound from the config by :func:`reward_settings`).

    Attributes:
        explicit_normalization: "category_weights" or "signed_abs" (rar_explicit,
            rar_predefined).
        category_weights: weight by category name for "category_weights".
        rating_normalization: "min_max" ((s-1)/9) or "over_max" (s/10) for rating methods.
        show_categories: show category labels to the implicit judge.
        show_weights: show weights to the implicit judge.
        templates_dir: folder of replacement prompt templates, or None for the packaged ones.
        programmatic_fn: the function of the ``programmatic`` method (a key of
            ``PROGRAMMATIC_REWARDS``).
        min_judged_fraction: verdict methods score an answer over its judged criteria when at
            least this share of its rubric was judged, else NaN
            (:func:`rar_jax.judges.aggregation.judged_criteria`).
    """

    explicit_normalization: str = "category_weights"
    category_weights: Mapping[str, float] | None = None
    rating_normalization: str = "min_max"
    show_categories: bool = True
    show_weights: bool = True
    templates_dir: str | None = None
    programmatic_fn: str = "boxed_exact_match"
    min_judged_fraction: float = 1.0


def _example_field(example: Any, field: str, index: int) -> Any:
    if not hasattr(example, field):
        raise ValueError(
            f"examples[{index}]: expected a JudgeExample-like object with field {field!r}, got "
            f"{type(example).__name__}"
        )
    return getattr(example, field)


def _check_batch(examples: Sequence[Any], answers: Sequence[str]) -> None:
    if len(examples) != len(answers):
        raise ValueError(
            f"expected one answer per example, got {len(examples)} examples and "
            f"{len(answers)} answers"
        )
    for index, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise ValueError(f"answers[{index}]: expected a string, got {type(answer).__name__}")


def _required_rubric(example: Any, index: int, method: str) -> Rubric:
    rubric = _example_field(example, "rubric", index)
    if not isinstance(rubric, Rubric):
        example_id = _example_field(example, "example_id", index)
        raise ValueError(
            f"examples[{index}] (id {example_id!r}): rubric: {method} needs a Rubric, got "
            f"{type(rubric).__name__}"
        )
    return rubric


def _rating_output(judgments: Judgments, settings: RewardSettings) -> RewardOutput:
    count = len(judgments.values)
    ratings = np.asarray(judgments.values, np.float32)
    rewards = np.asarray(
        aggregation.rating_to_reward(ratings, normalization=settings.rating_normalization),
        np.float32,
    ).reshape(count)
    reasons = list(judgments.reasons)
    for row in range(count):
        if np.isnan(rewards[row]) and reasons[row] is None:
            reasons[row] = f"rating {ratings[row]!r} is not a number in [1, 10]"
    failed = np.isnan(rewards)
    return RewardOutput(
        rewards=rewards,
        verdicts=np.zeros((count, 0), np.float32),
        verdict_mask=np.zeros((count, 0), bool),
        failed=failed,
        reasons=[reason if failed[row] else None for row, reason in enumerate(reasons)],
        ratings=ratings,
        verdict_mass=np.asarray(judgments.mass, np.float32).reshape(count),
    )


def _rating_method(
    build: Callable[[Any, str, int, RewardSettings], JudgePrompt],
) -> Callable[[Sequence[Any], Sequence[str], JudgeBackend, RewardSettings], RewardOutput]:
    def method(
        examples: Sequence[Any],
        answers: Sequence[str],
        backend: JudgeBackend,
        settings: RewardSettings,
    ) -> RewardOutput:
        judge_prompts = [
            build(example, answer, index, settings)
            for index, (example, answer) in enumerate(zip(examples, answers))
        ]
        # Answers to the same example (GRPO's G answers) share system text and conversation.
        first_row: dict[str, int] = {}
        groups = [
            first_row.setdefault(str(_example_field(example, "example_id", index)), index)
            for index, example in enumerate(examples)
        ]
        judgments = backend.score_rating(judge_prompts, groups)
        return _rating_output(judgments, settings)

    return method


def _direct_likert_prompt(
    example: Any, answer: str, index: int, settings: RewardSettings
) -> JudgePrompt:
    return prompts.direct_likert_prompt(
        _example_field(example, "conversation", index),
        answer,
        templates_dir=settings.templates_dir,
    )


def _reference_likert_prompt(
    example: Any, answer: str, index: int, settings: RewardSettings
) -> JudgePrompt:
    reference = _example_field(example, "reference", index)
    if not isinstance(reference, str) or not reference.strip():
        example_id = _example_field(example, "example_id", index)
        raise ValueError(
            f"examples[{index}] (id {example_id!r}): reference: reference_likert needs a "
            f"non-empty reference answer, got {reference!r}"
        )
    return prompts.reference_likert_prompt(
        _example_field(example, "conversation", index),
        answer,
        reference,
        templates_dir=settings.templates_dir,
    )


def _implicit_prompt(
    example: Any, answer: str, index: int, settings: RewardSettings
) -> JudgePrompt:
    return prompts.implicit_judge_prompt(
        _example_field(example, "conversation", index),
        answer,
        _required_rubric(example, index, "rar_implicit"),
        show_categories=settings.show_categories,
        show_weights=settings.show_weights,
        templates_dir=settings.templates_dir,
    )


def _judge_criteria(
    examples: Sequence[Any],
    answers: Sequence[str],
    rubrics: Sequence[Rubric],
    backend: JudgeBackend,
    settings: RewardSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[tuple[int, str]]]]:
    """Per-criterion verdicts of every (answer, criterion) pair, padded to the largest rubric.

    Returns:
        verdicts f32[n, k] (NaN where failed or padding), mass f32[n, k], mask bool[n, k], and
        per row the (criterion index, reason) of its failed criteria.
    """
    count = len(examples)
    width = max(len(rubric) for rubric in rubrics)
    judge_prompts, groups, slots = [], [], []
    for row, (example, answer, rubric) in enumerate(zip(examples, answers, rubrics)):
        conversation = _example_field(example, "conversation", row)
        for column, criterion in enumerate(rubric.criteria):
            judge_prompts.append(
                prompts.explicit_criterion_prompt(
                    conversation, answer, criterion, templates_dir=settings.templates_dir
                )
            )
            groups.append(row)
            slots.append((row, column))
    judgments = backend.score_binary(judge_prompts, groups)
    verdicts = np.full((count, width), np.nan, np.float32)
    mass = np.full((count, width), np.nan, np.float32)
    mask = np.zeros((count, width), bool)
    problems: list[list[tuple[int, str]]] = [[] for _ in range(count)]
    for index, (row, column) in enumerate(slots):
        mask[row, column] = True
        value = float(judgments.values[index])
        mass[row, column] = judgments.mass[index]
        reason = judgments.reasons[index]
        if reason is None and not 0.0 <= value <= 1.0:
            reason = f"verdict {value!r} is not a probability in [0, 1]"
        if reason is None:
            verdicts[row, column] = value
        else:
            problems[row].append((column, reason))
    return verdicts, mass, mask, problems


def _verdict_output(
    rewards: np.ndarray,
    verdicts: np.ndarray,
    mass: np.ndarray,
    mask: np.ndarray,
    problems: list[list[tuple[int, str]]],
    nan_reason: str,
    scorable: np.ndarray,
    settings: RewardSettings,
) -> RewardOutput:
    rewards = np.where(scorable, np.asarray(rewards, np.float32), np.nan).astype(np.float32)
    failed = np.isnan(rewards)
    reasons: list[str | None] = []
    for row in range(len(rewards)):
        if not failed[row]:
            reasons.append(None)
        elif problems[row]:
            judged = int(mask[row].sum()) - len(problems[row])
            reasons.append(
                f"{judged} of {int(mask[row].sum())} criteria judged, fewer than "
                f"reward.min_judged_fraction={settings.min_judged_fraction:g}: "
                + "; ".join(f"criterion {column + 1}: {why}" for column, why in problems[row])
            )
        else:
            reasons.append(nan_reason)
    return RewardOutput(
        rewards=rewards,
        verdicts=verdicts,
        verdict_mask=mask,
        failed=failed,
        reasons=reasons,
        ratings=None,
        verdict_mass=mass,
        criterion_failures=problems,
    )


def _explicit_rewards(
    examples: Sequence[Any],
    answers: Sequence[str],
    rubrics: Sequence[Rubric],
    backend: JudgeBackend,
    settings: RewardSettings,
) -> RewardOutput:
    verdicts, mass, mask, problems = _judge_criteria(examples, answers, rubrics, backend, settings)
    arrays = rubric_arrays(rubrics, pad_to=verdicts.shape[1])
    filled, judged, scorable, _ = aggregation.judged_criteria(
        verdicts, arrays.mask, settings.min_judged_fraction)
    rewards = aggregation.explicit_reward(
        filled,
        judged,
        arrays.weights,
        arrays.polarity_signs,
        arrays.category_ids,
        normalization=settings.explicit_normalization,
        category_weights=settings.category_weights,
    )
    reason = (
        f"explicit aggregation ({settings.explicit_normalization}) gave NaN: an uncategorised "
        "criterion under category_weights, or no weight to normalise by"
    )
    return _verdict_output(np.asarray(rewards), verdicts, mass, mask, problems, reason, scorable,
                           settings)


def _rar_explicit(
    examples: Sequence[Any], answers: Sequence[str], backend: JudgeBackend, settings: RewardSettings
) -> RewardOutput:
    rubrics = [_required_rubric(e, i, "rar_explicit") for i, e in enumerate(examples)]
    return _explicit_rewards(examples, answers, rubrics, backend, settings)


def _rar_predefined(
    examples: Sequence[Any], answers: Sequence[str], backend: JudgeBackend, settings: RewardSettings
) -> RewardOutput:
    rubric = prompts.predefined_rubric(settings.templates_dir)
    return _explicit_rewards(examples, answers, [rubric] * len(examples), backend, settings)


def _healthbench_points(
    examples: Sequence[Any], answers: Sequence[str], backend: JudgeBackend, settings: RewardSettings
) -> RewardOutput:
    rubrics = [_required_rubric(e, i, "healthbench_points") for i, e in enumerate(examples)]
    verdicts, mass, mask, problems = _judge_criteria(examples, answers, rubrics, backend, settings)
    arrays = rubric_arrays(rubrics, pad_to=verdicts.shape[1])
    filled, judged, scorable, _ = aggregation.judged_criteria(
        verdicts, arrays.mask, settings.min_judged_fraction)
    rewards = aggregation.healthbench_points_score(arrays.weights, filled, judged)
    reason = "HealthBench points score gave NaN: no judged criterion has positive points"
    return _verdict_output(np.asarray(rewards), verdicts, mass, mask, problems, reason, scorable,
                           settings)


def _programmatic(
    examples: Sequence[Any], answers: Sequence[str], backend: JudgeBackend | None,
    settings: RewardSettings,
) -> RewardOutput:
    del backend  # No judge.
    score = PROGRAMMATIC_REWARDS[settings.programmatic_fn]
    count = len(examples)
    rewards = np.full(count, np.nan, np.float32)
    reasons: list[str | None] = [None] * count
    for row, (example, answer) in enumerate(zip(examples, answers)):
        rewards[row], reasons[row] = score(_example_field(example, "reference", row), answer)
    return RewardOutput(
        rewards=rewards,
        verdicts=np.zeros((count, 0), np.float32),
        verdict_mask=np.zeros((count, 0), bool),
        failed=np.isnan(rewards),
        reasons=reasons,
        ratings=None,
        verdict_mass=np.full(count, np.nan, np.float32),
    )


RewardMethod = Callable[[Sequence[Any], Sequence[str], JudgeBackend, RewardSettings], RewardOutput]

# name -> method(examples, answers, backend, settings) -> RewardOutput
REWARD_METHODS: dict[str, RewardMethod] = {
    "direct_likert": _rating_method(_direct_likert_prompt),
    "reference_likert": _rating_method(_reference_likert_prompt),
    "rar_implicit": _rating_method(_implicit_prompt),
    "rar_explicit": _rar_explicit,
    "rar_predefined": _rar_predefined,
    "healthbench_points": _healthbench_points,
    "programmatic": _programmatic,
}

# The reward of an empty answer, under every method (see the module docstring).
EMPTY_ANSWER_REWARD = 0.0

# Methods that ask a judge (all but the programmatic one).
JUDGED_METHODS = tuple(name for name in REWARD_METHODS if name != "programmatic")


def _with_empty_answers(
    output: RewardOutput | None, answered: Sequence[int], count: int
) -> RewardOutput:
    """``output`` (of the answered rows) spread over ``count`` rows; the empty answers' rows get
    reward 0.0 (:data:`EMPTY_ANSWER_REWARD`), no verdicts and no rating: they were not judged."""
    def spread(values: np.ndarray, fill: Any) -> np.ndarray:
        full = np.full((count,) + values.shape[1:], fill, values.dtype)
        full[list(answered)] = values
        return full

    if output is None:
        nothing = np.zeros(0, np.float32)
        output = RewardOutput(nothing, np.zeros((0, 0), np.float32), np.zeros((0, 0), bool),
                              np.zeros(0, bool), [], None, nothing)
    reasons: list[str | None] = [None] * count
    for row, reason in zip(answered, output.reasons):
        reasons[row] = reason
    criterion_failures: list[list[tuple[int, str]]] = [[] for _ in range(count)]
    for row, failures in zip(answered, output.criterion_failures):
        criterion_failures[row] = failures
    return RewardOutput(
        rewards=spread(np.asarray(output.rewards, np.float32), EMPTY_ANSWER_REWARD),
        verdicts=spread(np.asarray(output.verdicts, np.float32), np.nan),
        verdict_mask=spread(np.asarray(output.verdict_mask, bool), False),
        failed=spread(np.asarray(output.failed, bool), False),
        reasons=reasons,
        ratings=None if output.ratings is None else spread(
            np.asarray(output.ratings, np.float32), np.nan),
        verdict_mass=spread(np.asarray(output.verdict_mass, np.float32), np.nan),
        criterion_failures=criterion_failures,
    )


def compute_rewards(
    method: str,
    examples: Sequence[Any],
    answers: Sequence[str],
    backend: JudgeBackend,
    settings: RewardSettings | None = None,
) -> RewardOutput:
    """Rewards of ``answers[i]`` to ``examples[i]`` by the method named ``method``.

    Args:
        method: a key of ``REWARD_METHODS``.
        examples: n JudgeExample-like objects.
        answers: n answer texts.
        backend: the judge.
        settings: method options (default :class:`RewardSettings`).

    Returns:
        RewardOutput with n rows.
    """
    if method not in REWARD_METHODS:
        raise ValueError(
            f"unknown reward method {method!r}; expected one of {', '.join(REWARD_METHODS)}"
        )
    _check_batch(examples, answers)
    settings = settings or RewardSettings()
    if not examples:
        empty = np.zeros(0, np.float32)
        return RewardOutput(
            empty,
            np.zeros((0, 0), np.float32),
            np.zeros((0, 0), bool),
            np.zeros(0, bool),
            [],
            None,
            empty,
        )
    answered = [row for row, answer in enumerate(answers) if answer.strip()]
    if len(answered) == len(answers):
        output = REWARD_METHODS[method](examples, answers, backend, settings)
    else:
        output = _with_empty_answers(
            REWARD_METHODS[method]([examples[row] for row in answered],
                                   [answers[row] for row in answered], backend, settings)
            if answered else None,
            answered, len(answers),
        )
    if output.failed.any():
        logger.info(
            "%s: %d of %d judgments failed (first: %s)",
            method,
            int(output.failed.sum()),
            len(output.failed),
            next(reason for reason in output.reasons if reason is not None),
        )
    return output


def reward_settings(config: config_dict.ConfigDict) -> RewardSettings:
    """Binds ``reward.explicit_normalization``, ``reward.category_weights``,
    ``reward.rating_normalization``, ``reward.programmatic_fn``, ``judge.show_categories``,
    ``judge.show_weights`` and ``judge.templates_dir`` ("" = the packaged templates)."""
    templates_dir = config.judge.templates_dir
    return RewardSettings(
        explicit_normalization=config.reward.explicit_normalization,
        category_weights=dict(config.reward.category_weights),
        rating_normalization=config.reward.rating_normalization,
        show_categories=bool(config.judge.show_categories),
        show_weights=bool(config.judge.show_weights),
        templates_dir=os.fspath(templates_dir) if templates_dir else None,
        programmatic_fn=config.reward.programmatic_fn,
        min_judged_fraction=float(config.reward.min_judged_fraction),
    )


def make_reward_fn(
    config: config_dict.ConfigDict, backend: JudgeBackend | None
) -> Callable[[Sequence[Any], Sequence[str]], RewardOutput]:
    """``(examples, answers) -> RewardOutput`` for ``reward.method`` with the config's options.

    Validates the method name and the aggregation options now, before any judging.
    """
    method = config.reward.method
    if method not in REWARD_METHODS:
        raise ValueError(
            f"config key 'reward.method' is {method!r}; expected one of "
            f"{', '.join(REWARD_METHODS)}"
        )
    settings = reward_settings(config)
    aggregation.get_explicit_normalization(settings.explicit_normalization)
    aggregation.category_weight_table(settings.category_weights)
    if settings.programmatic_fn not in PROGRAMMATIC_REWARDS:
        raise ValueError(
            f"config key 'reward.programmatic_fn' is {settings.programmatic_fn!r}; expected one "
            f"of {', '.join(PROGRAMMATIC_REWARDS)}"
        )
    if settings.rating_normalization not in aggregation.RATING_NORMALIZATIONS:
        raise ValueError(
            f"config key 'reward.rating_normalization' is {settings.rating_normalization!r}; "
            f"expected one of {', '.join(aggregation.RATING_NORMALIZATIONS)}"
        )

    def reward_fn(examples: Sequence[Any], answers: Sequence[str]) -> RewardOutput:
        return compute_rewards(method, examples, answers, backend, settings)

    return reward_fn
