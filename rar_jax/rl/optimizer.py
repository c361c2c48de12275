"""The optimiser of the paper: AdamW, linear warm-up then a constant learning rate, grad clipping."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from ml_collections import config_dict


def warmup_constant_schedule(
    learning_rate: float, num_steps: int, warmup_fraction: float
) -> optax.Schedule:
    """Learning rate rising linearly from 0 over ``round(warmup_fraction * num_steps)`` steps.

    Step ``s`` (0-based) of the warm-up gets ``learning_rate * (s + 1) / warmup_steps``, so the
    first update is not wasted at a zero rate and the last warm-up step reaches the peak; after
    the warm-up the rate stays at ``learning_rate`` (the paper: 5e-6 after 10% warm-up).
    """
    warmup_steps = round(warmup_fraction * num_steps)
    if warmup_steps == 0:
        return optax.constant_schedule(learning_rate)
    return optax.join_schedules(
        [
            optax.linear_schedule(learning_rate / warmup_steps, learning_rate, warmup_steps - 1),
            optax.constant_schedule(learning_rate),
        ],
        boundaries=[warmup_steps - 1],
    )


def learning_rate_schedule(optim: config_dict.ConfigDict) -> optax.Schedule:
    """The schedule of the ``optim`` config section."""
    return warmup_constant_schedule(optim.learning_rate, optim.num_steps, optim.warmup_fraction)


def make_optimizer(optim: config_dict.ConfigDict) -> optax.GradientTransformation:
    """AdamW with the warm-up/constant schedule, after global-norm clipping (``optim`` section).

    The same values as ``optax.chain(optax.clip_by_global_norm(optim.max_grad_norm),
    optax.adamw(schedule, ...))`` (``max_grad_norm`` 0: no clipping), computed by
    :func:`fused_adamw` in one elementwise pass per parameter.
    """
    return fused_adamw(
        learning_rate_schedule(optim), b1=optim.beta1, b2=optim.beta2, eps=optim.eps,
        weight_decay=optim.weight_decay, max_grad_norm=optim.max_grad_norm,
    )


def fused_adamw(
    schedule: optax.Schedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    max_grad_norm: float,
) -> optax.GradientTransformation:
    """AdamW (bias-corrected moments, decoupled weight decay) after global-norm clipping, each
    parameter's whole update one elementwise expression.

    Values as optax's ``clip_by_global_norm`` + ``adamw`` (the learning rate of step ``s``,
    0-based, is ``schedule(s)``); the state is ``optax.ScaleByAdamState(count, mu, nu)``, the
    moments in each parameter's dtype (the arithmetic in float32). Why not optax's chain: its
    transformations each make their own pass over the parameters, moments and gradients, and on
    CPU the optimiser of SmolLM2-135M took twice the time of this one (benchmarks/README.md,
    "The GRPO update").

    Args:
        schedule: step -> learning rate.
        b1, b2, eps: Adam's moment decays and epsilon (added to the root of the second moment).
        weight_decay: decoupled decay, times the learning rate.
        max_grad_norm: gradients are scaled by ``max_grad_norm / norm`` when their global norm
            exceeds it; 0 disables clipping.
    """

    def init(params: optax.Params) -> optax.ScaleByAdamState:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros((), jnp.int32), mu=zeros(), nu=zeros())

    def update(
        grads: optax.Updates, state: optax.ScaleByAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.ScaleByAdamState]:
        if params is None:
            raise ValueError("fused_adamw needs the parameters (decoupled weight decay)")
        learning_rate = schedule(state.count)
        count = optax.safe_increment(state.count)
        scale = jnp.ones((), jnp.float32)
        if max_grad_norm > 0:
            norm = optax.tree.norm(grads).astype(jnp.float32)
            scale = jnp.where(norm < max_grad_norm, 1.0, max_grad_norm / norm)
        steps = count.astype(jnp.float32)
        mu_correction, nu_correction = 1.0 - b1**steps, 1.0 - b2**steps

        def one(param, grad, mu, nu):
            grad = grad.astype(jnp.float32) * scale
            new_mu = b1 * mu.astype(jnp.float32) + (1.0 - b1) * grad
            new_nu = b2 * nu.astype(jnp.float32) + (1.0 - b2) * grad * grad
            step = (new_mu / mu_correction) / (jnp.sqrt(new_nu / nu_correction) + eps)
            change = -learning_rate * (step + weight_decay * param.astype(jnp.float32))
            return change.astype(param.dtype), new_mu.astype(mu.dtype), new_nu.astype(nu.dtype)

        treedef = jax.tree.structure(params)
        leaves = zip(*(treedef.flatten_up_to(tree) for tree in (params, grads, state.mu, state.nu)))
        changes, mus, nus = zip(*(one(*leaf) for leaf in leaves)) if treedef.num_leaves else ((),) * 3
        unflatten = functools.partial(jax.tree.unflatten, treedef)
        return unflatten(changes), optax.ScaleByAdamState(count, unflatten(mus), unflatten(nus))

    return optax.GradientTransformation(init, update)
