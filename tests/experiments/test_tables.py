"""rar-tables: the paper's tables from run folders, with the paper's numbers beside ours."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

from rar_jax.config import base_config
from rar_jax.eval import paper_numbers
from rar_jax.eval import tables
from rar_jax.io import json_safe
from rar_jax.metrics import MetricsWriter
from rar_jax.rl.trainer import TrainSummary

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_run(root: pathlib.Path, name: str, method: str, rewards: list[float],
              evaluations: dict[str, dict] | None = None) -> pathlib.Path:
    """A run folder as rar-train writes it (config.json, metrics.jsonl, summary.json) plus
    optional rar-eval outputs."""
    run = root / name
    run.mkdir(parents=True)
    config = base_config()
    config.output_dir = str(run)
    config.reward.method = method
    (run / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    writer = MetricsWriter(run, tensorboard=False)
    writer.write(0, {"eval/reward_mean": 0.25})
    for step, reward in enumerate(rewards):
        writer.write(step, {"reward/mean": reward, "reward/std": 0.1})
    writer.write(len(rewards), {"eval/reward_mean": 0.5})
    writer.close()
    summary = TrainSummary(steps=len(rewards), reward_first=rewards[0], reward_last=rewards[-1],
                           eval_rewards={0: 0.25, len(rewards): 0.5}, criterion_changes=[],
                           eval_criterion_changes=[], skipped_updates=0, judge_failures=0)
    (run / "summary.json").write_text(json.dumps(json_safe(vars(summary))) + "\n")
    for file_name, values in (evaluations or {}).items():
        (run / file_name).write_text(json.dumps(values))
    return run


def table_rows(markdown: str, title: str) -> dict[str, list[str]]:
    """The first markdown table after ``## <title>``: first cell -> the other cells."""
    lines = markdown.split(f"## {title}", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def runs_root(tmp_path) -> pathlib.Path:
    root = tmp_path / "runs"
    write_run(root, "medicine_rar_implicit", "rar_implicit", [0.40, 0.55],
              {"healthbench_eval.json": {"overall_score": 0.3121, "overall_score:n_samples": 5}})
    write_run(root, "science_rar_implicit", "rar_implicit", [0.30, 0.35],
              {"gpqa_eval.json": {"metrics": {"accuracy_mean": 0.375}}})
    write_run(root, "medicine_direct_likert", "direct_likert", [0.5])  # Trained, not evaluated.
    write_run(root, "table11_qwen7b_implicit", "rar_implicit", [0.2, 0.3],
              {"healthbench_eval.json": {"overall_score": 0.1}})
    baseline = root / "evals" / "qwen2.5_7b_base"
    baseline.mkdir(parents=True)
    (baseline / "healthbench_eval.json").write_text(json.dumps({"score": 0.081}))
    return root


def test_tables_show_paper_and_our_numbers(runs_root, tmp_path):
    (runs_root / "medicine_rar_implicit" / "hf_export").mkdir()
    (runs_root / "medicine_rar_implicit" / "hf_export" / "config.json").write_text("{}")
    found = tables.find_runs(runs_root)  # A checkpoint's config.json does not make a run.
    assert [p.name for p in found] == ["qwen2.5_7b_base", "medicine_direct_likert",
                                       "medicine_rar_implicit", "science_rar_implicit",
                                       "table11_qwen7b_implicit"]
    runs = tables.collect_runs(found)
    out = tmp_path / "tables"
    text = tables.render(runs, out)
    assert (out / "tables.md").read_text() == text

    main = table_rows(text, paper_numbers.FIGURE2.title)
    # method -> HealthBench paper, ours, GPQA paper, ours.
    assert main["RaR-Implicit"] == ["31.2", "31.2", "37.6", "37.5"]
    assert main["Qwen2.5-7B base"] == ["7.7", "8.1", "31.7", "-"]
    assert main["Direct-Likert"] == ["25.5", "-", "34.8", "-"]  # No evaluation file.
    assert main["RaR-Predefined"] == ["12.5", "-", "31.7", "-"]  # No run.
    judge = table_rows(text, paper_numbers.TABLE11.title)
    assert judge["Qwen2.5-7B"] == ["26.7", "10.0", "22.0", "-"]
    assert judge["GPT-4o-mini"] == ["27.9", "-", "25.3", "-"]
    first = table_rows(text, paper_numbers.TABLE1.title)
    assert first["Expert-Answer-SFT"] == ["20.4", "-"]
    assert first["HealthBench points, human rubrics (ours, not in the paper)"] == ["-", "-"]
    assert len(table_rows(text, paper_numbers.TABLE3.title)) == 7
    assert len(table_rows(text, paper_numbers.TABLE2.title)) == 4

    # The runs listing: method, steps, first and last training reward, last held-out reward.
    assert ("| medicine_rar_implicit | rar_implicit | 2 | 0.400 | 0.550 | 0.500 | 31.2 | - |"
            in text)
    assert "| medicine_rar_explicit | - | not found |" in text

    for key in paper_numbers.TABLES:
        assert (out / f"{key}.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "figure2_reward_curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "table3_reward_curves.png").exists()  # No run of Table 3.


def test_paper_numbers_match_paper_md():
    """Every number of PAPER.md section 5's tables is in paper_numbers, in its table."""
    expected = {
        "figure2": [7.7, 31.7, 22.7, 35.0, 25.5, 34.8, 28.9, 36.5, 12.5, 31.7, 29.7, 36.9, 31.2,
                    37.6],
        "table1": [20.4, 23.9, 31.7, 32.0, 35.9, 34.8],
        "table2": [34.9, 38.8, 37.2, 37.2],
        "table3": [34.2, 32.7, 32.4, 32.7, 31.1, 31.9, 35.9],
        "table11": [27.9, 25.3, 26.2, 25.4, 25.0, 24.9, 26.7, 22.0],
    }
    for key, numbers in expected.items():
        table = paper_numbers.TABLES[key]
        got = [cell.paper for row in table.rows for cell in row.cells if cell.paper is not None]
        assert got == numbers, key
    # Each experiment config is the run of exactly one cell.
    configs = sorted(p.stem for p in (REPO_ROOT / "configs" / "paper").glob("*.py")
                     if p.name != "common.py")
    cells = [name for table in paper_numbers.TABLES.values()
             for name in paper_numbers.table_runs(table)]
    assert sorted(set(cells) - {"qwen2.5_7b_base", "qwen2.5_7b_instruct"}) == configs


def test_evaluation_score_and_errors(tmp_path):
    assert tables.evaluation_score({"overall_score": 0.5}, "healthbench", "f") == 50.0
    assert tables.evaluation_score({"metrics": {"accuracy": 0.25}}, "gpqa", "f") == 25.0
    assert tables.evaluation_score({"mean": 37.6}, "gpqa", "f") == 37.6  # Already in percent.
    # rar-eval's layouts: HealthBench's official metrics, GPQA's summary over runs.
    assert tables.evaluation_score({"metrics": {"overall_score": 0.125, "score": 0.5}},
                                   "healthbench", "f") == 12.5
    assert tables.evaluation_score({"summary": {"accuracy": 0.2, "ci95_low": 0.1}}, "gpqa",
                                   "f") == 20.0
    with pytest.raises(ValueError, match="g.json: no number under any of overall_score, score "
                                         r"\(top level or metrics, summary\)"):
        tables.evaluation_score({"overall": 0.5}, "healthbench", "g.json")
    write_run(tmp_path / "a", "table2_all", "rar_implicit", [0.1])
    write_run(tmp_path / "b", "table2_all", "rar_implicit", [0.2])
    with pytest.raises(ValueError, match="two runs named 'table2_all'"):
        tables.collect_runs(tables.find_runs(tmp_path))
    run = tables.read_run(tmp_path / "a" / "table2_all")
    assert run.steps == 1 and math.isclose(run.reward_last, 0.1) and run.curve == [(0, 0.1)]


def test_cli(runs_root, tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "tables.py"),
         f"--runs_root={runs_root}", f"--output_dir={out}", "--tables=figure2,table11"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| RaR-Implicit | 31.2 | 31.2 | 37.6 | 37.5 |" in result.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [
        "figure2.png", "figure2_reward_curves.png", "table11.png", "table11_reward_curves.png"]
    assert "Table 1 " not in (out / "tables.md").read_text()


def test_one_experiment_printed_twice_is_one_run_in_both_rows(tmp_path):
    """Table 3's "o3-mini, with reference" is Table 1's RaR-Implicit-Synthetic: one run."""
    write_run(tmp_path, "table1_synthetic", "rar_implicit", [0.3, 0.4],
              {"healthbench_eval.json": {"overall_score": 0.362}})
    text = tables.render(tables.collect_runs(tables.find_runs(tmp_path)), tmp_path / "out",
                         ("table1", "table3"))
    assert table_rows(text, paper_numbers.TABLE1.title)["RaR-Implicit-Synthetic"] == \
        ["35.9", "36.2"]
    assert table_rows(text, paper_numbers.TABLE3.title)["o3-mini, with reference"] == \
        ["35.9", "36.2"]
    assert table_rows(text, paper_numbers.TABLE3.title)["o3-mini"] == ["32.4", "-"]
    assert ("| table3_o3_mini_ref (= table1_synthetic, one experiment) | rar_implicit | 2 | "
            "0.300 | 0.400 | 0.500 | 36.2 | - |") in text
    assert (tmp_path / "out" / "table3_reward_curves.png").is_file()  # The shared run's curve.


def test_rubric_statistics_beside_the_papers(tmp_path):
    medicine = tmp_path / "rar_medicine.json"
    medicine.write_text(json.dumps({
        "rubrics": 3, "criteria": 30, "criteria_per_rubric": {"mean": 10.0},
        "category_shares": {"essential": 0.25, "important": 0.25, "optional": 0.125,
                            "pitfall": 0.375, "none": 0.0}}))
    generated = tmp_path / "healthbench_train.gpt4o.noref.stats.json"
    generated.write_text(json.dumps({
        "rubrics": 2, "criteria": 17, "criteria_per_rubric": {"mean": 8.5},
        "category_shares": {"essential": 0.5, "important": 0.5, "optional": 0.0,
                            "pitfall": 0.0, "none": 0.0}}))
    text = tables.render({}, tmp_path / "out", ("table1",), [medicine, generated])
    assert "| rar_medicine | 3 | 9.6 | 10.0 | 25.0 | 25.0 | 12.5 | 37.5 | 0.0 |" in text
    assert "| healthbench_train.gpt4o.noref | 2 | - | 8.5 | 50.0 | 50.0 | 0.0 | 0.0 | 0.0 |" \
        in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rubrics": 1}))
    with pytest.raises(ValueError, match="bad.json: not a rubric statistics file"):
        tables.render_rubric_statistics([bad])
