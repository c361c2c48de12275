"""GPQA-Diamond evaluation: n runs with seeded choice orders, boxed letters, a verifier fallback.

Pipeline (:func:`evaluate_gpqa`):

1. Questions come from the official CSV (or a JSONL with the same columns) or a built
   ``gpqa_diamond`` data set (:func:`read_gpqa_items`). Run ``r`` shows the four choices in the
   order :func:`rar_jax.data.builders.gpqa_diamond.choice_order` ``(record_id, seed, r)`` gives
   (for a CSV the seed is config ``seed``; a built data set keeps the orders it was built with),
   so a question's correct letter differs between runs.
2. The policy answers every (question, run) prompt greedily (:data:`GPQA_TEMPLATE`, which asks
   for the letter in ``\\boxed{}``).
3. :func:`extract_choice_letter` reads the letter. Outcomes (``method``):

   - ``boxed``: the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``boxed{...}`` without the
     backslash) holds a letter, also as ``(C)``, ``\\text{C}``, ``C) text``;
   - ``boxed_text``: the last box holds exactly one choice's text instead of its letter;
   - ``answer_phrase``: no box, but a phrase like ``Answer: C``, ``the answer is (C)``,
     ``final answer: **C**`` (capital letter; the last such phrase counts);
   - ``leading_letter``: none of these, but the answer starts with a choice label, ``C) ...``,
     ``(C) ...``, ``C. ...`` or ``C: ...`` (small models often answer like that);
   - ``unparseable``: none of these.

4. An unparseable answer goes to the judge with the paper's Yes/No verifier prompt
   (:func:`rar_jax.judges.prompts.gpqa_verifier_prompt`) when ``use_verifier`` (config
   ``eval.gpqa_verifier``): Yes = correct, No = wrong (``method`` ``verifier``). A verifier whose
   reply cannot be parsed (or whose request failed) gives NaN with its reason (``verifier_failed``):
   that answer is left out of its run's accuracy and counted, never scored 0. Without the
   verifier an unparseable answer is wrong (it states no choice).

Accuracy of a run = mean correctness over its graded answers; the result is the mean over runs
with a 95% Student-t interval (:func:`mean_confidence_interval`), clipped to [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.data.sources import GPQA_LETTERS, GPQA_TEMPLATE
from rar_jax.eval.answering import Policy
from rar_jax.judges.backend import TextGenerationBackend
from rar_jax.judges import parsing, prompts

__all__ = [
    "EXTRACTION_METHODS",
    "GpqaGrades",
    "GpqaItem",
    "GpqaResult",
    "LetterExtraction",
    "evaluate_gpqa",
    "extract_choice_letter",
    "gpqa_summary",
    "grade_gpqa",
    "mean_confidence_interval",
    "read_gpqa_items",
]

# Every outcome of grading one answer (see the module docstring).
EXTRACTION_METHODS = (
    "boxed",
    "boxed_text",
    "answer_phrase",
    "leading_letter",
    "verifier",
    "verifier_failed",
    "unparseable",
)


@dataclasses.dataclass(frozen=True)
class GpqaItem:
    """One GPQA question as shown in one run.

    Attributes:
        question_id: the ``Record ID``.
        run: the run (choice order) index.
        question: the question text.
        choices: the four choice texts in the order shown (letter ``"ABCD"[i]`` shows choices[i]).
        answer_index: position of the correct choice.
        domain: the ``High-level domain`` ("" when absent).
        source: where the question came from (``file:line`` or the data set record's source).
    """

    question_id: str
    run: int
    question: str
    choices: tuple[str, ...]
    answer_index: int
    domain: str = ""
    source: str = ""

    @property
    def answer_letter(self) -> str:
        """The correct letter in this run."""
        return GPQA_LETTERS[self.answer_index]

    def prompt(self) -> str:
        """The policy's user turn (:data:`rar_jax.data.sources.GPQA_TEMPLATE`)."""
        return GPQA_TEMPLATE.format(
            question=self.question, **dict(zip(GPQA_LETTERS, self.choices, strict=True))
        )

    def question_with_choices(self) -> str:
        """The question and its lettered choices (the verifier's ``question``)."""
        lines = [f"{letter}) {choice}" for letter, choice in zip(GPQA_LETTERS, self.choices)]
        return self.question + "\n\n" + "\n".join(lines)


# ------------------------------------------------------------------------------ extraction
@dataclasses.dataclass(frozen=True)
class LetterExtraction:
    """The letter read from an answer, how, or why none was found.

    Attributes:
        letter: the choice letter, or None.
        method: "boxed", "boxed_text", "answer_phrase", "leading_letter" or "unparseable".
        reason: why no letter was found (None when one was).
    """

    letter: str | None
    method: str
    reason: str | None = None


_BARE_BOX = re.compile(r"(?<![\\A-Za-z])boxed\s*\{")
_ANSWER_PHRASE = re.compile(
    r"(?i:\b(?:final\s+answer|correct\s+(?:answer|option|choice)|answer))"
    r"(?:\s+(?i:is))?\s*[:\-]?\s*(?i:option\s+|choice\s+)?[*_(\[\s]*([A-Z])"
    r"(?=[ \t]*(?:$|[).,:;!*_\]\n]))"
)
_LEADING_LABEL = re.compile(r"\s*[*_]*(?:\(([A-Z])\)|([A-Z])[).:])[*_]*(?=\s|$)")


def _normalise(text: str) -> str:
    return " ".join(text.replace("$", "").split()).strip(" .").lower()


def extract_choice_letter(text: str, choices: Sequence[str] | None = None) -> LetterExtraction:
    """The choice letter of a GPQA answer (see the module docstring for the variants).

    Args:
        text: the policy's answer.
        choices: the choice texts in the order shown (for ``boxed_text``); None skips that rule.
            The valid letters are ``"ABCD"[:len(choices)]`` (``"ABCD"`` without choices).
    """
    letters = GPQA_LETTERS[: len(choices)] if choices is not None else GPQA_LETTERS
    if not isinstance(text, str) or not text.strip():
        return LetterExtraction(None, "unparseable", "empty answer")
    canonical = text.replace("\\fbox", "\\boxed")
    canonical = _BARE_BOX.sub(r"\\boxed{", canonical)
    boxed = parsing.parse_boxed_letter(canonical, letters)
    if boxed.ok:
        return LetterExtraction(boxed.value, "boxed")
    contents = parsing.boxed_contents(canonical)
    if contents and choices is not None:
        last = _normalise(contents[-1])
        matches = [i for i, choice in enumerate(choices) if _normalise(choice) == last]
        if len(matches) == 1:
            return LetterExtraction(letters[matches[0]], "boxed_text")
    if contents:
        return LetterExtraction(None, "unparseable", str(boxed.reason))
    phrases = [letter for letter in _ANSWER_PHRASE.findall(text) if letter in letters]
    if phrases:
        return LetterExtraction(phrases[-1], "answer_phrase")
    leading = _LEADING_LABEL.match(text)
    if leading and (leading.group(1) or leading.group(2)) in letters:
        return LetterExtraction(leading.group(1) or leading.group(2), "leading_letter")
    return LetterExtraction(
        None, "unparseable", "no \\boxed{} letter, 'answer: X' phrase or leading 'X)' label"
    )


# ------------------------------------------------------------------------------ statistics
def mean_confidence_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval.

    ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof=1). NaN values are an error (drop them first). With one value the bounds are NaN.

    Args:
        values: f64[n], n >= 1 (e.g. the accuracy of each run).
        confidence: the interval's coverage, in (0, 1).

    Returns:
        (mean, low, high).
    """
    from scipy import stats

    array = np.asarray(values, np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D sequence, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("values: contains NaN; leave out what could not be measured first")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence}")
    mean = float(array.mean())
    if array.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, array.size - 1)) * float(
        array.std(ddof=1) / math.sqrt(array.size)
    )
    return mean, mean - half, mean + half


# ------------------------------------------------------------------------------ data
def _csv_items(path: str, num_runs: int, seed: int, limit: int) -> list[GpqaItem]:
    from rar_jax.data.builders.base import MalformedRowError, iter_rows, require_text
    from rar_jax.data.builders.gpqa_diamond import CHOICE_COLUMNS, choice_order

    records = []
    seen: dict[str, str] = {}
    for row in iter_rows(path, name=path):
        if row.error is not None:
            raise MalformedRowError(f"{row.source}: {row.error}")
        record = row.record
        question = require_text(record, "Question", row.source).strip()
        record_id = require_text(record, "Record ID", row.source).strip()
        if record_id in seen:
            raise MalformedRowError(
                f"{row.source}: Record ID: {record_id!r} repeats the row at {seen[record_id]}"
            )
        seen[record_id] = row.source
        choices = [require_text(record, c, row.source).strip() for c in CHOICE_COLUMNS]
        domain = str(record.get("High-level domain") or "").strip()
        records.append((record_id, question, choices, domain, row.source))
        if limit and len(records) == limit:
            break
    items = []
    for run in range(num_runs):
        for record_id, question, choices, domain, source in records:
            order = choice_order(record_id, seed, run)
            shown = tuple(choices[i] for i in order)
            answer = int(np.flatnonzero(order == 0)[0])
            items.append(GpqaItem(record_id, run, question, shown, answer, domain, source))
    return items


def _tfds_items(location: str, num_runs: int, limit: int, data_dir: Any) -> list[GpqaItem]:
    from rar_jax.data import sources

    name, config, split = sources.parse_tfds_location(location)
    if sources.DATASET_FORMATS.get(name) != "gpqa":
        raise ValueError(f"{location}: {name!r} is not a GPQA data set")
    source = sources.open_source(name, split, data_dir=data_dir, config=config)
    count = len(source) if not limit else min(limit, len(source))
    records = [sources.decode_record(source[index]) for index in range(count)]
    items = []
    for run in range(num_runs):
        for record in records:
            choices, answer = sources.gpqa_choices(record, run)
            items.append(GpqaItem(record["record_id"], run, record["prompt"], tuple(choices),
                                  answer, record.get("domain", ""), record["source"]))
    return items


def read_gpqa_items(
    location: str | os.PathLike[str],
    *,
    num_runs: int,
    seed: int,
    limit: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[GpqaItem]:
    """Every (question, run) of a GPQA file or built data set, run-major.

    Args:
        location: a ``.csv`` / ``.jsonl`` with the official columns (``Question``, ``Correct
            Answer``, ``Incorrect Answer 1..3``, ``Record ID``, optional ``High-level domain``),
            or ``"tfds:gpqa_diamond[/<config>]:test"`` (config ``eval.gpqa_path``).
        num_runs: choice orders per question (config ``eval.gpqa_runs``); a built data set must
            hold at least that many.
        seed: seed of the choice orders of a file (a built data set keeps its own).
        limit: the first N questions (0 = all).
        data_dir: the TFDS data directory (default ``TFDS_DATA_DIR``).

    Raises:
        MalformedRowError naming file, line and column for a bad row; ValueError when empty.
    """
    if num_runs < 1:
        raise ValueError(f"num_runs: expected >= 1, got {num_runs}")
    if limit < 0:
        raise ValueError(f"limit: expected >= 0 (0 = all), got {limit}")
    text = os.fspath(location)
    from rar_jax.data.sources import TFDS_PREFIX

    if text.startswith(TFDS_PREFIX):
        items = _tfds_items(text, num_runs, limit, data_dir)
    else:
        items = _csv_items(text, num_runs, seed, limit)
    if not items:
        raise ValueError(f"{text}: no GPQA questions")
    return items


# ------------------------------------------------------------------------------ grading
@dataclasses.dataclass(frozen=True)
class GpqaGrades:
    """Grading of m answers.

    Attributes:
        letters: the extracted letter per answer (None when none was found).
        methods: the outcome per answer (one of :data:`EXTRACTION_METHODS`).
        correct: f64[m], 1.0 correct, 0.0 wrong, NaN when the verifier failed.
        reasons: why an answer had no letter / why its verification failed (None otherwise).
        verifier_replies: the verifier's reply where it was asked (None elsewhere).
    """

    letters: list[str | None]
    methods: list[str]
    correct: np.ndarray
    reasons: list[str | None]
    verifier_replies: list[str | None]


def grade_gpqa(
    items: Sequence[GpqaItem],
    answers: Sequence[str],
    judge: TextGenerationBackend | None,
    *,
    use_verifier: bool,
    max_tokens: int,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
) -> GpqaGrades:
    """Letters by extraction; the judge's Yes/No verifier for answers without one.

    ``judge`` may be None when ``use_verifier`` is False. Verifier prompts go to
    ``judge.generate_texts`` in chunks of ``chunk_size`` (the progress bar moves per chunk).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    if len(items) != len(answers):
        raise ValueError(
            f"expected one answer per item: {len(items)} items, {len(answers)} answers"
        )
    if use_verifier and judge is None:
        raise ValueError("use_verifier needs a judge")
    count = len(items)
    letters: list[str | None] = [None] * count
    methods = [""] * count
    correct = np.full(count, np.nan, np.float64)
    reasons: list[str | None] = [None] * count
    replies: list[str | None] = [None] * count
    to_verify = []
    for index, (item, answer) in enumerate(zip(items, answers)):
        extraction = extract_choice_letter(answer, item.choices)
        letters[index], methods[index], reasons[index] = (
            extraction.letter, extraction.method, extraction.reason
        )
        if extraction.letter is not None:
            correct[index] = float(extraction.letter == item.answer_letter)
        elif use_verifier:
            to_verify.append(index)
        else:
            correct[index] = 0.0
    if to_verify:
        from tqdm import tqdm

        messages = [
            prompts.gpqa_verifier_prompt(
                items[i].question_with_choices(),
                items[i].answer_letter,
                items[i].choices[items[i].answer_index],
                answers[i],
                templates_dir=templates_dir,
            ).messages
            for i in to_verify
        ]
        texts: list[str] = []
        errors: list[str | None] = []
        with tqdm(total=len(messages), desc="verifying answers without a letter",
                  unit="answer") as bar:
            for start in range(0, len(messages), chunk_size):
                chunk = messages[start : start + chunk_size]
                result = judge.generate_texts(chunk, max_tokens=max_tokens, temperature=0.0)
                texts += result.texts
                errors += result.errors if result.errors is not None else [None] * len(chunk)
                bar.update(len(chunk))
        for offset, index in enumerate(to_verify):
            error, text = errors[offset], texts[offset]
            replies[index] = text
            if error is not None:
                methods[index] = "verifier_failed"
                reasons[index] = f"verifier request failed: {error}"
                continue
            verdict = parsing.parse_yes_no(text)
            if verdict.ok:
                methods[index] = "verifier"
                correct[index] = 1.0 if verdict.value else 0.0
            else:
                methods[index] = "verifier_failed"
                reasons[index] = f"invalid verifier reply: {verdict.reason}"
    return GpqaGrades(letters, methods, correct, reasons, replies)


@dataclasses.dataclass
class GpqaResult:
    """Everything one GPQA evaluation produced.

    Attributes:
        items: the (question, run) prompts, run-major.
        answers: the policy's answers.
        finish_reasons: why each answer stopped.
        grades: the grading of each answer.
        summary: :func:`gpqa_summary` of the grades.
    """

    items: list[GpqaItem]
    answers: list[str]
    finish_reasons: list[str]
    grades: GpqaGrades
    summary: dict[str, Any]


def gpqa_summary(
    runs: Sequence[int], correct: Sequence[float], methods: Sequence[str], num_runs: int
) -> dict[str, Any]:
    """Accuracy per run (over its graded answers), their mean and 95% interval, outcome counts.

    Args:
        runs: int[m] the run of each answer.
        correct: f64[m] 1.0 / 0.0, NaN where ungraded.
        methods: the outcome of each answer.
        num_runs: the number of runs.

    Returns:
        ``{"accuracy": mean over runs, "ci95_low", "ci95_high" (the t interval of
        :func:`mean_confidence_interval` clipped to [0, 1]), "num_runs", "run_accuracy":
        [...], "run_graded": [...], "answers", "ungraded", "methods": {method: count}}``; a run
        with no graded answer has accuracy NaN and is left out of the mean (counted in
        ``runs_without_graded_answers``).
    """
    runs = np.asarray(runs, np.int64)
    correct = np.asarray(correct, np.float64)
    accuracy, graded = [], []
    for run in range(num_runs):
        values = correct[(runs == run) & ~np.isnan(correct)]
        graded.append(int(values.size))
        accuracy.append(float(values.mean()) if values.size else math.nan)
    finite = [value for value in accuracy if not math.isnan(value)]
    if not finite:
        raise ValueError("no GPQA answer could be graded")
    mean, low, high = mean_confidence_interval(finite)
    low, high = max(low, 0.0), min(high, 1.0)  # An accuracy interval stays in [0, 1] (NaN kept).
    counts = {method: 0 for method in EXTRACTION_METHODS}
    for method in methods:
        counts[method] += 1
    return {
        "accuracy": mean,
        "ci95_low": low,
        "ci95_high": high,
        "num_runs": num_runs,
        "run_accuracy": accuracy,
        "run_graded": graded,
        "runs_without_graded_answers": len(accuracy) - len(finite),
        "answers": int(correct.size),
        "ungraded": int(np.isnan(correct).sum()),
        "methods": counts,
    }


def evaluate_gpqa(
    items: Sequence[GpqaItem],
    policy: Policy,
    judge: TextGenerationBackend | None,
    *,
    num_runs: int,
    use_verifier: bool,
    verifier_max_tokens: int,
    templates_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
) -> GpqaResult:
    """Answers, grades and summarises the items (see the module docstring)."""
    conversations: list[list[Mapping[str, str]]] = [
        [{"role": "user", "content": item.prompt()}] for item in items
    ]
    answered = policy.answer(conversations)
    if len(answered.texts) != len(items):
        raise ValueError(f"policy returned {len(answered.texts)} answers for {len(items)} items")
    grades = grade_gpqa(items, answered.texts, judge, use_verifier=use_verifier,
                        max_tokens=verifier_max_tokens, templates_dir=templates_dir,
                        chunk_size=chunk_size)
    summary = gpqa_summary([item.run for item in items], grades.correct, grades.methods,
                           num_runs)
    return GpqaResult(list(items), list(answered.texts), list(answered.finish_reasons), grades,
                      summary)
