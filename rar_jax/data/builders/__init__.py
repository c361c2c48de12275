"""TensorFlow Datasets builders of the project's data sets, usable without TensorFlow.

Importing this package registers the builders with TFDS under these names:

==================  ===========================================  =================================
name                manual directory holds                       splits
==================  ===========================================  =================================
``rar_medicine``    RaR-Medicine JSONL / parquet files           train, val, test (deduplicated)
``rar_science``     RaR-Science JSONL / parquet files            train, val, test (deduplicated)
``healthbench``     HealthBench JSONL files (or the stand-ins)   oss_eval, hard, consensus,
                                                                 healthbench_1k, train
``gpqa_diamond``    the official ``gpqa_diamond.csv``            test
``kqa``             ``questions_w_answers.jsonl``                test
==================  ===========================================  =================================

Each writes ``array_record`` files that ``tfds.data_source`` (and grain) read without
TensorFlow, plus a ``metadata.json`` of counts (rows read, malformed rows skipped, rows without a
reference, deduplicated rows, ...). :func:`build` is the one call that prepares a data set;
:mod:`rar_jax.data.sources` reads one back as :class:`~rar_jax.data.examples.Example` objects.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from rar_jax.data.builders.base import BuilderConfig, MalformedRowError, RarJaxBuilder
from rar_jax.data.builders.gpqa_diamond import GpqaConfig, GpqaDiamond, gpqa_config
from rar_jax.data.builders.healthbench import Healthbench
from rar_jax.data.builders.kqa import Kqa
from rar_jax.data.builders.rar_medicine import RarMedicine
from rar_jax.data.builders.rar_science import RarScience

__all__ = [
    "BUILDERS",
    "BuilderConfig",
    "GpqaConfig",
    "MalformedRowError",
    "build",
    "gpqa_config",
    "make_builder",
]

BUILDERS: dict[str, type[RarJaxBuilder]] = {
    builder.name: builder for builder in (RarMedicine, RarScience, Healthbench, GpqaDiamond, Kqa)
}


def make_builder(
    name: str,
    *,
    data_dir: str | os.PathLike[str],
    config: str | tfds.core.BuilderConfig | None = None,
) -> RarJaxBuilder:
    """The builder ``name`` (a key of ``BUILDERS``) writing to / reading from ``data_dir``.

    Args:
        name: the data set.
        data_dir: the TFDS data directory (the data set goes to
            ``<data_dir>/<name>/<config>/<version>``).
        config: a config name of the builder (e.g. ``"skip"``), a config object (e.g.
            :func:`gpqa_config` ``(seed=3)``), or None for the default config.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(BUILDERS)}")
    kwargs: dict[str, Any] = {"data_dir": os.fspath(data_dir)}
    if config is not None:
        kwargs["config"] = config
    return BUILDERS[name](**kwargs)


def build(
    name: str,
    *,
    manual_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    config: str | tfds.core.BuilderConfig | None = None,
    overwrite: bool = False,
) -> RarJaxBuilder:
    """Prepares data set ``name`` from the files in ``manual_dir`` into ``data_dir``.

    An existing build of the same name, config and version is reused unless ``overwrite``.
    Returns the builder (``builder.data_path`` is where the files are; ``builder.info.splits``
    has the split sizes and ``builder.info.metadata`` the counts).
    """
    manual = pathlib.Path(manual_dir)
    if not manual.is_dir():
        raise FileNotFoundError(f"{name}: manual directory {manual} does not exist")
    builder = make_builder(name, data_dir=data_dir, config=config)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual),
                                                     download_mode=mode)
    )
    return builder
