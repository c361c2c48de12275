"""Tests for rar_jax.rl.advantages: hand-computed cases, NaN handling and a numpy reference."""

import functools
import math

import jax
import numpy as np
import pytest

from rar_jax.rl.advantages import ADVANTAGE_SCALES, get_advantage_scale, group_advantages

NAN = float("nan")
INF = float("inf")

# one compilation per call shape is much faster on CPU than op-by-op eager dispatch
jitted_group_advantages = jax.jit(
    group_advantages, static_argnames=("num_generations", "scale", "std_ddof", "epsilon")
)


def reference_advantages(rewards, num_generations, scale, ddof, epsilon):
    """Independent numpy/python reference: advantages and validity, one group at a time."""
    rewards = np.asarray(rewards, np.float64)
    valid = np.isfinite(rewards)

    def std(values):
        values = np.asarray(values, np.float64)
        if len(values) - ddof <= 0:
            return 0.0
        return float(np.sqrt(np.sum((values - values.mean()) ** 2) / (len(values) - ddof)))

    batch_std = std(rewards[valid])
    advantages = np.zeros_like(rewards)
    for start in range(0, len(rewards), num_generations):
        group = rewards[start : start + num_generations]
        group_valid = valid[start : start + num_generations]
        values = group[group_valid]
        if len(values) < 2 or values.max() == values.min():
            continue
        mean = values.mean()
        divisor = {"group_std": std(values) + epsilon, "batch_std": batch_std + epsilon, "none": 1.0}[scale]
        for i in range(num_generations):
            if group_valid[i]:
                advantages[start + i] = (group[i] - mean) / divisor
    return advantages, valid


def test_group_std_hand_computed_with_nan_and_small_groups():
    rewards = np.array([1, 2, 3, 5, 5, 5, 0, NAN, 4, 7, NAN, INF], np.float32)
    out = jitted_group_advantages(rewards, num_generations=3, scale="group_std", std_ddof=1, epsilon=1e-4)
    # group 0: mean 2, sample std 1; group 1 tied; group 2: valid {0, 4}, mean 2,
    # sample std sqrt(8); group 3: one valid value -> tied.
    s2 = math.sqrt(8.0)
    expected = [-1 / 1.0001, 0, 1 / 1.0001, 0, 0, 0, -2 / (s2 + 1e-4), 0, 2 / (s2 + 1e-4), 0, 0, 0]
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(out.valid, [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0])
    assert int(out.num_invalid) == 3
    assert float(out.frac_tied_groups) == pytest.approx(0.5)
    # invalid rewards get advantage exactly 0, never NaN
    assert np.all(np.asarray(out.advantages)[[7, 10, 11]] == 0.0)
    valid_advantages = np.array(expected)[np.asarray(out.valid)]
    assert float(out.mean) == pytest.approx(valid_advantages.mean(), abs=1e-6)
    assert float(out.std) == pytest.approx(valid_advantages.std(), rel=1e-5)
    assert float(out.min) == pytest.approx(-1 / 1.0001, rel=1e-6)
    assert float(out.max) == pytest.approx(1 / 1.0001, rel=1e-6)


def test_ddof_zero_uses_population_std():
    rewards = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    out = jitted_group_advantages(rewards, num_generations=4, scale="group_std", std_ddof=0, epsilon=0.0)
    population_std = math.sqrt(1.25)  # deviations 1.5, 0.5, 0.5, 1.5 -> variance 5/4
    np.testing.assert_allclose(out.advantages, np.array([-1.5, -0.5, 0.5, 1.5]) / population_std, rtol=1e-6)
    out_ddof1 = jitted_group_advantages(
        rewards, num_generations=4, scale="group_std", std_ddof=1, epsilon=0.0
    )
    np.testing.assert_allclose(
        out_ddof1.advantages, np.array([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3), rtol=1e-6
    )


def test_epsilon_is_added_to_std():
    rewards = np.array([0.0, 2.0], np.float32)  # mean 1, sample std sqrt(2)
    out = jitted_group_advantages(rewards, num_generations=2, scale="group_std", std_ddof=1, epsilon=1.0)
    np.testing.assert_allclose(out.advantages, [-1 / (math.sqrt(2) + 1), 1 / (math.sqrt(2) + 1)], rtol=1e-6)


def test_batch_std_uses_all_valid_rewards_and_group_means():
    rewards = np.array([0.0, 1.0, 4.0, NAN], np.float32)
    out = jitted_group_advantages(rewards, num_generations=2, scale="batch_std", std_ddof=1, epsilon=0.0)
    # batch valid rewards {0, 1, 4}: mean 5/3, sample variance ((25 + 4 + 49) / 9) / 2 = 13/3
    batch_std = math.sqrt(13 / 3)
    np.testing.assert_allclose(out.advantages, [-0.5 / batch_std, 0.5 / batch_std, 0.0, 0.0], rtol=1e-6)
    assert int(out.num_invalid) == 1
    assert float(out.frac_tied_groups) == pytest.approx(0.5)  # second group has one valid reward


def test_scale_none_is_mean_centred_only():
    rewards = np.array([1.0, 3.0, 10.0, 10.0, 0.0, 9.0], np.float32)
    out = jitted_group_advantages(rewards, num_generations=3, scale="none", epsilon=123.0)
    # group means 14/3 and 19/3; epsilon is not used
    np.testing.assert_allclose(
        out.advantages, [1 - 14 / 3, 3 - 14 / 3, 10 - 14 / 3, 10 - 19 / 3, -19 / 3, 9 - 19 / 3], rtol=1e-6
    )


def test_frac_tied_groups_by_hand():
    rewards = np.array(
        [
            [1.0, 1.0],  # tied
            [0.0, 1.0],  # not tied
            [NAN, 0.3],  # one valid -> tied
            [NAN, NAN],  # no valid -> tied
            [0.5, 0.5],  # tied
        ],
        np.float32,
    ).reshape(-1)
    out = jitted_group_advantages(rewards, num_generations=2)
    assert float(out.frac_tied_groups) == pytest.approx(4 / 5)
    assert int(out.num_invalid) == 3
    np.testing.assert_array_equal(np.asarray(out.advantages)[[0, 1, 4, 5, 6, 7, 8, 9]], 0.0)


def test_tied_group_is_exactly_zero_even_with_rounding():
    # The float32 mean of three 0.1s differs from 0.1 by rounding; advantages must still be 0.
    rewards = np.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], np.float32)
    for scale in ADVANTAGE_SCALES:
        out = jitted_group_advantages(rewards, num_generations=3, scale=scale, epsilon=0.0)
        np.testing.assert_array_equal(out.advantages, np.zeros(6))
        assert np.all(np.isfinite(out.advantages))


def test_all_invalid_rewards_give_nan_stats_not_zero():
    out = jitted_group_advantages(np.array([NAN, NAN], np.float32), num_generations=2)
    np.testing.assert_array_equal(out.advantages, [0.0, 0.0])
    assert int(out.num_invalid) == 2
    for stat in (out.mean, out.std, out.min, out.max):
        assert math.isnan(float(stat))


@pytest.mark.parametrize("scale", sorted(ADVANTAGE_SCALES))
@pytest.mark.parametrize("ddof", [0, 1])
def test_matches_numpy_reference_on_random_rewards(scale, ddof):
    rng = np.random.default_rng(0)
    num_generations = 5
    rewards = rng.normal(size=8 * num_generations).astype(np.float32)
    rewards[rng.random(rewards.shape) < 0.2] = NAN
    rewards[3] = INF
    rewards[10:15] = 0.25  # one fully tied group
    expected, expected_valid = reference_advantages(rewards, num_generations, scale, ddof, 1e-4)
    fn = jax.jit(
        functools.partial(group_advantages, num_generations=num_generations, scale=scale, std_ddof=ddof)
    )
    out = fn(rewards)
    np.testing.assert_allclose(out.advantages, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(out.valid, expected_valid)
    assert int(out.num_invalid) == int((~expected_valid).sum())


def test_unknown_scale_lists_valid_names():
    with pytest.raises(ValueError, match="batch_std.*group_std.*none"):
        get_advantage_scale("zscore")
    with pytest.raises(ValueError, match="rl.advantage.scale"):
        group_advantages(np.zeros(4, np.float32), num_generations=2, scale="zscore")


def test_bad_shapes_and_options_raise():
    with pytest.raises(ValueError, match="not a multiple of num_generations=3"):
        group_advantages(np.zeros(4, np.float32), num_generations=3)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(np.zeros((2, 2), np.float32), num_generations=2)
    with pytest.raises(ValueError, match="std_ddof"):
        group_advantages(np.zeros(4, np.float32), num_generations=2, std_ddof=-1)
    with pytest.raises(ValueError, match="epsilon"):
        group_advantages(np.zeros(4, np.float32), num_generations=2, epsilon=-1.0)
