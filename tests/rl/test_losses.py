"""Hand-computed cases for rar_jax.rl.losses: KL estimators, aggregations, clipping, dual clip, GSPO."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax.rl.losses import (
    IMPORTANCE_RATIOS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    get_importance_ratio,
    get_kl_estimator,
    get_loss_aggregation,
    kl_divergence,
    policy_loss,
    reduce_metrics,
)

STATIC_OPTIONS = (
    "aggregation",
    "epsilon_low",
    "epsilon_high",
    "dual_clip",
    "importance_ratio",
    "beta",
    "kl_estimator",
    "kl_clamp",
    "max_completion_length",
)
# one compilation per call is much faster on CPU than op-by-op eager dispatch; eager is covered too
jitted_policy_loss = jax.jit(policy_loss, static_argnames=STATIC_OPTIONS)
jitted_kl_divergence = jax.jit(kl_divergence, static_argnames=("estimator", "clamp"))

# ----------------------------------------------------------------------------------- KL estimators


def test_kl_estimators_hand_computed():
    logprobs = np.array([[0.0, -1.0]], np.float32)
    ref_logprobs = np.array([[-1.0, 0.0]], np.float32)  # logp - ref = [1, -1]
    expected = {
        "k1": [1.0, -1.0],
        "k2": [0.5, 0.5],
        "k3": [math.exp(-1.0) + 1.0 - 1.0, math.exp(1.0) - 1.0 - 1.0],
    }
    for name, values in expected.items():
        kl = jitted_kl_divergence(logprobs, ref_logprobs, estimator=name)
        assert kl.dtype == jnp.float32
        np.testing.assert_allclose(kl, [values], rtol=1e-6)


def test_kl_clamp_clips_both_sides_and_zero_disables():
    logprobs = np.array([[0.0, -1.0, 0.0]], np.float32)
    ref_logprobs = np.array([[-1.0, 0.0, -0.1]], np.float32)
    np.testing.assert_allclose(
        jitted_kl_divergence(logprobs, ref_logprobs, estimator="k1", clamp=0.6), [[0.6, -0.6, 0.1]], rtol=1e-6
    )
    np.testing.assert_allclose(
        jitted_kl_divergence(logprobs, ref_logprobs, estimator="k3", clamp=0.6),
        [[math.exp(-1.0), 0.6, math.exp(-0.1) + 0.1 - 1.0]],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        jitted_kl_divergence(logprobs, ref_logprobs, estimator="k3", clamp=0.0),
        [[math.exp(-1.0), math.e - 2.0, math.exp(-0.1) + 0.1 - 1.0]],
        rtol=1e-5,
    )


@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_identical_policy_and_reference_give_exactly_zero_kl(estimator):
    logprobs = -np.abs(np.random.default_rng(0).normal(size=(3, 5))).astype(np.float32) * 4
    kl = jitted_kl_divergence(logprobs, logprobs.copy(), estimator=estimator)
    np.testing.assert_array_equal(kl, np.zeros((3, 5)))
    out = jitted_policy_loss(
        logprobs,
        logprobs,
        np.array([1.0, -1.0, 0.5], np.float32),
        np.ones((3, 5), bool),
        beta=0.1,
        ref_logprobs=logprobs.copy(),
        kl_estimator=estimator,
    )
    assert float(reduce_metrics(out.metrics)["kl"]) == 0.0
    assert float(reduce_metrics(out.metrics)["approx_kl"]) == 0.0


def test_registries_reject_unknown_names_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"rl.kl.estimator.*\['k1', 'k2', 'k3'\]"):
        get_kl_estimator("k4")
    with pytest.raises(ValueError, match="rl.loss.importance_ratio.*sequence.*token"):
        get_importance_ratio("segment")
    with pytest.raises(ValueError, match="rl.loss.aggregation.*seq_mean_token_mean"):
        get_loss_aggregation("sum")
    assert set(IMPORTANCE_RATIOS) == {"token", "sequence"}
    assert set(LOSS_AGGREGATIONS) == {"seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"}


# ------------------------------------------------------------------------------------ aggregation

# Three answers, three token slots. Row 2 is empty; row 0's last slot is padding with a wild ratio.
HAND_RATIOS = np.array([[1.1, 0.9, 5.0], [1.0, 1.1, 0.7], [3.0, 3.0, 3.0]])
HAND_ADVANTAGES = np.array([1.0, -2.0, 3.0], np.float32)
HAND_MASK = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]], np.float32)


def _hand_inputs():
    old_logprobs = np.full((3, 3), -1.0, np.float32)
    logprobs = (old_logprobs + np.log(HAND_RATIOS)).astype(np.float32)
    return logprobs, old_logprobs


# per-token losses with clip range [0.8, 1.2]:
#   row 0 (A = 1):  -1.1, -0.9
#   row 1 (A = -2): 2 * 1.0, 2 * 1.1, max(2 * 0.7, 2 * 0.8) = 1.6   -> row sum 5.8
@pytest.mark.parametrize(
    "aggregation, expected_sum, expected_denominator",
    [
        ("seq_mean_token_mean", -2.0 / 2 + 5.8 / 3, 2.0),  # the empty row adds nothing
        ("token_mean", -2.0 + 5.8, 5.0),
        ("seq_mean_token_sum_norm", (-2.0 + 5.8) / 4, 3.0),  # every row counts, L = 4
    ],
)
def test_aggregations_hand_computed_with_empty_row(aggregation, expected_sum, expected_denominator):
    logprobs, old_logprobs = _hand_inputs()
    out = jitted_policy_loss(
        logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, aggregation=aggregation, max_completion_length=4
    )
    assert float(out.loss_sum) == pytest.approx(expected_sum, rel=1e-5)
    assert float(out.denominator) == pytest.approx(expected_denominator)
    metrics = reduce_metrics(out.metrics)
    assert float(metrics["clip_frac_low"]) == pytest.approx(1 / 5)  # row 1's 0.7 (A < 0)
    assert float(metrics["clip_frac_high"]) == pytest.approx(0.0)  # 1.1 < 1.2; 5.0 is padding
    assert float(metrics["dual_clip_frac"]) == 0.0
    assert float(metrics["ratio_mean"]) == pytest.approx((1.1 + 0.9 + 1.0 + 1.1 + 0.7) / 5, rel=1e-5)
    expected_approx_kl = np.mean([1 / r - 1 + math.log(r) for r in [1.1, 0.9, 1.0, 1.1, 0.7]])
    assert float(metrics["approx_kl"]) == pytest.approx(expected_approx_kl, rel=1e-4)
    assert "kl" not in metrics and "entropy" not in metrics


def test_dr_grpo_needs_max_completion_length():
    logprobs, old_logprobs = _hand_inputs()
    with pytest.raises(ValueError, match="max_completion_length"):
        jitted_policy_loss(
            logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, aggregation="seq_mean_token_sum_norm"
        )
    out = jitted_policy_loss(
        logprobs,
        old_logprobs,
        HAND_ADVANTAGES,
        HAND_MASK,
        aggregation="seq_mean_token_sum_norm",
        max_completion_length=19,
    )
    assert float(out.loss_sum) == pytest.approx(3.8 / 19, rel=1e-5)


def test_asymmetric_clip_range():
    ratios = np.array([[1.25, 0.85]])
    old_logprobs = np.zeros((1, 2), np.float32)
    logprobs = np.log(ratios).astype(np.float32)
    mask = np.ones((1, 2), bool)
    # A > 0: 1.25 is inside [0.9, 1.3] -> -1.25; A < 0: 0.85 -> max(0.85, 0.9) = 0.9
    positive = jitted_policy_loss(
        logprobs[:, :1], old_logprobs[:, :1], np.array([1.0]), mask[:, :1], epsilon_low=0.1, epsilon_high=0.3
    )
    negative = jitted_policy_loss(
        logprobs[:, 1:], old_logprobs[:, 1:], np.array([-1.0]), mask[:, 1:], epsilon_low=0.1, epsilon_high=0.3
    )
    assert float(positive.loss_sum) == pytest.approx(-1.25, rel=1e-5)
    assert float(negative.loss_sum) == pytest.approx(0.9, rel=1e-5)
    assert float(reduce_metrics(negative.metrics)["clip_frac_low"]) == 1.0
    # symmetric 0.2 clips the positive one at 1.2 and leaves 0.85 alone
    positive_sym = jitted_policy_loss(logprobs[:, :1], old_logprobs[:, :1], np.array([1.0]), mask[:, :1])
    negative_sym = jitted_policy_loss(logprobs[:, 1:], old_logprobs[:, 1:], np.array([-1.0]), mask[:, 1:])
    assert float(positive_sym.loss_sum) == pytest.approx(-1.2, rel=1e-5)
    assert float(negative_sym.loss_sum) == pytest.approx(0.85, rel=1e-5)
    assert float(reduce_metrics(positive_sym.metrics)["clip_frac_high"]) == 1.0


def test_dual_clip_caps_negative_advantage_loss():
    ratios = np.array([[2.0, 4.0, 0.5], [5.0, 1.0, 1.0]])
    logprobs = np.log(ratios).astype(np.float32)
    old_logprobs = np.zeros_like(logprobs)
    advantages = np.array([-1.0, 1.0], np.float32)
    mask = np.ones((2, 3), bool)
    loss = functools.partial(jitted_policy_loss, aggregation="token_mean")
    # row 0 (A = -1): max(r, clip(r)) = [2, 4, 0.8]; row 1 (A = 1): [-1.2, -1, -1]
    plain = loss(logprobs, old_logprobs, advantages, mask)
    assert float(plain.loss_sum) == pytest.approx(2 + 4 + 0.8 - 1.2 - 1 - 1, rel=1e-5)
    dual = loss(logprobs, old_logprobs, advantages, mask, dual_clip=3.0)
    # the 4 is capped at -c * A = 3; the positive-advantage row is untouched
    assert float(dual.loss_sum) == pytest.approx(2 + 3 + 0.8 - 1.2 - 1 - 1, rel=1e-5)
    assert float(reduce_metrics(dual.metrics)["dual_clip_frac"]) == pytest.approx(1 / 6)
    grad = jax.grad(lambda lp: loss(lp, old_logprobs, advantages, mask, dual_clip=3.0).loss_sum)(logprobs)
    # d/dlogp of r * |A| is r for unclipped tokens; capped and clipped tokens get 0
    np.testing.assert_allclose(grad, [[2.0, 0.0, 0.0], [0.0, -1.0, -1.0]], rtol=1e-5)
    with pytest.raises(ValueError, match="dual_clip"):
        loss(logprobs, old_logprobs, advantages, mask, dual_clip=0.5)


def test_gspo_sequence_ratio_hand_computed():
    old_logprobs = np.zeros((1, 3), np.float32)
    logprobs = np.array([[0.1, 0.3, 5.0]], np.float32)  # last slot is padding
    mask = np.array([[1, 1, 0]], bool)
    advantages = np.array([1.0], np.float32)
    gspo = functools.partial(
        jitted_policy_loss, importance_ratio="sequence", epsilon_low=0.5, epsilon_high=0.5
    )
    out = gspo(logprobs, old_logprobs, advantages, mask)
    s = math.exp(0.2)  # exp of the mean log-ratio over the two real tokens
    assert float(out.loss_sum) == pytest.approx(-s, rel=1e-6)
    assert float(reduce_metrics(out.metrics)["ratio_mean"]) == pytest.approx(s, rel=1e-6)
    grad = jax.grad(lambda lp: gspo(lp, old_logprobs, advantages, mask).loss_sum)(logprobs)
    # GSPO: d(-s)/dlogp_t = -s / |y| for both real tokens, 0 for padding
    np.testing.assert_allclose(grad, [[-s / 2, -s / 2, 0.0]], rtol=1e-6)
    token = jitted_policy_loss(logprobs, old_logprobs, advantages, mask, epsilon_low=0.5, epsilon_high=0.5)
    assert float(token.loss_sum) == pytest.approx(-(math.exp(0.1) + math.exp(0.3)) / 2, rel=1e-6)
    # with the default 0.2 range the sequence ratio 1.2214 is clipped at 1.2: no gradient
    clipped = jitted_policy_loss(logprobs, old_logprobs, advantages, mask, importance_ratio="sequence")
    assert float(clipped.loss_sum) == pytest.approx(-1.2, rel=1e-6)
    assert float(reduce_metrics(clipped.metrics)["clip_frac_high"]) == 1.0


def test_kl_penalty_is_added_per_token():
    logprobs = np.array([[-1.0, -2.0], [-0.5, -3.0]], np.float32)
    ref_logprobs = np.array([[-1.5, -1.0], [-0.5, -9.0]], np.float32)
    mask = np.array([[1, 1], [1, 0]], bool)  # ref at the padded slot is far away: must be ignored
    zero_advantages = np.zeros(2, np.float32)
    d = np.array([0.5, -1.0, 0.0])  # logp - ref at real tokens
    for estimator, kl in {"k1": d, "k2": 0.5 * d**2, "k3": np.exp(-d) + d - 1}.items():
        out = jitted_policy_loss(
            logprobs,
            logprobs,
            zero_advantages,
            mask,
            aggregation="token_mean",
            beta=0.1,
            ref_logprobs=ref_logprobs,
            kl_estimator=estimator,
        )
        assert float(out.loss_sum) == pytest.approx(0.1 * kl.sum(), rel=1e-5, abs=1e-7)
        assert float(reduce_metrics(out.metrics)["kl"]) == pytest.approx(kl.mean(), rel=1e-5, abs=1e-7)
    clamped = jitted_policy_loss(
        logprobs,
        logprobs,
        zero_advantages,
        mask,
        aggregation="token_mean",
        beta=0.1,
        ref_logprobs=ref_logprobs,
        kl_estimator="k1",
        kl_clamp=0.25,
    )
    assert float(clamped.loss_sum) == pytest.approx(0.1 * (0.25 - 0.25 + 0.0), abs=1e-7)
    assert float(reduce_metrics(clamped.metrics)["kl"]) == pytest.approx(0.0, abs=1e-7)
    clamped_k3 = jitted_policy_loss(
        logprobs,
        logprobs,
        zero_advantages,
        mask,
        aggregation="token_mean",
        beta=0.1,
        ref_logprobs=ref_logprobs,
        kl_estimator="k3",
        kl_clamp=0.5,
    )
    k3 = np.minimum(np.exp(-d) + d - 1, 0.5)  # [0.1065, 0.5 (was 0.718), 0]
    assert float(clamped_k3.loss_sum) == pytest.approx(0.1 * k3.sum(), rel=1e-5)


def test_beta_zero_needs_no_reference_and_ignores_it():
    logprobs, old_logprobs = _hand_inputs()
    without_ref = jitted_policy_loss(
        logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, beta=0.0, ref_logprobs=None
    )
    garbage_ref = np.full((3, 3), np.nan, np.float32)
    with_garbage = jitted_policy_loss(
        logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, beta=0.0, ref_logprobs=garbage_ref
    )
    assert float(without_ref.loss_sum) == float(with_garbage.loss_sum)
    assert np.isfinite(float(without_ref.loss_sum))
    assert "kl" not in without_ref.metrics
    with pytest.raises(ValueError, match="ref_logprobs"):
        jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, beta=0.04, ref_logprobs=None)


def test_entropy_metric_is_masked_token_mean():
    logprobs, old_logprobs = _hand_inputs()
    entropy = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0], [np.nan, 9.0, 9.0]], np.float32)
    out = jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, entropy=entropy)
    assert float(reduce_metrics(out.metrics)["entropy"]) == pytest.approx(15.0 / 5)


def test_nan_at_padded_positions_reaches_neither_loss_nor_gradient():
    logprobs, old_logprobs = _hand_inputs()
    pad = HAND_MASK == 0
    logprobs_nan = np.where(pad, np.nan, logprobs).astype(np.float32)
    old_nan = np.where(pad, np.inf, old_logprobs).astype(np.float32)
    ref_nan = np.where(pad, -np.inf, old_logprobs).astype(np.float32)
    for importance_ratio in IMPORTANCE_RATIOS:

        def loss(lp, importance_ratio=importance_ratio):
            return jitted_policy_loss(
                lp,
                old_nan,
                HAND_ADVANTAGES,
                HAND_MASK,
                importance_ratio=importance_ratio,
                beta=0.1,
                ref_logprobs=ref_nan,
                dual_clip=3.0,
            ).loss_sum

        clean = jitted_policy_loss(
            logprobs,
            old_logprobs,
            HAND_ADVANTAGES,
            HAND_MASK,
            importance_ratio=importance_ratio,
            beta=0.1,
            ref_logprobs=old_logprobs,
            dual_clip=3.0,
        )
        value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(logprobs_nan))
        assert float(value) == pytest.approx(float(clean.loss_sum), rel=1e-6)
        assert np.all(np.isfinite(grad))
        assert np.all(np.asarray(grad)[pad] == 0.0)


def test_nan_advantage_is_not_hidden():
    logprobs, old_logprobs = _hand_inputs()
    advantages = np.array([np.nan, -2.0, 3.0], np.float32)
    out = jitted_policy_loss(logprobs, old_logprobs, advantages, HAND_MASK)
    assert math.isnan(float(out.loss_sum))


def test_reduce_metrics_divides_and_shapes_are_checked():
    metrics = {"a": (jnp.asarray(3.0), jnp.asarray(4.0)), "b": (jnp.asarray(0.0), jnp.asarray(0.0))}
    reduced = reduce_metrics(metrics)
    assert float(reduced["a"]) == 0.75
    assert math.isnan(float(reduced["b"]))  # no tokens: NaN, never a silent 0
    logprobs, old_logprobs = _hand_inputs()
    with pytest.raises(ValueError, match="advantages"):
        jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES[:2], HAND_MASK)
    with pytest.raises(ValueError, match="mask"):
        jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK[:, :2])
    with pytest.raises(ValueError, match="epsilon_low"):
        jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, epsilon_low=1.0)
    with pytest.raises(ValueError, match="rl.kl.beta"):
        jitted_policy_loss(logprobs, old_logprobs, HAND_ADVANTAGES, HAND_MASK, beta=-0.1)
