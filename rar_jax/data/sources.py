"""Built TFDS data sets as sources of :class:`~rar_jax.data.examples.Example` (tfds + grain).

A data set prepared by :func:`rar_jax.data.builders.build` is opened with ``tfds.data_source``
(array_record files, random access, no TensorFlow) and its records become Examples through the
same readers as the JSONL path (``rar_jax.data.examples.EXAMPLE_READERS``), so the rubric config
(pitfall polarity, ablation) applies the same way to both:

- :func:`open_source`: the raw ``tfds`` data source of one split;
- :func:`example_from_tfds_record`: one raw record -> Example;
- :func:`example_dataset`: a ``grain.MapDataset`` of Examples (lazy, random access);
- :func:`read_tfds_examples`: a list of Examples, like ``read_examples`` for JSONL;
- :func:`load_examples`: either kind, chosen by the location: a JSONL path, or
  ``"tfds:<name>[/<config>]:<split>"`` (split slices like ``train[:100]`` work), read from
  ``data_dir`` or the ``TFDS_DATA_DIR`` environment variable.

RaR pitfall polarity: the rubric config's ``pitfall_polarity`` when a config is given; without
one, the data set's documented default (``PITFALL_POLARITY_DEFAULTS``: negative for RaR-Medicine,
positive for RaR-Science). Items with their own polarity keep it either way.

GPQA-Diamond records become one Example per run: the question and the choices in that run's
order (:data:`GPQA_TEMPLATE`), no rubric, the correct letter as the reference, id
``"<Record ID>/run<r>"``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from ml_collections import config_dict

from rar_jax.data.builders import BUILDERS, make_builder
from rar_jax.data.examples import EXAMPLE_READERS, Example, ablated_examples, read_examples
from rar_jax.rubrics.ablations import apply_rubric_ablation
from rar_jax.rubrics.readers import PITFALL_POLARITY_DEFAULTS

__all__ = [
    "DATASET_FORMATS",
    "GPQA_LETTERS",
    "GPQA_TEMPLATE",
    "TFDS_PREFIX",
    "build_metadata",
    "decode_record",
    "example_dataset",
    "example_from_tfds_record",
    "gpqa_choices",
    "load_examples",
    "open_source",
    "parse_tfds_location",
    "read_tfds_examples",
]

TFDS_PREFIX = "tfds:"
# Record layout of each data set (the ``format`` feature of its records).
DATASET_FORMATS: dict[str, str] = {
    "rar_medicine": "rar",
    "rar_science": "rar",
    "healthbench": "healthbench",
    "kqa": "kqa",
    "gpqa_diamond": "gpqa",
}
GPQA_LETTERS = "ABCD"
# The user turn of a GPQA question; fields: question, A, B, C, D.
GPQA_TEMPLATE = (
    "{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}\n\n"
    "Answer with the letter of the correct choice in \\boxed{{}}, for example \\boxed{{A}}."
)

ConfigArg = str | tfds.core.BuilderConfig | None
# Records per batched read in read_tfds_examples.
READ_CHUNK = 1024


def _data_dir(data_dir: str | os.PathLike[str] | None) -> str:
    value = os.fspath(data_dir) if data_dir is not None else os.environ.get("TFDS_DATA_DIR")
    if not value:
        raise ValueError("no TFDS data directory: pass data_dir or set TFDS_DATA_DIR")
    return value


def _builder_name(name: str, config: ConfigArg) -> tuple[str, dict[str, Any]]:
    if name not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(BUILDERS)}")
    if isinstance(config, str):
        return f"{name}/{config}", {}
    if config is not None:
        return name, {"config": config}
    return name, {}


def open_source(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    config: ConfigArg = None,
) -> Any:
    """The ``tfds.data_source`` of one split of a built data set (random access, no TF).

    Args:
        name: a data set of ``rar_jax.data.builders.BUILDERS``.
        split: a split name, or a slice like ``"train[:100]"``.
        data_dir: the TFDS data directory it was built in (default ``TFDS_DATA_DIR``).
        config: the config name or object it was built with (None: the default config).

    Raises:
        FileNotFoundError: naming the directory, when the data set has not been built there.
    """
    directory = _data_dir(data_dir)
    full_name, builder_kwargs = _builder_name(name, config)
    known = {known_config.name for known_config in BUILDERS[name].BUILDER_CONFIGS}
    if isinstance(config, str) and config not in known:
        # A config built from an object (e.g. gpqa_config(seed=3)), read back by its name.
        where = pathlib.Path(directory) / name / config
        built = list(where.glob("*/dataset_info.json"))
    else:
        builder = make_builder(name, data_dir=directory, config=config)
        where, built = pathlib.Path(builder.data_path), builder.is_prepared()
    if not built:
        raise FileNotFoundError(
            f"{full_name}: not built in {where}; build it with rar_jax.data.builders.build("
            f"{name!r}, manual_dir=..., data_dir={directory!r}, config=...)"
        )
    return tfds.data_source(full_name, split=split, data_dir=directory, download=False,
                            builder_kwargs=builder_kwargs)


def build_metadata(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, config: ConfigArg = None
) -> dict[str, Any]:
    """The counts a build wrote to ``metadata.json`` (rows read, skipped, deduplicated, ...)."""
    full_name, _ = _builder_name(name, config)
    builder_cls = BUILDERS[name]
    if config is None:
        config = builder_cls.BUILDER_CONFIGS[0]
    config_name = config if isinstance(config, str) else config.name
    path = (pathlib.Path(_data_dir(data_dir)) / name / config_name / str(builder_cls.VERSION)
            / "metadata.json")
    if not path.is_file():
        raise FileNotFoundError(f"{full_name}: {path} not found; build the data set first")
    return json.loads(path.read_text())


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_decode(item) for item in value.tolist()]
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def decode_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A raw data-source record with texts as ``str`` (TFDS returns bytes) and bools as bool."""
    return {key: _decode(value) for key, value in record.items()}


def gpqa_choices(record: Mapping[str, Any], run: int) -> tuple[list[str], int]:
    """The choices of a (decoded) GPQA record in run ``run``'s order, and the correct position."""
    orders = np.asarray(record["orders"])
    if not 0 <= run < len(orders):
        raise ValueError(
            f"{record['source']}: run {run} is out of range; the data set was built with "
            f"num_runs={len(orders)}"
        )
    choices = [record["choices"][index] for index in orders[run]]
    return choices, int(record["answer_index"][run])


def _gpqa_example(record: Mapping[str, Any], run: int, template: str) -> Example:
    choices, answer = gpqa_choices(record, run)
    text = template.format(question=record["prompt"], **dict(zip(GPQA_LETTERS, choices)))
    return Example(
        conversation=({"role": "user", "content": text},),
        rubric=None,
        reference=GPQA_LETTERS[answer],
        example_id=f"{record['example_id']}/run{run}",
    )


def example_from_tfds_record(
    record: Mapping[str, Any],
    *,
    dataset: str,
    rubric: config_dict.ConfigDict | None = None,
    gpqa_run: int = 0,
    gpqa_template: str = GPQA_TEMPLATE,
    ablate: bool = True,
) -> Example:
    """One record of a data source (raw or decoded) -> Example.

    Args:
        record: a record of :func:`open_source`.
        dataset: the data set's name (for its pitfall polarity default).
        rubric: the ``rubric`` config section (pitfall polarity, ablation), or None.
        gpqa_run: which answer order a GPQA record is shown in.
        gpqa_template: the GPQA user turn (fields question, A, B, C, D).
        ablate: apply ``rubric.ablation`` (an ablation that leaves no criteria raises
            ``AblationLeavesNoCriteria``; :func:`read_tfds_examples` applies it itself, leaving
            such examples out).
    """
    record = decode_record(record)
    kind = record["format"]
    if kind == "gpqa":
        return _gpqa_example(record, gpqa_run, gpqa_template)
    if kind not in EXAMPLE_READERS:
        raise ValueError(f"{record['source']}: format: unknown record format {kind!r}")
    if rubric is not None:
        polarity = rubric.pitfall_polarity
    else:
        default = PITFALL_POLARITY_DEFAULTS.get(dataset)
        polarity = None if default is None else default.value
    example = EXAMPLE_READERS[kind](json.loads(record["record"]), record["source"],
                                    pitfall_polarity=polarity)
    example = dataclasses.replace(example, example_id=record["example_id"])
    if ablate and rubric is not None and example.rubric is not None:
        example = dataclasses.replace(
            example, rubric=apply_rubric_ablation(example.rubric, rubric.ablation)
        )
    return example


def example_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    config: ConfigArg = None,
    rubric: config_dict.ConfigDict | None = None,
    gpqa_run: int = 0,
) -> grain.MapDataset:
    """A lazy ``grain.MapDataset`` of the Examples of one split (see :func:`open_source`)."""
    source = open_source(name, split, data_dir=data_dir, config=config)
    to_example = functools.partial(example_from_tfds_record, dataset=name, rubric=rubric,
                                   gpqa_run=gpqa_run)
    return grain.MapDataset.source(source).map(to_example)


def read_tfds_examples(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    config: ConfigArg = None,
    rubric: config_dict.ConfigDict | None = None,
    limit: int = 0,
    gpqa_run: int = 0,
) -> list[Example]:
    """The Examples of one split, in stored order (at most ``limit``; 0 = all).

    Reads the data source in chunks of :data:`READ_CHUNK` records (one batched read each, about
    twice as fast as record by record).
    """
    source = open_source(name, split, data_dir=data_dir, config=config)
    count = len(source) if not limit else min(limit, len(source))
    if count == 0:
        raise ValueError(f"{name}:{split}: no records")
    examples = []
    with tqdm.tqdm(total=count, desc=f"{name}:{split}", leave=False, disable=None) as progress:
        for start in range(0, count, READ_CHUNK):
            indices = list(range(start, min(start + READ_CHUNK, count)))
            for record in source.__getitems__(indices):
                examples.append(example_from_tfds_record(record, dataset=name, rubric=rubric,
                                                         gpqa_run=gpqa_run, ablate=False))
            progress.update(len(indices))
    if rubric is None:
        return examples
    return ablated_examples(examples, rubric.ablation, f"{name}:{split}")


def parse_tfds_location(location: str) -> tuple[str, str | None, str]:
    """``"tfds:<name>[/<config>]:<split>"`` -> ``(name, config or None, split)``."""
    if not location.startswith(TFDS_PREFIX):
        raise ValueError(f"{location!r}: expected 'tfds:<name>[/<config>]:<split>'")
    body = location[len(TFDS_PREFIX):]
    dataset, separator, split = body.partition(":")
    name, _, config = dataset.partition("/")
    if not separator or not name or not split:
        raise ValueError(f"{location!r}: expected 'tfds:<name>[/<config>]:<split>'")
    return name, config or None, split


def load_examples(
    location: str | os.PathLike[str],
    format_name: str | None = None,
    *,
    rubric: config_dict.ConfigDict | None = None,
    limit: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[Example]:
    """Examples from a JSONL file or a built TFDS data set, as the location says.

    Args:
        location: a JSONL path, or ``"tfds:<name>[/<config>]:<split>"``.
        format_name: the record format (``data.format``); required for JSONL. For a TFDS data
            set it must match the data set's format when given.
        rubric: the ``rubric`` config section, or None.
        limit: read at most this many records (0 = all).
        data_dir: the TFDS data directory (default ``TFDS_DATA_DIR``).
    """
    text = os.fspath(location)
    if not text.startswith(TFDS_PREFIX):
        if format_name is None:
            raise ValueError(f"{text}: a JSONL file needs its format name")
        return read_examples(text, format_name, rubric=rubric, limit=limit)
    name, config, split = parse_tfds_location(text)
    if name not in DATASET_FORMATS:
        raise ValueError(f"{text}: unknown data set {name!r}; expected one of "
                         f"{', '.join(DATASET_FORMATS)}")
    if format_name is not None and format_name != DATASET_FORMATS[name]:
        raise ValueError(
            f"{text}: data format {format_name!r} does not match the data set's "
            f"{DATASET_FORMATS[name]!r}"
        )
    return read_tfds_examples(name, split, data_dir=data_dir, config=config, rubric=rubric,
                              limit=limit)
