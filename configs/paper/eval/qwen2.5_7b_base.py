"""Figure 2's untrained row: Qwen2.5-7B (base), the starting point of every run, evaluated without training.

    rar-eval healthbench --config=configs/paper/eval/qwen2.5_7b_base.py
    rar-eval gpqa --config=configs/paper/eval/qwen2.5_7b_base.py

Writes to ``runs/paper/qwen2.5_7b_base``, where ``rar-tables`` reads the row (common.py: EVALUATIONS).
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).parents[1] / "common.py"))


def get_config(variant: str = "full"):
    """``full`` (the paper's checkpoint, judge and benchmarks) or ``small`` (2 CPU cores)."""
    return _COMMON["evaluation_config"](pathlib.Path(__file__).stem, variant)
