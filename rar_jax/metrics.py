"""Run metrics: one JSONL line per step plus TensorBoard scalars and text (tensorboardX).

``<output_dir>/metrics.jsonl`` holds ``{"step": s, <name>: value, ...}`` per :meth:`write` call
(non-finite values are written as null, never dropped, so a NaN loss stays visible);
``<output_dir>/samples.jsonl`` holds logged sample answers; TensorBoard event files go to
``<output_dir>/tensorboard``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from rar_jax.io import iter_jsonl, jsonl_line


def _scalar(value: Any) -> float | None:
    number = float(np.asarray(value))
    return number if math.isfinite(number) else None


class MetricsWriter:
    """Appends metrics to JSONL files and, optionally, TensorBoard.

    Args:
        output_dir: the run folder (created if missing).
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, tensorboard: bool):
        self.output_dir = os.fspath(output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        self._metrics = open(os.path.join(self.output_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self._samples = open(os.path.join(self.output_dir, "samples.jsonl"), "a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records scalar ``metrics`` (arrays of one element, numbers) for ``step``."""
        values = {name: _scalar(value) for name, value in metrics.items()}
        self._metrics.write(jsonl_line({"step": int(step), **values}))
        self._metrics.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, float("nan") if value is None else value, step)

    def write_samples(self, step: int, samples: list[Mapping[str, Any]]) -> None:
        """Records sample answers (JSON objects, e.g. prompt, answer, reward) for ``step``."""
        for sample in samples:
            self._samples.write(jsonl_line({"step": int(step), **sample}))
        self._samples.flush()
        if self._tensorboard is not None and samples:
            text = "\n\n---\n\n".join(
                "\n\n".join(f"**{key}**: {value}" for key, value in sample.items())
                for sample in samples
            )
            self._tensorboard.add_text("samples", text, step)

    def close(self) -> None:
        """Flushes and closes every file."""
        self._metrics.close()
        self._samples.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``<output_dir>/metrics.jsonl`` in order (null -> NaN)."""
    path = os.path.join(os.fspath(output_dir), "metrics.jsonl")
    records = [record for _, record in iter_jsonl(path)]
    return [{k: (math.nan if v is None else v) for k, v in record.items()} for record in records]
