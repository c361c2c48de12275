"""Score a JSONL of answers with any reward method and judge backend (``rar-judge``).

Every input record holds

- the prompt: ``messages`` (chat list), ``prompt`` (a string, or a chat list as in HealthBench) or
  ``question`` (RaR); the conversation must end with a user turn;
- ``answer``: the answer text to judge;
- what the method needs: a rubric, either RaR ``rubric`` items (native ``"Essential Criteria:
  ..."`` descriptions or the rubric_harness format with ``category`` / ``polarity``) or the
  HealthBench ``rubrics`` list (``criterion``, ``points``); and/or a reference answer
  (``reference``, ``reference_answer``, or HealthBench ``ideal_completions_data``);
- optionally ``id`` (else HealthBench's ``prompt_id``, else ``<file>:<line>``).

The method and judge come from the config (``reward.method``, ``judge.backend``, ``judge.*``,
``reward.*``; ``rubric.pitfall_polarity`` for RaR pitfalls without their own polarity,
``rubric.ablation`` to drop criteria). Every record is read and checked before any judging: bad
records stop the run, each named with its file, line and field (the first 10 are listed).
Records are judged ``--batch_size`` at a time (one reward-function call each, with a progress
bar) and one output line is written per record, in input order:

``{"id", "reward" (null if failed), "failed", "reason" (null unless failed), "rating" (rating
methods: the (expected) 1-10 rating, else null), "verdicts"}``

``verdicts`` (verdict methods) is aligned with the record's rubric criteria: P(true) or a parsed
1/0 per criterion, null where the judgment failed or the criterion was left out by
``rubric.ablation``; for ``rar_predefined`` it is aligned with the fixed predefined rubric; null
for rating methods. A summary (n, mean reward of the scored records, failures and their most
common reasons) is printed at the end.

    rar-judge --config=configs/base.py --config.reward.method=rar_explicit \\
        --config.judge.backend=http --config.judge.http.base_url=http://127.0.0.1:8000/v1 \\
        --input=records.jsonl --output=scores.jsonl
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_dict

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.data.examples import Example, optional_text, parse_conversation
from rar_jax.rubrics.ablations import apply_rubric_ablation
from rar_jax.io import iter_jsonl, jsonl_line
from rar_jax.rubrics.readers import (
    rubric_from_healthbench_record,
    rubric_from_rar_record,
)
from rar_jax.rubrics.schema import Rubric, RubricError

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))
_INPUT = flags.DEFINE_string("input", None, "JSONL of records (prompt, answer, rubric/reference).")
_OUTPUT = flags.DEFINE_string("output", None, "JSONL to write one score record per input record.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    64,
    "Records per reward-function call (the JAX judge's forward batch is config judge.batch_size).",
)
_LIMIT = flags.DEFINE_integer("limit", 0, "Judge only the first N records; 0 = all.")

# Methods that read the record's rubric / its reference answer.
RUBRIC_METHODS = ("rar_explicit", "rar_implicit", "healthbench_points")
REFERENCE_METHODS = ("reference_likert",)
VERDICT_METHODS = ("rar_explicit", "rar_predefined", "healthbench_points")


@dataclasses.dataclass(frozen=True)
class JudgeRecord:
    """One input record, checked.

    Attributes:
        example: what the answer is judged against (rubric after the ablation).
        answer: the answer text.
        columns: for each criterion of ``example.rubric``, its index in the record's own rubric
            (the ablation may drop criteria); empty without a rubric.
        num_criteria: criteria in the record's own rubric (0 without one).
    """

    example: Example
    answer: str
    columns: tuple[int, ...]
    num_criteria: int


def _record_rubric(
    record: Mapping[str, Any], source: str, pitfall_polarity: str
) -> Rubric | None:
    """The record's rubric: HealthBench ``rubrics`` or RaR ``rubric``; None when it has neither."""
    if "rubrics" in record and "rubric" in record:
        raise RubricError(
            f"{source}: rubric: the record has both 'rubric' (RaR) and 'rubrics' (HealthBench); "
            "keep one"
        )
    if "rubrics" in record:
        return rubric_from_healthbench_record(record, source=source)
    if "rubric" in record:
        return rubric_from_rar_record(record, pitfall_polarity=pitfall_polarity, source=source)
    return None


def _record_reference(record: Mapping[str, Any], source: str) -> str | None:
    """``reference``, else ``reference_answer``, else HealthBench's ideal completion; or None."""
    for field in ("reference", "reference_answer"):
        if field in record:
            return optional_text(record[field], source, field)
    ideal = record.get("ideal_completions_data")
    if isinstance(ideal, Mapping):
        return optional_text(
            ideal.get("ideal_completion"), source, "ideal_completions_data.ideal_completion"
        )
    return None


def _record_id(record: Mapping[str, Any], source: str) -> str:
    for field in ("id", "prompt_id"):
        if field in record:
            value = record[field]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise RubricError(
                    f"{source}: {field}: expected a string or an integer, got "
                    f"{type(value).__name__}"
                )
            return str(value)
    return source


def judge_record(
    record: Mapping[str, Any], source: str, config: config_dict.ConfigDict
) -> JudgeRecord:
    """Checks one input record for ``config.reward.method`` and builds its example.

    Args:
        record: the parsed JSON object.
        source: ``"<file>:<line>"``, the start of every error message.
        config: the run's config (reward.method, rubric.pitfall_polarity, rubric.ablation).

    Raises:
        RubricError (a ValueError) naming the source and field of the first problem.
    """
    method = config.reward.method
    for field in ("messages", "prompt", "question"):
        if field in record:
            conversation = parse_conversation(record[field], source, field)
            break
    else:
        raise RubricError(f"{source}: prompt: expected a 'messages', 'prompt' or 'question' field")
    if "answer" not in record:
        raise RubricError(f"{source}: answer: missing required field")
    answer = record["answer"]
    if not isinstance(answer, str):
        raise RubricError(f"{source}: answer: expected a string, got {type(answer).__name__}")
    rubric = _record_rubric(record, source, config.rubric.pitfall_polarity)
    if rubric is None and method in RUBRIC_METHODS:
        raise RubricError(
            f"{source}: rubric: reward.method {method} needs a 'rubric' (RaR) or 'rubrics' "
            "(HealthBench) list"
        )
    reference = _record_reference(record, source)
    if reference is None and method in REFERENCE_METHODS:
        raise RubricError(
            f"{source}: reference: reward.method {method} needs a non-empty 'reference' or "
            "'reference_answer'"
        )
    columns: tuple[int, ...] = ()
    num_criteria = 0
    if rubric is not None:
        num_criteria = len(rubric)
        kept = apply_rubric_ablation(rubric, config.rubric.ablation)
        kept_ids = {id(criterion) for criterion in kept.criteria}
        columns = tuple(i for i, c in enumerate(rubric.criteria) if id(c) in kept_ids)
        rubric = kept
    example = Example(conversation, rubric, reference, _record_id(record, source))
    return JudgeRecord(example, answer, columns, num_criteria)


def read_judge_records(
    path: str | os.PathLike[str],
    config: config_dict.ConfigDict,
    limit: int = 0,
    max_errors: int = 10,
) -> list[JudgeRecord]:
    """Reads and checks every record of a JSONL file (see :func:`judge_record`).

    Raises:
        RubricError listing the first ``max_errors`` bad records (file, line and field each) and
        how many more there are; invalid JSON stops the reading at once.
    """
    name = os.fspath(path)
    records, errors = [], []
    for line, record in iter_jsonl(name):
        try:
            records.append(judge_record(record, f"{name}:{line}", config))
        except ValueError as error:
            errors.append(str(error))
        if limit and len(records) + len(errors) >= limit:
            break
    if errors:
        more = len(errors) - max_errors
        shown = errors[:max_errors] + ([f"... and {more} more bad records"] if more > 0 else [])
        raise RubricError("\n".join(shown))
    if not records:
        raise RubricError(f"{name}: no records")
    return records


def _number_or_none(value: float) -> float | None:
    """A float32 result as the shortest decimal that round-trips it (0.8, not 0.800000011920929);
    None for NaN."""
    return float(str(np.float32(value))) if math.isfinite(value) else None


def score_lines(
    records: Sequence[JudgeRecord], output: Any, method: str, predefined_size: int
) -> list[dict[str, Any]]:
    """Output lines of a batch of records from their :class:`RewardOutput`.

    Args:
        records: the batch.
        output: its RewardOutput (rows aligned with ``records``).
        method: the reward method (decides whether verdicts or a rating are written).
        predefined_size: criteria of the predefined rubric (``rar_predefined`` verdicts).
    """
    lines = []
    for row, item in enumerate(records):
        verdicts: list[float | None] | None = None
        if method in VERDICT_METHODS:
            if method == "rar_predefined":
                verdicts = [_number_or_none(v) for v in output.verdicts[row, :predefined_size]]
            else:
                verdicts = [None] * item.num_criteria
                for slot, column in enumerate(item.columns):
                    verdicts[column] = _number_or_none(output.verdicts[row, slot])
        rating = None
        if output.ratings is not None:
            rating = _number_or_none(output.ratings[row])
        failed = bool(output.failed[row])
        unjudged = [
            {"criterion": item.columns[slot] if method != "rar_predefined" else slot,
             "reason": why}
            for slot, why in (output.criterion_failures[row] if output.criterion_failures else [])
        ]
        lines.append(
            {
                "id": item.example.example_id,
                "reward": None if failed else _number_or_none(output.rewards[row]),
                "failed": failed,
                "reason": output.reasons[row] if failed else None,
                "rating": rating,
                "verdicts": verdicts,
                "unjudged_criteria": unjudged,
            }
        )
    return lines


def summary(lines: Sequence[Mapping[str, Any]], top: int = 3) -> str:
    """Count, mean reward of the scored records, failures and their most common reasons.

    Reasons are counted per failed judgment: once per unjudged criterion of a verdict method
    (whether or not its record was still scored over the judged ones), once per failed record
    otherwise.
    """
    rewards = [line["reward"] for line in lines if not line["failed"]]
    mean = f"{sum(rewards) / len(rewards):.4f}" if rewards else "n/a"
    text = [f"judged {len(lines)} records: mean reward {mean} over {len(rewards)} scored"]
    failures = [line["reason"] or "unknown" for line in lines
                if line["failed"] and not line["unjudged_criteria"]]
    failures += [item["reason"] for line in lines for item in line["unjudged_criteria"]]
    unjudged = sum(len(line["unjudged_criteria"]) for line in lines)
    text.append(f"failed: {sum(line['failed'] for line in lines)} records; "
                f"unjudged criteria: {unjudged}")
    for reason, count in collections.Counter(failures).most_common(top):
        shown = reason if len(reason) <= 200 else reason[:197] + "..."
        text.append(f"  {count} x {shown}")
    return "\n".join(text)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError("give --input=records.jsonl and --output=scores.jsonl")
    if _BATCH_SIZE.value < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}")
    config = _CONFIG.value
    rar_config.validate(config)
    cli.check_inputs(config, cli.model_input_keys(config, policy=False))
    records = read_judge_records(_INPUT.value, config, _LIMIT.value)
    logging.info("read %d records from %s", len(records), _INPUT.value)

    import tqdm

    from rar_jax.judges import prompts
    from rar_jax.judges.factory import build_judge
    from rar_jax.judges.rewards import make_reward_fn

    method = config.reward.method
    templates = config.judge.templates_dir or None
    predefined_size = len(prompts.predefined_rubric(templates)) if method == "rar_predefined" else 0
    backend = build_judge(config)
    reward_fn = make_reward_fn(config, backend)
    output_path = pathlib.Path(_OUTPUT.value)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    size = _BATCH_SIZE.value
    lines: list[dict[str, Any]] = []
    with output_path.open("w", encoding="utf-8") as handle, tqdm.tqdm(
        total=len(records), desc=f"judging ({method})", unit="record"
    ) as progress:
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            output = reward_fn([r.example for r in batch], [r.answer for r in batch])
            batch_lines = score_lines(batch, output, method, predefined_size)
            for line in batch_lines:
                handle.write(jsonl_line(line))
            handle.flush()
            lines += batch_lines
            progress.update(len(batch))
    print(summary(lines))
    print(f"wrote {len(lines)} score records to {output_path}")


def run() -> None:
    """Console-script entry point (``rar-judge``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
