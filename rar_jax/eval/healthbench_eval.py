"""HealthBench evaluation: policy answers -> per-criterion grading -> the official scoring.

Pipeline (:func:`evaluate_healthbench`):

1. every prompt is answered once by the policy (greedy, batched; :mod:`rar_jax.eval.answering`);
2. every (answer, rubric item) pair is graded with HealthBench's grader prompt (the
   conversation, the final message and the item with its signed points), in one of two modes
   (``grader_scoring``, config ``eval.grader_scoring``):

   - ``"generate"`` (default; HealthBench's own protocol): the judge writes
     ``{"explanation", "criteria_met"}``
     (:func:`rar_jax.judges.prompts.healthbench_grader_prompt`) greedily, through any backend
     that can write text (``generate_texts``: the in-process JAX judge or the HTTP judge), and
     the reply is parsed with :func:`rar_jax.judges.parsing.parse_criteria_met`;
   - ``"verdict_probs"``: the same instructions and inputs, but the reply format puts the verdict
     first (:func:`rar_jax.judges.prompts.healthbench_grader_verdict_prompt`) and nothing is
     decoded: the judge's ``score_binary`` reads ``P(true) = p(true) / (p(true) + p(false))`` of
     the word after the assistant header + ``{"criteria_met": `` (the in-process
     :class:`~rar_jax.judges.jax_backend.JaxJudge` with ``scoring="verdict_probs"``; the k items
     of one answer are one prefix-reuse group). The item is met when ``P(true) >=
     grader_threshold``; P(true) and the verdict words' probability mass are kept per criterion
     (:class:`CriterionGrades`) so the verdicts can be re-thresholded. This lets a weak judge
     that never writes the grader JSON still grade;
3. the verdicts become :class:`~rar_jax.eval.healthbench_scoring.GradedExample` records and are
   scored by :mod:`rar_jax.eval.healthbench_scoring` (overall, per axis, per theme, bootstrap
   std), exactly as simple-evals scores them.

**Failed gradings.** A grading fails when the judge request fails or its reply has no verdict, or
(verdict mode) when the judge gives no finite probability in [0, 1] (non-finite log-probs, zero
mass, mass below ``judge.min_verdict_mass``); its verdict is NaN and its reason is kept, never a
silent false. Such a criterion is *left out of that example's score*
(neither its points earned nor, if positive, its points possible count), never scored as unmet;
the number of failed criteria is reported. An example left with no positive-points criterion
has no defined score and is left out of the aggregate as a whole (counted and listed with its
reasons). With no failure the result is the official score; with failures it is the official
formula over the criteria that were graded.
"""

from __future__ import annotations

import dataclasses
import logging
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.data.examples import example_from_healthbench_record
from rar_jax.eval.answering import Policy
from rar_jax.eval.healthbench_scoring import GradedExample, aggregate_metrics, example_metrics
from rar_jax.judges import parsing, prompts
from rar_jax.judges.jax_backend import Judgments
from rar_jax.io import iter_jsonl
from rar_jax.rubrics.schema import Rubric, RubricError

__all__ = [
    "GRADER_SCORING_MODES",
    "CriterionGrades",
    "HealthBenchItem",
    "HealthBenchResult",
    "check_grader_scoring",
    "evaluate_healthbench",
    "grade_answers",
    "grader_prompts",
    "graded_examples",
    "read_healthbench_items",
    "verdicts_from_probabilities",
    "verdicts_from_replies",
]

# How the grader's verdicts are obtained (config ``eval.grader_scoring``; module docstring).
logger = logging.getLogger(__name__)

GRADER_SCORING_MODES = ("generate", "verdict_probs")
# The grader prompt (eval.grader_prompt): simple-evals' own template from the shared data, or our
# paraphrase of it (the packaged healthbench_grader templates; the only one with a verdict-first
# variant for verdict scoring).
GRADER_PROMPTS = ("simple_evals", "rar_jax")
# Re-asked gradings (generate mode) are sampled at this temperature, attempt i with seed i, so a
# re-ask can differ from the greedy first reply.
RESAMPLE_TEMPERATURE = 1.0


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


def grader_prompts(
    items: Sequence[HealthBenchItem],
    answers: Sequence[str],
    *,
    verdict_first: bool = False,
    templates_dir: str | os.PathLike[str] | None = None,
    grader_prompt: str = "simple_evals",
) -> tuple[list[prompts.JudgePrompt], list[tuple[int, int]]]:
    """The grader prompt of every (answer, rubric item) pair.

    Args:
        items: the n examples.
        answers: the n policy answers.
        verdict_first: HealthBench's grader with the verdict key first (verdict scoring;
            ``verdict_prefix`` ``{"criteria_met": ``) instead of its own explanation-first reply;
            only our paraphrase has it.
        templates_dir: replacement prompt templates (``judge.templates_dir``).
        grader_prompt: ``simple_evals`` (the official template, :data:`GRADER_PROMPTS`) or
            ``rar_jax`` (our paraphrase of it, ``templates/healthbench_grader*``).

    Returns:
        Each prompt and its ``(example index, criterion index)`` slot, example-major, criteria
        in rubric order.
    """
    if len(items) != len(answers):
        raise ValueError(
            f"expected one answer per item: {len(items)} items, {len(answers)} answers"
        )
    if grader_prompt not in GRADER_PROMPTS:
        raise ValueError(f"grader_prompt {grader_prompt!r}: expected one of "
                         f"{', '.join(GRADER_PROMPTS)}")
    if grader_prompt == "simple_evals" and verdict_first:
        raise ValueError("the simple-evals grader writes its explanation before the verdict; "
                         "verdict scoring needs grader_prompt 'rar_jax'")
    if grader_prompt == "simple_evals":
        def build(conversation, answer, criterion):
            return prompts.simple_evals_grader_prompt(conversation, answer, criterion)
    else:
        template = (prompts.healthbench_grader_verdict_prompt if verdict_first
                    else prompts.healthbench_grader_prompt)

        def build(conversation, answer, criterion):
            return template(conversation, answer, criterion, templates_dir=templates_dir)
    built, slots = [], []
    for row, (item, answer) in enumerate(zip(items, answers)):
        for column, criterion in enumerate(item.rubric.criteria):
            built.append(build(list(item.conversation), answer, criterion))
            slots.append((row, column))
    return built, slots


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


def verdicts_from_probabilities(
    judgments: Judgments, threshold: float
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Verdict-scored judgments -> thresholded verdicts.

    Args:
        judgments: m judgments from a backend's ``score_binary``: ``values`` P(true) (NaN with a
            reason where the judgment failed), ``mass`` the verdict words' probability mass.
        threshold: a criterion is met when ``P(true) >= threshold``.

    Returns:
        f64[m] verdicts (1.0 met, 0.0 not met, NaN failed), f64[m] P(true) (NaN where failed) and
        the failure reason of each (None where graded). A value outside [0, 1] or a NaN without a
        reason is a failure too, never a silent false.
    """
    values = np.asarray(judgments.values, np.float64)
    count = values.shape[0]
    if len(judgments.reasons) != count:
        raise ValueError(f"judgments: {count} values but {len(judgments.reasons)} reasons")
    verdicts = np.full(count, np.nan, np.float64)
    p_true = np.full(count, np.nan, np.float64)
    reasons: list[str | None] = [None] * count
    for index, value in enumerate(values):
        reason = judgments.reasons[index]
        if reason is None and not 0.0 <= value <= 1.0:  # NaN fails this too.
            reason = f"verdict probability {float(value)!r} is not in [0, 1]"
        if reason is not None:
            reasons[index] = f"verdict scoring failed: {reason}"
            continue
        p_true[index] = value
        verdicts[index] = 1.0 if value >= threshold else 0.0
    return verdicts, p_true, reasons


@dataclasses.dataclass(frozen=True)
class CriterionGrades:
    """Grader output of every (answer, criterion) pair, per example.

    Attributes:
        verdicts: per example, f64[k] (1.0 / 0.0, NaN failed) in rubric order.
        explanations: per example, the grader's explanation per criterion (None when absent;
            always None in verdict mode, where nothing is written).
        reasons: per example, the failure reason per criterion (None where graded).
        p_true: per example, f64[k] P(true) read by verdict scoring (NaN where failed, and
            everywhere in generate mode).
        verdict_mass: per example, f64[k] probability mass of the words true + false after the
            verdict prefix (a low mass: the judge wanted to write something else); NaN where not
            measured.
        attempts: per example, int[k] times each criterion was asked (1 + its re-samples).
    """

    verdicts: list[np.ndarray]
    explanations: list[list[str | None]]
    reasons: list[list[str | None]]
    p_true: list[np.ndarray]
    verdict_mass: list[np.ndarray]
    attempts: list[np.ndarray]


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


def check_grader_scoring(judge: Any, scoring: str, threshold: float) -> None:
    """Raises ValueError unless ``judge`` can grade in mode ``scoring`` with ``threshold``.

    ``"generate"`` needs ``generate_texts``; ``"verdict_probs"`` needs ``score_binary`` reading
    probabilities (a :class:`~rar_jax.judges.jax_backend.JaxJudge` in ``"generate"`` scoring
    would write and parse instead, so it is refused) and a finite threshold.
    """
    if scoring not in GRADER_SCORING_MODES:
        raise ValueError(
            f"grader_scoring {scoring!r}: expected one of {', '.join(GRADER_SCORING_MODES)}"
        )
    if scoring == "generate":
        if not callable(getattr(judge, "generate_texts", None)):
            raise ValueError(
                f"grader_scoring 'generate' needs a judge with generate_texts; got "
                f"{type(judge).__name__}"
            )
        return
    if not callable(getattr(judge, "score_binary", None)):
        raise ValueError(
            f"grader_scoring 'verdict_probs' needs a judge with score_binary (the JAX judge); got "
            f"{type(judge).__name__}"
        )
    if getattr(judge, "scoring", "verdict_probs") != "verdict_probs":
        raise ValueError(
            f"grader_scoring 'verdict_probs' needs the judge's verdict scoring, but "
            f"{type(judge).__name__}.scoring is {judge.scoring!r} (config judge.scoring)"
        )
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold)):
        raise ValueError(f"grader_threshold: expected a finite number, got {threshold!r}")


def _example_chunks(items: Sequence[HealthBenchItem], chunk_size: int) -> list[range]:
    """Consecutive example ranges of about ``chunk_size`` criteria (whole examples, >= 1 each)."""
    chunks, start, criteria = [], 0, 0
    for index, item in enumerate(items):
        criteria += len(item.rubric)
        if criteria >= chunk_size:
            chunks.append(range(start, index + 1))
            start, criteria = index + 1, 0
    if start < len(items):
        chunks.append(range(start, len(items)))
    return chunks


def grade_answers(
    items: Sequence[HealthBenchItem],
    answers: Sequence[str],
    judge: Any,
    *,
    max_tokens: int,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
    scoring: str = "generate",
    threshold: float = 0.5,
    grader_prompt: str = "simple_evals",
    max_resamples: int = 0,
) -> CriterionGrades:
    """Grades every (answer, criterion) pair with the HealthBench grader prompt.

    ``scoring="generate"``: prompts (``grader_prompt``) go to ``judge.generate_texts`` (greedy,
    ``max_tokens`` per reply) in chunks of ``chunk_size``; a grading whose reply has no usable
    ``criteria_met`` (or whose request failed) is asked again, up to ``max_resamples`` times, at
    :data:`RESAMPLE_TEMPERATURE` with seed = the attempt, as simple-evals re-samples a failed
    grading (it asks until success; we cap it and count what is still failed). ``scoring="verdict_probs"``: the verdict-first prompts go
    to ``judge.score_binary`` in chunks of whole examples (about ``chunk_size`` criteria), each
    example's items one prefix-reuse group; met = ``P(true) >= threshold`` (``max_tokens`` is
    not used). A tqdm bar counts criteria.
    """
    from tqdm import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    check_grader_scoring(judge, scoring, threshold)
    verdict_first = scoring == "verdict_probs"
    built, slots = grader_prompts(
        items, answers, verdict_first=verdict_first, templates_dir=templates_dir,
        grader_prompt=grader_prompt,
    )
    count = len(built)
    values = np.full(count, np.nan, np.float64)
    p_true = np.full(count, np.nan, np.float64)
    mass = np.full(count, np.nan, np.float64)
    explanations: list[str | None] = [None] * count
    reasons: list[str | None] = [None] * count
    attempts = np.zeros(count, np.int64)
    with tqdm(total=count, desc="grading criteria", unit="criterion") as progress:
        if not verdict_first:
            pending = list(range(count))
            for attempt in range(max_resamples + 1):
                if attempt:
                    logger.info("re-asking %d failed gradings (re-sample %d of %d)",
                                len(pending), attempt, max_resamples)
                for start in range(0, len(pending), chunk_size):
                    rows = pending[start:start + chunk_size]
                    result = judge.generate_texts(
                        [built[row].messages for row in rows], max_tokens=max_tokens,
                        temperature=RESAMPLE_TEMPERATURE if attempt else 0.0, seed=attempt,
                    )
                    chunk = verdicts_from_replies(result.texts, result.finish_reasons,
                                                  result.errors)
                    for offset, row in enumerate(rows):
                        values[row] = chunk[0][offset]
                        explanations[row] = chunk[1][offset]
                        reasons[row] = chunk[2][offset]
                        attempts[row] += 1
                    if not attempt:
                        progress.update(len(rows))
                pending = [row for row in pending if reasons[row] is not None]
                if not pending:
                    break
        else:
            offsets = np.cumsum([0] + [len(item.rubric) for item in items])
            for rows in _example_chunks(items, chunk_size):
                start, stop = int(offsets[rows.start]), int(offsets[rows.stop])
                if start == stop:
                    continue
                groups = [row for row, _ in slots[start:stop]]
                judgments = judge.score_binary(built[start:stop], groups)
                if len(judgments.values) != stop - start:
                    raise ValueError(
                        f"judge score_binary returned {len(judgments.values)} judgments for "
                        f"{stop - start} prompts"
                    )
                chunk_verdicts, chunk_p, chunk_reasons = verdicts_from_probabilities(
                    judgments, threshold
                )
                values[start:stop] = chunk_verdicts
                p_true[start:stop] = chunk_p
                mass[start:stop] = np.asarray(judgments.mass, np.float64)
                reasons[start:stop] = chunk_reasons
                attempts[start:stop] = 1
                progress.update(stop - start)
    per_verdicts = [np.full(len(item.rubric), np.nan, np.float64) for item in items]
    per_p_true = [np.full(len(item.rubric), np.nan, np.float64) for item in items]
    per_mass = [np.full(len(item.rubric), np.nan, np.float64) for item in items]
    per_explanations: list[list[str | None]] = [[None] * len(item.rubric) for item in items]
    per_reasons: list[list[str | None]] = [[None] * len(item.rubric) for item in items]
    per_attempts = [np.zeros(len(item.rubric), np.int64) for item in items]
    for index, (row, column) in enumerate(slots):
        per_attempts[row][column] = attempts[index]
        per_verdicts[row][column] = values[index]
        per_p_true[row][column] = p_true[index]
        per_mass[row][column] = mass[index]
        per_explanations[row][column] = explanations[index]
        per_reasons[row][column] = reasons[index]
    return CriterionGrades(per_verdicts, per_explanations, per_reasons, per_p_true, per_mass,
                           per_attempts)


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
        grader_scoring: how the verdicts were obtained ("generate" or "verdict_probs").
        grader_threshold: the P(true) threshold of verdict scoring; None in generate mode.
    """

    metrics: dict[str, float | int]
    answers: list[str]
    finish_reasons: list[str]
    grades: CriterionGrades
    example_scores: np.ndarray
    excluded: list[str | None]
    failed_criteria: int
    total_criteria: int
    grader_scoring: str = "generate"
    grader_threshold: float | None = None

    def met_criteria(self) -> int:
        """Graded criteria judged met."""
        return int(sum(np.nansum(verdicts) for verdicts in self.grades.verdicts))

    def resampled_criteria(self) -> int:
        """Gradings asked more than once (a failed reply re-sampled)."""
        return int(sum((attempts > 1).sum() for attempts in self.grades.attempts))

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
    judge: Any,
    *,
    grader_max_tokens: int,
    seed: int,
    bootstrap_samples: int = 1000,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
    grader_scoring: str = "generate",
    grader_threshold: float = 0.5,
    grader_prompt: str = "simple_evals",
    grader_max_resamples: int = 0,
) -> HealthBenchResult:
    """Answers, grades and scores the items (see the module docstring).

    ``judge``: a :class:`~rar_jax.judges.jax_backend.TextGenerationBackend` (generate mode) or
    a backend with verdict-probability ``score_binary`` (verdict mode).
    ``chunk_size``: grader prompts per judge call (the progress bar moves per chunk).
    ``grader_scoring`` / ``grader_threshold``: the grading mode and, for ``"verdict_probs"``,
    the P(true) a criterion needs to count as met (checked before the policy answers).
    ``grader_prompt`` / ``grader_max_resamples``: see :func:`grade_answers`.

    When no example can be scored (every one lost its positive-points criteria to failed
    gradings) ``metrics`` is empty; answers, gradings and reasons are still returned.
    """
    check_grader_scoring(judge, grader_scoring, grader_threshold)
    answered = policy.answer([list(item.conversation) for item in items])
    if len(answered.texts) != len(items):
        raise ValueError(f"policy returned {len(answered.texts)} answers for {len(items)} items")
    grades = grade_answers(
        items, answered.texts, judge, max_tokens=grader_max_tokens, templates_dir=templates_dir,
        chunk_size=chunk_size, scoring=grader_scoring, threshold=grader_threshold,
        grader_prompt=grader_prompt, max_resamples=grader_max_resamples,
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
        grader_scoring=grader_scoring,
        grader_threshold=float(grader_threshold) if grader_scoring == "verdict_probs" else None,
    )
