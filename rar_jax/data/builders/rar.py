"""The RaR data sets (RaR-Medicine, RaR-Science) from the files a user downloaded.

The manual directory holds the released splits as JSONL or parquet files whose path names the
split (see :func:`~rar_jax.data.builders.base.find_split_files`): ``train``, ``val`` (also
``validation``, ``valid``, ``dev``) and ``test``, e.g. the Hugging Face layout
``data/train-00000-of-00001.parquet``. Each row is a native RaR record (``question``,
``reference_answer``, ``question_source``, ``rubric``, ``rubric_list``, ``rubric_count``) or a
rubric_harness export row; it is validated with the same reader as the JSONL path
(:func:`rar_jax.data.examples.example_from_rar_record`), the pitfall polarity default of the
data set (``PITFALL_POLARITY_DEFAULTS``) standing in for items without their own, only to
validate: the record is stored as read and the run's config decides the polarity at read time.

Cleaning, all counted in ``metadata.json``:

- a test question that also occurs in train is removed (``test_in_train_removed``); questions
  are compared after :func:`question_key` (whitespace collapsed, case folded). The released
  sets have such overlaps (Medicine 3.6 %, Science 12.3 % of test, by a third-party count);
  ``val_in_train`` counts the same overlap for val, which is kept;
- a row with a missing or empty ``reference_answer`` is kept and flagged ``has_reference =
  False`` (``missing_reference``; about 9.5 % of RaR-Science).

Features beyond the common ones: ``question_source`` (text, "" if absent) and ``rubric_count``
(int32, the number of rubric items).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from rar_jax.data.builders.base import MalformedRowError, RarJaxBuilder, Row, find_split_files
from rar_jax.data.examples import example_from_rar_record
from rar_jax.rubrics.readers import PITFALL_POLARITY_DEFAULTS

__all__ = ["RAR_SPLIT_ALIASES", "RarBuilder", "question_key"]

# Words in a file path that name each split.
RAR_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation", "valid", "dev"),
    "test": ("test",),
}

_CITATION = """\
@article{gunjal2025rubrics,
  title={Rubrics as Rewards: Reinforcement Learning Beyond Verifiable Domains},
  author={Gunjal, Anisha and Wang, Anthony and Lau, Elaine and Nath, Vaskar and He, Yunzhong
          and Liu, Bing and Hendryx, Sean},
  journal={arXiv preprint arXiv:2507.17746},
  year={2025}
}"""


def question_key(text: str) -> str:
    """A question as compared for deduplication: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


class RarBuilder(RarJaxBuilder, skip_registration=True):
    """RaR records from train / val / test files in the manual directory (not registered)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: validated rows, test deduplicated against train."}
    CITATION = _CITATION

    def _extra_features(self) -> dict[str, Any]:
        return {"question_source": tfds.features.Text(), "rubric_count": np.int32}

    def _convert(self, row: Row) -> dict[str, Any]:
        record = row.record
        example = example_from_rar_record(
            record, row.source, pitfall_polarity=PITFALL_POLARITY_DEFAULTS[self.name]
        )
        question_source = record.get("question_source")
        if question_source is not None and not isinstance(question_source, str):
            raise MalformedRowError(
                f"{row.source}: question_source: expected a string, got "
                f"{type(question_source).__name__}"
            )
        return {
            "example_id": example.example_id,
            "source": row.source,
            "format": "rar",
            "record": json.dumps(record, ensure_ascii=False),
            "prompt": example.conversation[-1]["content"],
            "has_reference": example.reference is not None,
            "question_source": question_source or "",
            "rubric_count": len(example.rubric),
        }

    def _prepare_splits(self, manual_dir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
        files = find_split_files(manual_dir, RAR_SPLIT_ALIASES)
        if not any(files.values()):
            raise MalformedRowError(
                f"{manual_dir}: no train / val / test JSONL or parquet files; expected:\n"
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        self._counts["files"] = {
            split: [str(path.relative_to(manual_dir)) for path in paths]
            for split, paths in files.items()
        }
        self._counts["missing_splits"] = [split for split, paths in files.items() if not paths]
        splits = {
            split: self._convert_rows(split, paths, manual_dir, self._convert)
            for split, paths in files.items()
            if paths
        }
        train_questions = {question_key(item["prompt"]) for item in splits.get("train", [])}
        if "test" in splits:
            kept = [item for item in splits["test"]
                    if question_key(item["prompt"]) not in train_questions]
            self._counts["test_in_train_removed"] = len(splits["test"]) - len(kept)
            splits["test"] = kept
        if "val" in splits:
            self._counts["val_in_train"] = sum(
                question_key(item["prompt"]) in train_questions for item in splits["val"]
            )
        return splits


def manual_instructions(hf_name: str) -> str:
    """The manual-download text of a RaR data set published as ``hf_name`` on Hugging Face."""
    return (
        f"Download the {hf_name} files (JSONL or parquet) from Hugging Face and place them in "
        "the manual directory; each file's path must name its split: train, val (or "
        "validation) or test, e.g. data/train-00000-of-00001.parquet, val.jsonl, test.jsonl."
    )
