"""Crash and resume: a run killed with SIGKILL and resumed writes exactly the uninterrupted run's files.

rar-train runs a tiny checkpoint (programmatic reward, the tiny model as the held-out criteria
judge) for 4 steps with a checkpoint every 2, evaluation every 2 and samples every step. It is
killed (``RAR_JAX_KILL_AT``, SIGKILL as ``kill -9``) at three points: in the middle of a step,
between a step's metrics line and the next checkpoint, and while an asynchronous checkpoint save
is in flight; then started again on the same folder. Every per-step file must then equal the
uninterrupted run's, timing fields aside, and the summary must describe the whole run.
"""

from __future__ import annotations

import json
import pathlib
import signal

import pytest

from cli_runner import run_experiment
from rar_jax.metrics import FILES, read_rows
from rar_jax.rl.loop import KILL_AT_ENV
from tiny_checkpoint import write_tiny_checkpoint

pytestmark = pytest.mark.slow

STEPS = 4
# Metrics that measure time, not the run.
TIMING_PREFIXES = ("time/", "throughput/")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _args(checkpoint: pathlib.Path, data: pathlib.Path, output_dir: pathlib.Path) -> list[str]:
    settings = {
        "output_dir": output_dir,
        "model.source": checkpoint,
        "judge.model_source": checkpoint,
        "data.train_path": data / "healthbench" / "ruscarl_heldout500.jsonl",
        "data.eval_size": 2,
        "data.max_rubric_chars": 400,
        "rl.prompts_per_step": 2,
        "rl.num_generations": 2,
        "rl.max_prompt_length": 192,
        "rl.pad_prompts_to_max_length": True,
        "rl.max_completion_length": 8,
        "optim.num_steps": STEPS,
        "optim.learning_rate": 1e-3,
        "reward.method": "programmatic",
        "reward.programmatic_fn": "distinct_words",
        "train.eval_every": 2,
        "train.log_samples_every": 1,
        "checkpoint.every_steps": 2,
        "checkpoint.async_save": True,
        "metrics.tensorboard": False,
    }
    return ["--config=configs/base.py"] + [f"--config.{k}={v}" for k, v in settings.items()]


def _without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(TIMING_PREFIXES)}


def _outputs(output_dir: pathlib.Path) -> dict:
    files = {name: [_without_timings(row) for row in read_rows(output_dir / file)]
             for name, file in FILES.items()}
    files["summary"] = json.loads((output_dir / "summary.json").read_text())
    return files


@pytest.fixture(scope="module")
def uninterrupted(checkpoint, shared_data, tmp_path_factory) -> dict:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_experiment("train.py", *_args(checkpoint, shared_data, output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = _outputs(output_dir)
    # The run is what the test needs: every step, two evaluations with criteria, samples.
    assert [row["step"] for row in outputs["metrics"] if "reward/mean" in row] == list(range(STEPS))
    assert [row["step"] for row in outputs["metrics"] if "eval/reward_mean" in row] == [0, 2, 4]
    assert {row["split"] for row in outputs["criteria"]} == {"eval"}
    assert len(outputs["samples"]) == 2 * STEPS
    return outputs


@pytest.mark.parametrize("kill_at", ["mid_step:2", "after_log:2", "during_save:3"])
def test_a_killed_run_resumes_to_the_same_files(kill_at, checkpoint, shared_data, tmp_path,
                                                 uninterrupted):
    args = _args(checkpoint, shared_data, tmp_path)
    killed = run_experiment("train.py", *args, env={KILL_AT_ENV: kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_experiment("train.py", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after step" in resumed.stderr
    assert "taking over the lock left by pid" in resumed.stderr  # The dead run's lock.
    outputs = _outputs(tmp_path)
    for name, expected in uninterrupted.items():
        assert outputs[name] == expected, name
