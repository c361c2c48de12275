"""rar-score-healthbench end to end: config file + overrides -> metrics files."""

import json
import pathlib

from cli_runner import run_experiment

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_scores_the_graded_sample_like_simple_evals(shared_data, tmp_path):
    graded = shared_data / "healthbench_graded_m42" / "judge_responses_100.jsonl"
    result = run_experiment(
        "score_healthbench.py",
        f"--config={REPO_ROOT / 'configs' / 'base.py'}",
        f"--config.healthbench.graded_path={graded}",
        f"--config.output_dir={tmp_path}",
        "--config.healthbench.bootstrap_samples=200",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "healthbench_metrics.json").read_text())
    upstream = json.loads((shared_data / "healthbench_graded_m42" / "final_metrics.json").read_text())
    assert metrics["overall_score"] == upstream["overall_score"]
    assert metrics["axis:accuracy"] == upstream["axis:accuracy"]
    assert metrics["overall_score:n_samples"] == 100
    table = (tmp_path / "healthbench_metrics.md").read_text()
    assert table.splitlines()[2].startswith("| overall_score | 0.4853 |")
    assert "| overall_score | 0.4853 |" in result.stdout


def test_missing_graded_path_is_a_usage_error(tmp_path):
    result = run_experiment(
        "score_healthbench.py",
        f"--config={REPO_ROOT / 'configs' / 'base.py'}",
        f"--config.output_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "healthbench.graded_path" in result.stderr
