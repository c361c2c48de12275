"""``rar_medicine``: RaR-Medicine (ScaleAI/RaR-Medicine; train 17,926 / val 2,240 / test 2,242).

Medical questions (diagnosis, treatment, ...) with GPT-4o rubrics grounded in a reference
answer. Most of its pitfalls describe a failure (satisfied = bad): the polarity default for
validation is ``PITFALL_POLARITY_DEFAULTS["rar_medicine"]`` (negative). See
:mod:`rar_jax.data.builders.rar` for the files, the splits and the cleaning.
"""

from __future__ import annotations

from rar_jax.data.builders.rar import RarBuilder, manual_instructions

__all__ = ["RarMedicine"]


class RarMedicine(RarBuilder):
    """TFDS builder of RaR-Medicine."""

    name = "rar_medicine"
    DESCRIPTION = "RaR-Medicine: medical questions with weighted, categorised rubrics."
    HOMEPAGE = "https://huggingface.co/datasets/ScaleAI/RaR-Medicine"
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions("ScaleAI/RaR-Medicine")
