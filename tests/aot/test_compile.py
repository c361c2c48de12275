"""rar-compile: a tiny model's programs compiled for a TPU topology on this CPU host (libtpu, from
the test extras): memory analysis present, XLA's FLOPs within a factor of 2 of the analytic count
where no loop repeats, the fsdp step's collectives, a plan that does not fit, and the CLI."""

import json
import math
import pathlib

import pytest

from cli_runner import run_experiment
from rar_jax.aot import model_shapes, plan
from rar_jax.models import flops
from rar_jax.parallel import chips
from rar_jax.config import base_config
from rar_jax.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LLAMA_TINY = REPO_ROOT / "tests" / "fixtures" / "llama_tiny" / "config.json"


def one_layer_config(tmp_path: pathlib.Path):
    """A run config of the one-layer tiny model where every loop of every program runs once:
    one micro-batch, one log-prob chunk, one attention block, no remat, so XLA's cost analysis
    (which counts a loop body once) sees all the work."""
    hf = json.loads(LLAMA_TINY.read_text())
    hf["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(hf))
    config = base_config()
    config.model.source = config.judge.model_source = str(tmp_path)
    config.judge.backend, config.judge.batch_size = "jax", 4
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    config.rl.prompts_per_step, config.rl.num_generations = 2, 4
    config.rl.max_prompt_length, config.rl.max_completion_length = 32, 32
    config.rl.pad_prompts_to_max_length = True
    config.rl.micro_batch_size, config.rl.logprob_chunk_size = 0, 1024
    config.rl.kl.beta = 0.04
    config.model.attention_chunk = 0
    config.sft.batch_size = 8
    return config


def test_the_paper_models_have_their_published_sizes():
    # Qwen2.5-7B: 7.61B parameters; Qwen2.5-32B: 32.5B; Llama-3-8B: 8.03B (model cards).
    for name, published in (("checkpoints/Qwen2.5-7B", 7.61e9), ("Qwen2.5-32B-Instruct", 32.5e9),
                            ("llama-3-8b", 8.03e9)):
        count = model_shapes.model_architecture(name).num_parameters()
        assert math.isclose(count, published, rel_tol=0.01), (name, count)
    with pytest.raises(UserError, match="not a known architecture"):
        model_shapes.model_architecture("checkpoints/unknown-model")


def test_roofline_is_the_slower_of_compute_and_memory():
    v5e = chips.CHIPS["v5e"]
    assert v5e.roofline_seconds(197e12, 0) == pytest.approx(1.0)
    assert v5e.roofline_seconds(0, 819e9 * 2) == pytest.approx(2.0)
    assert chips.chip_of_device_kind("TPU v5 lite") is v5e
    assert chips.chip_of_device_kind("cpu") is None
    with pytest.raises(ValueError, match="unknown chip 'tpu9'"):
        chips.chip_of_topology("tpu9:2x2")
    # MFU's peak (metrics.peak_flops_per_device): -1 = the chip's, 0 = off, else as given.
    assert chips.peak_flops_per_device(-1, "TPU v5 lite") == 197e12
    assert chips.peak_flops_per_device(-1, "cpu") == 0.0
    assert chips.peak_flops_per_device(0, "TPU v5 lite") == 0.0
    assert chips.peak_flops_per_device(5e12, "cpu") == 5e12


@pytest.mark.slow
def test_tiny_programs_compile_for_v5e_with_memory_flops_and_fsdp_collectives(tmp_path):
    config = one_layer_config(tmp_path)
    grpo = plan.compile_plan(config, "v5e:2x2", name="tiny", sft=False, steps=10)
    sft = plan.compile_plan(config, "v5e:2x2", name="tiny", sft=True, steps=10)
    programs = {p.name: p for p in grpo.programs + sft.programs}
    assert sorted(programs) == ["decode", "judge", "prefill", "reference_pass", "sft_step",
                                "train_step"]
    for program in programs.values():
        assert program.devices == 4 and program.argument_bytes > 0 and program.temp_bytes >= 0
        assert program.peak_bytes >= program.resident_bytes > 0
    # Where every loop runs once, XLA's count agrees with the analytic one within a factor 2.
    for name in ("train_step", "reference_pass", "sft_step", "prefill"):
        ratio = programs[name].xla_flops / programs[name].analytic_flops
        assert 0.5 <= ratio <= 2.0, (name, ratio)
    # The analytic count by hand: 8 rows x 64 tokens run as their 63 input positions, 3 passes
    # (no remat), per token the projections of one layer plus attention over its context, over
    # 4 devices. The 2 prompts' 4 rows each share their first 31 positions (rl.share_prompt_prefix:
    # run once per prompt, attending over those 31); each row's last 32 positions attend over 63
    # keys and get the LM head.
    projections = 2 * (64 * 16 * (4 + 2 * 2) + 4 * 16 * 64 + 3 * 64 * 96)
    attention = 4 * 4 * 16  # per key
    head = 2 * 64 * 256
    assert programs["train_step"].analytic_flops == pytest.approx(3 * (
        2 * 31 * (projections + attention * 31)
        + 8 * 32 * (projections + attention * 63 + head)) / 4)
    # fsdp: parameters gathered for the forward pass, gradients reduced across the 4 devices.
    train = programs["train_step"].collectives
    assert train.get("all-gather", 0) > 0
    assert train.get("reduce-scatter", 0) + train.get("all-reduce", 0) > 0
    # A decode step reads the whole (gathered) weights and its share of the KV cache: 16 rows
    # (2 prompts padded to 4 to split over 4 devices, x 4 answers) of 64 slots, 1 layer, keys
    # and values of 2 heads x 16, f32, and a bool slot mask, over 4 devices, and the replicated
    # int32 write slot.
    weights = model_shapes.model_architecture(str(tmp_path)).num_parameters() * 4
    assert programs["decode"].analytic_bytes == weights + 16 * 64 * (2 * 2 * 16 * 4 + 1) / 4 + 4
    assert programs["decode"].bytes_per_run() == programs["decode"].analytic_bytes
    assert grpo.fits() and sft.fits()
    assert "FITS with" in grpo.text()
    decoded = grpo.to_json()
    assert decoded["fits"] and decoded["devices"] == 4 and len(decoded["programs"]) == 5
    assert decoded["step_seconds"] == pytest.approx(sum(
        p["runs_per_step"] * p["roofline_seconds"] for p in decoded["programs"]))


@pytest.mark.slow
def test_a_config_that_cannot_fit_is_reported_as_not_fitting(tmp_path):
    config = one_layer_config(tmp_path)
    config.sft.batch_size = 4096  # 4,096 rows x 64 tokens at once, full logits: > 16 GiB.
    config.rl.logprob_chunk_size = 64
    wide = json.loads((tmp_path / "config.json").read_text())
    wide["vocab_size"] = 262144
    (tmp_path / "config.json").write_text(json.dumps(wide))
    result = plan.compile_plan(config, "v5e:2x2", name="too-big", sft=True, steps=1)
    assert not result.fits() and result.peak_bytes() > chips.CHIPS["v5e"].hbm_bytes
    assert "DOES NOT FIT" in result.text()


@pytest.mark.slow
def test_the_cli_plans_the_quickstart_for_a_gpu_node_and_a_tpu_slice(tmp_path):
    output = tmp_path / "plans.json"
    tiny = LLAMA_TINY.parent  # The quickstart's programs for the tiny model: seconds to compile.
    result = run_experiment("compile.py", f"--config={REPO_ROOT / 'configs' / 'quickstart.py'}",
                            "--topology=v5e:2x2,h100:4", f"--output={output}",
                            "--mesh=1,-1,1",
                            f"--config.model.source={tiny}", f"--config.judge.model_source={tiny}")
    assert result.returncode == 0, result.stderr[-3000:]
    plans = json.loads(output.read_text())
    assert [p["topology"] for p in plans] == ["v5e:2x2", "h100:4"]
    assert plans[0]["settings"]["mesh"] == [1, -1, 1]
    assert not plans[0]["estimate_from_tpu_compile"] and plans[1]["estimate_from_tpu_compile"]
    assert "ESTIMATE" in result.stdout and "| quickstart | v5e:2x2 | yes |" in result.stdout
    bad = run_experiment("compile.py", f"--config={REPO_ROOT / 'configs' / 'quickstart.py'}",
                         "--topology=v5e")
    assert bad.returncode == 2 and "expected <chip>:<AxB[xC]>" in bad.stderr


def test_analytic_decode_flops_grow_with_the_cache():
    config = model_shapes.model_architecture("smollm2")
    short, long = flops.decode_flops(config, 1, 100), flops.decode_flops(config, 1, 200)
    assert long - short == pytest.approx(100 * config.num_layers * 4 * 9 * 64)
