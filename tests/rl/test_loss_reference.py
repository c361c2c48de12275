"""rar_jax.rl.losses.policy_loss against an independent numpy reference, finite differences and
invariances: on-policy == unclipped surrogate, micro-batch accumulation and data-parallel splits."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rar_jax.rl.losses import IMPORTANCE_RATIOS, LOSS_AGGREGATIONS, policy_loss, reduce_metrics

BATCH, TIME, MAX_LEN = 8, 6, 10

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
jitted_policy_loss = jax.jit(policy_loss, static_argnames=STATIC_OPTIONS)

# (dual_clip, beta, kl_estimator, kl_clamp) settings tried with every aggregation and ratio
PENALTY_SETTINGS = [
    (0.0, 0.0, "k3", 0.0),
    (2.5, 0.0, "k3", 0.0),
    (0.0, 0.05, "k1", 0.0),
    (0.0, 0.05, "k2", 0.3),
    (2.5, 0.05, "k3", 0.0),
    (0.0, 0.05, "k3", 0.3),
]


def reference_policy_loss(
    logp,
    old,
    adv,
    mask,
    *,
    aggregation,
    eps_low,
    eps_high,
    dual_clip,
    importance_ratio,
    beta,
    ref,
    kl_estimator,
    kl_clamp,
    max_len,
):
    """Row-by-row numpy (float64) version of the documented loss; returns (sum, denominator, metrics)."""
    logp, old, adv = (np.asarray(x, np.float64) for x in (logp, old, adv))
    mask = np.asarray(mask) > 0
    rows, times = logp.shape
    per_token = np.zeros((rows, times))
    counts = {
        "clip_frac_low": 0.0,
        "clip_frac_high": 0.0,
        "dual_clip_frac": 0.0,
        "ratio_mean": 0.0,
        "approx_kl": 0.0,
        "kl": 0.0,
    }
    for i in range(rows):
        real = mask[i]
        if not real.any():
            continue
        log_ratio = logp[i, real] - old[i, real]
        if importance_ratio == "token":
            ratio = np.exp(log_ratio)
        else:
            ratio = np.full(real.sum(), np.exp(log_ratio.mean()))
        a = adv[i]
        loss = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps_low, 1 + eps_high))
        if dual_clip > 0 and a < 0:
            counts["dual_clip_frac"] += float((loss > -dual_clip * a).sum())
            loss = np.minimum(loss, -dual_clip * a)
        if beta > 0:
            d = logp[i, real] - np.asarray(ref, np.float64)[i, real]
            kl = {"k1": d, "k2": 0.5 * d**2, "k3": np.exp(-d) + d - 1}[kl_estimator]
            if kl_clamp > 0:
                kl = np.clip(kl, -kl_clamp, kl_clamp)
            loss = loss + beta * kl
            counts["kl"] += kl.sum()
        per_token[i, real] = loss
        counts["clip_frac_low"] += float(((a < 0) & (ratio < 1 - eps_low)).sum())
        counts["clip_frac_high"] += float(((a > 0) & (ratio > 1 + eps_high)).sum())
        counts["ratio_mean"] += ratio.sum()
        counts["approx_kl"] += (np.exp(-log_ratio) + log_ratio - 1).sum()
    num_tokens = mask.sum()
    if aggregation == "seq_mean_token_mean":
        row_counts = mask.sum(axis=1)
        nonempty = row_counts > 0
        total = (per_token.sum(axis=1)[nonempty] / row_counts[nonempty]).sum()
        denominator = float(nonempty.sum())
    elif aggregation == "token_mean":
        total, denominator = per_token.sum(), float(num_tokens)
    else:
        total, denominator = per_token.sum() / max_len, float(rows)
    metrics = {name: value / num_tokens for name, value in counts.items()}
    if beta == 0:
        del metrics["kl"]
    return total, denominator, metrics


def random_batch(seed, batch=BATCH, time=TIME, dtype=np.float32):
    """Log-probs with ratios spread well past the clip range, one empty row and junk at padding."""
    rng = np.random.default_rng(seed)
    old = -rng.uniform(0.1, 3.0, size=(batch, time))
    logp = old + rng.normal(scale=0.6, size=(batch, time))
    ref = logp + rng.normal(scale=0.5, size=(batch, time))
    adv = rng.normal(size=batch)
    lengths = rng.integers(1, time + 1, size=batch)
    lengths[2] = 0
    adv[0] = -abs(adv[0]) - 0.5
    logp[0, 0] = old[0, 0] + 1.2  # ratio 3.3 with a negative advantage: dual clip territory
    mask = np.arange(time)[None, :] < lengths[:, None]
    junk = ~mask
    logp[junk], old[junk], ref[junk] = 7.0, -9.0, 40.0
    return tuple(np.asarray(x, dtype) for x in (logp, old, adv, ref)) + (mask,)


@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
@pytest.mark.parametrize("importance_ratio", sorted(IMPORTANCE_RATIOS))
def test_matches_numpy_reference_for_every_combination(aggregation, importance_ratio):
    logp, old, adv, ref, mask = random_batch(seed=1)
    for dual_clip, beta, kl_estimator, kl_clamp in PENALTY_SETTINGS:
        options = dict(
            aggregation=aggregation,
            dual_clip=dual_clip,
            importance_ratio=importance_ratio,
            beta=beta,
            kl_estimator=kl_estimator,
            kl_clamp=kl_clamp,
        )
        out = jitted_policy_loss(
            logp,
            old,
            adv,
            mask.astype(np.float32),
            epsilon_low=0.2,
            epsilon_high=0.28,
            ref_logprobs=ref if beta > 0 else None,
            max_completion_length=MAX_LEN,
            **options,
        )
        expected_sum, expected_denominator, expected_metrics = reference_policy_loss(
            logp,
            old,
            adv,
            mask,
            eps_low=0.2,
            eps_high=0.28,
            ref=ref,
            max_len=MAX_LEN,
            aggregation=aggregation,
            dual_clip=dual_clip,
            importance_ratio=importance_ratio,
            beta=beta,
            kl_estimator=kl_estimator,
            kl_clamp=kl_clamp,
        )
        np.testing.assert_allclose(
            float(out.loss_sum), expected_sum, rtol=1e-5, atol=1e-6, err_msg=str(options)
        )
        assert float(out.denominator) == expected_denominator
        reduced = reduce_metrics(out.metrics)
        assert set(reduced) == set(expected_metrics)
        for name, value in expected_metrics.items():
            np.testing.assert_allclose(float(reduced[name]), value, rtol=1e-5, atol=1e-6, err_msg=name)
        # the random batch exercises both clip sides and the dual clip for the per-token ratio
        if importance_ratio == "token":
            assert expected_metrics["clip_frac_low"] > 0 and expected_metrics["clip_frac_high"] > 0
            assert (expected_metrics["dual_clip_frac"] > 0) == (dual_clip > 0)


@pytest.mark.parametrize("importance_ratio", sorted(IMPORTANCE_RATIOS))
def test_gradients_match_finite_differences(importance_ratio):
    with jax.enable_x64(True):
        logp, old, adv, ref, mask = random_batch(seed=2, batch=4, time=4, dtype=np.float64)
        for aggregation in LOSS_AGGREGATIONS:

            def loss(lp, aggregation=aggregation):
                out = policy_loss(
                    lp,
                    old,
                    adv,
                    mask,
                    aggregation=aggregation,
                    importance_ratio=importance_ratio,
                    dual_clip=2.0,
                    beta=0.1,
                    ref_logprobs=ref,
                    max_completion_length=MAX_LEN,
                )
                return out.loss_sum / out.denominator

            assert jnp.asarray(loss(jnp.asarray(logp))).dtype == jnp.float64
            check_grads(
                jax.jit(loss), (jnp.asarray(logp),), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-5
            )


def test_gspo_gradient_equals_sequence_level_objective():
    """GSPO's gradient: d/dlogp of mean_i max(-A s_i, -A clip(s_i)) with s_i = exp(mean_t log-ratio)."""
    logp, old, adv, _, mask = random_batch(seed=3)

    def sequence_level(lp):
        counts = mask.sum(axis=1)
        log_ratio = jnp.where(mask, lp - old, 0.0).sum(axis=1) / np.maximum(counts, 1)
        s = jnp.exp(log_ratio)
        per_sequence = jnp.maximum(-adv * s, -adv * jnp.clip(s, 0.8, 1.2))
        return jnp.sum(jnp.where(counts > 0, per_sequence, 0.0)) / np.sum(counts > 0)

    def ours(lp):
        out = policy_loss(lp, old, adv, mask, importance_ratio="sequence")
        return out.loss_sum / out.denominator

    value, grad = jax.jit(jax.value_and_grad(ours))(jnp.asarray(logp))
    expected_value, expected_grad = jax.jit(jax.value_and_grad(sequence_level))(jnp.asarray(logp))
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    assert np.abs(expected_grad).max() > 1e-2
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
def test_on_policy_gradient_equals_unclipped_surrogate(aggregation):
    logp, _, adv, _, mask = random_batch(seed=4)
    old = logp.copy()  # on-policy: ratio is exactly 1, clipping and dual clip are inert

    def ours(lp):
        out = policy_loss(
            lp,
            old,
            adv,
            mask,
            aggregation=aggregation,
            epsilon_low=0.01,
            epsilon_high=0.01,
            dual_clip=1.5,
            max_completion_length=MAX_LEN,
        )
        return out.loss_sum / out.denominator

    def unclipped(lp):
        per_token = jnp.where(mask, -adv[:, None] * jnp.exp(lp - old), 0.0)
        counts = mask.sum(axis=1)
        if aggregation == "seq_mean_token_mean":
            return jnp.sum(per_token.sum(axis=1) / np.maximum(counts, 1)) / np.sum(counts > 0)
        if aggregation == "token_mean":
            return jnp.sum(per_token) / mask.sum()
        return jnp.sum(per_token) / MAX_LEN / BATCH

    grad = jax.jit(jax.grad(ours))(jnp.asarray(logp))
    np.testing.assert_allclose(grad, jax.jit(jax.grad(unclipped))(jnp.asarray(logp)), rtol=1e-6, atol=1e-8)
    assert np.abs(grad).max() > 1e-3


def _loss_and_grad(logp, old, adv, ref, mask, options):
    """(loss_sum, denominator, metrics) and d loss_sum / d logp for one (micro-)batch."""

    def loss_sum(lp):
        out = policy_loss(lp, old, adv, mask, ref_logprobs=ref, **options)
        return out.loss_sum, out

    (_, out), grad = jax.jit(jax.value_and_grad(loss_sum, has_aux=True))(jnp.asarray(logp))
    return out, grad


ACCUMULATION_OPTIONS = [
    dict(
        aggregation=aggregation,
        importance_ratio=ratio,
        beta=0.05,
        dual_clip=3.0,
        max_completion_length=MAX_LEN,
    )
    for aggregation, ratio in itertools.product(sorted(LOSS_AGGREGATIONS), sorted(IMPORTANCE_RATIOS))
]


@pytest.mark.parametrize(
    "options", ACCUMULATION_OPTIONS, ids=lambda o: f"{o['aggregation']}-{o['importance_ratio']}"
)
def test_micro_batch_accumulation_equals_one_big_batch(options):
    logp, old, adv, ref, mask = random_batch(seed=5)
    full, full_grad = _loss_and_grad(logp, old, adv, ref, mask, options)
    splits = [slice(0, 2), slice(2, 3), slice(3, BATCH)]  # uneven, and the empty row is alone
    loss_sum, denominator, grads, metrics = 0.0, 0.0, [], None
    for rows in splits:
        out, grad = _loss_and_grad(logp[rows], old[rows], adv[rows], ref[rows], mask[rows], options)
        loss_sum, denominator = loss_sum + out.loss_sum, denominator + out.denominator
        grads.append(grad)
        metrics = out.metrics if metrics is None else jax.tree.map(jnp.add, metrics, out.metrics)
    np.testing.assert_allclose(loss_sum / denominator, full.loss_sum / full.denominator, rtol=1e-6)
    assert float(denominator) == float(full.denominator)
    np.testing.assert_allclose(
        np.concatenate(grads) / denominator, full_grad / full.denominator, rtol=1e-5, atol=1e-8
    )
    reduced, full_reduced = reduce_metrics(metrics), reduce_metrics(full.metrics)
    for name in full_reduced:
        np.testing.assert_allclose(reduced[name], full_reduced[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
def test_data_parallel_halves_give_the_same_loss(aggregation):
    logp, old, adv, ref, mask = random_batch(seed=6)
    options = dict(aggregation=aggregation, beta=0.05, max_completion_length=MAX_LEN)
    full = jitted_policy_loss(logp, old, adv, mask, ref_logprobs=ref, **options)

    def shard_loss(lp, o, a, r, m):
        out = policy_loss(lp, o, a, m, ref_logprobs=r, **options)
        return out.loss_sum, out.denominator

    # two shards as a leading device axis; summing over it is what a psum over "data" does
    shards = [x.reshape(2, BATCH // 2, *x.shape[1:]) for x in (logp, old, adv, ref, mask)]
    sums, denominators = jax.jit(jax.vmap(shard_loss))(*shards)
    np.testing.assert_allclose(
        jnp.sum(sums) / jnp.sum(denominators), full.loss_sum / full.denominator, rtol=1e-6
    )
    # the naive mean of per-shard losses differs (shards hold different token / row counts)
    if aggregation != "seq_mean_token_sum_norm":
        assert not np.isclose(np.mean(sums / denominators), full.loss_sum / full.denominator, rtol=1e-4)


def test_jit_matches_eager():
    logp, old, adv, ref, mask = random_batch(seed=7)
    options = dict(
        aggregation="seq_mean_token_mean",
        importance_ratio="sequence",
        beta=0.04,
        kl_estimator="k2",
        kl_clamp=1.0,
        dual_clip=3.0,
        epsilon_high=0.28,
    )
    eager = policy_loss(logp, old, adv, mask, ref_logprobs=ref, **options)
    jitted = jax.jit(functools.partial(policy_loss, **options))(logp, old, adv, mask, ref_logprobs=ref)
    np.testing.assert_allclose(jitted.loss_sum, eager.loss_sum, rtol=1e-6)
    for name in eager.metrics:
        np.testing.assert_allclose(jitted.metrics[name], eager.metrics[name], rtol=1e-6)
