"""Rubric generation with validation and retries, for any backend that writes text.

Shared by ``rar-rubrics`` (:mod:`rar_jax.judges.rubric_files`) and ``rar-judge-alignment``
(rubrics generated without the reference). Each :class:`Question` gets the rubric-generation
prompt of :func:`rar_jax.judges.prompts.rubric_generation_prompt`; every reply is parsed and
validated by :func:`validate_rubric` (:func:`rar_jax.judges.parsing.parse_rubric` plus the
:class:`~rar_jax.rubrics.schema.Rubric` schema checks). An invalid reply is retried up to
``max_attempts`` attempts in all: attempt 1 uses ``temperature`` and ``seed``; attempt a > 1 uses
``retry_temperature`` and seed ``seed + a - 1``, so a retry can differ from the reply before (and
is a new request for the HTTP cache). :func:`rubric_record` and :func:`failure_record` give the
output records of ``rar-rubrics``.

Input records (:func:`question_from_record` picks the kind, or is told it):

- ``"questions"``: ``question`` or ``prompt`` (a string, or a list of chat messages), optionally
  ``reference`` or ``reference_answer``; every other field is carried to the output (RaR records,
  e.g. ``rar-rubrics``' own output, are of this kind).
- ``"healthbench"``: a HealthBench record (``prompt`` = chat messages, ``prompt_id``,
  ``example_tags``, physician ``rubrics``, ``ideal_completions_data``; recognised by any of
  :data:`HEALTHBENCH_KEYS` and no ``question``). The reference is the ideal completion when
  there is one; the output keeps ``id`` (``prompt_id``, else ``_key``, else ``<file>:<line>``,
  the ids of ``read_examples(..., "healthbench")``), ``example_tags``, ``canary`` and
  ``physician_rubric_count``, but not the physician rubric nor the ideal completion data.

The generator sees :func:`question_text` of the conversation (a single user turn is its text, a
longer conversation the judges' tagged transcript,
:func:`rar_jax.judges.prompts.render_conversation`). The output's ``question`` is
:func:`question_field` of it (the text for a single user turn, else the message list), which
``read_examples(..., "rar")`` turns back into the same conversation, so the trainer sees the same
prompt as with the physician rubrics.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from rar_jax.data.examples import ChatMessage, optional_text, parse_conversation
from rar_jax.judges import parsing, prompts
from rar_jax.judges.backend import TextGenerationBackend
from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import Category, Polarity, RubricError, split_category_prefix

__all__ = [
    "HEALTHBENCH_KEYS",
    "INPUT_FORMATS",
    "Question",
    "TextGenerationBackend",
    "failure_record",
    "generate_rubrics",
    "input_format_of",
    "question_field",
    "question_from_healthbench_record",
    "question_from_questions_record",
    "question_from_record",
    "question_text",
    "rubric_record",
    "validate_rubric",
]

OUTPUT_PREVIEW_CHARS = 4000
# Input record kinds; "auto" picks one per record (:func:`input_format_of`).
INPUT_FORMATS = ("auto", "questions", "healthbench")
# Fields only HealthBench records have: any of them (and no "question") makes an "auto" record
# a HealthBench one.
HEALTHBENCH_KEYS = ("prompt_id", "rubrics", "ideal_completions_data", "example_tags")


@dataclasses.dataclass
class Question:
    """One input record and its generation state.

    Attributes:
        source: ``"<file>:<line>"``.
        record: the input fields carried to the output record.
        question: the question text shown to the generator.
        reference: the reference answer shown to the generator, or None.
        prompt: the output's ``question`` field (:func:`question_field` of a conversation), or
            None for ``question`` itself.
        reasons: why each attempt so far failed, in order.
        items: the valid rubric items once an attempt succeeded.
        last_output: the latest reply.
    """

    source: str
    record: dict[str, Any]
    question: str
    reference: str | None
    prompt: str | list[dict[str, str]] | None = None
    reasons: list[str] = dataclasses.field(default_factory=list)
    items: list[dict[str, Any]] | None = None
    last_output: str = ""


def question_text(conversation: Sequence[ChatMessage]) -> str:
    """What the generator is asked about: a single user turn as its text, a longer conversation
    as the judges' tagged transcript (:func:`rar_jax.judges.prompts.render_conversation`)."""
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return conversation[0]["content"]
    return prompts.render_conversation(conversation)


def question_field(conversation: Sequence[ChatMessage]) -> str | list[dict[str, str]]:
    """The RaR ``question`` field of a conversation: a single user turn as its text, else the
    messages ``[{role, content}, ...]``; ``read_examples(..., "rar")`` reads either back into
    ``conversation``."""
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return conversation[0]["content"]
    return [{"role": m["role"], "content": m["content"]} for m in conversation]


def input_format_of(record: Mapping[str, Any]) -> str:
    """``"healthbench"`` when the record has no ``question`` but any of :data:`HEALTHBENCH_KEYS`,
    else ``"questions"`` (so ``rar-rubrics``' own output, which keeps ``example_tags``, reads back
    as questions)."""
    if "question" in record:
        return "questions"
    return "healthbench" if any(key in record for key in HEALTHBENCH_KEYS) else "questions"


def _text_field(record: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any]:
    """The first of ``names`` the record has and its value, or ``("", None)``."""
    for name in names:
        if name in record:
            return name, record[name]
    return "", None


def question_from_questions_record(
    record: Mapping[str, Any], source: str, *, use_reference: bool
) -> Question:
    """A ``questions`` record -> Question; RubricError naming ``source`` and the field if bad.

    ``question`` / ``prompt``: a non-empty string or chat messages ending with a user turn.
    ``reference`` / ``reference_answer``: a string, optional. The other fields are carried over.
    """
    field, value = _text_field(record, ("question", "prompt"))
    if not field:
        raise RubricError(f"{source}: question: expected a 'question' or 'prompt' field")
    if isinstance(value, list):
        conversation = parse_conversation(value, source, field)
        text, prompt = question_text(conversation), question_field(conversation)
    elif isinstance(value, str) and value.strip():
        text, prompt = value, None
    else:
        raise RubricError(
            f"{source}: {field}: expected a non-empty string or a list of chat messages, got "
            f"{type(value).__name__} {value!r:.60}"
        )
    field, reference = _text_field(record, ("reference", "reference_answer"))
    if reference is not None and not isinstance(reference, str):
        raise RubricError(f"{source}: {field}: expected a string, got {type(reference).__name__}")
    if not use_reference or reference is None or not reference.strip():
        reference = None
    return Question(source, dict(record), text, reference, prompt=prompt)


def question_from_healthbench_record(
    record: Mapping[str, Any], source: str, *, use_reference: bool, example_id: str | None = None
) -> Question:
    """A HealthBench record -> Question; RubricError naming ``source`` and the field if bad.

    Args:
        record: ``prompt`` (chat messages ending with a user turn), optionally ``prompt_id``,
            ``example_tags`` (strings), ``rubrics`` (a list; only counted), ``canary`` and
            ``ideal_completions_data`` (null or an object whose ``ideal_completion`` is the
            reference).
        source: ``"<file>:<line>"`` for errors and the fallback id.
        use_reference: show the ideal completion to the generator when there is one.
        example_id: the id to keep (a built data set's ``example_id``); default the reader's
            rule: ``prompt_id``, else ``_key``, else ``source``.
    """
    conversation = parse_conversation(record.get("prompt"), source, "prompt")
    ideal = record.get("ideal_completions_data")
    if ideal is not None and not isinstance(ideal, Mapping):
        raise RubricError(
            f"{source}: ideal_completions_data: expected an object or null, got "
            f"{type(ideal).__name__}"
        )
    reference = optional_text(
        (ideal or {}).get("ideal_completion"), source, "ideal_completions_data.ideal_completion"
    )
    tags = record.get("example_tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RubricError(f"{source}: example_tags: expected a list of strings, got {tags!r:.80}")
    rubrics = record.get("rubrics")
    if rubrics is not None and not isinstance(rubrics, list):
        raise RubricError(f"{source}: rubrics: expected a list, got {type(rubrics).__name__}")
    if example_id is None:
        example_id = str(record.get("prompt_id") or record.get("_key") or source)
    kept: dict[str, Any] = {"id": example_id, "example_tags": tags}
    if record.get("canary"):
        kept["canary"] = record["canary"]
    if rubrics is not None:
        kept["physician_rubric_count"] = len(rubrics)
    return Question(
        source,
        kept,
        question_text(conversation),
        reference if use_reference else None,
        prompt=question_field(conversation),
    )


def question_from_record(
    record: Mapping[str, Any],
    source: str,
    *,
    use_reference: bool,
    input_format: str = "auto",
    example_id: str | None = None,
) -> Question:
    """One input record -> Question, by ``input_format`` (one of :data:`INPUT_FORMATS`).

    Args:
        record: the JSON object.
        source: ``"<file>:<line>"``, named by every error.
        use_reference: show the record's reference answer to the generator when it has one.
        input_format: ``"questions"``, ``"healthbench"`` or ``"auto"`` (:func:`input_format_of`).
        example_id: HealthBench only: the id to keep instead of the record's own.

    Raises:
        RubricError: naming ``source`` and the field when the record is malformed.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(
            f"input_format: expected one of {', '.join(INPUT_FORMATS)}, got {input_format!r}"
        )
    if not isinstance(record, Mapping):
        raise RubricError(f"{source}: expected a JSON object, got {type(record).__name__}")
    kind = input_format_of(record) if input_format == "auto" else input_format
    if kind == "healthbench":
        return question_from_healthbench_record(
            record, source, use_reference=use_reference, example_id=example_id
        )
    return question_from_questions_record(record, source, use_reference=use_reference)


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
        question=question.question if question.prompt is None else question.prompt,
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


