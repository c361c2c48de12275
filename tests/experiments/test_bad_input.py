"""Every console script answers a user's mistake with one line and status 2, and --help helps.

A traceback is for bugs (or ``--verbosity=1``); a wrong flag, config key, path or data row gets
``<program>: error: <what, where, how to fix>`` on stderr (``rar_jax.cli``).
"""

from __future__ import annotations

import json

import pytest

from cli_runner import REPO_ROOT, run_experiment

pytestmark = pytest.mark.slow

# Script file -> the first words of its module docstring, which --help must show.
SCRIPTS = sorted(p.name for p in (REPO_ROOT / "experiments").glob("*.py") if p.name != "__init__.py")
CONFIG_SCRIPTS = ("train.py", "judge.py", "eval.py")
QUICKSTART = "--config=configs/quickstart.py"


def _assert_user_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(error_lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_what_the_command_does_and_its_flags(script):
    result = run_experiment(script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    module = (REPO_ROOT / "experiments" / script).read_text()
    summary = module.split('"""')[1].splitlines()[0].strip()
    assert summary and summary in result.stdout
    assert "flags:" in result.stdout
    assert "Try --helpfull" not in result.stdout


@pytest.mark.parametrize("script", CONFIG_SCRIPTS)
def test_a_typo_in_a_config_override_is_one_line_with_a_suggestion(script):
    args = ["healthbench"] if script == "eval.py" else []
    result = run_experiment(script, *args, QUICKSTART, "--config.judge.bakend=http", timeout=120)
    _assert_user_error(result, "bakend", '"backend"')


@pytest.mark.parametrize("script", ["train.py", "tables.py", "generate.py"])
def test_an_unknown_flag_is_one_line(script):
    _assert_user_error(run_experiment(script, "--no_such_flag=1", timeout=120), "no_such_flag")


def test_train_without_config_says_config_is_required():
    _assert_user_error(run_experiment("train.py", timeout=120), "--config is required")


def test_train_with_a_missing_config_file(tmp_path):
    missing = tmp_path / "nope.py"
    _assert_user_error(run_experiment("train.py", f"--config={missing}", timeout=120),
                       str(missing), "does not exist")


def test_train_checks_every_input_before_loading_or_writing(tmp_path):
    output_dir = tmp_path / "run"
    result = run_experiment(
        "train.py", QUICKSTART, f"--config.output_dir={output_dir}",
        f"--config.data.train_path={tmp_path / 'missing.jsonl'}",
        f"--config.model.source={tmp_path / 'no_model'}", timeout=120,
    )
    _assert_user_error(result, "data.train_path", "model.source", "missing.jsonl", "no_model")
    assert not output_dir.exists()  # Nothing was written.


def test_train_lists_every_bad_record_and_names_the_format(tmp_path):
    records = tmp_path / "train.jsonl"
    rows = [{"question": "What is x?"}, {"prompt": 3}]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_experiment(
        "train.py", QUICKSTART, f"--config.output_dir={tmp_path / 'run'}",
        f"--config.data.train_path={records}", "--config.data.format=rar",
        f"--config.data.eval_path={records}", "--config.data.eval_size=0", timeout=300,
    )
    _assert_user_error(result, "data.format='rar'", f"{records}:1", f"{records}:2")


def test_tables_with_a_missing_or_empty_runs_root(tmp_path):
    _assert_user_error(run_experiment("tables.py", f"--runs_root={tmp_path / 'nope'}"),
                       "is not a folder")
    _assert_user_error(run_experiment("tables.py", f"--runs_root={tmp_path}"),
                       "holds no run folder")


@pytest.mark.parametrize("script, args, needles", [
    ("rubrics.py", ["--config.rubric_generation.domain=law"],
     ["'rubric_generation.domain' is 'law'", "medical, science"]),
    ("judge_alignment.py", ["--config.alignment.conditions=likert,nope"],
     ["'alignment.conditions'", "reference_rubric"]),
    ("judge_alignment.py", ["--config.alignment.judges=http:judge"], ["'alignment.judges'"]),
])
def test_a_bad_rubrics_or_alignment_option_is_one_line(script, args, needles, tmp_path):
    inputs = {"rubrics.py": [f"--config.rubric_generation.input={tmp_path / 'q.jsonl'}",
                             f"--config.rubric_generation.output={tmp_path / 'r.jsonl'}"],
              "judge_alignment.py": [f"--config.alignment.data={tmp_path / 'hb.jsonl'}"]}
    _assert_user_error(run_experiment(script, *inputs[script], *args, timeout=120), *needles)
    assert list(tmp_path.iterdir()) == []  # Nothing was written.


def test_tables_with_a_missing_run_folder(tmp_path):
    _assert_user_error(run_experiment("tables.py", f"--runs={tmp_path / 'nope'}",
                                      f"--output_dir={tmp_path / 'out'}"), "does not exist")
