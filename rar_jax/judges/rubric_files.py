"""Rubrics for a file of questions (``rar-rubrics``): read, generate, validate, write.

Every option is a key of the config's ``rubric_generation`` section (``rar_jax/config/base.py``);
:func:`generate_rubric_file` is the whole command, :func:`rubric_statistics_file` its
``rubric_generation.stats_only`` mode.

Input (``rubric_generation.input``): a JSONL file, or a built TFDS data set
``tfds:<name>[/<config>]:<split>`` (``rar-build-dataset``; read from ``data.tfds_data_dir`` or
``$TFDS_DATA_DIR``, the trainer's data sources; formats rar and healthbench). Two record kinds
(``rubric_generation.input_format``: ``auto``, the default, decides per record; ``questions`` or
``healthbench`` forces one; :mod:`rar_jax.judges.rubric_generation` describes both). A malformed
record stops the run before anything is generated, with errors naming file, line and field (up
to 10 of them).

Each question gets the rubric-generation prompt of ``rubric_generation.domain`` (with the
reference answer when ``rubric_generation.use_reference`` is on and the record has one), sent
through the judge backend of the config (``judge.*``; :func:`rar_jax.judges.factory.build_judge`)
and retried up to ``rubric_generation.max_attempts`` attempts in all (attempt 1 at
``rubric_generation.temperature`` with seed ``seed``, attempt a > 1 at
``rubric_generation.retry_temperature`` with seed ``seed + a - 1``;
:func:`rar_jax.judges.rubric_generation.generate_rubrics`).

Outputs (:class:`RubricFiles`): the valid rubrics as RaR records in input order
(``rubric_generation.output``, readable by ``read_examples(path, "rar")``), the records still
invalid after the last attempt with the reason of every attempt (``failures_output``, default
``<output>.failures.jsonl``) and the paper's rubric statistics of the valid rubrics
(``<output>.stats.json``; :func:`rar_jax.rubrics.stats.rubric_statistics`).

``rubric_generation.require_reference`` leaves out (and counts) the records without a reference
answer, whether or not the reference is shown: a file generated with the reference then holds no
rubric made without one, and the files with and without reference cover the same prompts (the
paper's HealthBench pool; ``configs/paper/common.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from rar_jax.io import MAX_LISTED_ERRORS, check_records, iter_jsonl, write_json, write_jsonl
from rar_jax.judges.rubric_generation import (
    Question,
    failure_record,
    generate_rubrics,
    question_from_record,
    rubric_record,
)
from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import RubricError
from rar_jax.rubrics.stats import rubric_statistics

TFDS_PREFIX = "tfds:"  # As rar_jax.data.sources.TFDS_PREFIX (imported lazily: tfds is slow).
# Data-set record formats read from a TFDS input -> the record kind.
TFDS_INPUT_KINDS = {"healthbench": "healthbench", "rar": "questions"}


def _tfds_records(
    location: str, input_format: str, data_dir: str | None, limit: int
) -> tuple[str, Iterator[tuple[str, Any, str | None]]]:
    """The record kind of a built data set and its first ``limit`` (0 = all) ``(source, record,
    example_id)`` triples, read through ``rar_jax.data.sources`` (the trainer's data sources)."""
    import tqdm

    from rar_jax.data import sources

    name, config, split = sources.parse_tfds_location(location)
    kind = TFDS_INPUT_KINDS.get(sources.DATASET_FORMATS.get(name, ""))
    if kind is None:
        raise RubricError(
            f"{location}: rar-rubrics reads the data sets of formats "
            f"{', '.join(TFDS_INPUT_KINDS)}; {name!r} is not one of them"
        )
    if input_format not in ("auto", kind):
        raise RubricError(
            f"{location}: rubric_generation.input_format={input_format} does not match the data "
            f"set's records ({kind})"
        )
    source = sources.open_source(name, split, data_dir=data_dir, config=config)

    def records() -> Iterator[tuple[str, Any, str | None]]:
        count = min(limit, len(source)) if limit else len(source)
        for index in tqdm.trange(count, desc=location, unit="record", disable=None):
            row = sources.decode_record(source[index])
            try:
                record = json.loads(row["record"])
            except json.JSONDecodeError as error:
                raise RubricError(f"{row['source']}: record: not JSON ({error})") from None
            yield row["source"], record, row["example_id"] if kind == "healthbench" else None

    return kind, records()


def read_questions(
    path: str | os.PathLike[str],
    *,
    use_reference: bool,
    limit: int = 0,
    max_errors: int = MAX_LISTED_ERRORS,
    input_format: str = "auto",
    data_dir: str | None = None,
    require_reference: bool = False,
) -> list[Question]:
    """Reads the question records of a JSONL file or a ``tfds:<name>[/<config>]:<split>`` set.

    Args:
        path: the JSONL file or TFDS location.
        use_reference: show each record's reference answer to the generator when it has one.
        limit: read at most this many records (0 = all).
        max_errors: how many bad records the error lists.
        input_format: ``auto``, ``questions`` or ``healthbench``; a TFDS data set's records are
            of its format's kind.
        data_dir: the TFDS data directory (None: ``$TFDS_DATA_DIR``).
        require_reference: leave out (and log) the records without a reference answer.

    Raises:
        RecordErrors listing the first ``max_errors`` bad records (file, line and field each);
        RubricError when no record is left.
    """
    name = os.fspath(path)
    if name.startswith(TFDS_PREFIX):
        input_format, records = _tfds_records(name, input_format, data_dir, limit)
    else:
        records = ((f"{name}:{line}", record, None) for line, record in iter_jsonl(name))
    without_reference = 0

    def check(row: tuple[str, Any, str | None]) -> Question | None:
        nonlocal without_reference
        source, record, example_id = row
        question = question_from_record(
            record, source, use_reference=use_reference or require_reference,
            input_format=input_format, example_id=example_id,
        )
        if require_reference and question.reference is None:
            without_reference += 1
            return None
        return question if use_reference else dataclasses.replace(question, reference=None)

    questions = check_records(records, check, limit=limit, max_errors=max_errors)
    if without_reference:
        logging.warning("%s: %d records without a reference answer are left out "
                        "(rubric_generation.require_reference)", name, without_reference)
    if not questions:
        raise RubricError(f"{name}: no records" + (" with a reference answer"
                                                   if without_reference else ""))
    return questions


def generated_statistics(questions: Sequence[Question]) -> dict[str, Any]:
    """:func:`rubric_statistics` of the valid generated rubrics of ``questions``."""
    rubrics = [rubric_from_rar_record({"rubric": q.items}, pitfall_polarity=None, source=q.source)
               for q in questions if q.items is not None]
    return rubric_statistics(rubrics) if rubrics else {"rubrics": 0}


def rubric_statistics_file(config: Any) -> dict[str, Any]:
    """``rubric_generation.stats_only``: :func:`rubric_statistics` of the rubrics of the input (a
    JSONL of ``data.format`` records or a built ``tfds:`` data set), written to
    ``rubric_generation.output`` (JSON) and returned; examples without a rubric are counted."""
    from rar_jax.data.sources import load_examples

    settings = config.rubric_generation
    location = settings.input
    examples = load_examples(location, None if location.startswith(TFDS_PREFIX)
                             else config.data.format, data_dir=config.data.tfds_data_dir or None)
    rubrics = [example.rubric for example in examples if example.rubric is not None]
    if not rubrics:
        raise RubricError(f"{location}: no example has a rubric")
    statistics = {"data": location, **rubric_statistics(rubrics),
                  "examples_without_rubric": len(examples) - len(rubrics)}
    write_json(settings.output, statistics)
    return statistics


class RubricPaths(NamedTuple):
    """The files of one ``rar-rubrics`` run: the rubrics (or, with ``stats_only``, the
    statistics JSON) and beside them the failures, the statistics and the resolved config."""

    output: pathlib.Path
    failures: pathlib.Path
    statistics: pathlib.Path
    config: pathlib.Path


def rubric_paths(settings: Any) -> RubricPaths:
    """The :class:`RubricPaths` of ``rubric_generation`` settings (``<output>.<kind>.json[l]``,
    the output's ``.jsonl`` / ``.json`` suffix dropped)."""
    output = pathlib.Path(settings.output)
    stem = output.name.removesuffix(".jsonl").removesuffix(".json")
    failures = pathlib.Path(settings.failures_output or output.with_name(f"{stem}.failures.jsonl"))
    return RubricPaths(output, failures, output.with_name(f"{stem}.stats.json"),
                       output.with_name(f"{stem}.config.json"))


@dataclasses.dataclass(frozen=True)
class RubricFiles:
    """What one ``rar-rubrics`` run wrote, and its questions (with their rubrics or reasons)."""

    paths: RubricPaths
    questions: list[Question]

    @property
    def valid(self) -> list[Question]:
        return [q for q in self.questions if q.items is not None]

    @property
    def failed(self) -> list[Question]:
        return [q for q in self.questions if q.items is None]


def generation_options(config: Any, batch_size: int) -> dict[str, Any]:
    """The keyword arguments of :func:`generate_rubrics` from ``rubric_generation.*``, the
    judge's templates, ``seed`` and ``rubric.pitfall_polarity`` (shared with
    ``rar-judge-alignment``'s generated rubrics)."""
    settings = config.rubric_generation
    return dict(
        domain=settings.domain, templates_dir=config.judge.templates_dir or None,
        max_attempts=settings.max_attempts, max_tokens=settings.max_tokens,
        temperature=settings.temperature, retry_temperature=settings.retry_temperature,
        seed=config.seed, batch_size=batch_size, min_items=settings.min_items,
        max_items=settings.max_items, pitfall_polarity=config.rubric.pitfall_polarity,
    )


def config_questions(config: Any) -> list[Question]:
    """:func:`read_questions` of ``rubric_generation.input`` with the section's options."""
    settings = config.rubric_generation
    return read_questions(
        settings.input, use_reference=settings.use_reference, limit=settings.limit,
        input_format=settings.input_format, data_dir=config.data.tfds_data_dir or None,
        require_reference=settings.require_reference,
    )


def generate_rubric_file(config: Any, questions: list[Question]) -> RubricFiles:
    """``rar-rubrics``: generates the rubrics of ``questions`` (:func:`config_questions`, read
    and checked before anything is loaded) with the config's judge and writes the rubrics, the
    failures and the statistics (module docstring)."""
    from rar_jax.judges.factory import build_judge

    settings = config.rubric_generation
    generate_rubrics(build_judge(config), questions,
                     **generation_options(config, settings.batch_size))
    files = RubricFiles(rubric_paths(settings), questions)
    write_jsonl(files.paths.output, [rubric_record(q) for q in files.valid])
    write_jsonl(files.paths.failures, [failure_record(q) for q in files.failed])
    write_json(files.paths.statistics, {"data": str(files.paths.output),
                                        **generated_statistics(questions),
                                        "require_reference": settings.require_reference})
    return files
