"""Rubric ablations of the paper's Table 2 (config ``rubric.ablation``): pure Rubric filters.

``RUBRIC_ABLATIONS``: "all" (the full rubric), "essential_only" (only Essential criteria) and
"no_pitfalls" (every criterion except the Pitfalls). The "no category labels" ablation changes how
a rubric is shown to the judge, not which criteria it holds, so it is a prompt option.

An ablation that leaves a rubric without criteria raises :class:`AblationLeavesNoCriteria`; the
training-data readers (``rar_jax.data``) leave such examples out, count them and log how many
(the paper does not say what it did with them; scoring them by an empty rubric is impossible).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rar_jax.rubrics.schema import Category, Rubric, RubricError


class AblationLeavesNoCriteria(RubricError):
    """The ablation removes every criterion of a rubric (e.g. essential_only on a rubric without
    an Essential item). The data readers skip such examples and count them."""


def _filtered(rubric: Rubric, keep: Callable[[Category | None], bool], ablation: str) -> Rubric:
    if not rubric.has_categories:
        raise RubricError(
            f"{rubric.source}: ablation {ablation!r} needs category labels; this rubric has none"
        )
    criteria = tuple(criterion for criterion in rubric.criteria if keep(criterion.category))
    if not criteria:
        raise AblationLeavesNoCriteria(f"{rubric.source}: ablation {ablation!r} leaves no criteria")
    return dataclasses.replace(rubric, criteria=criteria)


def keep_all_criteria(rubric: Rubric) -> Rubric:
    """The full rubric (ablation "all")."""
    return rubric


def essential_only(rubric: Rubric) -> Rubric:
    """Only the Essential criteria, in order (ablation "essential_only")."""
    return _filtered(rubric, lambda category: category is Category.ESSENTIAL, "essential_only")


def without_pitfalls(rubric: Rubric) -> Rubric:
    """Every criterion except the Pitfalls, in order (ablation "no_pitfalls")."""
    return _filtered(rubric, lambda category: category is not Category.PITFALL, "no_pitfalls")


# name -> filter(Rubric) -> Rubric (config rubric.ablation)
RUBRIC_ABLATIONS: dict[str, Callable[[Rubric], Rubric]] = {
    "all": keep_all_criteria,
    "essential_only": essential_only,
    "no_pitfalls": without_pitfalls,
}


def apply_rubric_ablation(rubric: Rubric, name: str) -> Rubric:
    """Applies the ablation registered under ``name``; ValueError listing the names."""
    if name not in RUBRIC_ABLATIONS:
        raise ValueError(
            f"unknown rubric ablation {name!r}; expected one of {', '.join(RUBRIC_ABLATIONS)}"
        )
    return RUBRIC_ABLATIONS[name](rubric)
