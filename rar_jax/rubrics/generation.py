"""Rubric generation with validation and retries, for any backend that writes text.

Shared by ``rar-rubrics`` (:mod:`rar_jax.experiments.rubrics`) and ``rar-judge-alignment``
(rubrics generated without the reference). Each :class:`Question` gets the rubric-generation
prompt of :func:`rar_jax.judges.prompts.rubric_generation_prompt`; every reply is parsed and
validated by :func:`validate_rubric` (:func:`rar_jax.judges.parsing.parse_rubric` plus the
:class:`~rar_jax.rubrics.schema.Rubric` schema checks). An invalid reply is retried up to
``max_attempts`` attempts in all: attempt 1 uses ``temperature`` and ``seed``; attempt a > 1 uses
``retry_temperature`` and seed ``seed + a - 1``, so a retry can differ from the reply before (and
is a new request for the HTTP cache). :func:`rubric_record` and :func:`failure_record` give the
output records of ``rar-rubrics``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from rar_jax.judges import parsing, prompts
from rar_jax.judges.jax_backend import TextGenerationBackend
from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import Category, Polarity, RubricError, split_category_prefix

__all__ = [
    "Question",
    "TextGenerationBackend",
    "failure_record",
    "generate_rubrics",
    "rubric_record",
    "validate_rubric",
]

OUTPUT_PREVIEW_CHARS = 4000


@dataclasses.dataclass
class Question:
    """One input record and its generation state.

    Attributes:
        source: ``"<file>:<line>"``.
        record: the input JSON object.
        question: the question text.
        reference: the reference answer shown to the generator, or None.
        reasons: why each attempt so far failed, in order.
        items: the valid rubric items once an attempt succeeded.
        last_output: the latest reply.
    """

    source: str
    record: dict[str, Any]
    question: str
    reference: str | None
    reasons: list[str] = dataclasses.field(default_factory=list)
    items: list[dict[str, Any]] | None = None
    last_output: str = ""


def validate_rubric(
    text: str, *, min_items: int, max_items: int, pitfall_polarity: str
) -> parsing.ParseResult[list[dict[str, Any]]]:
    """Parses a reply into rubric items ``{title, description, weight, polarity}``, or a reason.

    The items are built into a Rubric (schema checks) with pitfalls of ``pitfall_polarity``.
    """
    parsed = parsing.parse_rubric(text, min_items=min_items, max_items=max_items)
    if not parsed.ok:
        return parsed
    items = []
    for item in parsed.value:
        category, _ = split_category_prefix(item["description"])
        polarity = pitfall_polarity if category is Category.PITFALL else Polarity.POSITIVE.value
        items.append({**item, "polarity": polarity})
    try:
        rubric_from_rar_record({"rubric": items}, pitfall_polarity=None, source="generated")
    except RubricError as error:
        return parsing.ParseResult(None, str(error).removeprefix("generated: "))
    return parsing.ParseResult(items)


def generate_rubrics(
    backend: TextGenerationBackend,
    questions: Sequence[Question],
    *,
    domain: str,
    templates_dir: str | None,
    max_attempts: int,
    max_tokens: int,
    temperature: float,
    retry_temperature: float,
    seed: int,
    batch_size: int,
    min_items: int,
    max_items: int,
    pitfall_polarity: str,
) -> None:
    """Generates, validates and retries until every question has a rubric or no attempts are left.

    Updates each :class:`Question` in place (``items`` on success, ``reasons`` per failed
    attempt, ``last_output``).
    """
    import tqdm

    messages = [
        prompts.rubric_generation_prompt(
            q.question, q.reference, domain=domain, templates_dir=templates_dir
        ).messages
        for q in questions
    ]
    pending = list(range(len(questions)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        attempt_temperature = temperature if attempt == 1 else retry_temperature
        attempt_seed = seed + attempt - 1
        with tqdm.tqdm(total=len(pending), desc=f"rubrics, attempt {attempt}", unit="q") as bar:
            for start in range(0, len(pending), batch_size):
                chunk = pending[start : start + batch_size]
                result = backend.generate_texts(
                    [messages[i] for i in chunk],
                    max_tokens=max_tokens,
                    temperature=attempt_temperature,
                    seed=attempt_seed,
                )
                errors = result.errors or [None] * len(chunk)
                for offset, index in enumerate(chunk):
                    question = questions[index]
                    text = result.texts[offset]
                    question.last_output = text
                    if errors[offset] is not None:
                        question.reasons.append(f"request failed: {errors[offset]}")
                        continue
                    parsed = validate_rubric(
                        text,
                        min_items=min_items,
                        max_items=max_items,
                        pitfall_polarity=pitfall_polarity,
                    )
                    if parsed.ok:
                        question.items = parsed.value
                    else:
                        cut = (
                            " (cut at max_tokens)"
                            if result.finish_reasons[offset] == "length"
                            else ""
                        )
                        question.reasons.append(f"invalid rubric{cut}: {parsed.reason}")
                bar.update(len(chunk))
        failed = sum(questions[i].items is None for i in pending)
        logging.info("attempt %d: %d of %d replies invalid", attempt, failed, len(pending))
        pending = [i for i in pending if questions[i].items is None]


def rubric_record(question: Question) -> dict[str, Any]:
    """The RaR-format output record of a question with a valid rubric."""
    assert question.items is not None
    record = {k: v for k, v in question.record.items() if k not in ("prompt", "reference")}
    record.update(
        question=question.question,
        reference_answer=question.reference or "",
        rubric=question.items,
        rubric_list=[item["description"] for item in question.items],
        rubric_count=len(question.items),
        rubric_attempts=len(question.reasons) + 1,
        rubric_with_reference=question.reference is not None,
    )
    return record


def failure_record(question: Question) -> dict[str, Any]:
    """The failures-file record of a question without a valid rubric."""
    record = {
        "source": question.source,
        "question": question.question,
        "attempts": [
            {"attempt": number, "reason": reason}
            for number, reason in enumerate(question.reasons, start=1)
        ],
        "last_output": question.last_output[:OUTPUT_PREVIEW_CHARS],
    }
    if "id" in question.record:
        record = {"id": question.record["id"], **record}
    return record


