"""rar-train end to end with a tiny checkpoint as policy and judge on real HealthBench prompts."""

import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from rar_jax.checkpoint import Checkpointer
from rar_jax.config import base_config
from rar_jax.data import selection
from rar_jax.errors import UserError
from rar_jax.experiments import train as train_lib
from rar_jax.metrics import read_metrics
from rar_jax.models.loading import load_model_and_tokenizer
from cli_runner import run_experiment
from tiny_checkpoint import write_tiny_checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 3


def tiny_config(checkpoint: pathlib.Path, data: pathlib.Path, output_dir: pathlib.Path):
    config = base_config()
    config.output_dir = str(output_dir)
    config.model.source = str(checkpoint)
    config.judge.model_source = str(checkpoint)
    config.data.train_path = str(data / "healthbench" / "ruscarl_heldout500.jsonl")
    config.data.eval_size = 2
    config.rl.prompts_per_step = 2
    config.rl.num_generations = 2
    config.rl.max_prompt_length = 192  # Bytes: keeps 16 short prompts with short rubrics.
    config.data.max_rubric_chars = 800  # Keeps the byte-level judge prompts short.
    config.rl.pad_prompts_to_max_length = True
    config.rl.max_completion_length = 8
    config.optim.num_steps = STEPS
    config.optim.learning_rate = 1e-3
    config.reward.method = "rar_implicit"
    config.train.eval_every = STEPS
    config.train.export_hf = True
    config.checkpoint.async_save = False
    config.metrics.tensorboard = False
    return config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_train_writes_metrics_curve_checkpoint_export_and_resumes(checkpoint, shared_data, tmp_path):
    config = tiny_config(checkpoint, shared_data, tmp_path)
    summary = train_lib.train(config)

    records = read_metrics(tmp_path)
    steps = [r for r in records if "reward/mean" in r]
    evals = [r for r in records if "eval/reward_mean" in r]
    assert [r["step"] for r in steps] == list(range(STEPS))
    assert [r["step"] for r in evals] == [0, STEPS]
    rewards = np.array([r["reward/mean"] for r in steps])
    assert np.all((rewards >= 0) & (rewards <= 1))  # (s - 1) / 9 of an expected 1-10 rating.
    assert summary.reward_first == rewards[0] and summary.reward_last == rewards[-1]
    assert summary.eval_rewards == {0: evals[0]["eval/reward_mean"], STEPS: evals[1]["eval/reward_mean"]}
    assert json.loads((tmp_path / "summary.json").read_text())["reward_last"] == rewards[-1]
    assert (tmp_path / "reward_curve.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "config.json").read_text())["rl"]["num_generations"] == 2

    # The exported HF directory holds exactly the checkpointed final parameters.
    restored = Checkpointer(tmp_path / "checkpoints", max_to_keep=3, async_save=False)
    assert restored.latest_step() == STEPS
    exported, _ = load_model_and_tokenizer(tmp_path / "hf_export")
    start, _ = load_model_and_tokenizer(checkpoint)
    final = jax.tree.leaves(nnx.state(exported, nnx.Param))
    initial = jax.tree.leaves(nnx.state(start, nnx.Param))
    assert any(not np.array_equal(a, b) for a, b in zip(final, initial))  # Training moved them.

    # The held-out answers' criteria were checked one by one at both evaluations.
    assert all(0 <= r["eval/rubric/criteria_credit"] <= 1 for r in evals)
    held_out_criteria = sum(len(e.rubric.criteria) for e in selection.read_train_and_eval(
        config, load_model_and_tokenizer(checkpoint)[1])[1])
    assert len(summary.eval_criterion_changes) == held_out_criteria
    assert all(c["first_step"] == 0 and c["last_step"] == STEPS for c in summary.eval_criterion_changes)
    text = train_lib.summary_text(summary, tmp_path)
    assert f"GRPO finished {STEPS} steps" in text and "held-out reward (greedy)" in text
    assert "criterion satisfaction of the held-out greedy answers" in text

    # Resuming with a longer schedule runs only the new step.
    config.optim.num_steps = STEPS + 1
    config.train.eval_every = 0
    train_lib.train(config)
    steps = [r["step"] for r in read_metrics(tmp_path) if "reward/mean" in r]
    assert steps == list(range(STEPS + 1))


def test_held_out_examples_are_usable_seeded_and_disjoint(checkpoint, shared_data, tmp_path):
    config = tiny_config(checkpoint, shared_data, tmp_path)
    config.data.eval_size = 3
    _, tokenizer = load_model_and_tokenizer(checkpoint)
    train, held_out = selection.read_train_and_eval(config, tokenizer)
    again_train, again_held_out = selection.read_train_and_eval(config, tokenizer)
    assert [e.example_id for e in held_out] == [e.example_id for e in again_held_out]
    assert not {e.example_id for e in train} & {e.example_id for e in held_out}

    # Independently: the records whose prompt fits 192 byte tokens and whose criteria fit 800
    # characters (byte tokenizer: one token per byte of "role: content\n" lines + "assistant:").
    def fits(record):
        prompt = sum(len(f"{m['role']}: {m['content']}\n".encode()) for m in record["prompt"])
        rubric = sum(len(item["criterion"]) for item in record["rubrics"])
        return prompt + len("assistant:") <= 192 and rubric <= 800

    records = [json.loads(line) for line in pathlib.Path(config.data.train_path).read_text().splitlines()]
    expected = sorted(r["prompt"][-1]["content"] for r in records if fits(r))
    assert sorted(e.conversation[-1]["content"] for e in train + held_out) == expected
    assert len(expected) == 16 and len(held_out) == 3

    config.seed = 1
    other = selection.read_train_and_eval(config, tokenizer)[1]
    assert [e.example_id for e in other] != [e.example_id for e in held_out]
    config.data.eval_size = len(expected)
    with pytest.raises(UserError, match=f"gives only {len(expected)} usable examples"):
        selection.read_train_and_eval(config, tokenizer)


@pytest.mark.slow
def test_judge_on_its_own_devices(checkpoint, shared_data, tmp_path):
    """4 CPU devices: the judge takes the last one, the policy's data-parallel mesh the other 3."""
    overrides = {
        "output_dir": tmp_path,
        "model.source": checkpoint,
        "judge.model_source": checkpoint,
        "judge.devices": 1,
        "data.train_path": shared_data / "healthbench" / "ruscarl_heldout500.jsonl",
        "rl.prompts_per_step": 3,
        "rl.num_generations": 2,
        "rl.max_prompt_length": 192,
        "data.max_rubric_chars": 800,
        "rl.max_completion_length": 8,
        "optim.num_steps": 1,
        "metrics.tensorboard": False,
    }
    result = run_experiment(
        "train.py",
        f"--config={REPO_ROOT / 'configs' / 'base.py'}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
        cwd=tmp_path,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GRPO finished 1 steps" in result.stdout
    assert "policy on 3 devices, judge on 1" in result.stderr
    [record] = [r for r in read_metrics(tmp_path) if "reward/mean" in r]
    assert 0 <= record["reward/mean"] <= 1
