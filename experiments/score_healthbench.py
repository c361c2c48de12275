"""Scores graded HealthBench answers with the official simple-evals formula.

Reads a JSONL of HealthBench records whose answers were graded per criterion (the layout of
``../shared/data/healthbench_graded_m42``), computes every example's score, the clipped overall
score, per-axis / per-theme / per-tag scores with bootstrap stds, prints a markdown table and
writes ``healthbench_metrics.json`` and ``healthbench_metrics.md`` to ``output_dir``.

    rar-score-healthbench --config=configs/base.py \
        --config.healthbench.graded_path=../shared/data/healthbench_graded_m42/judge_responses_100.jsonl
"""

from __future__ import annotations

import logging
import pathlib

import jax
from absl import app

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import healthbench_scoring
from rar_jax.io import write_json

_CONFIG = rar_config.define_config_flag()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    rar_config.validate(config, num_devices=jax.device_count())
    if not config.healthbench.graded_path:
        raise app.UsageError("set --config.healthbench.graded_path to a JSONL of graded answers")
    path = pathlib.Path(config.healthbench.graded_path)
    examples = healthbench_scoring.read_graded_examples(path)
    logging.info("read %d graded examples from %s", len(examples), path)
    metrics = healthbench_scoring.healthbench_metrics(
        examples, seed=config.seed, bootstrap_samples=config.healthbench.bootstrap_samples
    )
    table = healthbench_scoring.metrics_markdown(metrics)
    output_dir = pathlib.Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "healthbench_metrics.json", metrics)
    (output_dir / "healthbench_metrics.md").write_text(table + "\n")
    print(f"HealthBench scores of {len(examples)} graded answers from {path}:\n")
    print(table)
    print(f"\nWrote {output_dir / 'healthbench_metrics.json'} and healthbench_metrics.md")


def run() -> None:
    """Console-script entry point (``rar-score-healthbench``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
