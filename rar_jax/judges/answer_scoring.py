"""Scoring a file of answers with any reward method and judge (``rar-judge``).

:func:`read_judge_records` reads and checks every record first (one error line per bad record,
naming file, line and field); :func:`score_file` judges them in batches with the config's judge
(:func:`rar_jax.judges.factory.build_judge`) and reward method and writes one score line per
record; :func:`summary` is the text printed at the end. The record and output formats are
described by the command's docstring (``experiments/judge.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ml_collections import config_dict

from rar_jax.data.examples import Example, optional_text, parse_conversation
from rar_jax.io import MAX_LISTED_ERRORS, check_records, iter_jsonl, jsonl_line
from rar_jax.rubrics.ablations import apply_rubric_ablation
from rar_jax.rubrics.readers import (
    rubric_from_healthbench_record,
    rubric_from_rar_record,
)
from rar_jax.rubrics.schema import Rubric, RubricError

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
    max_errors: int = MAX_LISTED_ERRORS,
) -> list[JudgeRecord]:
    """Reads and checks every record of a JSONL file (see :func:`judge_record`).

    Raises:
        RecordErrors listing the first ``max_errors`` bad records (file, line and field each) and
        how many more there are; invalid JSON stops the reading at once. RubricError when the
        file holds no record.
    """
    name = os.fspath(path)
    records = check_records(
        iter_jsonl(name), lambda row: judge_record(row[1], f"{name}:{row[0]}", config),
        limit=limit, max_errors=max_errors)
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


def score_file(
    config: config_dict.ConfigDict, records: Sequence[JudgeRecord],
    output_path: str | os.PathLike[str], batch_size: int,
) -> list[dict[str, Any]]:
    """Judges ``records`` ``batch_size`` at a time with the config's judge and reward method,
    writing one score line per record to ``output_path`` as each batch is done; returns the
    lines (:func:`score_lines`)."""
    import tqdm

    from rar_jax.judges import prompts
    from rar_jax.judges.factory import build_judge
    from rar_jax.judges.rewards import make_reward_fn

    method = config.reward.method
    templates = config.judge.templates_dir or None
    predefined_size = len(prompts.predefined_rubric(templates)) if method == "rar_predefined" else 0
    reward_fn = make_reward_fn(config, build_judge(config))
    output_path = pathlib.Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = []
    with output_path.open("w", encoding="utf-8") as handle, tqdm.tqdm(
        total=len(records), desc=f"judging ({method})", unit="record"
    ) as progress:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            output = reward_fn([r.example for r in batch], [r.answer for r in batch])
            batch_lines = score_lines(batch, output, method, predefined_size)
            for line in batch_lines:
                handle.write(jsonl_line(line))
            handle.flush()
            lines += batch_lines
            progress.update(len(batch))
    return lines
