"""rar-sft end to end: Table 1's Expert-Answer-SFT config (small variant) with the tiny
checkpoint on the shared HealthBench prompts, its outputs read by rar-eval's loader and
rar-tables, and its user errors."""

import json
import pathlib

import pytest

from cli_runner import run_experiment
from rar_jax.eval import tables
from rar_jax.metrics import read_metrics
from rar_jax.models.loading import load_model_and_tokenizer
from tiny_checkpoint import write_tiny_checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = f"--config={REPO_ROOT / 'configs' / 'paper' / 'table1_expert_sft.py'}:small"


def _flags(checkpoint, output_dir, *extra):
    return (CONFIG, f"--config.model.source={checkpoint}", f"--config.output_dir={output_dir}",
            "--config.optim.num_steps=2", "--config.train.eval_every=2",
            "--config.rl.max_prompt_length=640", "--config.rl.max_completion_length=16",
            "--config.train.export_hf=true", "--config.checkpoint.async_save=false",
            "--config.metrics.tensorboard=false", *extra)


@pytest.mark.slow
def test_the_table1_sft_config_fine_tunes_exports_and_is_tabulated(shared_data, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny")
    output_dir = tmp_path / "runs" / "table1_expert_sft"
    result = run_experiment("sft.py", *_flags(checkpoint, output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SFT finished 2 steps" in result.stdout
    # 80 of the shared subset's 100 HealthBench prompts have an ideal completion.
    assert "20 of 100 examples have no reference answer" in result.stderr

    summary = json.loads((output_dir / "summary.json").read_text())
    records = read_metrics(output_dir)
    steps = [r for r in records if "sft/answer_tokens" in r]
    assert [r["step"] for r in steps] == [0, 1]
    assert summary["loss_first"] == steps[0]["loss"] and summary["loss_last"] == steps[1]["loss"]
    assert sorted(int(step) for step in summary["eval_losses"]) == [0, 2]
    assert json.loads((output_dir / "config.json").read_text())["sft"]["batch_size"] == 2
    policy, _ = load_model_and_tokenizer(str(output_dir / "hf_export"))  # What rar-eval reads.
    assert policy.config.num_layers > 0
    assert tables.read_run(output_dir).method == "sft"


@pytest.mark.slow
def test_data_without_reference_answers_is_one_line_error(shared_data, tmp_path):
    records = [json.loads(line) for line in
               (shared_data / "healthbench" / "oss_eval_first100.jsonl").read_text().splitlines()]
    without = [r for r in records if not (r.get("ideal_completions_data") or {})
               .get("ideal_completion")][:3]
    data = tmp_path / "no_reference.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in without))
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny")
    result = run_experiment("sft.py", *_flags(checkpoint, tmp_path / "run",
                                              f"--config.data.train_path={data}"))
    assert result.returncode == 2
    assert f"sft.py: error: {data}: no example fits" in result.stderr
    assert "with a reference answer" in result.stderr and "Traceback" not in result.stderr
