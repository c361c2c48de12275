"""Statistics of a set of rubrics, as the paper reports them for its data sets (PAPER.md section
2: criteria per rubric, e.g. a mean of 9.6 for RaR-Medicine, and the share of each category).

``rar-rubrics`` writes them beside the rubrics it generated (``<output>.stats.json``) and, with
``rubric_generation.stats_only``, for any rubric data set; ``rar-tables`` shows them beside the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rar_jax.rubrics.schema import Category, Rubric

__all__ = ["UNCATEGORISED", "rubric_statistics"]

# The category key of criteria without one (HealthBench's physician rubrics).
UNCATEGORISED = "none"


def rubric_statistics(rubrics: Sequence[Rubric]) -> dict[str, Any]:
    """Counts over ``rubrics`` (n rubrics with k_i criteria each).

    Returns:
        ``rubrics`` (n), ``criteria`` (sum k_i), ``criteria_per_rubric`` (``mean``, ``std``
        (population), ``min``, ``max`` of k_i) and ``category_shares``: category value
        (``essential``, ``important``, ``optional``, ``pitfall``, ``none`` for uncategorised
        criteria) -> its fraction of all criteria (every category listed, summing to 1).

    Raises:
        ValueError: when ``rubrics`` is empty.
    """
    if not rubrics:
        raise ValueError("rubric_statistics: no rubrics")
    sizes = np.array([len(rubric.criteria) for rubric in rubrics], np.float64)
    keys = [category.value for category in Category] + [UNCATEGORISED]
    counts = dict.fromkeys(keys, 0)
    for rubric in rubrics:
        for criterion in rubric.criteria:
            counts[UNCATEGORISED if criterion.category is None else criterion.category.value] += 1
    total = int(sizes.sum())
    return {
        "rubrics": len(rubrics),
        "criteria": total,
        "criteria_per_rubric": {
            "mean": float(sizes.mean()),
            "std": float(sizes.std()),
            "min": int(sizes.min()),
            "max": int(sizes.max()),
        },
        "category_shares": {key: count / total for key, count in counts.items()},
    }
