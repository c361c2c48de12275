"""``gpqa_diamond``: GPQA-Diamond multiple choice, with seeded answer orders for repeated runs.

GPQA's authors ask that the questions not be published in plain text, so nothing is shipped:
the manual directory holds the user's official ``gpqa_diamond.csv`` (from the password-protected
``dataset.zip`` of idavidrein/gpqa, 198 rows, 78 columns; or the only ``*.csv`` there). Used
columns: ``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``, ``Record ID`` (the id) and,
when present, ``High-level domain`` and ``Subdomain``. Answers and the question (in ``prompt``)
are stripped of surrounding whitespace; an empty question or answer, a missing column or a
repeated ``Record ID`` is a malformed row (file, line and column named).

Answer orders. The paper reports the mean of 10 runs with different choice orders. The config
holds ``seed`` and ``num_runs``; for run ``r`` the four choices, kept in the CSV order
``[correct, incorrect 1, incorrect 2, incorrect 3]`` in feature ``choices``, are shown in the
order ``orders[r]`` = :func:`choice_order` ``(record_id, seed, r)``: position ``i`` (letter
``"ABCD"[i]``) shows ``choices[orders[r][i]]``, and ``answer_index[r]`` is the position of the
correct answer. The order depends on the record id, the seed and the run only.
Config names spell both (``seed0_runs10``, the default), so builds with another seed never
reuse each other's files: use :func:`gpqa_config`.

Features beyond the common ones: ``record_id``, ``domain``, ``subdomain`` (text), ``choices``
(4 texts), ``orders`` (int32[num_runs, 4]), ``answer_index`` (int32[num_runs]).
``has_reference`` is always True (the reference is the correct letter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from rar_jax.data.builders.base import (
    BuilderConfig,
    MalformedRowError,
    RarJaxBuilder,
    Row,
    config_name,
    require_text,
)

__all__ = [
    "CHOICE_COLUMNS",
    "GPQA_FILE",
    "GpqaConfig",
    "GpqaDiamond",
    "choice_order",
    "gpqa_config",
]

GPQA_FILE = "gpqa_diamond.csv"
# CSV columns of the four choices, in the order of feature ``choices`` (correct one first).
CHOICE_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                  "Incorrect Answer 3")
NUM_CHOICES = len(CHOICE_COLUMNS)

_CITATION = """\
@inproceedings{rein2024gpqa,
  title={GPQA: A Graduate-Level Google-Proof Q\\&A Benchmark},
  author={Rein, David and Hou, Betty Li and Stickland, Asa Cooper and Petty, Jackson and
          Pang, Richard Yuanzhe and Dirani, Julien and Michael, Julian and Bowman, Samuel R.},
  booktitle={First Conference on Language Modeling},
  year={2024}
}"""


def choice_order(record_id: str, seed: int, run: int) -> np.ndarray:
    """The order in which run ``run`` shows the choices of record ``record_id``.

    Returns:
        int32[4], a permutation of 0..3: position ``i`` shows canonical choice ``order[i]``
        (0 is the correct answer). Drawn by ``numpy.random.default_rng([seed, run, h])`` where
        ``h`` is the first 8 bytes (little-endian) of ``sha256(record_id)``.
    """
    if seed < 0 or run < 0:
        raise ValueError(f"choice_order: seed and run must be >= 0, got seed={seed}, run={run}")
    digest = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, run, digest])
    return rng.permutation(NUM_CHOICES).astype(np.int32)


@dataclasses.dataclass(eq=False)
class GpqaConfig(BuilderConfig):
    """GPQA-Diamond options.

    Attributes:
        seed: seed of the answer orders (>= 0).
        num_runs: how many answer orders are stored per question (>= 1; the paper: 10).
    """

    seed: int = 0
    num_runs: int = 10


def gpqa_config(seed: int = 0, num_runs: int = 10, *, skip_malformed: bool = False) -> GpqaConfig:
    """A GpqaConfig whose name spells its options (``seed3_runs10``, ``seed0_runs10_skip``)."""
    if seed < 0 or num_runs < 1:
        raise ValueError(f"gpqa_config: need seed >= 0 and num_runs >= 1, got {seed}, {num_runs}")
    name = config_name(seed=seed, runs=num_runs, skip_malformed=skip_malformed)
    return GpqaConfig(name=name, seed=seed, num_runs=num_runs, skip_malformed=skip_malformed)


class GpqaDiamond(RarJaxBuilder):
    """TFDS builder of GPQA-Diamond (split ``test``) from the user's official CSV."""

    name = "gpqa_diamond"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: seeded answer orders per run."}
    BUILDER_CONFIGS = [gpqa_config(), gpqa_config(skip_malformed=True)]
    DESCRIPTION = "GPQA-Diamond: 198 graduate-level multiple-choice science questions."
    HOMEPAGE = "https://github.com/idavidrein/gpqa"
    CITATION = _CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Unzip the official GPQA release (password in its README) and place {GPQA_FILE} in "
        "the manual directory (or any single .csv file with the same columns)."
    )

    def _extra_features(self) -> dict[str, Any]:
        runs = self.builder_config.num_runs
        return {
            "record_id": tfds.features.Text(),
            "domain": tfds.features.Text(),
            "subdomain": tfds.features.Text(),
            "choices": tfds.features.Sequence(tfds.features.Text(), length=NUM_CHOICES),
            "orders": tfds.features.Tensor(shape=(runs, NUM_CHOICES), dtype=np.int32),
            "answer_index": tfds.features.Tensor(shape=(runs,), dtype=np.int32),
        }

    def _convert(self, row: Row) -> dict[str, Any]:
        record = row.record
        question = require_text(record, "Question", row.source)
        record_id = require_text(record, "Record ID", row.source).strip()
        choices = [require_text(record, column, row.source).strip() for column in CHOICE_COLUMNS]
        config = self.builder_config
        orders = np.stack([choice_order(record_id, config.seed, run)
                           for run in range(config.num_runs)])
        kept = {key: record[key] for key in ("Question", *CHOICE_COLUMNS, "Record ID",
                                             "High-level domain", "Subdomain") if key in record}
        return {
            "example_id": record_id,
            "source": row.source,
            "format": "gpqa",
            "record": json.dumps(kept, ensure_ascii=False),
            "prompt": question.strip(),
            "has_reference": True,
            "record_id": record_id,
            "domain": (record.get("High-level domain") or "").strip(),
            "subdomain": (record.get("Subdomain") or "").strip(),
            "choices": choices,
            "orders": orders,
            "answer_index": np.argmax(orders == 0, axis=1).astype(np.int32),
        }

    def _prepare_splits(self, manual_dir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
        path = manual_dir / GPQA_FILE
        if not path.is_file():
            candidates = sorted(manual_dir.glob("*.csv"))
            if len(candidates) != 1:
                raise MalformedRowError(
                    f"{manual_dir}: expected {GPQA_FILE} or a single .csv file, found "
                    f"{[candidate.name for candidate in candidates] or 'none'}"
                )
            path = candidates[0]
        self._counts["files"] = {"test": [path.name]}
        self._counts["seed"] = self.builder_config.seed
        self._counts["num_runs"] = self.builder_config.num_runs
        return {"test": self._convert_rows("test", [path], manual_dir, self._convert)}
