"""Examples for training and judging, read from the released record formats.

An :class:`Example` is what the policy answers and the judge scores: the conversation (chat
messages ending with a user turn), the rubric (None for rubric-free rewards), the reference
answer (None when the data has none) and a stable id. Readers per format:

- ``"healthbench"``: ``prompt`` messages, physician ``rubrics``, reference = the ideal completion
  when the record has one, id = ``prompt_id`` (or ``_key`` for RuscaRL-only records);
- ``"rar"``: the ``question`` (a string = one user turn, or chat messages: ``rar-rubrics`` writes
  multi-turn HealthBench prompts so), the weighted rubric, ``reference_answer`` (an
  empty one becomes None: 9.5% of RaR-Science records have none), id = ``<file>:<line>``;
- ``"kqa"``: ``Question``, Must_have / Nice_to_have statements, ``Free_form_answer``.

:class:`ExampleStream` serves batches in a seeded order that reshuffles every epoch; its
``position`` (examples served so far) is all a checkpoint needs to resume the same order.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ml_collections import config_dict

from rar_jax.rubrics.ablations import AblationLeavesNoCriteria, apply_rubric_ablation
from rar_jax.io import iter_jsonl_values
from rar_jax.rubrics.readers import (
    rubric_from_healthbench_record,
    rubric_from_kqa_record,
    rubric_from_rar_record,
)
from rar_jax.rubrics.schema import Rubric, RubricError

logger = logging.getLogger(__name__)

# Bad records named in one error message (all are counted).
MAX_LISTED_PROBLEMS = 20

ChatMessage = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt with what its answers are judged against.

    Attributes:
        conversation: chat messages ({"role", "content"}) ending with a user turn.
        rubric: the checklist, or None.
        reference: the reference answer, or None.
        example_id: a stable id (the data's own id, else ``<file>:<line>``).
    """

    conversation: tuple[ChatMessage, ...]
    rubric: Rubric | None
    reference: str | None
    example_id: str


def parse_conversation(value: Any, source: str, field: str) -> tuple[ChatMessage, ...]:
    """A chat (a string = one user turn, or a list of {role, content}) ending with a user turn.

    Raises:
        RubricError: naming ``source`` (file:line) and ``field``.
    """
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RubricError(f"{source}: {field}: expected a non-empty list of chat messages")
    for index, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise RubricError(
                f"{source}: {field}[{index}]: expected {{'role': system|user|assistant, "
                f"'content': str}}, got {message!r:.80}"
            )
    if value[-1]["role"] != "user":
        raise RubricError(f"{source}: {field}: the last message must be a user turn")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def optional_text(value: Any, source: str, field: str) -> str | None:
    """A string field that may be absent: None for a missing or blank value; a non-string is an
    error naming ``source`` and ``field``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RubricError(f"{source}: {field}: expected a string, got {type(value).__name__}")
    return value if value.strip() else None


def example_from_healthbench_record(record: Mapping[str, Any], source: str, **_: Any) -> Example:
    """A HealthBench record -> Example (reference = ideal completion if present)."""
    ideal = record.get("ideal_completions_data") or {}
    reference = optional_text(ideal.get("ideal_completion"), source, "ideal_completions_data")
    example_id = record.get("prompt_id") or record.get("_key") or source
    return Example(
        parse_conversation(record.get("prompt"), source, "prompt"),
        rubric_from_healthbench_record(record, source=source),
        reference,
        str(example_id),
    )


def example_from_rar_record(
    record: Mapping[str, Any], source: str, *, pitfall_polarity: str | None = None, **_: Any
) -> Example:
    """A RaR record -> Example (the question as one user turn, or its chat messages).

    The id is the record's ``id`` (``rar-rubrics`` keeps HealthBench's ``prompt_id`` there), else
    ``source``.
    """
    return Example(
        parse_conversation(record.get("question"), source, "question"),
        rubric_from_rar_record(record, pitfall_polarity=pitfall_polarity, source=source),
        optional_text(record.get("reference_answer"), source, "reference_answer"),
        str(record.get("id") or source),
    )


def example_from_kqa_record(record: Mapping[str, Any], source: str, **_: Any) -> Example:
    """A K-QA record -> Example (Must_have / Nice_to_have as the rubric)."""
    return Example(
        parse_conversation(record.get("Question"), source, "Question"),
        rubric_from_kqa_record(record, source=source),
        optional_text(record.get("Free_form_answer"), source, "Free_form_answer"),
        source,
    )


EXAMPLE_READERS: dict[str, Callable[..., Example]] = {
    "healthbench": example_from_healthbench_record,
    "rar": example_from_rar_record,
    "kqa": example_from_kqa_record,
}


def read_examples(
    path: str | os.PathLike[str],
    format_name: str,
    *,
    rubric: config_dict.ConfigDict | None = None,
    limit: int = 0,
) -> list[Example]:
    """Reads a JSONL file of ``format_name`` records into Examples.

    Args:
        path: the JSONL file.
        format_name: a key of ``EXAMPLE_READERS``.
        rubric: the ``rubric`` config section (pitfall polarity default, ablation); None keeps
            the rubrics as read and requires every RaR pitfall to carry its own polarity.
        limit: read at most this many records (0 = all).
    """
    if format_name not in EXAMPLE_READERS:
        raise ValueError(
            f"unknown data format {format_name!r}; expected one of {', '.join(EXAMPLE_READERS)}"
        )
    reader = EXAMPLE_READERS[format_name]
    polarity = None if rubric is None else rubric.pitfall_polarity
    name = os.fspath(path)
    examples, problems = [], []
    for line, record, problem in iter_jsonl_values(name):
        try:
            if problem is not None:
                raise RubricError(f"{name}:{line}: {problem}")
            example = reader(record, f"{name}:{line}", pitfall_polarity=polarity)
        except RubricError as error:
            problems.append(str(error))
            continue
        examples.append(example)
        if limit and len(examples) + len(problems) >= limit:
            break
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise RubricError(
            f"{len(problems)} bad record(s) in {name} read as data.format={format_name!r} "
            "(is that the file's format?): " + "; ".join(shown)
            + (f"; and {more} more" if more else "")
        )
    if not examples:
        raise ValueError(f"{name}: no records")
    return examples if rubric is None else ablated_examples(examples, rubric.ablation, name)


def ablated_examples(examples: Sequence[Example], ablation: str, source: str) -> list[Example]:
    """``examples`` with ``ablation`` (``rubric.ablation``) applied to their rubrics; an example
    the ablation leaves without criteria is left out, and how many were is logged.

    Raises:
        RubricError: naming ``source``, when the ablation leaves no example at all.
    """
    kept, skipped = [], []
    for example in examples:
        if example.rubric is None:
            kept.append(example)
            continue
        try:
            rubric = apply_rubric_ablation(example.rubric, ablation)
        except AblationLeavesNoCriteria:
            skipped.append(example.example_id)
            continue
        kept.append(dataclasses.replace(example, rubric=rubric))
    if skipped:
        logger.warning(
            "%s: rubric.ablation=%s leaves no criteria in %d of %d examples; they are left out "
            "(%s%s)", source, ablation, len(skipped), len(examples), ", ".join(skipped[:5]),
            " ..." if len(skipped) > 5 else "")
    if not kept:
        raise RubricError(f"{source}: rubric.ablation={ablation} leaves no criteria in any of "
                          f"its {len(examples)} examples")
    return kept


class ExampleStream:
    """Batches of examples in a seeded order, reshuffled every epoch, resumable by position.

    Args:
        examples: the data set.
        seed: seed of the order (epoch e uses ``default_rng([seed, e])``).
        position: examples already served (0 for a new run; a checkpoint's value to resume).
    """

    def __init__(self, examples: Sequence[Example], *, seed: int, position: int = 0):
        if not examples:
            raise ValueError("ExampleStream needs at least one example")
        self.examples = list(examples)
        self.seed = seed
        self.position = position
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            self._orders = {epoch: rng.permutation(len(self.examples))}
        return self._orders[epoch]

    def next_batch(self, size: int) -> list[Example]:
        """The next ``size`` examples (crossing into the next epoch's order when needed)."""
        batch = []
        for index in range(self.position, self.position + size):
            epoch, offset = divmod(index, len(self.examples))
            batch.append(self.examples[self._order(epoch)[offset]])
        self.position += size
        return batch
