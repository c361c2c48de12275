"""Every ``rl`` option reaches the math: changing it changes the result the bound function gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax import config as rar_config
from rar_jax.rl import grpo, logprobs, losses


def _loss_inputs():
    keys = jax.random.split(jax.random.key(0), 4)
    logp = -jax.random.uniform(keys[0], (4, 6), minval=0.1, maxval=3.0)
    old = logp + 0.4 * jax.random.normal(keys[1], (4, 6))  # Ratios far from 1: clipping active.
    ref = logp + 0.3 * jax.random.normal(keys[2], (4, 6))
    adv = jnp.array([1.5, -2.0, 0.7, -0.3])
    mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0], [1, 0, 0, 0, 0, 0]], bool)
    return logp, old, adv, mask, ref


def _loss(rl):
    logp, old, adv, mask, ref = _loss_inputs()
    out = grpo.policy_loss_fn(rl)(logp, old, adv, mask, ref_logprobs=ref)
    return float(out.loss_sum / out.denominator)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("loss.aggregation", "token_mean"),
        ("loss.aggregation", "seq_mean_token_sum_norm"),
        ("loss.epsilon_low", 0.05),
        ("loss.epsilon_high", 0.05),
        ("loss.dual_clip", 1.5),
        ("loss.importance_ratio", "sequence"),
        ("kl.beta", 0.5),
        ("max_completion_length", 3),
    ],
)
def test_each_loss_option_changes_the_loss(key, value):
    base = rar_config.base_config().rl
    base.kl.beta = 0.1  # So the KL options below have something to act on.
    base.loss.aggregation = "seq_mean_token_sum_norm" if key == "max_completion_length" else (
        base.loss.aggregation)
    changed = base.copy_and_resolve_references()
    node, leaf = changed, key
    if "." in key:
        section, leaf = key.split(".")
        node = changed[section]
    node[leaf] = value
    assert _loss(changed) != pytest.approx(_loss(base), rel=1e-6)


@pytest.mark.parametrize(("key", "value"), [("estimator", "k1"), ("clamp", 0.01)])
def test_kl_options_reach_the_loss(key, value):
    rl = rar_config.base_config().rl
    rl.kl.beta = 1.0
    before = _loss(rl)
    rl.kl[key] = value
    assert _loss(rl) != pytest.approx(before, rel=1e-6)


def test_bound_loss_equals_the_direct_call():
    rl = rar_config.base_config().rl
    rl.loss.aggregation, rl.loss.dual_clip, rl.kl.beta = "token_mean", 3.0, 0.04
    logp, old, adv, mask, ref = _loss_inputs()
    bound = grpo.policy_loss_fn(rl)(logp, old, adv, mask, ref_logprobs=ref)
    direct = losses.policy_loss(
        logp, old, adv, mask, aggregation="token_mean", epsilon_low=0.2, epsilon_high=0.2,
        dual_clip=3.0, importance_ratio="token", beta=0.04, ref_logprobs=ref, kl_estimator="k3",
        kl_clamp=0.0, max_completion_length=rl.max_completion_length,
    )
    np.testing.assert_allclose(bound.loss_sum, direct.loss_sum, rtol=1e-6)
    np.testing.assert_allclose(bound.denominator, direct.denominator)


@pytest.mark.parametrize(
    ("key", "value"),
    [("scale", "none"), ("scale", "batch_std"), ("std_ddof", 0), ("epsilon", 0.5)],
)
def test_each_advantage_option_changes_the_advantages(key, value):
    rewards = jnp.array([0.1, 0.5, 0.9, 0.2, 0.0, 1.0, 0.3, 0.3])
    rl = rar_config.base_config().rl
    rl.num_generations = 4
    before = grpo.advantage_fn(rl)(rewards).advantages
    rl.advantage[key] = value
    after = grpo.advantage_fn(rl)(rewards).advantages
    assert not np.allclose(before, after, rtol=1e-4)


def test_num_generations_sets_the_groups():
    rewards = jnp.array([0.0, 1.0, 0.0, 1.0])
    rl = rar_config.base_config().rl
    rl.num_generations, rl.advantage.scale = 2, "none"
    np.testing.assert_allclose(grpo.advantage_fn(rl)(rewards).advantages, [-0.5, 0.5, -0.5, 0.5])
    rl.num_generations = 4
    np.testing.assert_allclose(grpo.advantage_fn(rl)(rewards).advantages, [-0.5, 0.5, -0.5, 0.5])
    rewards = jnp.array([0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(grpo.advantage_fn(rl)(rewards).advantages, [-0.75, 0.25, 0.25, 0.25])
    rl.num_generations = 2
    np.testing.assert_allclose(grpo.advantage_fn(rl)(rewards).advantages, [-0.5, 0.5, 0.0, 0.0])


def test_logprob_chunk_size_and_temperature_are_bound():
    keys = jax.random.split(jax.random.key(1), 3)
    hidden = jax.random.normal(keys[0], (2, 7, 8))
    head = jax.random.normal(keys[1], (8, 11))
    targets = jax.random.randint(keys[2], (2, 7), 0, 11)
    rl = rar_config.base_config().rl
    rl.logprob_chunk_size = 3
    got, _ = grpo.logprob_fn(rl, temperature=0.7)(hidden, head, targets)
    want, _ = logprobs.token_logprobs(hidden @ head, targets, temperature=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

