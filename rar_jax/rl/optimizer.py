"""The optimiser of the paper: AdamW, linear warm-up then a constant learning rate, grad clipping."""

from __future__ import annotations

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
    """AdamW with the warm-up/constant schedule, after global-norm clipping (``optim`` section)."""
    schedule = learning_rate_schedule(optim)
    adamw = optax.adamw(
        schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps, weight_decay=optim.weight_decay
    )
    if optim.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.max_grad_norm), adamw)
    return adamw
