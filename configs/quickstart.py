"""Quickstart: score the graded HealthBench sample with the official formula.

Until the trainer lands this is the main job `make quickstart` runs: 100 HealthBench examples
answered by a model and graded per criterion (``../shared/data/healthbench_graded_m42``) are
scored overall, per axis and per theme, with bootstrap stds.
"""

from rar_jax.config import base_config


def get_config():
    config = base_config()
    config.output_dir = "runs/quickstart"
    config.healthbench.graded_path = (
        "../shared/data/healthbench_graded_m42/judge_responses_100.jsonl"
    )
    return config
