"""Judge quality on labels nobody here wrote (``rar-judge-quality``).

Scores (answer, criterion) pairs with the configured judge's explicit per-criterion check and
reports its agreement with

- the per-criterion grader verdicts of the graded HealthBench fixture (m42's
  ``judge_responses_100.jsonl``; CC BY-NC, evaluation only), and
- the physicians' labels of K-QA's ``NLI_medical_annotator.csv`` (is the statement supported by
  the answer; Entailment = true, Neutral and Contradiction = false, majority of three; see
  :mod:`rar_jax.eval.judge_quality`).

The judge is whatever ``judge.*`` says: the in-process JAX judge with any checkpoint
(``judge.model_source``; verdict probabilities, or ``judge.scoring=generate``) or an
OpenAI-compatible server (``judge.backend=http``). The probability is P(true) (a parsed 0/1 for
generating judges), the prediction P(true) >= 0.5. Pairs the judge could not score are counted
(``failed``) and listed with their reasons; the metrics are over the scored pairs.

Writes to ``--output_dir``: ``judge_quality.json`` (per data set and subgroup: n, failed,
accuracy, precision, recall, F1, Cohen's kappa, ROC AUC, positive rates of labels and
predictions, confusion counts), ``judge_quality.md`` (the same as tables) and
``judge_quality_pairs.jsonl`` (every pair with its label, P(true), prediction and failure
reason).

    rar-judge-quality --config=configs/base.py \\
        --healthbench_path=../shared/data/healthbench_graded_m42/judge_responses_100.jsonl \\
        --kqa_path=../shared/data/kqa/NLI_medical_annotator.csv \\
        --limit_healthbench=160 --limit_kqa=200 --output_dir=runs/judge_quality
    rar-judge-quality --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://judge-host:8000/v1 --config.judge.http.model=judge ...
"""

from __future__ import annotations

import collections
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import judge_quality
from rar_jax.io import write_json, write_jsonl

_CONFIG = rar_config.define_config_flag()
_HEALTHBENCH_PATH = flags.DEFINE_string(
    "healthbench_path",
    None,
    "Graded HealthBench JSONL (m42 layout); default config.healthbench.graded_path; '' skips it.",
)
_KQA_PATH = flags.DEFINE_string(
    "kqa_path", "", "K-QA NLI_medical_annotator.csv; '' skips the K-QA table."
)
_LIMIT_HEALTHBENCH = flags.DEFINE_integer(
    "limit_healthbench", 0, "Score the first N HealthBench pairs (file order); 0 = all."
)
_LIMIT_KQA = flags.DEFINE_integer("limit_kqa", 0, "Score the first N K-QA pairs; 0 = all.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder for the reports; default config.output_dir."
)

DATASET_TITLES = {
    "healthbench": "HealthBench: agreement with the m42 grader's per-criterion verdicts",
    "kqa": "K-QA: agreement with physicians (statement supported by the answer)",
}


def judge_description(config: Any) -> dict[str, Any]:
    """The judge options that identify the judge in the report."""
    judge = config.judge
    description = {"backend": judge.backend, "templates_dir": judge.templates_dir or "packaged"}
    if judge.backend == "http":
        description.update(base_url=judge.http.base_url, model=judge.http.model)
    else:
        description.update(
            model_source=judge.model_source,
            scoring=judge.scoring,
            prefix_reuse=bool(judge.prefix_reuse),
            batch_size=int(judge.batch_size),
        )
    if judge.backend == "http" or judge.scoring == "generate":
        description["max_tokens"] = int(judge.max_tokens)
    return description


def evaluate_dataset(
    name: str, pair_set: judge_quality.PairSet, backend: Any, templates_dir: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores one data set's pairs; returns its report section and one record per pair."""
    start = time.perf_counter()
    scores = judge_quality.score_pairs(
        pair_set.pairs, backend, templates_dir=templates_dir, description=f"judging {name}"
    )
    seconds = time.perf_counter() - start
    reports = judge_quality.subgroup_reports(pair_set.pairs, scores.probabilities)
    reasons = collections.Counter(reason for reason in scores.reasons if reason is not None)
    scored_mass = scores.mass[np.isfinite(scores.mass) & ~np.isnan(scores.probabilities)]
    section = {
        "source": pair_set.source,
        "pairs": len(pair_set.pairs),
        "answers": len({pair.answer_id for pair in pair_set.pairs}),
        "excluded": pair_set.excluded,
        "seconds": seconds,
        "mean_verdict_mass": float(scored_mass.mean()) if scored_mass.size else float("nan"),
        "failure_reasons": dict(reasons.most_common()),
        "reports": reports,
    }
    records = []
    for pair, probability, mass, reason in zip(
        pair_set.pairs, scores.probabilities, scores.mass, scores.reasons, strict=True
    ):
        scored = not np.isnan(probability)
        records.append(
            {
                "dataset": name,
                "pair_id": pair.pair_id,
                "answer_id": pair.answer_id,
                "criterion": pair.criterion,
                "label": pair.label,
                "p_true": float(probability) if scored else None,
                "predicted": bool(probability >= judge_quality.DEFAULT_THRESHOLD)
                if scored
                else None,
                "verdict_mass": float(mass),
                "reason": reason,
                "subgroups": list(pair.subgroups),
            }
        )
    return section, records


def markdown_report(report: dict[str, Any]) -> str:
    """The report's tables, one section per data set."""
    judge = ", ".join(f"{key}={value}" for key, value in report["judge"].items())
    lines = [
        "# Judge quality",
        "",
        f"Judge: {judge}. Prediction: P(true) >= {report['threshold']:g}; metrics over scored "
        "pairs, `failed` = pairs the judge could not score.",
    ]
    for name, section in report["datasets"].items():
        excluded = ", ".join(f"{count} {why}" for why, count in section["excluded"].items())
        lines += [
            "",
            f"## {DATASET_TITLES[name]}",
            "",
            f"{section['pairs']} pairs over {section['answers']} answers from "
            f"`{section['source']}`" + (f"; left out: {excluded}" if excluded else "")
            + f"; {section['seconds']:.1f} s.",
            "",
            judge_quality.report_markdown(section["reports"]),
        ]
        if section["failure_reasons"]:
            lines += ["", "Failure reasons:"]
            lines += [f"- {count} x {why}" for why, count in section["failure_reasons"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    rar_config.validate(config, num_devices=jax.device_count())
    for flag in (_LIMIT_HEALTHBENCH, _LIMIT_KQA):
        if flag.value < 0:
            raise app.UsageError(f"--{flag.name} must be >= 0 (0 = all), got {flag.value}")
    healthbench_path = _HEALTHBENCH_PATH.value
    if healthbench_path is None:
        healthbench_path = config.healthbench.graded_path
    if not healthbench_path and not _KQA_PATH.value:
        raise app.UsageError(
            "nothing to score: give --healthbench_path (or config.healthbench.graded_path) "
            "and/or --kqa_path"
        )
    pair_sets: dict[str, judge_quality.PairSet] = {}
    if healthbench_path:
        pair_sets["healthbench"] = judge_quality.healthbench_pairs(
            healthbench_path, limit=_LIMIT_HEALTHBENCH.value
        )
    if _KQA_PATH.value:
        pair_sets["kqa"] = judge_quality.kqa_pairs(_KQA_PATH.value, limit=_LIMIT_KQA.value)
    for name, pair_set in pair_sets.items():
        logging.info("%s: %d pairs from %s", name, len(pair_set.pairs), pair_set.source)

    from rar_jax.judges.factory import build_judge

    backend = build_judge(config)
    templates_dir = config.judge.templates_dir or None
    report: dict[str, Any] = {
        "judge": judge_description(config),
        "threshold": judge_quality.DEFAULT_THRESHOLD,
        "datasets": {},
    }
    records: list[dict[str, Any]] = []
    for name, pair_set in pair_sets.items():
        section, pair_records = evaluate_dataset(name, pair_set, backend, templates_dir)
        report["datasets"][name] = section
        records += pair_records

    output_dir = pathlib.Path(_OUTPUT_DIR.value or config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "judge_quality.json", report)
    markdown = markdown_report(report)
    (output_dir / "judge_quality.md").write_text(markdown)
    write_jsonl(output_dir / "judge_quality_pairs.jsonl", records)
    print(markdown)
    print(
        f"Wrote judge_quality.json, judge_quality.md and judge_quality_pairs.jsonl to {output_dir}"
    )


def run() -> None:
    """Console-script entry point (``rar-judge-quality``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
