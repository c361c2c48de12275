"""Repeat a run from the resolved config it wrote beside its outputs.

``rar-train`` and ``rar-sft`` write ``<output_dir>/config.json``, ``rar-judge-alignment`` too,
``rar-rubrics`` ``<output>.config.json``: every key with the overrides applied. Given such a
file this config is that run's config again (keys the file lacks, from an older version, keep
their defaults; a key the schema does not know is an error naming it), and further overrides
apply on top:

    rar-rubrics --config=configs/replay.py:rubrics/healthbench_train.gpt4o.noref.config.json
    rar-train --config=configs/replay.py:runs/quickstart/config.json \\
        --config.output_dir=runs/quickstart_again

Without a file it is the base config.
"""

import json
import pathlib

from rar_jax.config import base_config


def _overlay(config, values, prefix: str = "") -> None:
    """Sets every key of ``values`` (nested dicts) on ``config``; unknown keys raise."""
    for key, value in values.items():
        if key not in config:
            raise ValueError(f"config key '{prefix}{key}' of the replayed file is not in the "
                             "schema (rar_jax/config/base.py)")
        if isinstance(value, dict):
            _overlay(config[key], value, f"{prefix}{key}.")
        elif isinstance(config[key], float) and isinstance(value, int):
            config[key] = float(value)  # JSON writes 1.0 as 1.0, but a hand-edited 1 is an int.
        else:
            config[key] = value


def get_config(path: str = ""):
    """The config written to ``path`` (a config.json of a run), or the base config."""
    config = base_config()
    if path:
        _overlay(config, json.loads(pathlib.Path(path).read_text()))
    return config
