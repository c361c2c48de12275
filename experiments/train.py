"""GRPO with rubric rewards (``rar-train``): the project's main job.

    rar-train --config=configs/quickstart.py
    rar-train --config=configs/quickstart.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://judge-host:8000/v1 --config.judge.http.model=my-judge

One run: validate the config (before anything compiles) -> optionally join a multi-host job
(``distributed.initialize``) -> read the training and held-out examples (``data.*``) -> load the
policy (``model.*``) and the judge (``judge.*``; on the policy's devices, on the last
``judge.devices`` devices of their own, or behind an OpenAI-compatible server) -> build the reward
function (``reward.method``) -> :class:`rar_jax.rl.trainer.GRPOTrainer` (which resumes from the
latest checkpoint in ``output_dir``) -> ``reward_curve.png``, ``summary.json`` and, with
``train.export_hf``, the final policy as an HF directory. A summary is printed at the end: reward
at the start and the end, held-out rewards, and the rubric criteria whose satisfaction moved most.
The work is :mod:`rar_jax.rl.train_run`.
"""

from __future__ import annotations

import pathlib

from absl import app
from ml_collections import config_dict

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.rl.train_run import run_training, summary_text
from rar_jax.rl.trainer import TrainSummary

_CONFIG = rar_config.define_config_flag()


def train(config: config_dict.ConfigDict) -> TrainSummary:
    """Runs the whole job for a config (see the module docstring) and returns its summary."""
    inputs = ("data.train_path", "data.eval_path") + cli.model_input_keys(config)
    with cli.training_run(config, inputs) as output_dir:
        return run_training(config, output_dir)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    summary = train(config)
    print(summary_text(summary, pathlib.Path(config.output_dir)))


def run() -> None:
    """Console-script entry point (``rar-train``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
