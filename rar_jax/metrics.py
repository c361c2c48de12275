"""Run metrics: one JSONL line per step plus TensorBoard scalars and text (tensorboardX).

``<output_dir>/metrics.jsonl`` holds ``{"step": s, <name>: value, ...}`` per :meth:`write` call
(non-finite values are written as null, never dropped, so a NaN loss stays visible);
``<output_dir>/samples.jsonl`` holds logged sample answers; ``<output_dir>/criteria.jsonl`` the
per-criterion credit of each step (what the end-of-run summary reads); TensorBoard event files go
to ``<output_dir>/tensorboard``.

**Resumed runs write exactly what an uninterrupted run writes.** A writer opened with
``start_step=s`` (the step the run continues from; 0 for a fresh run) first rewrites each JSONL
file, atomically, keeping only the rows of steps before ``s``: rows that a crashed process wrote
after its last checkpoint are dropped, as is a line torn by the crash, and the resumed process
writes them again. TensorBoard gets ``purge_step=s``, its own way to discard the stale events of
steps ``>= s`` when it reads the folder.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.io import JsonlError, iter_jsonl_values, jsonl_line, write_jsonl

logger = logging.getLogger(__name__)

# The per-step JSONL files of a run, by stream.
FILES = {"metrics": "metrics.jsonl", "samples": "samples.jsonl", "criteria": "criteria.jsonl"}


def _scalar(value: Any) -> float | None:
    number = float(np.asarray(value))
    return number if math.isfinite(number) else None


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a per-step JSONL file; a torn last line (a crash mid-write) is left out.

    Raises:
        JsonlError: for a bad line that is not the last one (the file is damaged, not torn).
    """
    if not os.path.exists(path):
        return []
    lines = list(iter_jsonl_values(path))
    rows = []
    for index, (line, value, problem) in enumerate(lines):
        if problem is None:
            rows.append(value)
        elif index < len(lines) - 1:
            raise JsonlError(f"{os.fspath(path)}:{line}: {problem}")
        else:
            logger.warning("%s:%d: dropping a torn last line (%s)", os.fspath(path), line, problem)
    return rows


def truncate_before(path: str | os.PathLike[str], step: int) -> int:
    """Rewrites ``path`` (atomically) with only its rows of steps ``< step``; returns how many
    rows were dropped."""
    if not os.path.exists(path):
        return 0
    rows = read_rows(path)
    kept = [row for row in rows if row.get("step", math.inf) < step]
    write_jsonl(path, kept)  # Also drops a torn last line, which appending would bury.
    return len(rows) - len(kept)


class MetricsWriter:
    """Appends metrics, samples and per-criterion credit to JSONL files and, optionally,
    TensorBoard.

    Args:
        output_dir: the run folder (created if missing).
        tensorboard: also write TensorBoard event files.
        start_step: the first step this process writes; rows of later steps already in the files
            are dropped first (see the module docstring).
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, tensorboard: bool,
                 start_step: int = 0):
        self.output_dir = os.fspath(output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        self._files = {}
        for stream, name in FILES.items():
            path = os.path.join(self.output_dir, name)
            dropped = truncate_before(path, start_step)
            if dropped:
                logger.info("%s: dropped %d rows of steps >= %d (written after the last "
                            "checkpoint)", path, dropped, start_step)
            self._files[stream] = open(path, "a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(os.path.join(self.output_dir, "tensorboard"),
                                              purge_step=start_step)

    def _append(self, stream: str, rows: Sequence[Mapping[str, Any]]) -> None:
        file = self._files[stream]
        for row in rows:
            file.write(jsonl_line(row))
        file.flush()

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records scalar ``metrics`` (arrays of one element, numbers) for ``step``."""
        values = {name: _scalar(value) for name, value in metrics.items()}
        self._append("metrics", [{"step": int(step), **values}])
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, float("nan") if value is None else value, step)

    def write_samples(self, step: int, samples: list[Mapping[str, Any]]) -> None:
        """Records sample answers (JSON objects, e.g. prompt, answer, reward) for ``step``."""
        self._append("samples", [{"step": int(step), **sample} for sample in samples])
        if self._tensorboard is not None and samples:
            text = "\n\n---\n\n".join(
                "\n\n".join(f"**{key}**: {value}" for key, value in sample.items())
                for sample in samples
            )
            self._tensorboard.add_text("samples", text, step)

    def write_criteria(self, step: int, split: str, rows: list[Mapping[str, Any]]) -> None:
        """Records per-criterion rows (e.g. example_id, criterion, credit) of ``split``."""
        self._append("criteria", [{"step": int(step), "split": split, **row} for row in rows])

    def close(self) -> None:
        """Flushes and closes every file."""
        for file in self._files.values():
            file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``<output_dir>/metrics.jsonl`` in order (null -> NaN)."""
    records = read_rows(os.path.join(os.fspath(output_dir), FILES["metrics"]))
    return [{k: (math.nan if v is None else v) for k, v in record.items()} for record in records]


def read_criteria(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``<output_dir>/criteria.jsonl`` in order."""
    return read_rows(os.path.join(os.fspath(output_dir), FILES["criteria"]))
