"""Table 1: RaR-Implicit with synthetic rubrics generated without reference (o3-mini).

The paper's setup (common.py). On 2 CPU cores with SmolLM2 as policy and judge and sample data:
``rar-train --config=configs/paper/table1_synthetic_noref.py:small``.
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).with_name("common.py")))


def get_config(variant: str = "full"):
    """``full`` (the paper's hyper-parameters) or ``small`` (2 CPU cores)."""
    return _COMMON["experiment_config"](pathlib.Path(__file__).stem, variant)
