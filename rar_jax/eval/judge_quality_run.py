"""A judge's agreement with human labels, as one run (``rar-judge-quality``).

:func:`run_judge_quality` scores the pairs of each data set (:mod:`rar_jax.eval.judge_quality`:
graded HealthBench criteria, K-QA physician labels) with the config's judge and writes
``judge_quality.json``, ``judge_quality.md`` and ``judge_quality_pairs.jsonl``; the command's
docstring (``experiments/judge_quality.py``) describes the metrics and files.
"""

from __future__ import annotations

import collections
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rar_jax.eval import judge_quality
from rar_jax.io import write_json, write_jsonl

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


def run_judge_quality(
    config: Any, pair_sets: Mapping[str, judge_quality.PairSet], output_dir: pathlib.Path
) -> tuple[dict[str, Any], str]:
    """Scores every data set's pairs with the config's judge, writes the reports to
    ``output_dir`` and returns the report and its markdown."""
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
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "judge_quality.json", report)
    markdown = markdown_report(report)
    (output_dir / "judge_quality.md").write_text(markdown)
    write_jsonl(output_dir / "judge_quality_pairs.jsonl", records)
    return report, markdown
