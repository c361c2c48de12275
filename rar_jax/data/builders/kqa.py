"""``kqa``: K-QA (Manes et al. 2024), physician answers decomposed into checklist statements.

The manual directory holds ``questions_w_answers.jsonl`` of the K-QA release (201 questions;
``../shared/data/kqa`` has it). Split ``test`` holds every question: ``Must_have`` statements
become Essential criteria (weight 5), ``Nice_to_have`` ones Optional criteria (weight 1), and the
physician's ``Free_form_answer`` is the reference (see ``rar_jax.rubrics.readers``). The released
file has three blank ``Must_have`` statements; the reader drops blank statements with a warning,
and ``metadata.json`` counts them (``blank_statements``). Extra feature: ``icd10`` (the
``ICD_10_diag`` text, "" if absent).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from rar_jax.data.builders.base import MalformedRowError, RarJaxBuilder, Row
from rar_jax.data.examples import example_from_kqa_record

__all__ = ["KQA_FILE", "Kqa"]

KQA_FILE = "questions_w_answers.jsonl"

_CITATION = """\
@article{manes2024kqa,
  title={K-QA: A Real-World Medical Q\\&A Benchmark},
  author={Manes, Itay and Ronn, Naama and Cohen, David and Ilan Ber, Ran and Horowitz-Kugler,
          Zehavi and Stanovsky, Gabriel},
  journal={arXiv preprint arXiv:2401.14493},
  year={2024}
}"""


class Kqa(RarJaxBuilder):
    """TFDS builder of K-QA (split ``test``)."""

    name = "kqa"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    DESCRIPTION = "K-QA: real patient questions with physician must-have / nice-to-have statements."
    HOMEPAGE = "https://github.com/Itaymanes/K-QA"
    CITATION = _CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Place {KQA_FILE} from the K-QA repository (dataset/{KQA_FILE}) in the manual directory."
    )

    def _extra_features(self) -> dict[str, Any]:
        return {"icd10": tfds.features.Text()}

    def _convert(self, row: Row) -> dict[str, Any]:
        record = row.record
        example = example_from_kqa_record(record, row.source)
        icd10 = record.get("ICD_10_diag")
        if icd10 is not None and not isinstance(icd10, str):
            raise MalformedRowError(f"{row.source}: ICD_10_diag: expected a string")
        blank = sum(
            isinstance(statement, str) and not statement.strip()
            for key in ("Must_have", "Nice_to_have")
            for statement in record[key]
        )
        self._counts["blank_statements"] = self._counts.get("blank_statements", 0) + blank
        return {
            "example_id": example.example_id,
            "source": row.source,
            "format": "kqa",
            "record": json.dumps(record, ensure_ascii=False),
            "prompt": example.conversation[-1]["content"],
            "has_reference": example.reference is not None,
            "icd10": icd10 or "",
        }

    def _prepare_splits(self, manual_dir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
        path = manual_dir / KQA_FILE
        if not path.is_file():
            raise MalformedRowError(f"{manual_dir}: {KQA_FILE} not found")
        self._counts["files"] = {"test": [KQA_FILE]}
        self._counts["blank_statements"] = 0
        return {"test": self._convert_rows("test", [path], manual_dir, self._convert)}
