"""Figure 2's untrained rows: Qwen2.5-7B (base) and Qwen2.5-7B-Instruct, evaluated without training.

    rar-eval healthbench --config=configs/paper/eval/untrained.py:qwen2.5_7b_base
    rar-eval gpqa --config=configs/paper/eval/untrained.py:qwen2.5_7b_instruct
    rar-eval healthbench --config=configs/paper/eval/untrained.py:qwen2.5_7b_base:small

Each writes to ``runs/paper/<name>``, where ``rar-tables`` reads the row (common.py: EVALUATIONS).
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).parents[1] / "common.py"))


def get_config(argument: str = "qwen2.5_7b_base"):
    """``<name>`` (the paper's checkpoint, judge and benchmarks) or ``<name>:small`` (2 CPU cores)."""
    name, _, variant = argument.partition(":")
    return _COMMON["evaluation_config"](name, variant or "full")
