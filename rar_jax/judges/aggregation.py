"""Reward aggregation: judge verdicts / ratings -> one reward per answer (pure array functions).

Explicit rubric rewards (RaR-Explicit, RaR-Predefined). Inputs are per-criterion verdicts
``verdicts: f32[n, k]`` in [0, 1] (a hard 0/1 or the judge's probability P(true); the math is
linear in them) for the polarity-neutral question "is this statement true of the response?",
with the padded rubric arrays of :func:`rar_jax.rubrics.schema.rubric_arrays`. Two normalisations,
picked by name from ``EXPLICIT_NORMALIZATIONS`` (config ``reward.explicit_normalization``):

- ``"category_weights"`` (the paper's): each criterion weighs a fixed amount by category
  (config ``reward.category_weights``; default Essential 1.0, Important 0.7, Optional 0.3,
  Pitfall 0.9; v1 of the paper used 0.8 for Pitfall). Criteria are taken in their positively
  phrased form: credit = c for positive polarity, 1 - c for negative polarity. Then
  ``r = sum_j w_j credit_j / sum_j w_j`` in [0, 1]. Uncategorised rubrics (HealthBench) have no
  category weight: their rows come out NaN.
- ``"signed_abs"`` (re-implementations with raw weights): s_j = +|w_j| for positive polarity,
  -|w_j| for negative polarity, ``r = clip(sum_j s_j c_j / sum_j |w_j|, 0, 1)``.

Failures are loud: a NaN or out-of-[0, 1] verdict at a real criterion, a real criterion whose
polarity sign is not +-1, or a row without criteria gives that row the reward NaN, never 0.
Padding (mask False) is ignored whatever it holds. The caller keeps the per-criterion verdicts
for diagnostics; these functions only return the reward.

Holistic ratings (RaR-Implicit, Direct-Likert, Reference-Likert): :func:`rating_to_reward` maps a
1-10 rating to [0, 1] by ``RATING_NORMALIZATIONS`` (config ``reward.rating_normalization``):
``"min_max"`` (s - low) / (high - low) = (s - 1) / 9, the default (the worst rating is 0 and the
best 1), or ``"over_max"`` s / high = s / 10 (the paper does not say which; both are used).
:func:`expected_rating` gives the dense score from the judge's log-probabilities of the ratings.

HealthBench points: :func:`healthbench_points_score` = points of met criteria / positive points
(unclipped), the one formula for training rewards and for evaluation (``rar_jax.eval``), which
uses the float64 numpy twin :func:`healthbench_points_score_np`.

The builders :func:`explicit_reward_fn` and :func:`rating_reward_fn` bind the ``reward`` config
section to these functions.

All jnp functions are jit-compatible; keyword options (names, category weights, bounds) are
static Python values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_collections import config_dict

from rar_jax.rubrics.schema import CATEGORY_IDS, Category

__all__ = [
    "DEFAULT_CATEGORY_WEIGHTS",
    "EXPLICIT_NORMALIZATIONS",
    "RATING_NORMALIZATIONS",
    "category_weight_table",
    "category_weighted_reward",
    "criterion_credit",
    "expected_rating",
    "explicit_reward",
    "explicit_reward_fn",
    "get_explicit_normalization",
    "healthbench_points_score",
    "healthbench_points_score_np",
    "rating_to_reward",
    "rating_reward_fn",
    "signed_abs_reward",
]

# The paper's (v2) fixed category weights for RaR-Explicit.
DEFAULT_CATEGORY_WEIGHTS: dict[str, float] = {
    "essential": 1.0,
    "important": 0.7,
    "optional": 0.3,
    "pitfall": 0.9,
}


def category_weight_table(category_weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Category name -> weight mapping as a table indexed by ``CATEGORY_IDS``.

    Args:
        category_weights: weights by category name ("essential", "important", "optional",
            "pitfall"); names not given keep ``DEFAULT_CATEGORY_WEIGHTS``. Accepts a dict or an
            ``ml_collections.ConfigDict``. None: the defaults.

    Returns:
        f32[4], entry ``CATEGORY_IDS[c]`` is the weight of category c. ValueError for an
        unknown name or a weight that is not finite and > 0.
    """
    merged = dict(DEFAULT_CATEGORY_WEIGHTS)
    if category_weights is not None:
        for name, weight in category_weights.items():
            key = name.value if isinstance(name, Category) else str(name)
            if key not in merged:
                raise ValueError(
                    f"unknown category {name!r} in category_weights; expected {', '.join(merged)}"
                )
            if not np.isfinite(weight) or weight <= 0:
                raise ValueError(
                    f"category_weights[{key!r}] = {weight!r}; expected a finite weight > 0"
                )
            merged[key] = float(weight)
    table = np.zeros(len(CATEGORY_IDS), np.float32)
    for category, index in CATEGORY_IDS.items():
        table[index] = merged[category.value]
    return table


def _invalid_verdicts(verdicts: jax.Array, mask: jax.Array, polarity_signs: jax.Array) -> jax.Array:
    """bool[n]: a real criterion has a NaN / out-of-range verdict or a polarity sign not +-1."""
    in_range = (verdicts >= 0.0) & (verdicts <= 1.0)
    good_sign = jnp.abs(polarity_signs) == 1.0
    return jnp.any(mask & ~(in_range & good_sign), axis=-1)


def criterion_credit(verdicts: jax.Array, polarity_signs: jax.Array) -> jax.Array:
    """Satisfaction of each criterion in its positively phrased form.

    Args:
        verdicts: f32[n, k], P(statement true of the response).
        polarity_signs: f32[n, k], +1 positive / -1 negative (0 in padding).

    Returns:
        f32[n, k]: ``c`` where the polarity is positive, ``1 - c`` where it is negative.
    """
    return jnp.where(polarity_signs > 0, verdicts, 1.0 - verdicts)


def category_weighted_reward(
    verdicts: jax.Array,
    mask: jax.Array,
    weights: jax.Array,
    polarity_signs: jax.Array,
    category_ids: jax.Array,
    *,
    category_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """RaR-Explicit with fixed category weights: ``sum w_cat * credit / sum w_cat``.

    Args:
        verdicts: f32[n, k] in [0, 1].
        mask: bool[n, k], True for real criteria.
        weights: f32[n, k], raw weights (unused here: the category decides the weight; kept so
            every normalisation has the same signature).
        polarity_signs: f32[n, k], +-1 (0 in padding).
        category_ids: int32[n, k], ``CATEGORY_IDS`` (-1 for uncategorised / padding).
        category_weights: weights by category name, see :func:`category_weight_table`.

    Returns:
        f32[n] in [0, 1]; NaN for rows with a bad verdict, an uncategorised criterion or no
        criteria.
    """
    del weights
    table = jnp.asarray(category_weight_table(category_weights))
    known = (category_ids >= 0) & (category_ids < table.shape[0])
    per_criterion = jnp.where(known, table[jnp.clip(category_ids, 0, table.shape[0] - 1)], jnp.nan)
    weight = jnp.where(mask, per_criterion, 0.0)
    credit = jnp.where(mask, criterion_credit(verdicts, polarity_signs), 0.0)
    numerator = jnp.sum(weight * credit, axis=-1)
    denominator = jnp.sum(weight, axis=-1)
    reward = jnp.where(
        denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0), jnp.nan
    )
    return jnp.where(_invalid_verdicts(verdicts, mask, polarity_signs), jnp.nan, reward)


def signed_abs_reward(
    verdicts: jax.Array,
    mask: jax.Array,
    weights: jax.Array,
    polarity_signs: jax.Array,
    category_ids: jax.Array,
    *,
    category_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """RaR-Explicit with raw weights: ``clip(sum s c / sum |w|, 0, 1)``, ``s = polarity * |w|``.

    Args:
        verdicts: f32[n, k] in [0, 1].
        mask: bool[n, k], True for real criteria.
        weights: f32[n, k], raw weights (only their magnitude is used; the sign comes from the
            polarity).
        polarity_signs: f32[n, k], +-1 (0 in padding).
        category_ids: int32[n, k] (unused; same signature as every normalisation).
        category_weights: unused by this normalisation.

    Returns:
        f32[n] in [0, 1]; NaN for rows with a bad verdict or no criteria.
    """
    del category_ids, category_weights
    magnitude = jnp.where(mask, jnp.abs(weights), 0.0)
    signed = jnp.sign(polarity_signs) * magnitude
    contribution = jnp.where(mask, signed * verdicts, 0.0)
    numerator = jnp.sum(contribution, axis=-1)
    denominator = jnp.sum(magnitude, axis=-1)
    reward = jnp.where(
        denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0), jnp.nan
    )
    reward = jnp.clip(reward, 0.0, 1.0)
    return jnp.where(_invalid_verdicts(verdicts, mask, polarity_signs), jnp.nan, reward)


# name -> function(verdicts, mask, weights, polarity_signs, category_ids, *, category_weights)
EXPLICIT_NORMALIZATIONS: dict[str, Callable[..., jax.Array]] = {
    "category_weights": category_weighted_reward,
    "signed_abs": signed_abs_reward,
}


def get_explicit_normalization(name: str) -> Callable[..., jax.Array]:
    """The explicit aggregation registered under ``name``; ValueError listing the names."""
    try:
        return EXPLICIT_NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown explicit normalization {name!r}; "
            f"expected one of {', '.join(EXPLICIT_NORMALIZATIONS)}"
        ) from None


def explicit_reward(
    verdicts: jax.Array,
    mask: jax.Array,
    weights: jax.Array,
    polarity_signs: jax.Array,
    category_ids: jax.Array,
    *,
    normalization: str = "category_weights",
    category_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """RaR-Explicit reward with the normalisation picked by name (all arrays [n, k], result f32[n]).

    ``category_weights`` is read by "category_weights" only.
    """
    aggregate = get_explicit_normalization(normalization)
    return aggregate(
        jnp.asarray(verdicts, jnp.float32),
        jnp.asarray(mask, bool),
        jnp.asarray(weights, jnp.float32),
        jnp.asarray(polarity_signs, jnp.float32),
        jnp.asarray(category_ids, jnp.int32),
        category_weights=category_weights,
    )


def judged_criteria(
    verdicts: np.ndarray, mask: np.ndarray, min_judged_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rule for criteria left unjudged (a judgment that failed even after re-asking).

    An answer is scored over its judged criteria alone, their weights renormalised by the
    aggregation (which divides by the weights it sees), when at least ``min_judged_fraction`` of
    its rubric's criteria were judged; otherwise it has no score.

    Args:
        verdicts: f32[n, k], NaN where a criterion was not judged (or padding).
        mask: bool[n, k], the rubric's real criteria.
        min_judged_fraction: in [0, 1]; 1 needs every criterion judged.

    Returns:
        verdicts f32[n, k] with unjudged criteria set to 0, judged bool[n, k] (the mask of the
        criteria to aggregate), scorable bool[n] (enough judged; a row without any judged
        criterion never is) and unjudged_share f32[n] (unjudged / real criteria; 0 for an empty row).
    """
    verdicts = np.asarray(verdicts, np.float32)
    mask = np.asarray(mask, bool)
    judged = mask & np.isfinite(verdicts)
    real = mask.sum(axis=1)
    judged_count = judged.sum(axis=1)
    share = np.where(real > 0, 1.0 - judged_count / np.maximum(real, 1), 0.0).astype(np.float32)
    scorable = (judged_count > 0) & (judged_count >= min_judged_fraction * real - 1e-9)
    return np.where(judged, verdicts, 0.0).astype(np.float32), judged, scorable, share


def _min_max(rating: jax.Array, low: float, high: float) -> jax.Array:
    return (rating - low) / (high - low)


def _over_max(rating: jax.Array, low: float, high: float) -> jax.Array:
    del low
    return rating / high


# name -> function(rating, low, high) -> reward
RATING_NORMALIZATIONS: dict[str, Callable[[jax.Array, float, float], jax.Array]] = {
    "min_max": _min_max,
    "over_max": _over_max,
}


def rating_to_reward(
    rating: jax.Array,
    *,
    normalization: str = "min_max",
    low: float = 1.0,
    high: float = 10.0,
) -> jax.Array:
    """A holistic rating on [low, high] -> reward.

    Args:
        rating: f32[n], judge ratings (integers, or dense expected ratings); NaN = no rating.
        normalization: "min_max" ((s - low) / (high - low), default: 1 -> 0, 10 -> 1) or
            "over_max" (s / high: 1 -> 0.1, 10 -> 1).
        low, high: the rating scale, low < high.

    Returns:
        f32[n]; NaN where the rating is NaN or outside [low, high].
    """
    if normalization not in RATING_NORMALIZATIONS:
        raise ValueError(
            f"unknown rating normalization {normalization!r}; "
            f"expected one of {', '.join(RATING_NORMALIZATIONS)}"
        )
    if not low < high:
        raise ValueError(f"rating scale needs low < high, got low={low}, high={high}")
    rating = jnp.asarray(rating, jnp.float32)
    reward = RATING_NORMALIZATIONS[normalization](rating, low, high)
    in_range = (rating >= low) & (rating <= high)
    return jnp.where(in_range, reward, jnp.nan)


def expected_rating(rating_logprobs: jax.Array, ratings: jax.Array) -> jax.Array:
    """Expected rating under the judge's distribution renormalised over the allowed ratings.

    Args:
        rating_logprobs: f32[n, R], log-probability of each rating (-inf = impossible); need not
            be normalised: it is renormalised over the R ratings.
        ratings: f32[R], the rating values, e.g. 1..10.

    Returns:
        f32[n], ``sum_r p_r * ratings[r]`` with ``p = softmax(rating_logprobs)``; NaN if a row
        is all -inf or holds a NaN.
    """
    rating_logprobs = jnp.asarray(rating_logprobs, jnp.float32)
    log_normaliser = jax.scipy.special.logsumexp(rating_logprobs, axis=-1, keepdims=True)
    probabilities = jnp.exp(rating_logprobs - log_normaliser)
    return jnp.sum(probabilities * jnp.asarray(ratings, jnp.float32), axis=-1)


def _points_score(xp: Any, points: Any, met: Any, mask: Any) -> Any:
    """The HealthBench formula in the array namespace ``xp`` (jax.numpy or numpy)."""
    invalid = xp.any(mask & ~((met >= 0) & (met <= 1)), axis=-1)
    achieved = xp.sum(xp.where(mask, points * met, 0), axis=-1)
    possible = xp.sum(xp.where(mask & (points > 0), points, 0), axis=-1)
    score = xp.where(possible > 0, achieved / xp.where(possible > 0, possible, 1), xp.nan)
    return xp.where(invalid, xp.nan, score)


def healthbench_points_score(points: jax.Array, met: jax.Array, mask: jax.Array) -> jax.Array:
    """HealthBench score: ``sum(points of met criteria) / sum(positive points)``, unclipped.

    Args:
        points: f32[n, k], signed points (negative for undesirable behaviour).
        met: f32[n, k] in [0, 1], criterion met (or its probability).
        mask: bool[n, k], True for real criteria.

    Returns:
        f32[n], may be negative; NaN for a row without positive points or with a NaN /
        out-of-range verdict at a real criterion.
    """
    return _points_score(
        jnp,
        jnp.asarray(points, jnp.float32),
        jnp.asarray(met, jnp.float32),
        jnp.asarray(mask, bool),
    )


def healthbench_points_score_np(
    points: np.ndarray, met: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """:func:`healthbench_points_score` in float64 numpy (exact for integer points), for evaluation.

    Args:
        points: [n, k] numbers; met: [n, k] in [0, 1]; mask: bool[n, k].

    Returns:
        f64[n].
    """
    return _points_score(
        np,
        np.asarray(points, np.float64),
        np.asarray(met, np.float64),
        np.asarray(mask, bool),
    )


def explicit_reward_fn(reward: config_dict.ConfigDict) -> Callable[..., jax.Array]:
    """:func:`explicit_reward` with ``reward.explicit_normalization`` and the category weights bound.

    Returns ``(verdicts, mask, weights, polarity_signs, category_ids) -> f32[n]``.
    """
    return functools.partial(
        explicit_reward,
        normalization=reward.explicit_normalization,
        category_weights=dict(reward.category_weights),
    )


def rating_reward_fn(reward: config_dict.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """:func:`rating_to_reward` on the 1-10 scale with ``reward.rating_normalization`` bound."""
    return functools.partial(rating_to_reward, normalization=reward.rating_normalization)
