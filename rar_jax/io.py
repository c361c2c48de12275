"""JSONL, the project's one record format on disk: reading with file:line errors, strict writing.

Every JSONL file the project reads (data sets, answers to judge, rubrics) goes through
:func:`iter_jsonl` (or :func:`iter_jsonl_values` where bad lines are collected, not raised), and
every JSONL file it writes goes through :func:`jsonl_line` / :func:`write_jsonl`: strict JSON
(NaN and infinities become ``null``, numpy values become Python ones), UTF-8 kept as is.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

import numpy as np

from rar_jax.errors import UserError


class JsonlError(UserError, ValueError):
    """A JSONL line that is not a JSON object; the message starts with ``<file>:<line>:``."""


def json_safe(value: Any) -> Any:
    """``value`` made strict JSON, recursively: NaN / inf -> None, numpy scalars -> Python,
    tuples -> lists and mapping keys -> str (for ``json.dumps(..., allow_nan=False)``)."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def jsonl_line(record: Mapping[str, Any]) -> str:
    """One JSONL line (with its newline) holding ``record`` as strict JSON."""
    return json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False) + "\n"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """A text file for writing whose content replaces ``path`` only once it is whole.

    The folder is created if missing; the text goes to a temporary file beside ``path`` that
    replaces it when the block ends without an exception, so a crash never leaves half a file.
    """
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            yield file
        os.replace(temporary, target)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Writes ``records`` to ``path`` atomically: a reader sees the old file or the whole new one."""
    with atomic_open(path) as file:
        for record in records:
            file.write(jsonl_line(record))


def iter_jsonl_values(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any, str | None]]:
    """Yields ``(line_number, value, problem)`` for every non-blank line (1-based numbers).

    ``problem`` is None for a JSON object, else why the line is unusable (``value`` is then the
    parsed non-object, or None for invalid JSON). For readers that collect bad lines.
    """
    with open(os.fspath(path), encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield line_number, None, f"invalid JSON: {error.msg} (column {error.colno})"
                continue
            if not isinstance(value, dict):
                yield line_number, value, f"expected a JSON object, got {type(value).__name__}"
                continue
            yield line_number, value, None


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line_number, object)`` for every non-blank line of a JSONL file (1-based lines).

    Raises:
        JsonlError: naming the file and line, for invalid JSON or a line that is not an object.
    """
    name = os.fspath(path)
    for line_number, value, problem in iter_jsonl_values(name):
        if problem is not None:
            raise JsonlError(f"{name}:{line_number}: {problem}")
        yield line_number, value



class RecordErrors(UserError, ValueError):
    """Bad records of an input; one line per record, each naming file, line and field."""


# Bad records listed in one RecordErrors message.
MAX_LISTED_ERRORS = 10


def check_records(
    rows: Iterable[Any], check: Callable[[Any], Any], *, limit: int = 0,
    max_errors: int = MAX_LISTED_ERRORS,
) -> list[Any]:
    """``check`` of every row (None = left out); every bad row is found before one error.

    Args:
        rows: the input rows, in order (e.g. ``(line, record)`` of :func:`iter_jsonl`).
        check: row -> item, None to leave the row out, or a ValueError naming file, line and
            field.
        limit: stop after this many rows were kept or failed (0 = all).
        max_errors: how many errors the raised message lists.

    Raises:
        RecordErrors listing the first ``max_errors`` errors and how many more there are.
    """
    items: list[Any] = []
    errors: list[str] = []
    for row in rows:
        try:
            item = check(row)
        except ValueError as error:
            errors.append(str(error))
        else:
            if item is not None:
                items.append(item)
        if limit and len(items) + len(errors) >= limit:
            break
    if errors:
        more = len(errors) - max_errors
        shown = errors[:max_errors] + ([f"... and {more} more bad records"] if more > 0 else [])
        raise RecordErrors("\n".join(shown))
    return items


def append_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Appends ``records`` to ``path`` (created with its folder if missing), flushed at the end."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as file:
        for record in records:
            file.write(jsonl_line(record))


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Writes ``value`` as indented strict JSON (a report), atomically like :func:`write_jsonl`."""
    with atomic_open(path) as file:
        file.write(json.dumps(json_safe(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
