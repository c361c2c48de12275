"""Tests of the reward aggregation math: hand-computed cases, a numpy reference, NaN handling."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from rar_jax import config as rar_config
from rar_jax.judges.aggregation import (
    DEFAULT_CATEGORY_WEIGHTS,
    EXPLICIT_NORMALIZATIONS,
    category_weight_table,
    criterion_credit,
    expected_rating,
    explicit_reward,
    explicit_reward_fn,
    healthbench_points_score,
    healthbench_points_score_np,
    rating_reward_fn,
    rating_to_reward,
)
from rar_jax.rubrics.readers import read_rubrics
from rar_jax.rubrics.schema import Category, Criterion, Polarity, Rubric, RubricError, rubric_arrays

ESS, IMP, OPT, PIT = 0, 1, 2, 3  # Category ids.


def _row_arrays(verdicts, pitfall_sign):
    """One rubric (Essential 5, Important 3, Pitfall -2) with the given verdicts."""
    return dict(
        verdicts=np.array([verdicts], np.float32),
        mask=np.ones((1, 3), bool),
        weights=np.array([[5.0, 3.0, -2.0]], np.float32),
        polarity_signs=np.array([[1.0, 1.0, pitfall_sign]], np.float32),
        category_ids=np.array([[ESS, IMP, PIT]], np.int32),
    )


# (verdicts, pitfall polarity sign, category_weights reward, signed_abs reward), by hand:
# category weights 1, 0.7, 0.9; credit of a negative pitfall is 1 - c.
HAND_CASES = [
    ([1, 0, 1], -1, 1.0 / 2.6, (5 - 2) / 10),
    ([1, 0, 1], +1, (1.0 + 0.9) / 2.6, (5 + 2) / 10),
    ([0, 0, 1], -1, 0.0, 0.0),  # signed: -2 / 10 clipped to 0.
    ([0, 0, 1], +1, 0.9 / 2.6, 2 / 10),
    ([0, 0, 0], -1, 0.9 / 2.6, 0.0),  # Not doing the bad thing earns the pitfall's credit.
    ([1, 1, 0], -1, 1.0, 8 / 10),
    ([1, 1, 0], +1, 1.7 / 2.6, 8 / 10),
    ([0.5, 1, 0.25], -1, (0.5 + 0.7 + 0.9 * 0.75) / 2.6, (2.5 + 3 - 0.5) / 10),
    ([0.5, 1, 0.25], +1, (0.5 + 0.7 + 0.9 * 0.25) / 2.6, (2.5 + 3 + 0.5) / 10),
]


@pytest.mark.parametrize(
    ("verdicts", "pitfall_sign", "category_expected", "signed_expected"), HAND_CASES
)
def test_explicit_hand_cases(verdicts, pitfall_sign, category_expected, signed_expected):
    arrays = _row_arrays(verdicts, pitfall_sign)
    category = explicit_reward(**arrays, normalization="category_weights")
    signed = explicit_reward(**arrays, normalization="signed_abs")
    np.testing.assert_allclose(np.asarray(category), [category_expected], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(signed), [signed_expected], rtol=1e-6, atol=1e-7)


def test_category_weights_option_is_used():
    arrays = _row_arrays([1, 0, 1], -1)
    custom = explicit_reward(**arrays, category_weights={"pitfall": 0.5, "important": 0.2})
    np.testing.assert_allclose(np.asarray(custom), [1.0 / (1.0 + 0.2 + 0.5)], rtol=1e-6)
    v1 = explicit_reward(**_row_arrays([0, 0, 0], -1), category_weights={"pitfall": 0.8})
    np.testing.assert_allclose(np.asarray(v1), [0.8 / 2.5], rtol=1e-6)


def test_category_weight_table():
    np.testing.assert_array_equal(category_weight_table(), np.float32([1.0, 0.7, 0.3, 0.9]))
    assert DEFAULT_CATEGORY_WEIGHTS == {
        "essential": 1.0,
        "important": 0.7,
        "optional": 0.3,
        "pitfall": 0.9,
    }
    np.testing.assert_array_equal(
        category_weight_table({Category.OPTIONAL: 0.1, "essential": 2}),
        np.float32([2.0, 0.7, 0.1, 0.9]),
    )
    from_config = config_dict.ConfigDict(dict(DEFAULT_CATEGORY_WEIGHTS, pitfall=0.8))
    np.testing.assert_array_equal(
        category_weight_table(from_config), np.float32([1, 0.7, 0.3, 0.8])
    )
    with pytest.raises(
        ValueError, match="unknown category 'vital' in category_weights; expected essential"
    ):
        category_weight_table({"vital": 1.0})
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="expected a finite weight > 0"):
            category_weight_table({"pitfall": bad})


def test_unknown_normalization_lists_names():
    with pytest.raises(
        ValueError,
        match="unknown explicit normalization 'mean'; expected one of category_weights, signed_abs",
    ):
        explicit_reward(**_row_arrays([1, 1, 1], 1), normalization="mean")
    assert set(EXPLICIT_NORMALIZATIONS) == {"category_weights", "signed_abs"}


@pytest.mark.parametrize("normalization", ["category_weights", "signed_abs"])
def test_padding_is_ignored_whatever_it_holds(normalization):
    rows = [_row_arrays(v, s) for v, s, _, _ in HAND_CASES]
    unpadded = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
    n = unpadded["mask"].shape[0]
    padded = {
        "verdicts": np.concatenate([unpadded["verdicts"], np.full((n, 2), np.nan, np.float32)], 1),
        "mask": np.concatenate([unpadded["mask"], np.zeros((n, 2), bool)], 1),
        "weights": np.concatenate([unpadded["weights"], np.full((n, 2), 100.0, np.float32)], 1),
        "polarity_signs": np.concatenate(
            [unpadded["polarity_signs"], np.zeros((n, 2), np.float32)], 1
        ),
        "category_ids": np.concatenate(
            [unpadded["category_ids"], np.full((n, 2), -1, np.int32)], 1
        ),
    }
    expected = [c if normalization == "category_weights" else s for _, _, c, s in HAND_CASES]
    np.testing.assert_allclose(
        np.asarray(explicit_reward(**padded, normalization=normalization)),
        expected,
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_array_equal(
        np.asarray(explicit_reward(**padded, normalization=normalization)),
        np.asarray(explicit_reward(**unpadded, normalization=normalization)),
    )


@pytest.mark.parametrize("normalization", ["category_weights", "signed_abs"])
@pytest.mark.parametrize("bad_verdict", [np.nan, 1.5, -0.1])
def test_bad_verdict_makes_only_its_row_nan(normalization, bad_verdict):
    rows = [_row_arrays([1, 0, 1], -1), _row_arrays([1, 0, 1], -1)]
    arrays = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
    arrays["verdicts"][0, 1] = bad_verdict
    reward = np.asarray(explicit_reward(**arrays, normalization=normalization))
    assert np.isnan(reward[0])
    assert reward[1] == pytest.approx(
        1 / 2.6 if normalization == "category_weights" else 0.3, rel=1e-6
    )


@pytest.mark.parametrize("normalization", ["category_weights", "signed_abs"])
def test_row_without_criteria_or_with_bad_sign_is_nan(normalization):
    arrays = _row_arrays([1, 1, 1], 1)
    arrays["mask"][:] = False
    assert np.isnan(np.asarray(explicit_reward(**arrays, normalization=normalization))[0])
    arrays = _row_arrays([1, 1, 1], 0)  # A real criterion without a polarity sign.
    assert np.isnan(np.asarray(explicit_reward(**arrays, normalization=normalization))[0])


def test_uncategorised_rubric_has_no_category_weighted_reward():
    rubric = Rubric(
        (
            Criterion("", "Good.", None, 6, Polarity.POSITIVE),
            Criterion("", "Bad.", None, -4, Polarity.NEGATIVE),
        ),
        "hb",
    )
    arrays = rubric_arrays([rubric])
    verdicts = np.array([[1.0, 1.0]], np.float32)
    category = explicit_reward(
        verdicts, arrays.mask, arrays.weights, arrays.polarity_signs, arrays.category_ids
    )
    assert np.isnan(np.asarray(category)[0])
    signed = explicit_reward(
        verdicts,
        arrays.mask,
        arrays.weights,
        arrays.polarity_signs,
        arrays.category_ids,
        normalization="signed_abs",
    )
    np.testing.assert_allclose(np.asarray(signed), [(6 - 4) / 10], rtol=1e-6)


def _numpy_reference(verdicts, mask, weights, signs, categories, normalization, table):
    """Loop reference; returns (rewards [n], number of signed_abs rows the clip changed)."""
    rewards = []
    clipped = 0
    for row in range(verdicts.shape[0]):
        numerator = denominator = 0.0
        for j in range(verdicts.shape[1]):
            if not mask[row, j]:
                continue
            c = float(verdicts[row, j])
            if normalization == "category_weights":
                w = table[categories[row, j]]
                credit = c if signs[row, j] > 0 else 1.0 - c
                numerator += w * credit
                denominator += w
            else:
                numerator += signs[row, j] * abs(weights[row, j]) * c
                denominator += abs(weights[row, j])
        reward = numerator / denominator if denominator > 0 else math.nan
        if normalization == "signed_abs" and not math.isnan(reward):
            clipped += not 0.0 <= reward <= 1.0
            reward = min(max(reward, 0.0), 1.0)
        rewards.append(reward)
    return np.array(rewards), clipped


@pytest.mark.parametrize("normalization", ["category_weights", "signed_abs"])
def test_matches_numpy_reference_on_random_batches(normalization):
    rng = np.random.default_rng(7)
    table = {0: 1.0, 1: 0.7, 2: 0.3, 3: 0.9}
    total_clipped = 0
    for _ in range(5):
        n, k = 16, 12
        categories = rng.integers(0, 4, (n, k)).astype(np.int32)
        weight_by_category = np.array([5, 3.5, 1.5, -1.5])
        weights = (weight_by_category[categories] + rng.uniform(-0.5, 0.5, (n, k))).astype(
            np.float32
        )
        signs = np.where((categories == 3) & (rng.random((n, k)) < 0.5), -1.0, 1.0).astype(
            np.float32
        )
        mask = np.arange(k)[None, :] < rng.integers(1, k + 1, (n, 1))
        verdicts = np.where(
            rng.random((n, k)) < 0.5, rng.random((n, k)), rng.integers(0, 2, (n, k))
        ).astype(np.float32)
        categories = np.where(mask, categories, -1).astype(np.int32)
        signs = np.where(mask, signs, 0).astype(np.float32)
        got = np.asarray(
            explicit_reward(verdicts, mask, weights, signs, categories, normalization=normalization)
        )
        expected, clipped = _numpy_reference(
            verdicts, mask, weights, signs, categories, normalization, table
        )
        total_clipped += clipped
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert np.all((got >= 0) & (got <= 1))
    if normalization == "signed_abs":
        assert total_clipped > 0  # The batches exercise the clip at 0.


def test_jit_matches_eager():
    arrays = _row_arrays([0.5, 1, 0.25], -1)
    for normalization in EXPLICIT_NORMALIZATIONS:
        bound = functools.partial(
            explicit_reward, normalization=normalization, category_weights={"pitfall": 0.8}
        )
        eager = np.asarray(bound(**arrays))
        jitted = np.asarray(jax.jit(bound)(**arrays))
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(
            jax.jit(healthbench_points_score)(
                np.float32([[4, -2]]), np.float32([[1, 1]]), np.ones((1, 2), bool)
            )
        ),
        [0.5],
    )


def test_criterion_credit():
    credit = criterion_credit(jnp.float32([[0.2, 0.2, 1.0]]), jnp.float32([[1, -1, -1]]))
    np.testing.assert_allclose(np.asarray(credit), [[0.2, 0.8, 0.0]], rtol=1e-6)


def test_rating_normalisations_by_hand():
    ratings = np.float32([1, 5.5, 10, 7, np.nan, 0, 11, 0.99])
    min_max = np.asarray(rating_to_reward(ratings))
    np.testing.assert_allclose(min_max[:4], [0.0, 0.5, 1.0, 6 / 9], rtol=1e-6)
    assert np.isnan(min_max[4:]).all()
    over_max = np.asarray(rating_to_reward(ratings, normalization="over_max"))
    np.testing.assert_allclose(over_max[:4], [0.1, 0.55, 1.0, 0.7], rtol=1e-6)
    assert np.isnan(over_max[4:]).all()
    scale = np.asarray(rating_to_reward(np.float32([3, 5, 6]), low=1, high=5))
    np.testing.assert_allclose(scale[:2], [0.5, 1.0], rtol=1e-6)
    assert np.isnan(scale[2])
    np.testing.assert_allclose(
        np.asarray(rating_to_reward(np.float32([3]), normalization="over_max", low=1, high=5)),
        [0.6],
        rtol=1e-6,
    )
    with pytest.raises(
        ValueError, match="unknown rating normalization 'z'; expected one of min_max, over_max"
    ):
        rating_to_reward(ratings, normalization="z")
    with pytest.raises(ValueError, match="low < high"):
        rating_to_reward(ratings, low=10, high=10)


def test_expected_rating_by_hand():
    ratings = np.float32([1, 2, 3])
    logprobs = np.float32(
        [np.log([0.1, 0.2, 0.2]), [np.log(0.25), -np.inf, np.log(0.75)], [-np.inf] * 3]
    )
    got = np.asarray(expected_rating(logprobs, ratings))
    # Row 0 renormalised to 0.2, 0.4, 0.4: 0.2 + 0.8 + 1.2. Row 1: 0.25 + 2.25.
    np.testing.assert_allclose(got[:2], [2.2, 2.5], rtol=1e-6)
    assert np.isnan(got[2])  # No mass on any rating.
    nan_row = np.asarray(expected_rating(np.float32([[0.0, np.nan, 0.0]]), ratings))
    assert np.isnan(nan_row[0])
    ten = np.asarray(
        expected_rating(np.full((1, 10), -2.0, np.float32), np.arange(1, 11, dtype=np.float32))
    )
    np.testing.assert_allclose(ten, [5.5], rtol=1e-6)


def test_healthbench_points_score_by_hand():
    points = np.float32([[10, 5, -3, 99], [10, 5, -3, 0], [-2, -3, 0, 0], [4, 2, 0, 0]])
    met = np.float32([[1, 0, 1, np.nan], [0, 0, 1, 0], [1, 0, 0, 0], [1, np.nan, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0]], bool)
    got = np.asarray(healthbench_points_score(points, met, mask))
    # (10 - 3) / 15; -3 / 15 unclipped; no positive points -> NaN; a NaN verdict -> NaN.
    np.testing.assert_allclose(got[:2], [7 / 15, -0.2], rtol=1e-6)
    assert np.isnan(got[2]) and np.isnan(got[3])
    exact = healthbench_points_score_np(points, met, mask)
    assert exact.dtype == np.float64
    assert exact[0] == 7 / 15 and exact[1] == -3 / 15
    assert np.isnan(exact[2]) and np.isnan(exact[3])


@pytest.fixture(scope="module")
def medicine_rubrics(shared_data):
    return read_rubrics(
        shared_data / "rar_samples" / "rar_medicine_sample3.jsonl",
        "rar",
        pitfall_polarity="negative",
    )




@pytest.mark.parametrize("normalization", ["category_weights", "signed_abs"])
def test_explicit_reward_fn_binds_the_reward_config(normalization):
    reward = rar_config.base_config().reward
    reward.explicit_normalization = normalization
    reward.category_weights.pitfall = 0.5
    arrays = _row_arrays([1.0, 0.0, 1.0], -1.0)
    got = explicit_reward_fn(reward)(**arrays)
    weights = {**DEFAULT_CATEGORY_WEIGHTS, "pitfall": 0.5}
    # By hand: Essential met, Important not, a negative pitfall met (credit 0 / signed -|w|).
    want = 1.0 / (1.0 + 0.7 + 0.5) if normalization == "category_weights" else (5 - 2) / 10
    np.testing.assert_allclose(got, [want], rtol=1e-6)
    direct = explicit_reward(**arrays, normalization=normalization, category_weights=weights)
    np.testing.assert_allclose(got, direct)


def test_rating_reward_fn_binds_the_normalization():
    reward = rar_config.base_config().reward
    np.testing.assert_allclose(rating_reward_fn(reward)(jnp.array([1.0, 7.0])), [0.0, 6 / 9])
    reward.rating_normalization = "over_max"
    np.testing.assert_allclose(rating_reward_fn(reward)(jnp.array([1.0, 7.0])), [0.1, 0.7])


def test_judged_criteria_rule_by_hand():
    from rar_jax.judges.aggregation import judged_criteria

    nan = np.nan
    verdicts = np.array([[1.0, nan, 0.0, 1.0, 1.0],    # 4 of 5 judged.
                         [nan, nan, 1.0, 0.0, nan],    # 2 of 5.
                         [nan, nan, 0.0, 0.0, 0.0]])   # Padding after 2 real criteria.
    mask = np.array([[True] * 5, [True] * 5, [True, True, False, False, False]])
    filled, judged, scorable, share = judged_criteria(verdicts, mask, 0.8)
    np.testing.assert_array_equal(judged[0], [True, False, True, True, True])
    np.testing.assert_array_equal(filled[0], [1.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(scorable, [True, False, False])  # 0.8, 0.4, 0 of 2.
    np.testing.assert_allclose(share, [0.2, 0.6, 1.0])
    _, _, everything, _ = judged_criteria(verdicts, mask, 1.0)
    np.testing.assert_array_equal(everything, [False, False, False])
    _, _, anything, _ = judged_criteria(verdicts, mask, 0.0)
    np.testing.assert_array_equal(anything, [True, True, False])  # None judged: never scorable.
