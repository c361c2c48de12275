"""HealthBench evaluation: policy answers -> per-criterion grading -> the official scoring.

Pipeline (:func:`evaluate_healthbench`):

1. every prompt is answered once by the policy (greedy, batched; :mod:`rar_jax.eval.answering`);
2. every (answer, rubric item) pair is graded with HealthBench's grader prompt
   (:func:`rar_jax.judges.prompts.healthbench_grader_prompt`: the conversation, the final
   message and the item with its points; reply ``{"explanation", "criteria_met"}``) by any judge
   backend that can write text (``generate_texts``: the in-process JAX judge or the HTTP judge),
   greedily, and parsed with :func:`rar_jax.judges.parsing.parse_criteria_met`. The verdicts are
   explicit true / false, as HealthBench's grader gives them, whatever ``judge.scoring`` says;
3. the verdicts become :class:`~rar_jax.eval.healthbench_scoring.GradedExample` records and are
   scored by :mod:`rar_jax.eval.healthbench_scoring` (overall, per axis, per theme, bootstrap
   std), exactly as simple-evals scores them.

**Failed gradings.** A grading fails when the judge request fails or its reply has no verdict; its
verdict is NaN and its reason is kept. Such a criterion is *left out of that example's score*
(neither its points earned nor, if positive, its points possible count), never scored as unmet;
the number of failed criteria is reported. An example left with no positive-points criterion
has no defined score and is left out of the aggregate as a whole (counted and listed with its
reasons). With no failure the result is the official score; with failures it is the official
formula over the criteria that were graded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.data.examples import example_from_healthbench_record
from rar_jax.eval.answering import Policy
from rar_jax.eval.healthbench_scoring import GradedExample, aggregate_metrics, example_metrics
from rar_jax.judges import parsing, prompts
from rar_jax.judges.jax_backend import TextGenerationBackend
from rar_jax.rubrics.readers import iter_jsonl
from rar_jax.rubrics.schema import Rubric, RubricError

__all__ = [
    "CriterionGrades",
    "HealthBenchItem",
    "HealthBenchResult",
    "evaluate_healthbench",
    "grade_answers",
    "grader_messages",
    "graded_examples",
    "read_healthbench_items",
    "verdicts_from_replies",
]


@dataclasses.dataclass(frozen=True)
class HealthBenchItem:
    """One HealthBench prompt to answer and grade.

    Attributes:
        example_id: the ``prompt_id``.
        conversation: the chat messages, ending with a user turn.
        rubric: the physician rubric (weights = points, tags kept).
        example_tags: example-level tags (``theme:...``, ``physician_agreed_category:...``).
    """

    example_id: str
    conversation: tuple[Mapping[str, str], ...]
    rubric: Rubric
    example_tags: tuple[str, ...]


def _item_from_record(record: Mapping[str, Any], source: str) -> HealthBenchItem:
    example = example_from_healthbench_record(record, source)
    tags = record.get("example_tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RubricError(f"{source}: example_tags: expected a list of strings, got {tags!r}")
    if example.rubric is None:
        raise RubricError(f"{source}: rubrics: a HealthBench record needs a rubric")
    return HealthBenchItem(example.example_id, example.conversation, example.rubric, tuple(tags))


def read_healthbench_items(
    location: str | os.PathLike[str],
    *,
    limit: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[HealthBenchItem]:
    """HealthBench prompts from a JSONL file or a built data set (``tfds:healthbench...:split``).

    Args:
        location: a JSONL path of HealthBench records, or ``"tfds:<name>[/<config>]:<split>"``
            of a data set in HealthBench format (config ``eval.healthbench_path``).
        limit: read at most this many records, in stored order (0 = all).
        data_dir: the TFDS data directory (default ``TFDS_DATA_DIR``).
    """
    from rar_jax.data import sources

    if limit < 0:
        raise ValueError(f"limit: expected >= 0 (0 = all), got {limit}")
    text = os.fspath(location)
    items: list[HealthBenchItem] = []
    if not text.startswith(sources.TFDS_PREFIX):
        for line_number, record in iter_jsonl(text):
            items.append(_item_from_record(record, f"{text}:{line_number}"))
            if limit and len(items) == limit:
                break
    else:
        name, config, split = sources.parse_tfds_location(text)
        if sources.DATASET_FORMATS.get(name) != "healthbench":
            raise ValueError(f"{text}: {name!r} is not a data set in HealthBench format")
        source = sources.open_source(name, split, data_dir=data_dir, config=config)
        count = len(source) if not limit else min(limit, len(source))
        for index in range(count):
            record = sources.decode_record(source[index])
            items.append(_item_from_record(json.loads(record["record"]), record["source"]))
    if not items:
        raise ValueError(f"{text}: no HealthBench records")
    return items


def grader_messages(
    items: Sequence[HealthBenchItem],
    answers: Sequence[str],
    *,
    templates_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[list[dict[str, str]]], list[tuple[int, int]]]:
    """The grader prompt of every (answer, rubric item) pair.

    Returns:
        The chat messages of each prompt and its ``(example index, criterion index)`` slot,
        example-major, criteria in rubric order.
    """
    if len(items) != len(answers):
        raise ValueError(
            f"expected one answer per item: {len(items)} items, {len(answers)} answers"
        )
    messages, slots = [], []
    for row, (item, answer) in enumerate(zip(items, answers)):
        for column, criterion in enumerate(item.rubric.criteria):
            prompt = prompts.healthbench_grader_prompt(
                list(item.conversation), answer, criterion, templates_dir=templates_dir
            )
            messages.append(prompt.messages)
            slots.append((row, column))
    return messages, slots


def verdicts_from_replies(
    texts: Sequence[str],
    finish_reasons: Sequence[str] | None = None,
    errors: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    """Grader replies -> verdicts.

    Args:
        texts: m reply texts.
        finish_reasons: m finish reasons ("length" notes a cut reply in the failure reason).
        errors: m request errors (None where the request succeeded), or None.

    Returns:
        f64[m] verdicts (1.0 met, 0.0 not met, NaN failed), the explanation of each reply (None
        when absent) and the failure reason of each (None where parsed).
    """
    count = len(texts)
    values = np.full(count, np.nan, np.float64)
    explanations: list[str | None] = [None] * count
    reasons: list[str | None] = [None] * count
    for index, text in enumerate(texts):
        error = errors[index] if errors is not None else None
        if error is not None:
            reasons[index] = f"judge request failed: {error}"
            continue
        parsed = parsing.parse_criteria_met(text)
        if not parsed.ok:
            cut = finish_reasons is not None and finish_reasons[index] == "length"
            reasons[index] = f"invalid grader reply{' (cut at max_tokens)' if cut else ''}: " + str(
                parsed.reason
            )
            continue
        values[index] = 1.0 if parsed.value else 0.0
        found = parsing.extract_json(text, kind=dict)
        if found.ok and isinstance(found.value.get("explanation"), str):
            explanations[index] = found.value["explanation"]
    return values, explanations, reasons


@dataclasses.dataclass(frozen=True)
class CriterionGrades:
    """Grader output of every (answer, criterion) pair, per example.

    Attributes:
        verdicts: per example, f64[k] (1.0 / 0.0, NaN failed) in rubric order.
        explanations: per example, the grader's explanation per criterion (None when absent).
        reasons: per example, the failure reason per criterion (None where graded).
    """

    verdicts: list[np.ndarray]
    explanations: list[list[str | None]]
    reasons: list[list[str | None]]


def graded_examples(
    items: Sequence[HealthBenchItem], verdicts: Sequence[np.ndarray]
) -> tuple[list[GradedExample | None], list[str | None]]:
    """Scorable records of the graded examples, failed criteria left out (module docstring).

    Args:
        items: the n examples.
        verdicts: per example f64[k] verdicts, NaN where the grading failed.

    Returns:
        Per example a :class:`GradedExample` over its graded criteria, or None with the reason
        when it has no defined score (no graded criterion with positive points).
    """
    examples: list[GradedExample | None] = []
    reasons: list[str | None] = []
    for item, met in zip(items, verdicts, strict=True):
        met = np.asarray(met, np.float64)
        if met.shape != (len(item.rubric),):
            raise ValueError(
                f"{item.rubric.source}: expected {len(item.rubric)} verdicts, got shape {met.shape}"
            )
        kept = np.flatnonzero(~np.isnan(met))
        criteria = tuple(item.rubric.criteria[i] for i in kept)
        if not any(criterion.weight > 0 for criterion in criteria):
            failed = len(item.rubric) - kept.size
            examples.append(None)
            reasons.append(
                f"{item.example_id}: no graded criterion with positive points "
                f"({failed} of {len(item.rubric)} gradings failed)"
            )
            continue
        rubric = Rubric(criteria, item.rubric.source)
        examples.append(GradedExample(rubric, met[kept], item.example_tags))
        reasons.append(None)
    return examples, reasons


def grade_answers(
    items: Sequence[HealthBenchItem],
    answers: Sequence[str],
    judge: TextGenerationBackend,
    *,
    max_tokens: int,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
) -> CriterionGrades:
    """Grades every (answer, criterion) pair with the HealthBench grader prompt.

    Prompts go to ``judge.generate_texts`` (greedy, ``max_tokens`` per reply) in chunks of
    ``chunk_size``, with a tqdm bar over criteria.
    """
    from tqdm import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    messages, slots = grader_messages(items, answers, templates_dir=templates_dir)
    count = len(messages)
    values = np.full(count, np.nan, np.float64)
    explanations: list[str | None] = [None] * count
    reasons: list[str | None] = [None] * count
    with tqdm(total=count, desc="grading criteria", unit="criterion") as progress:
        for start in range(0, count, chunk_size):
            stop = min(count, start + chunk_size)
            result = judge.generate_texts(messages[start:stop], max_tokens=max_tokens,
                                          temperature=0.0)
            chunk = verdicts_from_replies(result.texts, result.finish_reasons, result.errors)
            values[start:stop] = chunk[0]
            explanations[start:stop] = chunk[1]
            reasons[start:stop] = chunk[2]
            progress.update(stop - start)
    per_verdicts = [np.full(len(item.rubric), np.nan, np.float64) for item in items]
    per_explanations: list[list[str | None]] = [[None] * len(item.rubric) for item in items]
    per_reasons: list[list[str | None]] = [[None] * len(item.rubric) for item in items]
    for index, (row, column) in enumerate(slots):
        per_verdicts[row][column] = values[index]
        per_explanations[row][column] = explanations[index]
        per_reasons[row][column] = reasons[index]
    return CriterionGrades(per_verdicts, per_explanations, per_reasons)


@dataclasses.dataclass
class HealthBenchResult:
    """Everything one HealthBench evaluation produced.

    Attributes:
        metrics: the official aggregate (``healthbench_scoring.aggregate_metrics``) over the
            scorable examples; empty when there is none.
        answers: the policy's answers, per example.
        finish_reasons: why each answer stopped.
        grades: the per-criterion grader output.
        example_scores: per example its overall score, NaN when it had none.
        excluded: per example why it was left out of the aggregate, None when it was scored.
        failed_criteria: gradings that failed (left out of their example's score).
        total_criteria: gradings asked for.
    """

    metrics: dict[str, float | int]
    answers: list[str]
    finish_reasons: list[str]
    grades: CriterionGrades
    example_scores: np.ndarray
    excluded: list[str | None]
    failed_criteria: int
    total_criteria: int

    def failure_reasons(self) -> dict[str, int]:
        """Count of each failure reason of the gradings, most common first."""
        counts: dict[str, int] = {}
        for reasons in self.grades.reasons:
            for reason in reasons:
                if reason is not None:
                    counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda pair: -pair[1]))


def evaluate_healthbench(
    items: Sequence[HealthBenchItem],
    policy: Policy,
    judge: TextGenerationBackend,
    *,
    grader_max_tokens: int,
    seed: int,
    bootstrap_samples: int = 1000,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
) -> HealthBenchResult:
    """Answers, grades and scores the items (see the module docstring).

    ``chunk_size``: grader prompts per ``generate_texts`` call (the progress bar moves per chunk).

    When no example can be scored (every one lost its positive-points criteria to failed
    gradings) ``metrics`` is empty; answers, gradings and reasons are still returned.
    """
    answered = policy.answer([list(item.conversation) for item in items])
    if len(answered.texts) != len(items):
        raise ValueError(f"policy returned {len(answered.texts)} answers for {len(items)} items")
    grades = grade_answers(
        items, answered.texts, judge, max_tokens=grader_max_tokens, templates_dir=templates_dir,
        chunk_size=chunk_size,
    )
    examples, excluded = graded_examples(items, grades.verdicts)
    per_example = [None if e is None else example_metrics(e) for e in examples]
    scored = [metrics for metrics in per_example if metrics is not None]
    scores = np.array([np.nan if m is None else m["overall_score"] for m in per_example])
    metrics = (
        aggregate_metrics(scored, seed=seed, bootstrap_samples=bootstrap_samples) if scored else {}
    )
    failed = int(sum(np.isnan(v).sum() for v in grades.verdicts))
    return HealthBenchResult(
        metrics=metrics,
        answers=list(answered.texts),
        finish_reasons=list(answered.finish_reasons),
        grades=grades,
        example_scores=scores,
        excluded=excluded,
        failed_criteria=failed,
        total_criteria=int(sum(len(item.rubric) for item in items)),
    )
