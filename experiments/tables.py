"""The paper's tables from finished runs, beside the paper's numbers (``rar-tables``).

    rar-tables --runs_root=runs/paper --output_dir=runs/paper/tables
    rar-tables --runs=runs/paper/medicine_rar_implicit,runs/evals/qwen2.5_7b_base --output_dir=out

A run is a folder with ``config.json`` (what ``rar-train`` writes first) and, once trained,
``metrics.jsonl`` and ``summary.json``; an evaluation adds ``healthbench_eval.json`` and/or
``gpqa_eval.json`` (``rar-eval``). A run is matched to a table cell by its folder name, the
experiment name of ``configs/paper`` (``runs/paper/<name>`` by default); the untrained baselines
of Figure 2 are folders named ``qwen2.5_7b_base`` / ``qwen2.5_7b_instruct`` holding evaluations
only. With ``--runs_root`` every folder below it that holds ``summary.json``, ``metrics.jsonl`` or
an evaluation file is a run; two runs with the same name are an error naming both.

Outputs in ``--output_dir``: ``tables.md`` (Figure 2's main table and Tables 1, 2, 3 and 11: for
each metric column the paper's number and ours, ``-`` where a run or its evaluation is missing;
below each table its runs: steps, first and last training reward, last held-out reward), one
``<table>.png`` per table (bars: paper vs ours) and ``<table>_reward_curves.png`` (training
reward of the table's runs against the step) when some run has metrics. The markdown is also
printed. Scores are shown in percent like the paper's (ours: 100 x the evaluation's fraction).
Where the paper printed one experiment in two rows (``paper_numbers.CANONICAL_RUNS``: Table 3's
o3-mini with reference is Table 1's RaR-Implicit-Synthetic) both rows show the one run. With
``--rubric_stats=<files>`` (``rar-rubrics``' statistics JSON) ``tables.md`` ends with the rubric
statistics (criteria per rubric beside the paper's, category shares).

Evaluation values read (first key found, at the top level, then under ``metrics``, then under
``summary``, where ``rar-eval`` puts them): HealthBench ``overall_score``, then ``score``; GPQA
``accuracy_mean``, ``mean_accuracy``, ``accuracy``, then ``mean``. A fraction in [0, 1] is
multiplied by 100. The work is :mod:`rar_jax.eval.tables`.
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from rar_jax import cli
from rar_jax.eval import tables
from rar_jax.eval.paper_numbers import TABLES

_RUNS = flags.DEFINE_list("runs", [], "Run folders (comma-separated).")
_RUNS_ROOT = flags.DEFINE_string("runs_root", "", "Folder to scan for run folders.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/paper/tables", "Where to write the tables.")
_TABLES = flags.DEFINE_list("tables", list(TABLES), f"Tables to render, of {', '.join(TABLES)}.")
_RUBRIC_STATS = flags.DEFINE_list(
    "rubric_stats", [],
    "Rubric statistics files (rar-rubrics: <output>.stats.json, or rubric_generation.stats_only).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runs = tables.runs_from(_RUNS.value, _RUNS_ROOT.value)
    print(tables.render(runs, _OUTPUT_DIR.value, _TABLES.value, _RUBRIC_STATS.value))
    print(f"Wrote {pathlib.Path(_OUTPUT_DIR.value) / 'tables.md'} and the figures.")


def run() -> None:
    """Console-script entry point (``rar-tables``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
