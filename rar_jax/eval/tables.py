"""The paper's tables from run folders, beside the paper's numbers (``rar-tables``).

:func:`find_runs` / :func:`collect_runs` read run folders (:class:`RunResult`), :func:`render`
writes ``tables.md`` and the figures. What a run folder holds, how it is matched to a table cell
and which evaluation values are read is described by the command's docstring
(``experiments/tables.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rar_jax.errors import UserError  # noqa: E402
from rar_jax.eval.paper_numbers import (  # noqa: E402
    METRICS,
    RUBRIC_STATISTICS,
    TABLES,
    PaperTable,
    canonical_run,
    table_runs,
)
from rar_jax.metrics import read_metrics  # noqa: E402

class RunFolderError(UserError, ValueError):
    """A run folder, evaluation or statistics file that cannot be tabulated (named)."""


MISSING = "-"
# Keys tried, in order, for each metric of an evaluation file.
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "healthbench": ("overall_score", "score"),
    "gpqa": ("accuracy_mean", "mean_accuracy", "accuracy", "mean"),
}
# Files that make a folder a run when scanning (not config.json alone: HF checkpoint folders,
# e.g. a run's hf_export, have one too).
# Sections of an evaluation file searched after its top level (rar-eval: HealthBench's official
# metrics under "metrics", GPQA's mean over runs under "summary").
EVALUATION_SECTIONS = ("metrics", "summary")
RUN_FILES = ("summary.json", "metrics.jsonl", *(file for file, _ in METRICS.values()))


@dataclasses.dataclass
class RunResult:
    """What a run folder holds.

    Attributes:
        name: the folder name (the experiment).
        path: the folder.
        metrics: metric -> score in percent (from its evaluation files).
        steps: training steps done (summary.json), None if not trained.
        reward_first, reward_last: mean training reward of the first and last step (NaN: none).
        eval_reward: the last held-out (greedy) reward during training, NaN if none.
        curve: (step, mean training reward) of every step in metrics.jsonl.
        method: ``reward.method`` of its config.json ("sft" for a ``rar-sft`` run), "" without
            one.
    """

    name: str
    path: pathlib.Path
    metrics: dict[str, float]
    steps: int | None
    reward_first: float
    reward_last: float
    eval_reward: float
    curve: list[tuple[int, float]]
    method: str


def evaluation_score(values: Mapping[str, Any], metric: str, source: str) -> float:
    """The score in percent of an evaluation file's JSON for ``metric`` (see module docstring).

    Raises ValueError naming ``source`` and the keys tried when none is a number.
    """
    scopes = [values] + [values[name] for name in EVALUATION_SECTIONS
                         if isinstance(values.get(name), Mapping)]
    for scope in scopes:
        for key in METRIC_KEYS[metric]:
            value = scope.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
                return 100.0 * value if 0.0 <= value <= 1.0 else value
    raise RunFolderError(f"{source}: no number under any of {', '.join(METRIC_KEYS[metric])} "
                         f"(top level or {', '.join(EVALUATION_SECTIONS)})")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else math.nan


def read_run(path: str | os.PathLike[str]) -> RunResult:
    """Reads a run folder (see the module docstring); missing files leave their fields empty."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise RunFolderError(f"run folder {path} does not exist")
    metrics: dict[str, float] = {}
    for metric, (file_name, _) in METRICS.items():
        file = path / file_name
        if file.is_file():
            metrics[metric] = evaluation_score(json.loads(file.read_text()), metric, str(file))
    steps, first, last, eval_reward = None, math.nan, math.nan, math.nan
    summary_file = path / "summary.json"
    summary: dict[str, Any] = {}
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        steps = int(summary["steps"])
        first, last = _number(summary.get("reward_first")), _number(summary.get("reward_last"))
        evals = summary.get("eval_rewards") or {}
        if evals:
            eval_reward = _number(evals[max(evals, key=int)])
    curve: list[tuple[int, float]] = []
    if (path / "metrics.jsonl").is_file():
        curve = [(int(r["step"]), float(r["reward/mean"])) for r in read_metrics(path)
                 if "reward/mean" in r]
    method = ""
    if (path / "config.json").is_file():
        method = json.loads((path / "config.json").read_text()).get("reward", {}).get("method", "")
    if "loss_first" in summary:  # rar-sft's run: no reward method, no reward curve.
        method = "sft"
    return RunResult(path.name, path, metrics, steps, first, last, eval_reward, curve, method)


def find_runs(root: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Folders at or below ``root`` that hold a run file (``RUN_FILES``), sorted."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"--runs_root={root} is not a folder")
    found = {file.parent for name in RUN_FILES for file in root.rglob(name)}
    return sorted(found)


def collect_runs(paths: Sequence[str | os.PathLike[str]]) -> dict[str, RunResult]:
    """Run name -> result; two folders with one name are a ValueError naming both."""
    runs: dict[str, RunResult] = {}
    for path in paths:
        run = read_run(path)
        if run.name in runs:
            raise RunFolderError(f"two runs named {run.name!r}: {runs[run.name].path} and "
                                 f"{run.path}; pass the ones to tabulate with --runs")
        runs[run.name] = run
    return runs


def _format(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.1f}"


def _format_reward(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.3f}"


def cell_value(table: PaperTable, row: int, column: int, runs: Mapping[str, RunResult]) -> float:
    """Our number for a cell (percent), NaN when its run or the run's evaluation is missing."""
    cell = table.rows[row].cells[column]
    run = runs.get(canonical_run(cell.run)) if cell.run else None
    if run is None:
        return math.nan
    return run.metrics.get(table.columns[column].metric, math.nan)


def render_table(table: PaperTable, runs: Mapping[str, RunResult]) -> str:
    """The markdown of one table: paper vs ours per metric column, then the table's runs."""
    header = ["method"]
    for column in table.columns:
        header += [f"{column.header} (paper)", f"{column.header} (ours)"]
    lines = [f"## {table.title}", "", f"Source: {table.source}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(table.rows):
        cells = [row.label]
        for column_index, cell in enumerate(row.cells):
            cells += [_format(cell.paper), _format(cell_value(table, index, column_index, runs))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| run | reward.method | steps | train reward first | train reward last | "
                  "held-out reward | " + " | ".join(METRICS) + " |",
              "|" + "---|" * (6 + len(METRICS))]
    for name in table_runs(table):
        run = runs.get(canonical_run(name))
        if canonical_run(name) != name:  # The paper printed one experiment in two rows.
            name = f"{name} (= {canonical_run(name)}, one experiment)"
        if run is None:
            missing = f" {MISSING} |" * (3 + len(METRICS))
            lines.append(f"| {name} | {MISSING} | not found |{missing}")
            continue
        lines.append(
            f"| {name} | {run.method or MISSING} | "
            f"{MISSING if run.steps is None else run.steps} | {_format_reward(run.reward_first)} | "
            f"{_format_reward(run.reward_last)} | {_format_reward(run.eval_reward)} | "
            + " | ".join(_format(run.metrics.get(metric)) for metric in METRICS) + " |"
        )
    return "\n".join(lines) + "\n"


def plot_table(table: PaperTable, runs: Mapping[str, RunResult], path: str | os.PathLike[str]):
    """Grouped bars per row: the paper's number and ours for every metric column (PNG)."""
    labels = [row.label for row in table.rows]
    series = []
    for column_index, column in enumerate(table.columns):
        paper = [np.nan if row.cells[column_index].paper is None else row.cells[column_index].paper
                 for row in table.rows]
        ours = [cell_value(table, i, column_index, runs) for i in range(len(table.rows))]
        series += [(f"{column.header} (paper)", paper), (f"{column.header} (ours)", ours)]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5), dpi=100)
    width = 0.8 / len(series)
    positions = np.arange(len(labels))
    for index, (name, values) in enumerate(series):
        axes.bar(positions + (index - (len(series) - 1) / 2) * width,
                 np.nan_to_num(np.asarray(values, float), nan=0.0), width, label=name,
                 hatch="" if "paper" in name else "//")
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("score (%)")
    axes.set_title(textwrap.fill(f"{table.source}: {table.title}", 90), fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.fspath(path))
    plt.close(figure)


def plot_reward_curves(table: PaperTable, runs: Mapping[str, RunResult],
                       path: str | os.PathLike[str]) -> bool:
    """Training reward against the step for every run of the table that has one (PNG).

    Returns False (and writes nothing) when no run of the table has metrics."""
    names = dict.fromkeys(canonical_run(name) for name in table_runs(table))
    curves = [(name, runs[name].curve) for name in names if name in runs and runs[name].curve]
    if not curves:
        return False
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, curve in curves:
        steps, values = zip(*curve)
        axes.plot(steps, values, marker="o", markersize=3, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("train reward (mean of the step's answers)")
    axes.set_title(f"{table.key}: training reward", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.fspath(path))
    plt.close(figure)
    return True


def render_rubric_statistics(files: Sequence[str | os.PathLike[str]]) -> str:
    """The markdown table of rubric statistics: one row per file (``rar-rubrics``' statistics
    JSON, named by its stem without ``.stats``), the paper's mean criteria per rubric beside
    ours where it reports one (:data:`RUBRIC_STATISTICS`), then our category shares in percent.
    A file without ``criteria_per_rubric`` and ``category_shares`` is a ValueError naming it."""
    categories = ("essential", "important", "optional", "pitfall", "none")
    lines = ["## Rubric statistics", "",
             "Source: PAPER.md section 2 (the paper's means); ours from `rar-rubrics`.", "",
             "| rubrics | count | criteria per rubric (paper) | criteria per rubric (ours) | "
             + " | ".join(f"{category} %" for category in categories) + " |",
             "|" + "---|" * (4 + len(categories))]
    for file in files:
        path = pathlib.Path(file)
        values = json.loads(path.read_text())
        try:
            mean = float(values["criteria_per_rubric"]["mean"])
            shares = [100.0 * float(values["category_shares"][key]) for key in categories]
            count = int(values["rubrics"])
        except (KeyError, TypeError, ValueError) as error:
            raise RunFolderError(f"{path}: not a rubric statistics file (rar-rubrics): missing "
                                 f"or bad {error}") from None
        name = path.name.removesuffix(".json").removesuffix(".stats")
        lines.append(f"| {name} | {count} | {_format(RUBRIC_STATISTICS.get(name))} | "
                     f"{mean:.1f} | " + " | ".join(f"{share:.1f}" for share in shares) + " |")
    return "\n".join(lines) + "\n"


def render(runs: Mapping[str, RunResult], output_dir: str | os.PathLike[str],
           tables: Sequence[str] = tuple(TABLES),
           rubric_stats: Sequence[str | os.PathLike[str]] = ()) -> str:
    """Writes ``tables.md`` and the figures of ``tables`` to ``output_dir``; returns the
    markdown."""
    unknown = [key for key in tables if key not in TABLES]
    if unknown:
        raise RunFolderError(f"unknown tables {', '.join(unknown)}; expected some of "
                             f"{', '.join(TABLES)}")
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    known = {name for table in TABLES.values() for name in table_runs(table)}
    unmatched = sorted(set(runs) - known)
    if unmatched:
        logging.warning("runs matching no table cell (folder name is not an experiment): %s",
                        ", ".join(unmatched))
    parts = ["# RaR: our runs beside the paper's numbers", "",
             f"{len(runs)} runs read; `-` = no run or no evaluation. Scores in percent.", ""]
    for key in tables:
        table = TABLES[key]
        parts.append(render_table(table, runs))
        plot_table(table, runs, output_dir / f"{key}.png")
        plot_reward_curves(table, runs, output_dir / f"{key}_reward_curves.png")
    if rubric_stats:
        parts.append(render_rubric_statistics(rubric_stats))
    text = "\n".join(parts)
    (output_dir / "tables.md").write_text(text)
    return text


def runs_from(folders: Sequence[str], root: str) -> dict[str, RunResult]:
    """The runs of ``folders`` and of every run folder below ``root`` ("" = none).

    Raises UserError when ``root`` holds no run folder or no run is given at all."""
    paths: list[str | pathlib.Path] = list(folders)
    if root:
        found = find_runs(root)
        if not found:
            raise UserError(f"--runs_root={root} holds no run folder (none has any of "
                            f"{', '.join(RUN_FILES)})")
        paths += found
    if not paths:
        raise UserError("give run folders with --runs=dir1,dir2 or a folder with --runs_root")
    return collect_runs(paths)
