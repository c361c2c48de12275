"""Rubric statistics (criteria per rubric, category shares) against hand counts."""

from __future__ import annotations

import pytest

from rar_jax.rubrics.schema import Category, Criterion, Polarity, Rubric
from rar_jax.rubrics.stats import rubric_statistics


def criterion(category: Category | None, weight: float) -> Criterion:
    polarity = Polarity.NEGATIVE if weight < 0 else Polarity.POSITIVE
    return Criterion("t", "d", category, weight, polarity)


def test_counts_and_shares_by_hand():
    rar = Rubric((criterion(Category.ESSENTIAL, 5), criterion(Category.IMPORTANT, 3),
                  criterion(Category.PITFALL, -1)), "rar")
    healthbench = Rubric((criterion(None, 7), criterion(None, -2), criterion(None, 4),
                          criterion(None, 1), criterion(None, 5)), "healthbench")
    stats = rubric_statistics([rar, healthbench])
    assert (stats["rubrics"], stats["criteria"]) == (2, 8)
    # Sizes 3 and 5: mean 4, population std 1.
    assert stats["criteria_per_rubric"] == {"mean": 4.0, "std": 1.0, "min": 3, "max": 5}
    assert stats["category_shares"] == pytest.approx(
        {"essential": 1 / 8, "important": 1 / 8, "optional": 0.0, "pitfall": 1 / 8,
         "none": 5 / 8})
    with pytest.raises(ValueError, match="no rubrics"):
        rubric_statistics([])
