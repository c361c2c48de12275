"""Generate rubrics for a JSONL of questions with any judge backend (``rar-rubrics``).

Input (``--input``): a JSONL file, or a built TFDS data set ``tfds:<name>[/<config>]:<split>``
(``rar-build-dataset``; read from ``--config.data.tfds_data_dir`` or ``$TFDS_DATA_DIR``, the
trainer's data sources; formats rar and healthbench). Two record kinds (``--input_format``:
``auto``, the default, decides per record; ``questions`` or ``healthbench`` forces one):

- questions: ``question`` or ``prompt`` (a string, or a list of chat messages), optionally
  ``reference`` or ``reference_answer`` (the reference answer), optionally ``id``; other fields
  are copied to the output.
- HealthBench (``auto``: a record without ``question`` and with any of ``prompt_id``,
  ``rubrics``, ``ideal_completions_data``, ``example_tags``): the ``prompt`` conversation is the
  question (a single user turn as its text, a longer conversation as the judges' tagged
  transcript); the reference is the ideal completion when the record has one. The output keeps
  ``id`` (the ``prompt_id``), ``example_tags``, ``canary`` and ``physician_rubric_count``; the
  physician rubric and the ideal-completion data are not copied (the generated rubric replaces
  them).
  The output's ``question`` is the conversation (the text of a single user turn, else the
  message list), so ``read_examples(output, "rar")`` gives the trainer the same prompt as the
  HealthBench record does.

A malformed record stops the run with errors naming file, line and field (up to 10 of them).

Each question gets the rubric-generation prompt of
:func:`rar_jax.judges.prompts.rubric_generation_prompt` (``--domain`` medical or science; with the
reference answer unless ``--nouse_reference`` or the record has none), sent through the backend
of the config (``judge.backend``: the in-process JAX model or an OpenAI-compatible server; its
``generate_texts`` method).

Every reply is parsed and validated by :func:`rar_jax.judges.parsing.parse_rubric` (a JSON array
of ``--min_items`` to ``--max_items`` items ``{title, description, weight}``, category prefixes and
weight ranges checked) and built into a :class:`rar_jax.rubrics.schema.Rubric`. An invalid reply
is retried, up to ``--max_attempts`` attempts in all: attempt 1 uses ``--temperature`` (0 =
greedy) and ``--seed``; attempt a > 1 uses ``--retry_temperature`` and seed ``seed + a - 1``, so a
retry can differ from the reply before (and is a new request for the HTTP cache).

Outputs:

- ``--output``: one RaR-format record per valid rubric, in input order: the kept input fields
  plus ``question``, ``reference_answer`` ("" when none was used), ``rubric`` (items ``{title,
  description, weight, polarity}``; pitfalls get ``rubric.pitfall_polarity``, "negative" by
  default, as our templates ask for pitfalls that describe the mistake), ``rubric_list``,
  ``rubric_count``, ``rubric_attempts`` and ``rubric_with_reference``. Readable by
  ``rar_jax.data.examples.read_examples(path, "rar")``.
- ``--failures_output`` (default ``<output>.failures.jsonl``): the records still invalid after
  the last attempt, with the reason of every attempt and the last reply.
- ``<output>.stats.json``: the statistics the paper reports about its rubrics (criteria per
  rubric, category shares; :func:`rar_jax.rubrics.stats.rubric_statistics`) of the valid
  rubrics, and whether ``--require_reference`` was on (how many records it left out is logged).

``--require_reference`` leaves out (and counts) the records without a reference answer, whether
or not the reference is shown (``--use_reference``): a file generated with the reference then
holds no rubric made without one, and the files with and without reference cover the same
prompts (the paper's pool of about 3.5k HealthBench prompts: the ~84 % of the 4,000 training
prompts that have an ideal completion; ``configs/paper/common.py``).

``--stats`` generates nothing: it writes the statistics of the rubrics of ``--input`` (a JSONL of
``--config.data.format`` records, or a built ``tfds:`` data set such as
``tfds:rar_medicine:train``) to ``--output`` (JSON), for ``rar-tables --rubric_stats``.

A rubric is a long reply: against a slow server (e.g. ``rar-serve-judge`` on CPU, which answers
one request at a time) raise ``--config.judge.http.timeout_s`` (default 60 s per attempt) so
that waiting requests do not time out.

    rar-rubrics --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://127.0.0.1:8000/v1 \\
        --input=questions.jsonl --output=rubrics.jsonl --domain=science --max_attempts=3

HealthBench training prompts (Tables 1-3; ``configs/paper/common.py``, ``rubric_file``):

    rar-rubrics --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=https://api.openai.com/v1 \\
        --config.judge.http.model=gpt-4o --input=tfds:healthbench:train \\
        --output=rubrics/healthbench_train.gpt4o.noref.jsonl --domain=medical --nouse_reference \\
        --require_reference
    rar-rubrics --stats --input=tfds:rar_medicine:train --output=rubric_stats/rar_medicine.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.judges import prompts
from rar_jax.judges.rubric_generation import (  # noqa: F401 - re-exported: the CLI's public helpers
    INPUT_FORMATS,
    Question,
    TextGenerationBackend,
    failure_record,
    generate_rubrics,
    question_from_record,
    rubric_record,
    validate_rubric,
)
from rar_jax.io import iter_jsonl, write_json, write_jsonl
from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import RubricError
from rar_jax.rubrics.stats import rubric_statistics

TFDS_PREFIX = "tfds:"  # As rar_jax.data.sources.TFDS_PREFIX (imported lazily: tfds is slow).
# Data-set record formats rar-rubrics reads from a TFDS input -> the record kind.
TFDS_INPUT_KINDS = {"healthbench": "healthbench", "rar": "questions"}

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))
_INPUT = flags.DEFINE_string(
    "input",
    None,
    "JSONL of questions ('question' or 'prompt') or HealthBench records, or a built data set "
    "tfds:<name>[/<config>]:<split> (e.g. tfds:healthbench:train).",
)
_INPUT_FORMAT = flags.DEFINE_enum(
    "input_format",
    "auto",
    list(INPUT_FORMATS),
    "Record kind: questions, healthbench, or auto (HealthBench when a record has no question "
    "but prompt_id, rubrics, ideal_completions_data or example_tags).",
)
_OUTPUT = flags.DEFINE_string("output", None, "JSONL to write the valid rubrics to (RaR format).")
_FAILURES = flags.DEFINE_string(
    "failures_output",
    None,
    "JSONL of records without a valid rubric; default <output>.failures.jsonl.",
)
_DOMAIN = flags.DEFINE_enum(
    "domain", "medical", list(prompts.RUBRIC_GENERATION_DOMAINS), "Rubric-generation prompt."
)
_USE_REFERENCE = flags.DEFINE_bool(
    "use_reference", True, "Show the reference answer to the generator when a record has one."
)
_REQUIRE_REFERENCE = flags.DEFINE_bool(
    "require_reference", False, "Leave out (and count) records without a reference answer."
)
_STATS = flags.DEFINE_bool(
    "stats", False, "Generate nothing: write the rubric statistics of --input to --output (JSON)."
)
_MAX_ATTEMPTS = flags.DEFINE_integer(
    "max_attempts", 3, "Attempts per question, the first included."
)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 2048, "Most tokens per generated rubric.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Temperature of attempt 1 (0 = greedy).")
_RETRY_TEMPERATURE = flags.DEFINE_float(
    "retry_temperature", 0.8, "Temperature of attempts 2.. (> 0 so a retry can differ)."
)
_SEED = flags.DEFINE_integer(
    "seed", None, "Seed of attempt 1 (attempt a: seed + a - 1); default config.seed."
)
_MIN_ITEMS = flags.DEFINE_integer("min_items", 7, "Fewest rubric items accepted.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 20, "Most rubric items accepted.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Questions per generation call.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Use only the first N questions; 0 = all.")


def _collect(
    records: Iterable[tuple[str, Any, str | None]],
    *,
    use_reference: bool,
    input_format: str,
    limit: int,
    max_errors: int,
    name: str,
    require_reference: bool = False,
) -> list[Question]:
    """Questions from ``(source, record, example_id or None)`` triples; errors gathered; with
    ``require_reference`` those without a reference answer are left out (and logged)."""
    questions, errors, without_reference = [], [], 0
    for source, record, example_id in records:
        try:
            question = question_from_record(
                record,
                source,
                use_reference=use_reference or require_reference,
                input_format=input_format,
                example_id=example_id,
            )
        except ValueError as error:
            errors.append(str(error))
        else:
            if require_reference and question.reference is None:
                without_reference += 1
                continue
            if not use_reference:
                question = dataclasses.replace(question, reference=None)
            questions.append(question)
        if limit and len(questions) + len(errors) >= limit:
            break
    if errors:
        more = len(errors) - max_errors
        shown = errors[:max_errors] + ([f"... and {more} more bad records"] if more > 0 else [])
        raise RubricError("\n".join(shown))
    if without_reference:
        logging.warning("%s: %d records without a reference answer are left out "
                        "(--require_reference)", name, without_reference)
    if not questions:
        raise RubricError(f"{name}: no records" + (" with a reference answer"
                                                   if without_reference else ""))
    return questions


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
            f"{location}: --input_format={input_format} does not match the data set's "
            f"records ({kind})"
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
    max_errors: int = 10,
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
        input_format: ``auto``, ``questions`` or ``healthbench`` (see the module docstring); a
            TFDS data set's records are of its format's kind.
        data_dir: the TFDS data directory (None: ``$TFDS_DATA_DIR``).
        require_reference: leave out the records without a reference answer.

    Raises:
        RubricError listing the first ``max_errors`` bad records (file, line and field each).
    """
    name = os.fspath(path)
    if name.startswith(TFDS_PREFIX):
        input_format, records = _tfds_records(name, input_format, data_dir, limit)
    else:
        records = ((f"{name}:{line}", record, None) for line, record in iter_jsonl(name))
    return _collect(
        records,
        use_reference=use_reference,
        input_format=input_format,
        limit=limit,
        max_errors=max_errors,
        name=name,
        require_reference=require_reference,
    )


def generated_statistics(questions: Sequence[Question]) -> dict[str, Any]:
    """:func:`rubric_statistics` of the valid generated rubrics of ``questions``."""
    rubrics = [rubric_from_rar_record({"rubric": q.items}, pitfall_polarity=None, source=q.source)
               for q in questions if q.items is not None]
    return rubric_statistics(rubrics) if rubrics else {"rubrics": 0}


def data_statistics(config: Any, location: str) -> dict[str, Any]:
    """:func:`rubric_statistics` of the rubrics of a data set (``--stats``): a JSONL of
    ``config.data.format`` records or a built ``tfds:`` data set; examples without a rubric are
    counted apart."""
    from rar_jax.data.sources import load_examples

    examples = load_examples(location, None if location.startswith(TFDS_PREFIX)
                             else config.data.format, data_dir=config.data.tfds_data_dir or None)
    rubrics = [example.rubric for example in examples if example.rubric is not None]
    if not rubrics:
        raise RubricError(f"{location}: no example has a rubric")
    return {"data": location, **rubric_statistics(rubrics),
            "examples_without_rubric": len(examples) - len(rubrics)}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError(
            "give --input=questions.jsonl (or tfds:<name>:<split>) and --output=rubrics.jsonl"
        )
    for flag in (_MAX_ATTEMPTS, _MAX_TOKENS, _BATCH_SIZE, _MIN_ITEMS):
        if flag.value < 1:
            raise app.UsageError(f"--{flag.name} must be >= 1, got {flag.value}")
    if _MAX_ITEMS.value < _MIN_ITEMS.value:
        raise app.UsageError("--max_items must be >= --min_items")
    if _TEMPERATURE.value < 0 or _RETRY_TEMPERATURE.value < 0:
        raise app.UsageError("--temperature and --retry_temperature must be >= 0")
    config = _CONFIG.value
    if _STATS.value:
        try:
            statistics = data_statistics(config, _INPUT.value)
        except (OSError, ValueError) as error:
            raise SystemExit(f"rar-rubrics: {error}") from None
        write_json(_OUTPUT.value, statistics)
        print(json.dumps(statistics, indent=2))
        return
    try:
        rar_config.validate(config)
        questions = read_questions(
            _INPUT.value,
            use_reference=_USE_REFERENCE.value,
            limit=_LIMIT.value,
            input_format=_INPUT_FORMAT.value,
            data_dir=config.data.tfds_data_dir or None,
            require_reference=_REQUIRE_REFERENCE.value,
        )
    except (OSError, ValueError) as error:
        raise SystemExit(f"rar-rubrics: {error}") from None
    output = pathlib.Path(_OUTPUT.value)
    failures_path = pathlib.Path(
        _FAILURES.value or output.with_name(output.name.removesuffix(".jsonl") + ".failures.jsonl")
    )
    from rar_jax.judges.factory import build_judge

    backend = build_judge(config)
    generate_rubrics(
        backend,
        questions,
        domain=_DOMAIN.value,
        templates_dir=config.judge.templates_dir or None,
        max_attempts=_MAX_ATTEMPTS.value,
        max_tokens=_MAX_TOKENS.value,
        temperature=_TEMPERATURE.value,
        retry_temperature=_RETRY_TEMPERATURE.value,
        seed=config.seed if _SEED.value is None else _SEED.value,
        batch_size=_BATCH_SIZE.value,
        min_items=_MIN_ITEMS.value,
        max_items=_MAX_ITEMS.value,
        pitfall_polarity=config.rubric.pitfall_polarity,
    )
    valid = [q for q in questions if q.items is not None]
    failed = [q for q in questions if q.items is None]
    write_jsonl(output, [rubric_record(q) for q in valid])
    write_jsonl(failures_path, [failure_record(q) for q in failed])
    stats_path = output.with_name(output.name.removesuffix(".jsonl") + ".stats.json")
    write_json(stats_path, {"data": str(output), **generated_statistics(questions),
                            "require_reference": _REQUIRE_REFERENCE.value})
    first = sum(1 for q in valid if not q.reasons)
    print(
        f"rubrics for {len(questions)} questions: {len(valid)} valid ({first} on the first "
        f"attempt, {len(valid) - first} after retries), {len(failed)} failed after "
        f"{_MAX_ATTEMPTS.value} attempts"
    )
    print(f"wrote {len(valid)} rubrics to {output}, {len(failed)} failures to {failures_path} "
          f"and their statistics to {stats_path}")


def run() -> None:
    """Console-script entry point (``rar-rubrics``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
