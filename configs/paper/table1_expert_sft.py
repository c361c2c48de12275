"""Table 1: Expert-Answer-SFT, supervised fine-tuning on the HealthBench ideal completions (rar-sft).

The paper gives no SFT hyper-parameters; ours are in common.py (``sft_hyperparameters``). On 2 CPU
cores with SmolLM2 and sample data:
``rar-sft --config=configs/paper/table1_expert_sft.py:small``.
"""

import pathlib
import runpy

_COMMON = runpy.run_path(str(pathlib.Path(__file__).with_name("common.py")))


def get_config(variant: str = "full"):
    """``full`` (the paper's hyper-parameters) or ``small`` (2 CPU cores)."""
    return _COMMON["experiment_config"](pathlib.Path(__file__).stem, variant)
