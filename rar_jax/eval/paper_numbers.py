"""The paper's reported numbers (Gunjal et al., arXiv 2507.17746 v2; PAPER.md section 5), laid out
as the tables ``rar-tables`` renders, each cell tied to the run that reproduces it.

A run is named by its experiment: the file name of its config in ``configs/paper`` (and the
folder name of its output, ``runs/paper/<name>``). Two rows of Figure 2 are evaluations of
untrained checkpoints, not GRPO runs: their run folders are ``qwen2.5_7b_base`` and
``qwen2.5_7b_instruct`` (a folder holding ``healthbench_eval.json`` / ``gpqa_eval.json`` from
``rar-eval``). Table 1's Expert-Answer-SFT is a ``rar-sft`` run, evaluated like the others.
All numbers are percentages, as printed in the paper.

Where the paper ran one experiment and printed it in two tables (the same number in both),
:data:`CANONICAL_RUNS` maps the second row's run name to the run that reproduces both:
``rar-tables`` shows that run in both rows, and the second row's config writes to the canonical
run's folder (``configs/paper/common.py``), so the experiment is trained once.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "CANONICAL_RUNS",
    "Cell",
    "Column",
    "PaperTable",
    "RUBRIC_STATISTICS",
    "Row",
    "TABLES",
    "METRICS",
    "canonical_run",
    "table_runs",
]

# What a column measures: metric -> (file written by rar-eval, what it is).
METRICS: dict[str, tuple[str, str]] = {
    "healthbench": ("healthbench_eval.json", "HealthBench score (overall, clipped mean), %"),
    "gpqa": ("gpqa_eval.json", "GPQA-Diamond accuracy (mean over runs), %"),
}


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of a paper table: its header and the metric its cells hold."""

    header: str
    metric: str


@dataclasses.dataclass(frozen=True)
class Cell:
    """One number: the paper's value (None: not reported) and the run that reproduces it."""

    paper: float | None
    run: str | None


@dataclasses.dataclass(frozen=True)
class Row:
    """A row: its label and one cell per column of the table (same order)."""

    label: str
    cells: tuple[Cell, ...]


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """A table or figure of the paper.

    Attributes:
        key: short name (``figure2``, ``table1`` ...), also the output file stem.
        title: the caption we print.
        source: where in the paper the numbers are.
        columns: the metric columns.
        rows: the rows, in the paper's order.
    """

    key: str
    title: str
    source: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.cells) != len(self.columns):
                raise ValueError(f"paper table {self.key}: row {row.label!r} has "
                                 f"{len(row.cells)} cells for {len(self.columns)} columns")
        for column in self.columns:
            if column.metric not in METRICS:
                raise ValueError(f"paper table {self.key}: unknown metric {column.metric!r}")


def _one(label: str, paper: float | None, run: str | None, metric_columns: int = 1) -> Row:
    return Row(label, (Cell(paper, run),) * metric_columns)


HEALTHBENCH = Column("HealthBench", "healthbench")
HEALTHBENCH_1K = Column("HealthBench-1k", "healthbench")

FIGURE2 = PaperTable(
    key="figure2",
    title="Main results: HealthBench (policy trained on RaR-Medicine) and GPQA-Diamond (trained "
          "on RaR-Science, mean of 10 runs); judge gpt-4o-mini",
    source="Figure 2 (v2); PAPER.md section 5, main table",
    columns=(HEALTHBENCH, Column("GPQA-Diamond", "gpqa")),
    rows=(
        Row("Qwen2.5-7B base", (Cell(7.7, "qwen2.5_7b_base"), Cell(31.7, "qwen2.5_7b_base"))),
        Row("Qwen2.5-7B-Instruct",
            (Cell(22.7, "qwen2.5_7b_instruct"), Cell(35.0, "qwen2.5_7b_instruct"))),
        Row("Direct-Likert",
            (Cell(25.5, "medicine_direct_likert"), Cell(34.8, "science_direct_likert"))),
        Row("Reference-Likert",
            (Cell(28.9, "medicine_reference_likert"), Cell(36.5, "science_reference_likert"))),
        Row("RaR-Predefined",
            (Cell(12.5, "medicine_rar_predefined"), Cell(31.7, "science_rar_predefined"))),
        Row("RaR-Explicit",
            (Cell(29.7, "medicine_rar_explicit"), Cell(36.9, "science_rar_explicit"))),
        Row("RaR-Implicit",
            (Cell(31.2, "medicine_rar_implicit"), Cell(37.6, "science_rar_implicit"))),
    ),
)

TABLE1 = PaperTable(
    key="table1",
    title="Training on ~3.5k HealthBench prompts, evaluated on HealthBench-1k: human vs "
          "synthetic rubrics",
    source="Table 1 (v2)",
    columns=(HEALTHBENCH_1K,),
    rows=(
        _one("Expert-Answer-SFT", 20.4, "table1_expert_sft"),
        _one("Simple-Likert", 23.9, "table1_direct_likert"),
        _one("Reference-Likert", 31.7, "table1_reference_likert"),
        _one("RaR-Implicit-Synthetic-NoRef", 32.0, "table1_synthetic_noref"),
        _one("RaR-Implicit-Synthetic", 35.9, "table1_synthetic"),
        _one("RaR-Implicit-Human", 34.8, "table1_human"),
        _one("HealthBench points, human rubrics (ours, not in the paper)", None,
             "table1_human_points"),
    ),
)

TABLE2 = PaperTable(
    key="table2",
    title="Rubric design (RaR-Implicit), HealthBench-1k",
    source="Table 2 (v2)",
    columns=(HEALTHBENCH_1K,),
    rows=(
        _one("Essential criteria only", 34.9, "table2_essential_only"),
        _one("No category labels", 38.8, "table2_no_labels"),
        _one("No pitfall criteria", 37.2, "table2_no_pitfalls"),
        _one("All criteria", 37.2, "table2_all"),
    ),
)

TABLE3 = PaperTable(
    key="table3",
    title="Rubric generator (rubrics made without reference unless stated), HealthBench-1k",
    source="Table 3 (v2)",
    columns=(HEALTHBENCH_1K,),
    rows=(
        _one("GPT-4o", 34.2, "table3_gpt4o_noref"),
        _one("GPT-4o-mini", 32.7, "table3_gpt4o_mini_noref"),
        _one("o3-mini", 32.4, "table3_o3_mini_noref"),
        _one("Qwen2.5-72B", 32.7, "table3_qwen72b_noref"),
        _one("Qwen2.5-32B", 31.1, "table3_qwen32b_noref"),
        _one("Qwen2.5-7B", 31.9, "table3_qwen7b_noref"),
        _one("o3-mini, with reference", 35.9, "table3_o3_mini_ref"),
    ),
)

TABLE11 = PaperTable(
    key="table11",
    title="Judge size: policy trained with that judge, HealthBench",
    source="Table 11 (v2)",
    columns=(Column("RaR-Implicit", "healthbench"), Column("Direct-Likert", "healthbench")),
    rows=tuple(
        Row(label, (Cell(implicit, f"table11_{judge}_implicit"),
                    Cell(direct, f"table11_{judge}_direct_likert")))
        for label, judge, implicit, direct in (
            ("GPT-4o-mini", "gpt4o_mini", 27.9, 25.3),
            ("Qwen2.5-32B", "qwen32b", 26.2, 25.4),
            ("Qwen2.5-14B", "qwen14b", 25.0, 24.9),
            ("Qwen2.5-7B", "qwen7b", 26.7, 22.0),
        )
    ),
)

TABLES: dict[str, PaperTable] = {t.key: t for t in (FIGURE2, TABLE1, TABLE2, TABLE3, TABLE11)}

# One experiment printed in two rows: run name -> the run that reproduces both. Table 3's
# "o3-mini, with reference" is Table 1's RaR-Implicit-Synthetic (35.9 in both: rubrics by o3-mini
# with the reference, implicit judge, HealthBench pool). Rows whose numbers differ (Table 2's
# "all criteria" 37.2, Table 3's o3-mini without reference 32.4 vs Table 1's 32.0, Table 11's
# gpt-4o-mini vs Figure 2) are separate runs.
CANONICAL_RUNS: dict[str, str] = {"table3_o3_mini_ref": "table1_synthetic"}

# Rubric statistics the paper reports for its data sets (PAPER.md section 2): name -> mean
# criteria per rubric (the paper reports no category shares). ``rar-tables --rubric_stats`` shows
# them beside the statistics file of the same stem (``rar-rubrics`` with
# ``rubric_generation.stats_only``: ``rar_medicine.json``).
RUBRIC_STATISTICS: dict[str, float] = {"rar_medicine": 9.6, "rar_science": 7.5}


def canonical_run(name: str) -> str:
    """The run that reproduces ``name``'s number: itself, or its :data:`CANONICAL_RUNS` entry."""
    return CANONICAL_RUNS.get(name, name)


def table_runs(table: PaperTable) -> list[str]:
    """The run names a table refers to, in order of first appearance."""
    names: list[str] = []
    for row in table.rows:
        for cell in row.cells:
            if cell.run is not None and cell.run not in names:
                names.append(cell.run)
    return names
