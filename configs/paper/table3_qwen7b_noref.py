"""Table 3: rubrics by Qwen/Qwen2.5-7B-Instruct without reference.

The paper's setup (common.py). On 2 CPU cores with SmolLM2 as policy and judge and sample data:
``rar-train --config=configs/paper/table3_qwen7b_noref.py:small``.
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).with_name("common.py")))


def get_config(variant: str = "full"):
    """``full`` (the paper's hyper-parameters) or ``small`` (2 CPU cores)."""
    return _COMMON["experiment_config"](pathlib.Path(__file__).stem, variant)
