"""The optimiser: schedule values by hand, clipping and AdamW against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax import config as rar_config
from rar_jax.rl import optimizer


def test_warmup_then_constant_by_hand():
    schedule = optimizer.warmup_constant_schedule(1.0, num_steps=20, warmup_fraction=0.2)
    values = [float(schedule(step)) for step in range(8)]
    np.testing.assert_allclose(values, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0], rtol=1e-6)


def test_no_warmup_is_constant():
    schedule = optimizer.warmup_constant_schedule(3e-6, num_steps=10, warmup_fraction=0.0)
    np.testing.assert_allclose([float(schedule(s)) for s in range(3)], [3e-6] * 3, rtol=1e-6)


def _adamw_reference(grad_steps, lrs, b1, b2, eps, wd, params):
    """Numpy AdamW (bias-corrected moments, decoupled weight decay) over several steps."""
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    for t, (g, lr) in enumerate(zip(grad_steps, lrs), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        params = params - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * params)
    return params


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5])
def test_two_updates_match_numpy_adamw(max_grad_norm):
    # Adam is scale-invariant within one step, so two steps with gradients of different norms
    # are needed for the clipping to change the result.
    config = rar_config.base_config().optim
    config.learning_rate, config.num_steps, config.warmup_fraction = 0.1, 10, 0.2
    config.weight_decay, config.max_grad_norm = 0.01, max_grad_norm
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grad_steps = [np.array([3.0, 4.0, 0.0]), np.array([0.06, -0.08, 0.0])]  # Norms 5 and 0.1.
    tx = optimizer.make_optimizer(config)
    state = tx.init(params)
    for g in grad_steps:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = {"w": params["w"] + updates["w"]}

    if max_grad_norm:
        grad_steps = [g * min(1.0, max_grad_norm / np.linalg.norm(g)) for g in grad_steps]
    lrs = [0.05, 0.1]  # Two warm-up steps reach the peak.
    want = _adamw_reference(grad_steps, lrs, config.beta1, config.beta2, config.eps, 0.01,
                            np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=1e-5)


def test_clipping_changes_the_result():
    config = rar_config.base_config().optim
    results = []
    for max_grad_norm in (0.0, 0.5):
        config.max_grad_norm = max_grad_norm
        tx = optimizer.make_optimizer(config)
        params = {"w": jnp.zeros(2)}
        state = tx.init(params)
        for g in ([3.0, 4.0], [0.06, -0.08]):
            updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
            params = {"w": params["w"] + updates["w"]}
        results.append(np.asarray(params["w"]))
    assert not np.allclose(results[0], results[1], rtol=1e-3)


def test_fused_adamw_equals_optax_clip_and_adamw():
    """make_optimizer's one-pass AdamW against optax's chain of clip_by_global_norm and adamw,
    over several leaves and steps, clipping on some steps only, with weight decay and warm-up."""
    import optax

    config = rar_config.base_config().optim
    config.learning_rate, config.num_steps, config.warmup_fraction = 0.05, 10, 0.3
    config.weight_decay, config.max_grad_norm = 0.01, 1.0
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": {"c": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}
    reference = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optimizer.learning_rate_schedule(config), b1=config.beta1, b2=config.beta2,
                    eps=config.eps, weight_decay=0.01),
    )
    fused = optimizer.make_optimizer(config)
    ours, theirs = params, params
    ours_state, theirs_state = fused.init(params), reference.init(params)
    for scale in (5.0, 0.1, 3.0, 0.02):  # Global norms above and below max_grad_norm.
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype) * scale,
                             params)
        updates, ours_state = fused.update(grads, ours_state, ours)
        ours = optax.apply_updates(ours, updates)
        updates, theirs_state = reference.update(grads, theirs_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(ours["a"]), np.asarray(params["a"]))
