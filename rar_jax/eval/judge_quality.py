"""Judge quality: agreement of a judge's per-criterion verdicts with labels nobody here wrote.

Two label sources become lists of :class:`LabeledPair` ``(conversation, answer, criterion,
label)``:

- **HealthBench graded by m42** (:func:`healthbench_pairs`; ``healthbench_graded_m42``, CC BY-NC:
  tests and evaluation only): every rubric item of every example, with the answer the example was
  graded on (``prompt_response``) and the grader's ``criteria_met`` as the label. Items with
  negative points keep HealthBench's convention: the label says whether the answer *shows* the
  (undesirable) behaviour, which is the question our polarity-neutral explicit prompt asks.
- **K-QA physician NLI labels** (:func:`kqa_pairs`; ``NLI_medical_annotator.csv``, MIT): is a
  gold statement (``claim``) supported by an LLM's answer, labelled by three physicians
  (``label_0..2``: Entailment / Neutral / Contradiction) and their ``majority_label``. Our
  choices, documented here because the data leaves them open:

  * label 1 = the majority says ``Entailment``; ``Neutral`` (the answer does not say it) and
    ``Contradiction`` (the answer says the opposite) are both label 0, since in both cases the
    answer does not satisfy the statement as a rubric item (``contradiction="exclude"`` drops the
    12 contradiction rows instead);
  * ambiguity: the majority label is used when at least ``min_agreement`` of the three
    physicians gave it (default 2, i.e. any majority; 3 keeps only unanimous rows). A row whose
    three labels all differ has no majority and is always excluded. Each pair records its
    agreement (``agreement:unanimous`` / ``agreement:majority``) so results can be split by it;
  * the criterion the judge sees is ``criterion_format`` with ``{claim}`` replaced by the claim,
    by default the bare claim (what a K-QA rubric item says; see
    :func:`rar_jax.rubrics.readers.rubric_from_kqa_record`).

  Excluded rows are counted by reason (:class:`PairSet`), never dropped silently.

Metrics are pure numpy functions of predicted verdicts / probabilities and labels:
:func:`confusion_counts`, :func:`binary_agreement` (accuracy, precision, recall, F1, Cohen's
kappa, positive rates), :func:`roc_auc` (Mann-Whitney with mid-ranks, so ties count one half) and
:func:`agreement_report`, which takes probabilities with NaN for unscorable pairs: the failures
are counted (``failed``) and the metrics are computed over the scored pairs. A metric whose
denominator is zero (precision with no predicted positive, AUC with one class, ...) is NaN,
never 0.

Scoring (:func:`score_pairs`) sends every pair through a judge backend's explicit per-criterion
check (:func:`rar_jax.judges.prompts.explicit_criterion_prompt`,
``JudgeBackend.score_binary``), the pairs of one answer as one prefix-reuse group.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.data.examples import example_from_healthbench_record
from rar_jax.eval.healthbench_scoring import read_graded_examples
from rar_jax.judges import prompts
from rar_jax.judges.prompts import JudgePrompt
from rar_jax.io import iter_jsonl
from rar_jax.rubrics.schema import RubricError

__all__ = [
    "DEFAULT_THRESHOLD",
    "KQA_LABELS",
    "LabeledPair",
    "PairScores",
    "PairSet",
    "agreement_report",
    "binary_agreement",
    "cohen_kappa",
    "confusion_counts",
    "healthbench_pairs",
    "judge_prompts",
    "kqa_pairs",
    "report_markdown",
    "roc_auc",
    "score_pairs",
    "subgroup_reports",
]

DEFAULT_THRESHOLD = 0.5  # A pair is predicted true when P(true) >= this.
KQA_LABELS = ("Entailment", "Neutral", "Contradiction")
_KQA_COLUMNS = ("", "Question", "llm_x", "answer", "claim", "category_x", "majority_label")

ChatMessage = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class LabeledPair:
    """One (answer, criterion) pair with its human (or reference-grader) label.

    Attributes:
        dataset: "healthbench" or "kqa".
        pair_id: a stable id, e.g. ``<prompt_id>/3`` (rubric item 3) or ``kqa/17`` (CSV row 17).
        answer_id: id of the answer; pairs with the same answer share a prefix-reuse group.
        conversation: chat messages ending with the user turn the answer replies to.
        answer: the answer text being judged.
        criterion: the statement the judge checks.
        label: True when the label says the answer meets / supports the statement.
        subgroups: names of the breakdowns the pair belongs to, e.g. ``("points:negative",
            "axis:accuracy")`` or ``("category:Must_have", "agreement:unanimous", "llm:gpt4")``.
    """

    dataset: str
    pair_id: str
    answer_id: str
    conversation: tuple[ChatMessage, ...]
    answer: str
    criterion: str
    label: bool
    subgroups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PairSet:
    """Pairs read from one source, and the rows left out with the reason of each.

    Attributes:
        pairs: the labelled pairs, in file order.
        excluded: count per exclusion reason (empty when nothing was left out).
        source: the file read.
    """

    pairs: list[LabeledPair]
    excluded: dict[str, int]
    source: str


# ------------------------------------------------------------------------------------ metrics
def _as_bool_vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {array.shape}")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name}: expected booleans or 0/1 values")
        array = array.astype(bool)
    return array


def _check_pair(predicted: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    predicted = _as_bool_vector(predicted, "predicted")
    labels = _as_bool_vector(labels, "labels")
    if predicted.shape != labels.shape:
        raise ValueError(
            f"predicted and labels: expected the same length, got {predicted.size} and "
            f"{labels.size}"
        )
    return predicted, labels


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def confusion_counts(predicted: Any, labels: Any) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of predicted verdicts bool[n] against labels bool[n]."""
    predicted, labels = _check_pair(predicted, labels)
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    return tp, fp, fn, tn


def cohen_kappa(predicted: Any, labels: Any) -> float:
    """Cohen's kappa of two binary raters, bool[n] each.

    ``(p_o - p_e) / (1 - p_e)`` with observed agreement ``p_o`` and chance agreement
    ``p_e = p1 q1 + (1 - p1)(1 - q1)`` from the raters' positive rates. NaN when ``p_e == 1``
    (both raters gave one and the same answer to everything) or n == 0.
    """
    predicted, labels = _check_pair(predicted, labels)
    count = predicted.size
    if count == 0:
        return float("nan")
    observed = float(np.mean(predicted == labels))
    rate_predicted = float(np.mean(predicted))
    rate_labels = float(np.mean(labels))
    chance = rate_predicted * rate_labels + (1.0 - rate_predicted) * (1.0 - rate_labels)
    return _ratio(observed - chance, 1.0 - chance) if chance < 1.0 else float("nan")


def binary_agreement(predicted: Any, labels: Any) -> dict[str, float | int]:
    """Agreement of predicted verdicts bool[n] with labels bool[n].

    Returns:
        ``n``, ``tp``, ``fp``, ``fn``, ``tn``, ``accuracy``, ``precision`` (tp / (tp + fp)),
        ``recall`` (tp / (tp + fn)), ``f1`` (2 tp / (2 tp + fp + fn)), ``kappa``
        (:func:`cohen_kappa`), ``label_positive_rate`` and ``predicted_positive_rate``; a ratio
        with a zero denominator is NaN.
    """
    predicted, labels = _check_pair(predicted, labels)
    tp, fp, fn, tn = confusion_counts(predicted, labels)
    count = predicted.size
    return {
        "n": count,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": _ratio(tp + tn, count),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "kappa": cohen_kappa(predicted, labels),
        "label_positive_rate": _ratio(tp + fn, count),
        "predicted_positive_rate": _ratio(tp + fp, count),
    }


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of scores f[n] (higher = more likely true) for labels bool[n].

    The Mann-Whitney statistic: the probability that a random positive scores above a random
    negative, ties counting one half, computed from mid-ranks (tied scores share the mean of
    their ranks) in O(n log n). NaN when either class is empty. Scores must not be NaN.
    """
    scores = np.asarray(scores, np.float64)
    labels = _as_bool_vector(labels, "labels")
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels: expected 1-d arrays of the same length, got shapes "
            f"{scores.shape} and {labels.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores: NaN values; leave unscored pairs out before computing AUC")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    midranks = ends - (counts - 1) / 2.0
    rank_sum = float(np.sum(midranks[inverse][labels]))
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def agreement_report(
    probabilities: Any, labels: Any, *, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float | int]:
    """Agreement of judge probabilities f[n] (P(true); NaN = unscorable) with labels bool[n].

    Unscorable pairs are counted, not hidden: ``n`` is every pair, ``failed`` the NaN ones,
    ``scored = n - failed``; the metrics of :func:`binary_agreement` (predicted = P >= threshold)
    and ``auc`` (:func:`roc_auc` of P) are over the scored pairs; ``label_positive_rate_all`` is
    the positive rate of the labels of all n pairs; ``mean_probability`` the mean P of the scored.
    """
    probabilities = np.asarray(probabilities, np.float64)
    labels = _as_bool_vector(labels, "labels")
    if probabilities.ndim != 1 or probabilities.shape != labels.shape:
        raise ValueError(
            f"probabilities and labels: expected 1-d arrays of the same length, got shapes "
            f"{probabilities.shape} and {labels.shape}"
        )
    scored = ~np.isnan(probabilities)
    report = binary_agreement(probabilities[scored] >= threshold, labels[scored])
    report = {
        "n": int(labels.size),
        "scored": int(scored.sum()),
        "failed": int((~scored).sum()),
        **{key: value for key, value in report.items() if key != "n"},
        "auc": roc_auc(probabilities[scored], labels[scored]),
        "label_positive_rate_all": _ratio(float(labels.sum()), labels.size),
        "mean_probability": (
            float(np.mean(probabilities[scored])) if scored.any() else float("nan")
        ),
        "threshold": float(threshold),
    }
    return report


def subgroup_reports(
    pairs: Sequence[LabeledPair],
    probabilities: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict[str, float | int]]:
    """Reports of :func:`agreement_report`: ``{"all": ..., <subgroup>: ..., ...}`` (sorted)."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape != (len(pairs),):
        raise ValueError(
            f"probabilities: expected shape ({len(pairs)},), one per pair, got "
            f"{probabilities.shape}"
        )
    labels = np.array([pair.label for pair in pairs], bool)
    reports = {"all": agreement_report(probabilities, labels, threshold=threshold)}
    names = sorted({name for pair in pairs for name in pair.subgroups})
    for name in names:
        members = np.array([name in pair.subgroups for pair in pairs], bool)
        reports[name] = agreement_report(
            probabilities[members], labels[members], threshold=threshold
        )
    return reports


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.3f}"
    return str(value)


MARKDOWN_COLUMNS = (
    ("n", "n"),
    ("failed", "failed"),
    ("accuracy", "accuracy"),
    ("f1", "F1"),
    ("kappa", "kappa"),
    ("auc", "AUC"),
    ("label_positive_rate", "label pos. rate"),
    ("predicted_positive_rate", "pred. pos. rate"),
)


def report_markdown(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per subgroup, of :func:`subgroup_reports` output.

    Columns: n, failed, accuracy, F1, kappa, AUC and the positive rates of labels and
    predictions (the rates are over the scored pairs), three decimals, ``nan`` where undefined.
    """
    header = "| subset | " + " | ".join(title for _, title in MARKDOWN_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(MARKDOWN_COLUMNS)
    rows = [header, rule]
    for name, report in reports.items():
        cells = [_format_cell(report[key]) for key, _ in MARKDOWN_COLUMNS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------ builders
def _assistant_answer(record: Mapping[str, Any], source: str) -> str:
    response = record.get("prompt_response")
    if (
        not isinstance(response, list)
        or len(response) != 1
        or not isinstance(response[0], dict)
        or response[0].get("role") != "assistant"
        or not isinstance(response[0].get("content"), str)
    ):
        raise RubricError(
            f"{source}: prompt_response: expected a list of one "
            "{'role': 'assistant', 'content': str} message"
        )
    return response[0]["content"]


def healthbench_pairs(path: str | os.PathLike[str], *, limit: int = 0) -> PairSet:
    """(answer, rubric item, grader verdict) pairs of a graded HealthBench JSONL (m42 layout).

    Args:
        path: JSONL of HealthBench records with ``prompt_response`` (the graded answer) and
            ``responses`` (per-item grades aligned with ``rubrics``), see
            :func:`rar_jax.eval.healthbench_scoring.read_graded_examples`.
        limit: keep the first ``limit`` pairs in file order (items in rubric order); 0 = all.

    Returns:
        A PairSet; ``pair_id`` = ``<prompt_id>/<item index>``, subgroups ``points:positive`` /
        ``points:negative`` and the item's ``axis:`` tag.
    """
    if limit < 0:
        raise ValueError(f"limit: expected >= 0 (0 = all), got {limit}")
    name = os.fspath(path)
    graded = read_graded_examples(name)
    pairs: list[LabeledPair] = []
    for (line, record), grades in zip(iter_jsonl(name), graded, strict=True):
        source = f"{name}:{line}"
        example = example_from_healthbench_record(record, source)
        answer = _assistant_answer(record, source)
        for index, (criterion, met) in enumerate(
            zip(grades.rubric.criteria, grades.criteria_met, strict=True)
        ):
            sign = "positive" if criterion.weight > 0 else "negative"
            axes = tuple(tag for tag in criterion.tags if tag.startswith("axis:"))
            pairs.append(
                LabeledPair(
                    dataset="healthbench",
                    pair_id=f"{example.example_id}/{index}",
                    answer_id=example.example_id,
                    conversation=example.conversation,
                    answer=answer,
                    criterion=criterion.description,
                    label=bool(met),
                    subgroups=(f"points:{sign}", *axes),
                )
            )
            if limit and len(pairs) >= limit:
                return PairSet(pairs, {}, name)
    return PairSet(pairs, {}, name)


def _kqa_majority(votes: Sequence[str]) -> tuple[str | None, int]:
    """The label most physicians gave and how many gave it; None when all three differ."""
    label, count = collections.Counter(votes).most_common(1)[0]
    return (label, count) if count >= 2 else (None, count)


def kqa_pairs(
    path: str | os.PathLike[str],
    *,
    limit: int = 0,
    min_agreement: int = 2,
    contradiction: str = "negative",
    criterion_format: str = "{claim}",
) -> PairSet:
    """(answer, claim, physician label) pairs of K-QA's ``NLI_medical_annotator.csv``.

    Args:
        path: the CSV (columns: row index, Question, llm_x, answer, claim, category_x,
            majority_label, label_0, label_1, label_2).
        limit: keep the first ``limit`` pairs (after exclusions) in file order; 0 = all.
        min_agreement: 2 (any majority) or 3 (unanimous rows only); see the module docstring.
        contradiction: "negative" (a contradicted claim is label 0) or "exclude".
        criterion_format: text shown to the judge, ``{claim}`` standing for the claim.

    Returns:
        A PairSet; ``pair_id`` = ``kqa/<row index>``, ``answer_id`` = ``<llm_x>:<Question>``,
        subgroups ``category:<category_x>``, ``agreement:unanimous|majority``, ``llm:<llm_x>``;
        ``excluded`` counts rows left out ("no majority", "agreement below min_agreement",
        "contradiction excluded").

    Raises:
        ValueError naming the file, line and column for a missing column, an unknown label, a
        ``majority_label`` that is not the majority of ``label_0..2``, or a blank field.
    """
    if limit < 0:
        raise ValueError(f"limit: expected >= 0 (0 = all), got {limit}")
    if min_agreement not in (2, 3):
        raise ValueError(
            f"min_agreement: expected 2 (majority) or 3 (unanimous), got {min_agreement}"
        )
    if contradiction not in ("negative", "exclude"):
        raise ValueError(
            f"contradiction: expected 'negative' or 'exclude', got {contradiction!r}"
        )
    if "{claim}" not in criterion_format:
        raise ValueError(
            f"criterion_format: expected a '{{claim}}' placeholder, got {criterion_format!r}"
        )
    name = os.fspath(path)
    pairs: list[LabeledPair] = []
    excluded: collections.Counter[str] = collections.Counter()
    with open(name, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = (*_KQA_COLUMNS, "label_0", "label_1", "label_2")
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{name}:1: missing columns {missing}; expected {list(columns)}")
        for row in reader:
            where = f"{name}:{reader.line_num}"
            for column in columns:
                if not (row[column] or "").strip():
                    raise ValueError(f"{where}: column {column!r}: expected a non-empty value")
            votes = [row[f"label_{k}"] for k in range(3)]
            for column in ("majority_label", "label_0", "label_1", "label_2"):
                if row[column] not in KQA_LABELS:
                    raise ValueError(
                        f"{where}: column {column!r}: expected one of {', '.join(KQA_LABELS)}, "
                        f"got {row[column]!r}"
                    )
            majority, agreement = _kqa_majority(votes)
            if majority is None:
                excluded["no majority"] += 1
                continue
            if row["majority_label"] != majority:
                raise ValueError(
                    f"{where}: column 'majority_label': {row['majority_label']!r} is not the "
                    f"majority of label_0..2 {votes}"
                )
            if agreement < min_agreement:
                excluded["agreement below min_agreement"] += 1
                continue
            if majority == "Contradiction" and contradiction == "exclude":
                excluded["contradiction excluded"] += 1
                continue
            llm = row["llm_x"]
            pairs.append(
                LabeledPair(
                    dataset="kqa",
                    pair_id=f"kqa/{row['']}",
                    answer_id=f"{llm}:{row['Question']}",
                    conversation=({"role": "user", "content": row["Question"]},),
                    answer=row["answer"],
                    criterion=criterion_format.replace("{claim}", row["claim"].strip()),
                    label=majority == "Entailment",
                    subgroups=(
                        f"category:{row['category_x']}",
                        f"agreement:{'unanimous' if agreement == 3 else 'majority'}",
                        f"llm:{llm}",
                    ),
                )
            )
            if limit and len(pairs) >= limit:
                break
    return PairSet(pairs, dict(excluded), name)


# ------------------------------------------------------------------------------------ scoring
@dataclasses.dataclass(frozen=True)
class PairScores:
    """What the judge said about n pairs.

    Attributes:
        probabilities: f32[n], P(true) (a parsed 1.0 / 0.0 for generate-and-parse judges); NaN
            where the judgment failed.
        reasons: why each failed judgment failed (None where it succeeded).
        mass: f32[n], probability mass of the verdict options (verdict scoring; NaN otherwise).
    """

    probabilities: np.ndarray
    reasons: list[str | None]
    mass: np.ndarray


def judge_prompts(
    pairs: Sequence[LabeledPair], *, templates_dir: str | os.PathLike[str] | None = None
) -> tuple[list[JudgePrompt], list[int]]:
    """Explicit per-criterion prompts of the pairs and their prefix-reuse groups.

    Returns:
        The prompts (:func:`rar_jax.judges.prompts.explicit_criterion_prompt`) and one group id
        per pair (pairs with the same ``answer_id`` share one, numbered in first-seen order).
    """
    group_ids: dict[str, int] = {}
    built, groups = [], []
    for pair in pairs:
        built.append(
            prompts.explicit_criterion_prompt(
                pair.conversation, pair.answer, pair.criterion, templates_dir=templates_dir
            )
        )
        groups.append(group_ids.setdefault(pair.answer_id, len(group_ids)))
    return built, groups


def _group_order(pairs: Sequence[LabeledPair], groups: Sequence[int]) -> list[int]:
    """Pair indices grouped by answer, the answers with the longest text (conversation + answer)
    first, pairs of one answer in their original order.

    Neighbouring answers then have similar lengths, so a chunk pads its prefixes little.
    """
    members: dict[int, list[int]] = {}
    length: dict[int, int] = {}
    for index, (pair, group) in enumerate(zip(pairs, groups, strict=True)):
        members.setdefault(group, []).append(index)
        text = len(pair.answer) + sum(len(m.get("content", "")) for m in pair.conversation)
        length[group] = max(length.get(group, 0), text)
    ordered = sorted(members, key=lambda group: -length[group])  # stable: ties keep file order
    return [index for group in ordered for index in members[group]]


def _chunks_by_group(
    order: Sequence[int], groups: Sequence[int], chunk_size: int
) -> list[list[int]]:
    """Consecutive pieces of ``order`` of about ``chunk_size`` items, never splitting a group."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for position, index in enumerate(order):
        current.append(index)
        last = position + 1 == len(order)
        if last or (groups[order[position + 1]] != groups[index] and len(current) >= chunk_size):
            chunks.append(current)
            current = []
    return chunks


def score_pairs(
    pairs: Sequence[LabeledPair],
    backend: Any,
    *,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 32,
    description: str = "judging",
) -> PairScores:
    """Scores every pair with ``backend.score_binary`` (any ``JudgeBackend`` of ``rewards``).

    Pairs go to the backend in chunks of about ``chunk_size`` prompts, longest answers first (the
    pairs of one answer are kept in one chunk, so a prefix is shared within a call, and answers of
    similar length share a chunk), with a tqdm progress bar over pairs. Results come back in the
    order of ``pairs``.
    A value outside [0, 1] is a failure with a reason, like a failed judgment.
    """
    from tqdm import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    built, groups = judge_prompts(pairs, templates_dir=templates_dir)
    count = len(built)
    probabilities = np.full(count, np.nan, np.float32)
    mass = np.full(count, np.nan, np.float32)
    reasons: list[str | None] = [None] * count
    with tqdm(total=count, desc=description, unit="pair", disable=count == 0) as progress:
        for chunk in _chunks_by_group(_group_order(pairs, groups), groups, chunk_size):
            judgments = backend.score_binary(
                [built[i] for i in chunk], [groups[i] for i in chunk]
            )
            for offset, index in enumerate(chunk):
                value = float(judgments.values[offset])
                reason = judgments.reasons[offset]
                if reason is None and not 0.0 <= value <= 1.0:
                    reason = f"verdict {value!r} is not a probability in [0, 1]"
                if reason is None:
                    probabilities[index] = value
                else:
                    reasons[index] = reason
                mass[index] = judgments.mass[offset]
            progress.update(len(chunk))
    return PairScores(probabilities, reasons, mass)
