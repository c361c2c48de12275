"""Shared parts of the TFDS builders: manual-dir files, row reading, validation, skip-and-count.

Every builder of this package reads files a user has downloaded (the TFDS *manual directory*),
validates each row with the same readers the JSONL path uses (``rar_jax.data.examples``), and
writes ``array_record`` files that ``tfds.data_source`` and grain read without TensorFlow.

Rows. :func:`iter_rows` reads JSONL (line numbers), parquet (1-based row numbers) and CSV (the
line on which a row starts; CSV fields may span lines) into :class:`Row` objects; a row that
cannot be parsed comes back with its ``error`` set instead of a record. Every row has a
``source`` ``"<file relative to the manual dir>:<line or row>"`` that starts every error message
and doubles as the example id of data sets without ids of their own.

Malformed rows. A conversion that fails raises :class:`MalformedRowError` (or the readers'
:class:`~rar_jax.rubrics.schema.RubricError`), whose message names the file, line and field.
By default the build stops on the first one; a config with ``skip_malformed=True`` skips the row
instead, logs the message and counts it in the dataset's ``metadata.json``
(``skipped_malformed`` per split, ``skipped_messages`` the first :data:`MAX_SKIP_MESSAGES`).
A row is never dropped silently: deduplication and blank rubric statements are counted there too.

Every split is prepared in memory (all the released files are small: RaR-Medicine, the
largest, is under 100 MB of JSON) before TFDS writes it, so the counts are known up front and
written to ``metadata.json`` beside ``dataset_info.json``. Records are written in file order
(``disable_shuffling=True``); training shuffles them with its own seeded stream.

``metadata.json`` always has ``rows_read`` (per split read from files), ``skipped_malformed``
and ``skipped_messages``, ``examples`` and ``missing_reference`` (per split written),
``empty_splits`` and ``files`` (the files read per split, relative to the manual directory);
each builder adds its own counts (deduplication, blank statements, seeds).

Features common to every data set (see :func:`common_features`):

- ``example_id`` (text): the data's own id, else ``source``;
- ``source`` (text): ``"<file>:<line>"``;
- ``format`` (text): the record layout, a key of ``rar_jax.data.examples.EXAMPLE_READERS`` or
  ``"gpqa"``;
- ``record`` (text): the row as JSON, exactly as read (the readers turn it into an Example at
  read time, so the rubric config, e.g. pitfall polarity and ablations, applies then);
- ``prompt`` (text): the last user message;
- ``has_reference`` (bool): False flags a row whose reference answer is missing or empty.

TensorFlow-free notes: a builder must not call ``dataset_info_from_configs`` (it reads metadata
files beside the module), must use ``file_format="array_record"`` (the default here; the tfrecord
reader needs TensorFlow), and ``tfds.list_builders()`` / ``tfds.load`` import TensorFlow.
TFDS refuses a split with no examples, so an empty split is left out and named in
``metadata.json`` (``empty_splits``).
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import logging
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from rar_jax.io import iter_jsonl_values
from rar_jax.rubrics.schema import RubricError

logger = logging.getLogger(__name__)

__all__ = [
    "BuilderConfig",
    "MAX_SKIP_MESSAGES",
    "MalformedRowError",
    "RarJaxBuilder",
    "Row",
    "common_features",
    "config_name",
    "find_split_files",
    "iter_rows",
    "require_text",
]

# How many skipped-row messages metadata.json keeps (all are logged).
MAX_SKIP_MESSAGES = 50
ROW_SUFFIXES = (".jsonl", ".parquet", ".csv")


class MalformedRowError(ValueError):
    """A row that breaks its data set's format; the message names the file, line and field."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a source file.

    Attributes:
        name: the file, relative to the manual directory (as it appears in messages).
        line: 1-based line (JSONL; CSV: the line the row starts on) or row number (parquet).
        record: the parsed row (None when ``error`` is set).
        error: why the row could not be parsed, or None.
    """

    name: str
    line: int
    record: dict[str, Any] | None
    error: str | None = None

    @property
    def source(self) -> str:
        """``"<file>:<line>"``, the start of every message about this row."""
        return f"{self.name}:{self.line}"


def _jsonl_rows(path: pathlib.Path, name: str) -> Iterator[Row]:
    for line_number, value, problem in iter_jsonl_values(path):
        yield Row(name, line_number, None if problem else value, problem)


def _to_python(value: Any) -> Any:
    """numpy scalars / arrays (pyarrow's to_pylist never makes them, pandas would) -> Python."""
    if isinstance(value, np.ndarray):
        return [_to_python(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _to_python(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_python(item) for item in value]
    return value


def _drop_nested_nulls(value: Any) -> Any:
    """Removes null-valued keys of objects nested in ``value`` (lists and objects)."""
    if isinstance(value, dict):
        return {key: _drop_nested_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nested_nulls(item) for item in value]
    return value


def _parquet_rows(path: pathlib.Path, name: str) -> Iterator[Row]:
    import pyarrow.parquet as pq  # Installed with tensorflow-datasets.

    table = pq.read_table(path)
    number = 0
    for batch in table.to_batches():
        for record in batch.to_pylist():
            number += 1
            record = {key: _drop_nested_nulls(_to_python(value)) for key, value in record.items()}
            yield Row(name, number, record)


def _csv_rows(path: pathlib.Path, name: str) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Row(name, 1, None, f"unreadable CSV header: {error}")
            return
        header = [column.strip() for column in header]
        previous_line = reader.line_num
        while True:
            start = previous_line + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield Row(name, start, None, f"unreadable CSV row: {error}")
                return
            previous_line = reader.line_num
            if not values or not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                yield Row(name, start, None,
                          f"expected {len(header)} columns (the header's), got {len(values)}")
                continue
            yield Row(name, start, dict(zip(header, values)))


def iter_rows(path: str | os.PathLike[str], name: str | None = None) -> Iterator[Row]:
    """Rows of a ``.jsonl``, ``.parquet`` or ``.csv`` file, in file order.

    A parquet struct column has every key that any row has, null where a row lacks it; inside
    nested objects (e.g. rubric items) such null keys are dropped so that they read as absent,
    as in the JSONL file the parquet was made from. Top-level nulls are kept.

    Args:
        path: the file.
        name: how messages name the file (default: its base name).
    """
    path = pathlib.Path(path)
    name = name or path.name
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path, name)
    if suffix == ".parquet":
        return _parquet_rows(path, name)
    if suffix == ".csv":
        return _csv_rows(path, name)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {ROW_SUFFIXES}")


def require_text(record: Mapping[str, Any], key: str, source: str, *, allow_empty: bool = False
                 ) -> str:
    """The string ``record[key]``; MalformedRowError naming ``source`` and ``key`` otherwise."""
    if key not in record or record[key] is None:
        raise MalformedRowError(f"{source}: {key}: missing required field")
    value = record[key]
    if not isinstance(value, str):
        raise MalformedRowError(f"{source}: {key}: expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise MalformedRowError(f"{source}: {key}: expected a non-empty string")
    return value


def _path_tokens(relative: pathlib.PurePath) -> set[str]:
    stem = str(relative.with_suffix("")).lower()
    return {token for token in re.split(r"[^a-z0-9]+", stem) if token}


def find_split_files(
    manual_dir: pathlib.Path,
    aliases: Mapping[str, Sequence[str]],
    suffixes: Sequence[str] = (".jsonl", ".parquet"),
) -> dict[str, list[pathlib.Path]]:
    """Files under ``manual_dir`` (recursive) whose path names a split, per split, sorted.

    A file belongs to split ``s`` when one of the words of its path relative to ``manual_dir``
    (split on anything but letters and digits, extension removed) is an alias of ``s``:
    ``train.jsonl``, ``data/train-00000-of-00002.parquet``, ``rar_medicine_test.jsonl``,
    ``validation/0000.parquet``. Several files of one split are read in sorted order.

    Raises:
        MalformedRowError: a file whose path names two splits.
    """
    found: dict[str, list[pathlib.Path]] = {split: [] for split in aliases}
    for path in sorted(manual_dir.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        tokens = _path_tokens(path.relative_to(manual_dir))
        matches = [split for split, names in aliases.items() if tokens & set(names)]
        if len(matches) > 1:
            raise MalformedRowError(
                f"{path}: the file name matches the splits {', '.join(matches)}; rename it so "
                "that it names one split"
            )
        if matches:
            found[matches[0]].append(path)
    return found


@dataclasses.dataclass(eq=False)
class BuilderConfig(tfds.core.BuilderConfig):
    """Options every builder of this package has.

    Attributes:
        skip_malformed: skip (log and count) a malformed row instead of stopping the build.
    """

    skip_malformed: bool = False


def config_name(**options: Any) -> str:
    """A config name that spells its non-default options, e.g. ``seed3_runs10_skip``.

    TFDS reuses a built dataset whose name, config name and version match, so a config name
    must change with every option that changes the data.
    """
    parts = []
    for key, value in options.items():
        if key == "skip_malformed":
            if value:
                parts.append("skip")
        else:
            parts.append(f"{key}{value}")
    return "_".join(parts) or "default"


def common_features() -> dict[str, Any]:
    """The features every data set of this package has (see the module docstring)."""
    return {
        "example_id": tfds.features.Text(),
        "source": tfds.features.Text(),
        "format": tfds.features.Text(),
        "record": tfds.features.Text(),
        "prompt": tfds.features.Text(),
        "has_reference": np.bool_,
    }


class RarJaxBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
    """Base of this package's builders: manual-dir input, validated rows, counts in metadata.

    Subclasses set ``name``, ``VERSION``, ``RELEASE_NOTES``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``,
    ``BUILDER_CONFIGS`` and implement :meth:`_extra_features` and :meth:`_prepare_splits`, which
    reads the manual directory into feature dicts per split with :meth:`_convert_rows`.
    """

    BUILDER_CONFIGS = [BuilderConfig(name="default"),
                       BuilderConfig(name="skip", skip_malformed=True)]
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        super().__init__(file_format=file_format or "array_record", **kwargs)

    # ------------------------------------------------------------------ TFDS hooks
    def _info(self) -> tfds.core.DatasetInfo:
        features = {**common_features(), **self._extra_features()}
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        self._counts: dict[str, Any] = {
            "rows_read": {}, "skipped_malformed": {}, "skipped_messages": [],
        }
        splits = self._prepare_splits(manual_dir)
        metadata = self.info.metadata
        metadata.update(self._counts)
        metadata["examples"] = {split: len(items) for split, items in splits.items()}
        metadata["missing_reference"] = {
            split: sum(not item["has_reference"] for item in items)
            for split, items in splits.items()
        }
        metadata["empty_splits"] = sorted(split for split, items in splits.items() if not items)
        for split in metadata["empty_splits"]:
            logger.warning("%s: split %r has no examples and is left out", self.name, split)
        generators = {
            split: self._generate_examples(items) for split, items in splits.items() if items
        }
        if not generators:
            raise MalformedRowError(
                f"{manual_dir}: no examples for {self.name}; "
                f"expected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return generators

    def _generate_examples(self, items: Sequence[dict[str, Any]]
                           ) -> Iterator[tuple[str, dict[str, Any]]]:
        for item in items:
            yield item["example_id"], item

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _extra_features(self) -> dict[str, Any]:
        """Features of this data set beyond :func:`common_features`."""

    @abc.abstractmethod
    def _prepare_splits(self, manual_dir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
        """Reads the manual directory into ``{split: [feature dict, ...]}`` (file order)."""

    def _skip_or_raise(self, split: str, message: str) -> None:
        """Raises MalformedRowError(message) unless the config skips malformed rows (counted)."""
        if not self.builder_config.skip_malformed:
            raise MalformedRowError(message)
        logger.warning("%s: skipping a malformed row: %s", self.name, message)
        skipped = self._counts["skipped_malformed"]
        skipped[split] = skipped.get(split, 0) + 1
        if len(self._counts["skipped_messages"]) < MAX_SKIP_MESSAGES:
            self._counts["skipped_messages"].append(message)

    def _convert_rows(
        self,
        split: str,
        paths: Iterable[pathlib.Path],
        manual_dir: pathlib.Path,
        convert: Callable[[Row], dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Reads and converts every row of ``paths`` for ``split``, skipping or raising on bad ones.

        ``convert`` turns a Row into the split's feature dict (raising MalformedRowError or
        RubricError naming file, line and field). Example ids must be unique within the split
        (across all of ``paths``); a repeated one is a malformed row. Counts the rows read.
        """
        seen: dict[str, str] = {}
        items = []
        for path in paths:
            inside = path.is_relative_to(manual_dir)
            name = str(path.relative_to(manual_dir)) if inside else str(path)
            rows = tqdm.tqdm(iter_rows(path, name), desc=f"{self.name} {split} {name}",
                             unit=" rows", leave=False, disable=None)
            for row in rows:
                self._counts["rows_read"][split] = self._counts["rows_read"].get(split, 0) + 1
                if row.error is not None:
                    self._skip_or_raise(split, f"{row.source}: {row.error}")
                    continue
                try:
                    item = convert(row)
                except (MalformedRowError, RubricError) as error:
                    message = str(error)
                    if not message.startswith(row.source):
                        message = f"{row.source}: {message}"
                    self._skip_or_raise(split, message)
                    continue
                example_id = item["example_id"]
                if example_id in seen:
                    self._skip_or_raise(
                        split,
                        f"{row.source}: example id {example_id!r} already used by "
                        f"{seen[example_id]} in split {split!r}",
                    )
                    continue
                seen[example_id] = row.source
                items.append(item)
        return items
