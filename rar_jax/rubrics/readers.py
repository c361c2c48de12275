"""Readers: JSON records of the supported data sets -> :class:`~rar_jax.rubrics.schema.Rubric`.

Formats (picked by name from ``RUBRIC_READERS``):

- ``"rar"``: RaR-Medicine / RaR-Science records. Native schema
  ``{question, reference_answer, question_source, rubric: [{title, description, weight}],
  rubric_list, rubric_count}`` where each description starts with its category
  ("Essential Criteria: ...", "Important ...", "Optional ...", "Pitfall ..."); the prefix is
  removed from the stored description. Also the rubric_harness export format, where each item
  carries ``category`` ("Essential", ...) and ``polarity`` keys and the description has no prefix,
  and the count is ``n_criteria``. Polarity: an item-level ``polarity`` key wins; otherwise
  non-pitfalls are positive and pitfalls get the reader's ``pitfall_polarity`` argument, the
  per-dataset default (config ``rubric.pitfall_polarity``). Nothing is guessed from wording.
  ``PITFALL_POLARITY_DEFAULTS`` lists the majority polarity of each released set.
- ``"healthbench"``: ``{rubrics: [{criterion, points, tags}], ...}``: weight = points, polarity
  negative for negative points, no category, tags kept, empty title.
- ``"kqa"``: K-QA ``{Must_have: [str], Nice_to_have: [str], ...}``. Our choice (K-QA has no
  weights): a Must_have statement is an Essential criterion of weight ``KQA_MUST_HAVE_WEIGHT`` (5,
  the RaR Essential weight) and a Nice_to_have statement an Optional criterion of weight
  ``KQA_NICE_TO_HAVE_WEIGHT`` (1, the low end of RaR Optional), both positive. The released file
  holds three blank Must_have statements; ``skip_blank_statements`` (default True) drops them with
  a logged warning, False makes them an error.

Every problem raises :class:`RubricError` (a ``ValueError``) whose message names the file, the
1-based line number, the field path and what was expected, e.g.
``rar_medicine.jsonl:3: rubric[4].description: expected a category prefix like
'Essential Criteria:'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from ml_collections import config_dict

from rar_jax.io import iter_jsonl
from rar_jax.rubrics.ablations import apply_rubric_ablation
from rar_jax.rubrics.schema import (
    Category,
    Criterion,
    Polarity,
    Rubric,
    RubricError,
    criterion_problems,
    split_category_prefix,
)

__all__ = [
    "KQA_MUST_HAVE_WEIGHT",
    "KQA_NICE_TO_HAVE_WEIGHT",
    "PITFALL_POLARITY_DEFAULTS",
    "RUBRIC_READERS",
    "RubricError",
    "RubricRecord",
    "iter_rubric_records",
    "parse_polarity",
    "read_rubrics",
    "read_rubrics_for_config",
    "rubric_from_healthbench_record",
    "rubric_from_kqa_record",
    "rubric_from_rar_record",
]

logger = logging.getLogger(__name__)

KQA_MUST_HAVE_WEIGHT = 5.0
KQA_NICE_TO_HAVE_WEIGHT = 1.0

# Majority pitfall polarity of the released RaR sets (rubric_harness's count: 80.3 % of
# RaR-Science pitfalls are "do/avoid" statements, 88.1 % of RaR-Medicine pitfalls are failures).
# A default for items without their own polarity, not a rule: per-item polarity overrides it.
PITFALL_POLARITY_DEFAULTS: dict[str, Polarity] = {
    "rar_medicine": Polarity.NEGATIVE,
    "rar_science": Polarity.POSITIVE,
}


class RubricRecord(NamedTuple):
    """One record of a rubric file: where it is, the raw JSON object and its rubric."""

    line: int
    record: dict[str, Any]
    rubric: Rubric


def _fail(source: str, field: str, message: str) -> RubricError:
    return RubricError(f"{source}: {field}: {message}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _get(
    mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], source: str, field: str
) -> Any:
    """Returns ``mapping[key]``, raising a RubricError naming ``field`` if absent or mistyped."""
    if key not in mapping:
        raise _fail(source, field, "missing required field")
    value = mapping[key]
    names = {str: "a string", list: "a list", dict: "an object"}
    if not isinstance(value, kind):
        expected = names.get(kind, str(kind)) if isinstance(kind, type) else str(kind)
        raise _fail(source, field, f"expected {expected}, got {_describe(value)}")
    return value


def parse_polarity(value: Polarity | str) -> Polarity:
    """``"positive"`` / ``"negative"`` (or a Polarity) -> Polarity; ValueError otherwise."""
    if isinstance(value, Polarity):
        return value
    try:
        return Polarity(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in Polarity)
        raise ValueError(f"unknown polarity {value!r}; expected one of {choices}") from None


def _check_criterion(
    source: str,
    field_paths: Mapping[str, str],
    title: Any,
    description: Any,
    category: Category | None,
    weight: Any,
    polarity: Polarity,
    tags: tuple[str, ...] = (),
) -> Criterion:
    """Validates fields with :func:`criterion_problems`, naming the file's field on failure."""
    problems = criterion_problems(title, description, category, weight, polarity, tags)
    if problems:
        field, message = problems[0]
        raise _fail(source, field_paths.get(field, field), message)
    return Criterion(title, description, category, float(weight), polarity, tags)


def _check_count(record: Mapping[str, Any], key: str, actual: int, source: str) -> None:
    if key not in record:
        return
    count = record[key]
    if isinstance(count, bool) or not isinstance(count, int):
        raise _fail(source, key, f"expected an integer, got {_describe(count)}")
    if count != actual:
        raise _fail(source, key, f"expected {actual} (the number of rubric items), got {count}")


def rubric_from_rar_record(
    record: Mapping[str, Any],
    *,
    pitfall_polarity: Polarity | str | None,
    source: str = "<record>",
) -> Rubric:
    """Reads a RaR record (native or rubric_harness format) into a Rubric.

    Args:
        record: the parsed JSON object.
        pitfall_polarity: polarity of Pitfall items that carry no ``polarity`` key of their own
            ("negative" fits most RaR-Medicine pitfalls, "positive" most RaR-Science ones).
            None: every pitfall must carry its own ``polarity``.
        source: where the record is, e.g. ``"file.jsonl:3"``; starts every error message.
    """
    default = None if pitfall_polarity is None else parse_polarity(pitfall_polarity)
    items = _get(record, "rubric", list, source, "rubric")
    _check_count(record, "rubric_count", len(items), source)
    _check_count(record, "n_criteria", len(items), source)
    criteria = []
    for index, item in enumerate(items):
        path = f"rubric[{index}]"
        if not isinstance(item, dict):
            raise _fail(source, path, f"expected an object, got {_describe(item)}")
        title = _get(item, "title", str, source, f"{path}.title")
        text = _get(item, "description", str, source, f"{path}.description")
        if "category" in item:
            name = _get(item, "category", str, source, f"{path}.category")
            try:
                category: Category | None = Category(name.strip().lower())
            except ValueError:
                choices = ", ".join(c.value.capitalize() for c in Category)
                raise _fail(
                    source, f"{path}.category", f"expected one of {choices}, got {name!r}"
                ) from None
            description = text
            category_field = f"{path}.category"
        else:
            category, description = split_category_prefix(text)
            if category is None:
                raise _fail(
                    source,
                    f"{path}.description",
                    f"expected a category prefix like {Category.ESSENTIAL.prefix.strip()!r}, "
                    f"got {text[:40]!r}",
                )
            category_field = f"{path}.description"
        if "weight" not in item:
            raise _fail(source, f"{path}.weight", "missing required field")
        if "polarity" in item:
            label = _get(item, "polarity", str, source, f"{path}.polarity")
            try:
                polarity = parse_polarity(label)
            except ValueError as error:
                raise _fail(source, f"{path}.polarity", str(error)) from None
            polarity_field = f"{path}.polarity"
        elif category is Category.PITFALL:
            if default is None:
                raise _fail(
                    source,
                    f"{path}.polarity",
                    "missing: a Pitfall item needs its own polarity when no pitfall_polarity "
                    "default is given",
                )
            polarity = default
            polarity_field = f"{path}.polarity (pitfall_polarity={default.value!r})"
        else:
            polarity = Polarity.POSITIVE
            polarity_field = f"{path}.polarity"
        paths = {
            "title": f"{path}.title",
            "description": f"{path}.description",
            "category": category_field,
            "weight": f"{path}.weight",
            "polarity": polarity_field,
        }
        criteria.append(
            _check_criterion(source, paths, title, description, category, item["weight"], polarity)
        )
    return _make_rubric(criteria, source, "rubric")


def rubric_from_healthbench_record(
    record: Mapping[str, Any], *, source: str = "<record>"
) -> Rubric:
    """Reads a HealthBench record's ``rubrics`` into an uncategorised Rubric (weight = points)."""
    items = _get(record, "rubrics", list, source, "rubrics")
    criteria = []
    for index, item in enumerate(items):
        path = f"rubrics[{index}]"
        if not isinstance(item, dict):
            raise _fail(source, path, f"expected an object, got {_describe(item)}")
        text = _get(item, "criterion", str, source, f"{path}.criterion")
        if "points" not in item:
            raise _fail(source, f"{path}.points", "missing required field")
        points = item["points"]
        tags = _get(item, "tags", list, source, f"{path}.tags") if "tags" in item else []
        for tag_index, tag in enumerate(tags):
            if not isinstance(tag, str):
                raise _fail(
                    source, f"{path}.tags[{tag_index}]", f"expected a string, got {_describe(tag)}"
                )
        negative = isinstance(points, (int, float)) and not isinstance(points, bool) and points < 0
        polarity = Polarity.NEGATIVE if negative else Polarity.POSITIVE
        paths = {
            "description": f"{path}.criterion",
            "weight": f"{path}.points",
            "polarity": f"{path}.points",
            "tags": f"{path}.tags",
        }
        criteria.append(
            _check_criterion(source, paths, "", text, None, points, polarity, tuple(tags))
        )
    return _make_rubric(criteria, source, "rubrics")


def rubric_from_kqa_record(
    record: Mapping[str, Any],
    *,
    source: str = "<record>",
    skip_blank_statements: bool = True,
) -> Rubric:
    """Reads a K-QA record: Must_have -> Essential (weight 5), Nice_to_have -> Optional (weight 1).

    Args:
        record: the parsed JSON object with ``Must_have`` and ``Nice_to_have`` string lists.
        source: where the record is; starts every message.
        skip_blank_statements: drop empty / whitespace-only statements with a logged warning
            (True) or raise (False).
    """
    criteria = []
    for key, category, weight in (
        ("Must_have", Category.ESSENTIAL, KQA_MUST_HAVE_WEIGHT),
        ("Nice_to_have", Category.OPTIONAL, KQA_NICE_TO_HAVE_WEIGHT),
    ):
        statements = _get(record, key, list, source, key)
        for index, statement in enumerate(statements):
            path = f"{key}[{index}]"
            if not isinstance(statement, str):
                raise _fail(source, path, f"expected a string, got {_describe(statement)}")
            if not statement.strip() and skip_blank_statements:
                logger.warning("%s: %s: skipping a blank K-QA statement", source, path)
                continue
            paths = {"description": path, "weight": path, "polarity": path}
            criteria.append(
                _check_criterion(source, paths, "", statement, category, weight, Polarity.POSITIVE)
            )
    return _make_rubric(criteria, source, "Must_have")


def _make_rubric(criteria: list[Criterion], source: str, field: str) -> Rubric:
    if not criteria:
        raise _fail(source, field, "expected at least one criterion")
    return Rubric(tuple(criteria), source)


# name -> function(record, *, source, **options) -> Rubric
RUBRIC_READERS: dict[str, Callable[..., Rubric]] = {
    "rar": rubric_from_rar_record,
    "healthbench": rubric_from_healthbench_record,
    "kqa": rubric_from_kqa_record,
}


def _get_reader(format_name: str) -> Callable[..., Rubric]:
    try:
        return RUBRIC_READERS[format_name]
    except KeyError:
        raise ValueError(
            f"unknown rubric format {format_name!r}; expected one of {', '.join(RUBRIC_READERS)}"
        ) from None


def iter_rubric_records(
    path: str | os.PathLike[str], format_name: str, **options: Any
) -> Iterator[RubricRecord]:
    """Yields every record of a JSONL file with its rubric.

    Args:
        path: the JSONL file.
        format_name: a key of ``RUBRIC_READERS`` ("rar", "healthbench", "kqa").
        **options: passed to the format's reader (e.g. ``pitfall_polarity`` for "rar").
    """
    reader = _get_reader(format_name)
    name = os.fspath(path)
    for line_number, record in iter_jsonl(name):
        rubric = reader(record, source=f"{name}:{line_number}", **options)
        yield RubricRecord(line_number, record, rubric)


def read_rubrics(path: str | os.PathLike[str], format_name: str, **options: Any) -> list[Rubric]:
    """Reads every rubric of a JSONL file (see :func:`iter_rubric_records`)."""
    return [item.rubric for item in iter_rubric_records(path, format_name, **options)]


def read_rubrics_for_config(
    path: str | os.PathLike[str], format_name: str, rubric: config_dict.ConfigDict
) -> list[Rubric]:
    """Reads a rubric file as the ``rubric`` config section says.

    ``rubric.pitfall_polarity`` is the default polarity of RaR pitfalls without their own (the
    other formats carry polarity in their data) and ``rubric.ablation`` filters every rubric.
    """
    options = {"pitfall_polarity": rubric.pitfall_polarity} if format_name == "rar" else {}
    return [
        apply_rubric_ablation(item, rubric.ablation)
        for item in read_rubrics(path, format_name, **options)
    ]
