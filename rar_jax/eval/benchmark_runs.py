"""``rar-eval healthbench|gpqa`` as library calls: answer, grade, score, write the reports.

:func:`run_healthbench` and :func:`run_gpqa` take a validated config and an output folder (the
command's module docstring, ``experiments/eval.py``, describes every option) and return the
report and its markdown. The policy is ``model.*`` answering greedily in batches of
``eval.batch_size``; the judge comes from :func:`rar_jax.judges.factory.build_judge`, sharing the
policy's loaded weights when it is the same checkpoint.

- HealthBench (:mod:`rar_jax.eval.healthbench_eval`): writes ``healthbench_eval.json``,
  ``healthbench_eval.md`` and ``healthbench_answers.jsonl`` (per criterion ``criteria_met``,
  ``p_true`` and ``verdict_mass`` to re-threshold); the reports name the grading mode.
- GPQA-Diamond (:mod:`rar_jax.eval.gpqa_eval`): writes ``gpqa_eval.json``, ``gpqa_eval.md``
  and ``gpqa_answers.jsonl``.
"""

from __future__ import annotations

import copy
import logging
import math
import pathlib
import time
from typing import Any

import numpy as np

from rar_jax.errors import UserError
from rar_jax.io import json_safe, write_json, write_jsonl

BENCHMARKS = ("healthbench", "gpqa")
# Each benchmark's data: its config key and what it holds.
DATA_KEYS = {
    "healthbench": ("eval.healthbench_path", "a HealthBench JSONL or tfds:healthbench..."),
    "gpqa": ("eval.gpqa_path", "the GPQA CSV or tfds:gpqa_diamond..."),
}


def data_path(config: Any, benchmark: str) -> str:
    """The data of ``benchmark`` (:data:`DATA_KEYS`); a UserError naming the key when unset."""
    key, what = DATA_KEYS[benchmark]
    path = config.eval[key.removeprefix("eval.")]
    if not path:
        raise UserError(f"set --config.{key} to {what}")
    return path


def describe_setup(config: Any, *, with_judge: bool = True) -> dict[str, Any]:
    """The policy and (when one is used) judge options that identify a run in its report."""
    judge = config.judge
    description: dict[str, Any] = {
        "policy": config.model.source,
        "max_new_tokens": int(config.eval.max_new_tokens),
        "seed": int(config.seed),
    }
    if not with_judge:
        return description
    description.update(judge_backend=judge.backend,
                       grader_max_tokens=int(config.eval.grader_max_tokens))
    if judge.backend == "http":
        description.update(judge_base_url=judge.http.base_url, judge_model=judge.http.model)
    else:
        description["judge_model"] = judge.model_source
    return description


def load_policy_and_judge(config: Any, *, needs_judge: bool = True) -> tuple[Any, Any]:
    """The greedy policy (``model.*``) and the judge (``judge.*``; None when not needed).

    A JAX judge on the policy's own checkpoint shares the policy's loaded weights (nothing here
    changes them); see :func:`rar_jax.judges.factory.build_judge`.
    """
    from rar_jax.eval.answering import SamplerPolicy
    from rar_jax.judges.factory import build_judge
    from rar_jax.models.loading import load_from_config

    model, tokenizer = load_from_config(config.model)
    logging.info("policy %s (%s)", config.model.source, model.config.architecture)
    policy = SamplerPolicy(model, tokenizer, batch_size=config.eval.batch_size,
                           max_new_tokens=config.eval.max_new_tokens)
    if not needs_judge:
        return policy, None
    return policy, build_judge(config, policy=(model, tokenizer))


def judge_chunk_size(config: Any) -> int:
    """Judge prompts per call: one batch of the JAX judge, or enough to fill the HTTP pool."""
    if config.judge.backend == "http":
        return 4 * int(config.judge.http.max_concurrency)
    return int(config.judge.batch_size)


# ------------------------------------------------------------------------------ HealthBench
def grading_description(grading: dict[str, Any]) -> str:
    """One line naming the grading mode (and threshold) that produced the verdicts."""
    if grading["scoring"] == "verdict_probs":
        return (f"Grading: verdict_probs (criteria_met = P(true) >= {grading['threshold']:g}, "
                "P(true) read after the verdict-first grader prompt's `{\"criteria_met\": `).")
    return ("Grading: generate (HealthBench's grader writes `{\"explanation\", "
            "\"criteria_met\"}`, parsed).")


def healthbench_markdown(report: dict[str, Any], table: str) -> str:
    """The HealthBench report: setup, grading mode, counts, the official metrics table, failures."""
    counts = report["counts"]
    grading = report["grading"]
    setup = ", ".join(f"{key}={value}" for key, value in report["setup"].items())
    graded = counts["criteria"] - counts["failed_criteria"]
    met = "n/a"
    if graded:
        met = f"{grading['criteria_met']} of {graded} ({grading['criteria_met'] / graded:.1%})"
    lines = [
        "# HealthBench evaluation",
        "",
        f"Setup: {setup}. Data: `{report['data']}`.",
        "",
        grading_description(grading),
        "",
        f"- examples: {counts['examples']} ({counts['scored_examples']} scored, "
        f"{counts['excluded_examples']} without a defined score)",
        f"- criteria graded: {counts['criteria'] - counts['failed_criteria']} of "
        f"{counts['criteria']} ({counts['resampled_criteria']} re-sampled after an unusable "
        f"reply; {counts['failed_criteria']} failed gradings left out of their "
        "example's score)",
        f"- graded criteria judged met: {met}",
        f"- answers cut at max_new_tokens: {counts['answers_cut']}",
    ]
    if grading["mean_p_true"] is not None:
        lines.append(f"- mean P(true) over graded criteria: {grading['mean_p_true']:.4f}")
    if grading["mean_verdict_mass"] is not None:
        lines.append("- mean probability of the words true + false after the prefix: "
                     f"{grading['mean_verdict_mass']:.4g}")
    lines += ["", table]
    if report["failure_reasons"]:
        lines += ["", "Failed gradings:"]
        lines += [f"- {count} x {why}" for why, count in report["failure_reasons"].items()]
    return "\n".join(lines) + "\n"


def run_healthbench(config: Any, output_dir: pathlib.Path) -> tuple[dict[str, Any], str]:
    """``rar-eval healthbench``: returns the report and its markdown (module docstring)."""
    from rar_jax.eval import healthbench_eval, healthbench_scoring

    path = data_path(config, "healthbench")
    items = healthbench_eval.read_healthbench_items(
        path, limit=config.eval.limit, data_dir=config.data.tfds_data_dir or None
    )
    logging.info("%d HealthBench prompts from %s", len(items), path)
    policy, judge = load_policy_and_judge(config)
    start = time.perf_counter()
    scoring = config.eval.grader_scoring
    result = healthbench_eval.evaluate_healthbench(
        items, policy, judge,
        grader_max_tokens=config.eval.grader_max_tokens,
        seed=config.seed,
        bootstrap_samples=config.healthbench.bootstrap_samples,
        templates_dir=config.judge.templates_dir or None,
        chunk_size=judge_chunk_size(config),
        grader_scoring=scoring,
        grader_threshold=float(config.eval.grader_threshold),
        grader_prompt=config.eval.grader_prompt,
        grader_max_resamples=config.eval.grader_max_resamples,
    )
    seconds = time.perf_counter() - start
    if result.metrics:
        table = healthbench_scoring.metrics_markdown(result.metrics)
    else:
        logging.warning("no HealthBench example could be scored; see the failure reasons")
        table = ("**No example could be scored**: every one lost its positive-points criteria to "
                 "failed gradings (see the reasons below and healthbench_answers.jsonl).")
    excluded = [reason for reason in result.excluded if reason is not None]
    setup = describe_setup(config)
    setup["grader_scoring"] = scoring
    if scoring == "verdict_probs":
        del setup["grader_max_tokens"]  # Nothing is written.
        setup["grader_threshold"] = float(config.eval.grader_threshold)
    else:
        setup["grader_max_resamples"] = int(config.eval.grader_max_resamples)
    setup["grader_prompt"] = config.eval.grader_prompt
    p_true = np.concatenate([np.asarray(p, np.float64) for p in result.grades.p_true])
    mass = np.concatenate([np.asarray(m, np.float64) for m in result.grades.verdict_mass])
    graded = result.total_criteria - result.failed_criteria
    grading = {
        "scoring": scoring,
        "threshold": result.grader_threshold,
        "criteria_met": result.met_criteria(),
        "met_fraction": result.met_criteria() / graded if graded else None,
        "mean_p_true": float(np.nanmean(p_true)) if np.isfinite(p_true).any() else None,
        "mean_verdict_mass": float(np.nanmean(mass)) if np.isfinite(mass).any() else None,
    }
    report = {
        "benchmark": "healthbench",
        "data": path,
        "setup": setup,
        "grading": grading,
        "seconds": seconds,
        "counts": {
            "examples": len(items),
            "scored_examples": len(items) - len(excluded),
            "excluded_examples": len(excluded),
            "criteria": result.total_criteria,
            "failed_criteria": result.failed_criteria,
            "resampled_criteria": result.resampled_criteria(),
            "answers_cut": sum(reason == "length" for reason in result.finish_reasons),
        },
        "failure_reasons": result.failure_reasons(),
        "excluded_examples": excluded,
        "metrics": result.metrics,
    }
    records = []
    for index, item in enumerate(items):
        records.append({
            "prompt_id": item.example_id,
            "answer": result.answers[index],
            "finish_reason": result.finish_reasons[index],
            "overall_score": result.example_scores[index],
            "excluded": result.excluded[index],
            "criteria": [
                {
                    "criterion": criterion.description,
                    "points": criterion.weight,
                    "criteria_met": None if math.isnan(verdict) else bool(verdict),
                    "p_true": result.grades.p_true[index][column],
                    "verdict_mass": result.grades.verdict_mass[index][column],
                    "explanation": result.grades.explanations[index][column],
                    "reason": result.grades.reasons[index][column],
                }
                for column, (criterion, verdict) in enumerate(
                    zip(item.rubric.criteria, result.grades.verdicts[index])
                )
            ],
        })
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "healthbench_eval.json", report)
    markdown = healthbench_markdown(report, table)
    (output_dir / "healthbench_eval.md").write_text(markdown)
    write_jsonl(output_dir / "healthbench_answers.jsonl", records)
    return report, markdown


# ------------------------------------------------------------------------------ GPQA
def gpqa_markdown(report: dict[str, Any]) -> str:
    """The GPQA report: setup, mean accuracy with its interval, per-run rows, outcome counts."""
    summary = report["summary"]
    setup = ", ".join(f"{key}={value}" for key, value in report["setup"].items())

    def percent(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"

    lines = [
        "# GPQA-Diamond evaluation",
        "",
        f"Setup: {setup}, verifier={report['verifier']}. Data: `{report['data']}` "
        f"({report['questions']} questions x {summary['num_runs']} choice orders).",
        "",
        f"**Accuracy: {percent(summary['accuracy'])}%** (mean of {summary['num_runs']} runs; "
        f"95% interval {percent(summary['ci95_low'])} - {percent(summary['ci95_high'])}); "
        f"{summary['ungraded']} of {summary['answers']} answers ungraded (verifier failed).",
        "",
        "| run | accuracy (%) | graded answers |",
        "|---:|---:|---:|",
    ]
    for run, (accuracy, graded) in enumerate(zip(summary["run_accuracy"], summary["run_graded"])):
        lines.append(f"| {run} | {percent(accuracy)} | {graded} |")
    lines += ["", "| outcome | answers |", "|---|---:|"]
    lines += [f"| {method} | {count} |" for method, count in summary["methods"].items()]
    return "\n".join(lines) + "\n"


def run_gpqa(config: Any, output_dir: pathlib.Path) -> tuple[dict[str, Any], str]:
    """``rar-eval gpqa``: returns the report and its markdown (module docstring)."""
    from rar_jax.eval import gpqa_eval

    path = data_path(config, "gpqa")
    items = gpqa_eval.read_gpqa_items(
        path, num_runs=config.eval.gpqa_runs, seed=config.seed, limit=config.eval.limit,
        data_dir=config.data.tfds_data_dir or None,
    )
    questions = len({item.question_id for item in items})
    logging.info("%d GPQA questions x %d runs from %s", questions, config.eval.gpqa_runs, path)
    if config.eval.gpqa_verifier and config.eval.gpqa_verifier_model:
        config = copy.deepcopy(config)  # The verifier's own model (the paper's: gpt-4o).
        config.judge.http.model = config.eval.gpqa_verifier_model
    policy, judge = load_policy_and_judge(config, needs_judge=config.eval.gpqa_verifier)
    start = time.perf_counter()
    result = gpqa_eval.evaluate_gpqa(
        items, policy, judge,
        num_runs=config.eval.gpqa_runs,
        use_verifier=config.eval.gpqa_verifier,
        verifier_max_tokens=config.eval.grader_max_tokens,
        templates_dir=config.judge.templates_dir or None,
        chunk_size=judge_chunk_size(config),
    )
    seconds = time.perf_counter() - start
    report = {
        "benchmark": "gpqa_diamond",
        "data": path,
        "setup": describe_setup(config, with_judge=bool(config.eval.gpqa_verifier)),
        "verifier": bool(config.eval.gpqa_verifier),
        "questions": questions,
        "seconds": seconds,
        "summary": result.summary,
    }
    grades = result.grades
    records = [
        {
            "question_id": item.question_id,
            "run": item.run,
            "correct_letter": item.answer_letter,
            "answer": result.answers[index],
            "finish_reason": result.finish_reasons[index],
            "letter": grades.letters[index],
            "method": grades.methods[index],
            "correct": grades.correct[index],
            "reason": grades.reasons[index],
            "verifier_reply": grades.verifier_replies[index],
        }
        for index, item in enumerate(result.items)
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "gpqa_eval.json", report)
    markdown = gpqa_markdown(json_safe(report))
    (output_dir / "gpqa_eval.md").write_text(markdown)
    write_jsonl(output_dir / "gpqa_answers.jsonl", records)
    return report, markdown
