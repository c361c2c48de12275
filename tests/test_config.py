"""Tests of the config system: the flag with overrides and every validation rule."""

import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from rar_jax import config as rar_config
from rar_jax.judges import rewards
from rar_jax.rl import losses

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO_ROOT / "configs").glob("*.py"))


def _base():
    return rar_config.base_config()


def _error_of(config, **kwargs) -> str:
    with pytest.raises(rar_config.ConfigError) as info:
        rar_config.validate(config, **kwargs)
    return str(info.value)


def test_base_config_is_valid():
    rar_config.validate(_base(), num_devices=1)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_is_valid(path):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
    flag_values(["prog", f"--config={path}"])
    rar_config.validate(flag_values.config, num_devices=1)


def test_every_base_key_has_a_comment():
    lines = rar_config.BASE_CONFIG_PATH.read_text().splitlines()
    assignments = [line for line in lines if line.strip().startswith("config.") and " = " in line]
    uncommented = [line.strip() for line in assignments
                   if "# " not in line and "ConfigDict()" not in line]
    assert len(assignments) > 30
    assert uncommented == []


def _run_with_flags(*args: str) -> subprocess.CompletedProcess:
    """Parses ``args`` with the entry points' flag in a fresh process (absl exits on errors)."""
    code = (
        "from absl import app\n"
        "from rar_jax import config as c\n"
        "flag = c.define_config_flag()\n"
        "def main(argv):\n"
        "    cfg = flag.value\n"
        "    print(cfg.rl.num_generations, cfg.rl.loss.aggregation, cfg.rl.kl.beta)\n"
        "app.run(main)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, f"--config={REPO_ROOT / 'configs' / 'base.py'}", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, check=False,
    )


def test_command_line_overrides_reach_the_config():
    result = _run_with_flags(
        "--config.rl.num_generations=8", "--config.rl.loss.aggregation=token_mean",
        "--config.rl.kl.beta=0.04",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["8", "token_mean", "0.04"]


def test_unknown_override_is_rejected_by_the_flag():
    result = _run_with_flags("--config.rl.num_generationz=8")
    assert result.returncode != 0
    assert "num_generationz" in result.stderr


def test_unknown_key_is_named_with_a_suggestion():
    config = _base()
    config.rl.unlock()
    config.rl.num_generation = 4
    message = _error_of(config)
    assert "unknown config key 'rl.num_generation'" in message
    assert "did you mean 'rl.num_generations'" in message


def test_missing_key_is_named():
    config = _base()
    del config.rl.kl["clamp"]
    assert "config key 'rl.kl.clamp' is missing" in _error_of(config)


def test_wrong_type_is_named():
    config = _base()
    del config.rl["num_generations"]  # ConfigDict itself rejects a retyped assignment.
    config.rl.num_generations = "16"
    assert "'rl.num_generations' must be int, got str" in _error_of(config)


def test_int_for_float_is_accepted_but_bool_for_int_is_not():
    config = _base()
    config.rl.kl.beta = 0  # Plain int where a float is declared: fine.
    rar_config.validate(config)
    config = _base()
    del config.rl["num_iterations"]
    config.rl.num_iterations = True
    assert "'rl.num_iterations' must be int, got bool" in _error_of(config)


@pytest.mark.parametrize("key", sorted(rar_config.CHOICES))
def test_bad_choice_lists_the_allowed_values(key):
    config = _base()
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = "no_such_option"
    message = _error_of(config)
    assert f"config key '{key}' is 'no_such_option'; expected one of" in message
    for allowed in rar_config.CHOICES[key]:
        assert allowed in message


def test_several_iterations_need_stored_old_logprobs():
    config = _base()
    config.rl.num_iterations = 2
    message = _error_of(config)
    assert "'rl.old_logprobs' is 'current' but rl.num_iterations=2" in message
    config.rl.old_logprobs = "sampler"
    rar_config.validate(config)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("rl.num_generations", 1, "must be >= 2"),
        ("rl.loss.epsilon_low", 1.0, "must be in [0, 1)"),
        ("rl.loss.dual_clip", 0.5, "must be 0 (off) or a constant > 1"),
        ("rl.kl.beta", -0.1, "must be >= 0"),
        ("rl.advantage.std_ddof", -1, "must be >= 0"),
        ("optim.warmup_fraction", 1.0, "must be in [0, 1)"),
        ("reward.category_weights.pitfall", 0.0, "must be > 0"),
        ("healthbench.bootstrap_samples", 0, "must be >= 1"),
    ],
)
def test_out_of_range_values_are_named(key, value, fragment):
    config = _base()
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    message = _error_of(config)
    assert f"config key '{key}'" in message and fragment in message


@pytest.mark.parametrize(
    ("mesh", "devices", "ok"),
    [
        ((-1, 1, 1), 8, True),
        ((2, 4, 1), 8, True),
        ((2, 2, 2), 8, True),
        ((2, -1, 2), 8, True),
        ((3, -1, 1), 8, False),  # 3 does not divide 8.
        ((2, 2, 1), 8, False),  # Uses 4 of 8 devices with no axis to absorb the rest.
        ((-1, -1, 1), 8, False),  # Two axes to fill.
        ((0, 1, 1), 8, False),
    ],
)
def test_mesh_must_fit_the_devices(mesh, devices, ok):
    config = _base()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
    if ok:
        rar_config.validate(config, num_devices=devices)
    else:
        assert "mesh" in _error_of(config, num_devices=devices)


def test_all_errors_are_reported_at_once():
    config = _base()
    config.rl.num_generations = 1
    config.rl.kl.estimator = "k9"
    message = _error_of(config)
    assert "rl.kl.estimator" in message and "rl.num_generations" in message


def test_choices_are_the_registries_and_cover_the_defaults():
    # The allowed values are read off the registries the code dispatches on.
    assert rar_config.CHOICES["reward.method"] == tuple(rewards.REWARD_METHODS)
    assert rar_config.CHOICES["rl.loss.aggregation"] == tuple(losses.LOSS_AGGREGATIONS)
    assert rar_config.CHOICES["rubric.pitfall_polarity"] == ("positive", "negative")
    base = _base()
    for key, allowed in rar_config.CHOICES.items():
        value = base
        for part in key.split("."):
            value = value[part]
        assert value in allowed, key


def test_judge_devices_are_taken_from_the_policy_mesh():
    config = _base()
    config.judge.devices = 2
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 3, 2, 1  # 6 = 8 - 2 judge devices.
    rar_config.validate(config, num_devices=8)
    config.mesh.data = 4  # 8 policy devices + 2 judge devices > 8.
    assert "mesh" in _error_of(config, num_devices=8)
    config.judge.devices = 8
    assert "'judge.devices' is 8, but only 8 devices exist" in _error_of(config, num_devices=8)


def test_http_judge_cannot_hold_devices_and_needs_a_url():
    config = _base()
    config.judge.backend = "http"
    config.judge.devices = 1
    config.judge.http.base_url = "localhost:8000"
    message = _error_of(config)
    assert "'judge.devices' is 1 but judge.backend is 'http'" in message
    assert "'judge.http.base_url' is 'localhost:8000'" in message


def test_eval_file_and_held_out_size_are_exclusive():
    config = _base()
    config.data.eval_path = "eval.jsonl"
    config.data.eval_size = 4
    assert "'data.eval_size' is 4 but data.eval_path is set" in _error_of(config)
