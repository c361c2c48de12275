"""``rar_science``: RaR-Science (ScaleAI/RaR-Science; train 18,333 / val 2,292 / test 2,292).

Science questions aligned with GPQA-Diamond topics, with o3-mini rubrics. Most of its pitfalls
describe what to avoid (satisfied = good): the polarity default for validation is
``PITFALL_POLARITY_DEFAULTS["rar_science"]`` (positive). About 9.5 % of its records have an empty
reference answer (flagged ``has_reference = False``). See :mod:`rar_jax.data.builders.rar`.
"""

from __future__ import annotations

from rar_jax.data.builders.rar import RarBuilder, manual_instructions

__all__ = ["RarScience"]


class RarScience(RarBuilder):
    """TFDS builder of RaR-Science."""

    name = "rar_science"
    DESCRIPTION = "RaR-Science: science questions with weighted, categorised rubrics."
    HOMEPAGE = "https://huggingface.co/datasets/ScaleAI/RaR-Science"
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions("ScaleAI/RaR-Science")
