"""``healthbench``: OpenAI's HealthBench, with the HealthBench-1k split of the paper's ablations.

Files (manual directory, top level). For each part the first file found is used:

=============  ========================================  =========================================
split          official file (simple-evals)              stand-in (``../shared/data/healthbench``)
=============  ========================================  =========================================
``oss_eval``   ``2025-05-07-06-14-12_oss_eval.jsonl``    ``union_full_rubrics.jsonl`` (788), else
               (5,000)                                   ``oss_eval_first100.jsonl`` (100)
``hard``       ``hard_2025-05-08-21-00-10.jsonl``        ``hard_sample50_seed42.jsonl`` (50)
               (1,000)
``consensus``  ``consensus_2025-05-09-20-00-46.jsonl``   ``union_consensus_rubrics.jsonl`` (225),
               (3,671)                                   else ``consensus_context_seeking_104``
=============  ========================================  =========================================

``oss_eval`` is required; a missing ``hard`` or ``consensus`` part is named in ``metadata.json``
(``missing_splits``), which also records the file used per split (``files``) and whether all
three were the official ones (``complete``).

HealthBench-1k (the paper's Table 1 and judge-alignment ablations; its prompt ids were not
published). From the ``oss_eval`` ids, :func:`healthbench_1k_ids` takes the ``k`` ids with the
smallest SHA-256 hex digest of ``"<seed>:<id>"``, seed :data:`HEALTHBENCH_1K_SEED` = 0, where
``k = 1000`` for the full 5,000 and ``round(1000 * n / 5000)`` for a subset of ``n`` prompts
(158 of the 788 stand-ins). The choice depends on the ids only, not on file order. Split
``healthbench_1k`` holds them; split ``train`` holds the other ``oss_eval`` prompts, the
training set of those ablations.

Ids: ``prompt_id``, else the stand-in's ``_key`` (RuscaRL-only records), else ``<file>:<line>``.
Reference (``has_reference``): the ideal completion, which about 84 % of prompts have.
Features beyond the common ones: ``example_tags`` (texts), ``theme`` (the ``theme:`` tag without
its prefix, "" if none) and ``rubric_kind`` ("full": example-level criteria present;
"consensus": cluster-level criteria only).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from rar_jax.data.builders.base import MalformedRowError, RarJaxBuilder, Row
from rar_jax.data.examples import example_from_healthbench_record

__all__ = [
    "HEALTHBENCH_1K_FULL_SIZE",
    "HEALTHBENCH_1K_SEED",
    "HEALTHBENCH_1K_SIZE",
    "HEALTHBENCH_FILES",
    "Healthbench",
    "healthbench_1k_ids",
    "healthbench_1k_size",
]

# Candidate files per split, official first, then the stand-ins of ../shared/data/healthbench.
HEALTHBENCH_FILES: dict[str, tuple[str, ...]] = {
    "oss_eval": (
        "2025-05-07-06-14-12_oss_eval.jsonl",
        "union_full_rubrics.jsonl",
        "oss_eval_first100.jsonl",
    ),
    "hard": ("hard_2025-05-08-21-00-10.jsonl", "hard_sample50_seed42.jsonl"),
    "consensus": (
        "consensus_2025-05-09-20-00-46.jsonl",
        "union_consensus_rubrics.jsonl",
        "consensus_context_seeking_104.jsonl",
    ),
}

HEALTHBENCH_1K_SEED = 0
HEALTHBENCH_1K_SIZE = 1000
HEALTHBENCH_1K_FULL_SIZE = 5000

_CITATION = """\
@article{arora2025healthbench,
  title={HealthBench: Evaluating Large Language Models Towards Improved Human Health},
  author={Arora, Rahul K. and others},
  journal={arXiv preprint arXiv:2505.08775},
  year={2025}
}"""


def healthbench_1k_size(population: int) -> int:
    """How many ids HealthBench-1k takes from ``population`` prompts (1,000 of 5,000, scaled)."""
    if population >= HEALTHBENCH_1K_FULL_SIZE:
        return HEALTHBENCH_1K_SIZE
    return round(HEALTHBENCH_1K_SIZE * population / HEALTHBENCH_1K_FULL_SIZE)


def healthbench_1k_ids(ids: Sequence[str], *, seed: int = HEALTHBENCH_1K_SEED) -> set[str]:
    """The HealthBench-1k prompt ids among ``ids``.

    The :func:`healthbench_1k_size` ids with the smallest ``sha256(f"{seed}:{id}").hexdigest()``;
    independent of the order of ``ids``.
    """
    if len(set(ids)) != len(ids):
        raise ValueError("healthbench_1k_ids: ids must be distinct")
    ranked = sorted(ids, key=lambda id_: hashlib.sha256(f"{seed}:{id_}".encode()).hexdigest())
    return set(ranked[: healthbench_1k_size(len(ids))])


class Healthbench(RarJaxBuilder):
    """TFDS builder of HealthBench (oss_eval, hard, consensus, healthbench_1k, train)."""

    name = "healthbench"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: official files or the shared stand-ins; HB-1k."}
    DESCRIPTION = "HealthBench conversations with physician-written rubrics."
    HOMEPAGE = "https://github.com/openai/simple-evals"
    CITATION = _CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the HealthBench JSONL files of openai/simple-evals in the manual directory: "
        + ", ".join(names[0] for names in HEALTHBENCH_FILES.values())
        + ". Without them, the subsets of ../shared/data/healthbench are used: "
        + ", ".join(name for names in HEALTHBENCH_FILES.values() for name in names[1:])
        + ". The oss_eval file (or a stand-in) is required."
    )

    def _extra_features(self) -> dict[str, Any]:
        return {
            "example_tags": tfds.features.Sequence(tfds.features.Text()),
            "theme": tfds.features.Text(),
            "rubric_kind": tfds.features.Text(),
        }

    def _convert(self, row: Row) -> dict[str, Any]:
        record = row.record
        example = example_from_healthbench_record(record, row.source)
        tags = record.get("example_tags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise MalformedRowError(f"{row.source}: example_tags: expected a list of strings")
        themes = [tag.removeprefix("theme:") for tag in tags if tag.startswith("theme:")]
        full = any("level:example" in criterion.tags for criterion in example.rubric.criteria)
        return {
            "example_id": example.example_id,
            "source": row.source,
            "format": "healthbench",
            "record": json.dumps(record, ensure_ascii=False),
            "prompt": example.conversation[-1]["content"],
            "has_reference": example.reference is not None,
            "example_tags": tags,
            "theme": themes[0] if themes else "",
            "rubric_kind": "full" if full else "consensus",
        }

    def _prepare_splits(self, manual_dir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
        chosen = {}
        for split, names in HEALTHBENCH_FILES.items():
            found = [name for name in names if (manual_dir / name).is_file()]
            if found:
                chosen[split] = found[0]
        if "oss_eval" not in chosen:
            raise MalformedRowError(
                f"{manual_dir}: no HealthBench oss_eval file; expected one of "
                f"{', '.join(HEALTHBENCH_FILES['oss_eval'])}"
            )
        self._counts["files"] = {split: [name] for split, name in chosen.items()}
        self._counts["missing_splits"] = sorted(set(HEALTHBENCH_FILES) - set(chosen))
        self._counts["complete"] = all(
            chosen.get(split) == names[0] for split, names in HEALTHBENCH_FILES.items()
        )
        splits = {
            split: self._convert_rows(split, [manual_dir / name], manual_dir, self._convert)
            for split, name in chosen.items()
        }
        ids = [item["example_id"] for item in splits["oss_eval"]]
        held_out = healthbench_1k_ids(ids)
        splits["healthbench_1k"] = [
            item for item in splits["oss_eval"] if item["example_id"] in held_out
        ]
        splits["train"] = [
            item for item in splits["oss_eval"] if item["example_id"] not in held_out
        ]
        self._counts["healthbench_1k"] = {
            "seed": HEALTHBENCH_1K_SEED,
            "population": len(ids),
            "size": len(held_out),
            "method": "the ids with the smallest sha256(f'{seed}:{prompt_id}').hexdigest()",
        }
        return splits
