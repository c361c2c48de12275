"""Figure 2's untrained row: Qwen2.5-7B-Instruct, evaluated without training.

    rar-eval healthbench --config=configs/paper/eval/qwen2.5_7b_instruct.py
    rar-eval gpqa --config=configs/paper/eval/qwen2.5_7b_instruct.py

Writes to ``runs/paper/qwen2.5_7b_instruct``, where ``rar-tables`` reads the row (common.py: EVALUATIONS).
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).parents[1] / "common.py"))


def get_config(variant: str = "full"):
    """``full`` (the paper's checkpoint, judge and benchmarks) or ``small`` (2 CPU cores)."""
    return _COMMON["evaluation_config"](pathlib.Path(__file__).stem, variant)
