"""Group-relative advantages for GRPO.

Rewards arrive flat, ``rewards: f32[num_groups * G]``, with the ``G = num_generations`` answers to one
prompt stored next to each other (row ``g * G + i`` is answer ``i`` of prompt ``g``). Each answer's
advantage is its reward minus the mean reward of its group, divided by a scale picked by name from
``ADVANTAGE_SCALES`` (config ``rl.advantage.scale``):

- ``"group_std"``: the group's reward standard deviation plus ``epsilon`` (GRPO, DeepSeekMath).
- ``"batch_std"``: the standard deviation of every valid reward in the batch plus ``epsilon`` (TRL's
  ``scale_rewards="batch"``): the group mean still centres, but one shared scale keeps the relative
  size of advantages across prompts.
- ``"none"``: no division at all, ``A = r - mean`` (Dr.GRPO, Liu et al. 2025).

Unscorable answers: a reward that is NaN or +-inf (the judge failed or its verdict could not be
parsed) is *invalid*. It gets advantage exactly 0 (so it adds no policy gradient), it is left out of
its group's mean and standard deviation and of the batch standard deviation, and it is counted in
``AdvantageOutput.num_invalid`` so that the failure is visible in the metrics rather than silently
scored as 0.

Standard deviations use ``std_ddof`` (config ``rl.advantage.std_ddof``, default 1): the sum of
squared deviations is divided by ``n - std_ddof``. The default 1 is the unbiased estimator that
``torch.std`` computes and that TRL and verl therefore use; 0 gives the population standard deviation
(``numpy.std``'s default). With fewer than ``std_ddof + 1`` valid values the standard deviation is
taken as 0; for a group that only happens when it has at most one valid reward, whose advantage
is then 0 anyway since ``r - mean = 0``.

``epsilon`` (config ``rl.advantage.epsilon``, default 1e-4 as in TRL; verl uses 1e-6) is added to
the standard deviation, never to the variance; it bounds the advantages of near-tied groups. A group
whose valid rewards are all equal (or that has fewer than 2 of them) gets advantage exactly 0 whatever
the scale, so ``epsilon = 0`` is allowed. It is not used by ``"none"``.

Everything here is a pure function of arrays, jit-compatible with the keyword options static.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "ADVANTAGE_SCALES",
    "AdvantageOutput",
    "batch_std_scale",
    "get_advantage_scale",
    "group_advantages",
    "group_std_scale",
    "masked_std",
    "no_scale",
]


class AdvantageOutput(NamedTuple):
    """Advantages for a flat batch of grouped rewards, with summary statistics.

    Attributes:
        advantages: f32[n], 0 exactly where the reward was invalid.
        valid: bool[n], True where the reward was finite.
        num_invalid: int32[], number of NaN / inf rewards.
        frac_tied_groups: f32[], fraction of groups whose valid rewards are all equal (no learning
            signal), counting groups with fewer than 2 valid rewards as tied.
        mean: f32[], mean advantage over valid entries (NaN if there are none).
        std: f32[], population standard deviation of the advantages over valid entries (NaN if none).
        min: f32[], smallest advantage over valid entries (NaN if none).
        max: f32[], largest advantage over valid entries (NaN if none).
    """

    advantages: jax.Array
    valid: jax.Array
    num_invalid: jax.Array
    frac_tied_groups: jax.Array
    mean: jax.Array
    std: jax.Array
    min: jax.Array
    max: jax.Array


def masked_std(values: jax.Array, valid: jax.Array, *, ddof: int, axis: int | None = None) -> jax.Array:
    """Standard deviation of the valid entries, 0 where fewer than ``ddof + 1`` are valid.

    Args:
        values: float[...]; entries where ``valid`` is False may hold anything (NaN included).
        valid: bool[...], same shape as ``values``.
        ddof: the divisor is ``count - ddof``.
        axis: axis to reduce over (``None`` reduces over everything).

    Returns:
        float array of ``values``' shape with ``axis`` removed.
    """
    safe_values = jnp.where(valid, values, 0.0)
    count = jnp.sum(valid, axis=axis, dtype=safe_values.dtype)
    mean = jnp.sum(safe_values, axis=axis, keepdims=True) / jnp.maximum(
        jnp.sum(valid, axis=axis, keepdims=True, dtype=safe_values.dtype), 1.0
    )
    squared_deviation = jnp.where(valid, jnp.square(safe_values - mean), 0.0)
    divisor = count - ddof
    has_enough = divisor > 0
    variance = jnp.sum(squared_deviation, axis=axis) / jnp.where(has_enough, divisor, 1.0)
    return jnp.where(has_enough, jnp.sqrt(variance), 0.0)


def group_std_scale(
    grouped_rewards: jax.Array, grouped_valid: jax.Array, *, std_ddof: int, epsilon: float
) -> jax.Array:
    """Divisor ``std(group) + epsilon`` for every answer (GRPO).

    Args:
        grouped_rewards: f32[num_groups, G].
        grouped_valid: bool[num_groups, G].

    Returns:
        f32[num_groups, G].
    """
    group_std = masked_std(grouped_rewards, grouped_valid, ddof=std_ddof, axis=1)
    return jnp.broadcast_to((group_std + epsilon)[:, None], grouped_rewards.shape)


def batch_std_scale(
    grouped_rewards: jax.Array, grouped_valid: jax.Array, *, std_ddof: int, epsilon: float
) -> jax.Array:
    """Divisor ``std(all valid rewards in the batch) + epsilon`` for every answer (TRL's batch scaling).

    Args:
        grouped_rewards: f32[num_groups, G].
        grouped_valid: bool[num_groups, G].

    Returns:
        f32[num_groups, G].
    """
    batch_std = masked_std(grouped_rewards, grouped_valid, ddof=std_ddof, axis=None)
    return jnp.broadcast_to(batch_std + epsilon, grouped_rewards.shape)


def no_scale(
    grouped_rewards: jax.Array, grouped_valid: jax.Array, *, std_ddof: int, epsilon: float
) -> jax.Array:
    """Divisor 1 for every answer, so ``A = r - group mean`` (Dr.GRPO); ddof and epsilon are unused.

    Args:
        grouped_rewards: f32[num_groups, G].
        grouped_valid: bool[num_groups, G].

    Returns:
        f32[num_groups, G] of ones.
    """
    del grouped_valid, std_ddof, epsilon
    return jnp.ones_like(grouped_rewards)


AdvantageScale = Callable[..., jax.Array]

ADVANTAGE_SCALES: dict[str, AdvantageScale] = {
    "group_std": group_std_scale,
    "batch_std": batch_std_scale,
    "none": no_scale,
}


def get_advantage_scale(name: str) -> AdvantageScale:
    """Return the advantage scale registered as ``name`` (config ``rl.advantage.scale``).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in ADVANTAGE_SCALES:
        raise ValueError(
            f"rl.advantage.scale: unknown advantage scale {name!r}; expected one of "
            f"{sorted(ADVANTAGE_SCALES)}"
        )
    return ADVANTAGE_SCALES[name]


def _masked_stats(values: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Mean, population std, min and max of the valid entries of a 1-D array; NaN when none are valid.

    Args:
        values: f32[n].
        valid: bool[n].

    Returns:
        Four f32[] scalars.
    """
    count = jnp.sum(valid, dtype=values.dtype)
    any_valid = count > 0
    safe_values = jnp.where(valid, values, 0.0)
    mean = jnp.sum(safe_values) / jnp.maximum(count, 1.0)
    std = masked_std(values, valid, ddof=0, axis=None)
    minimum = jnp.min(jnp.where(valid, values, jnp.inf))
    maximum = jnp.max(jnp.where(valid, values, -jnp.inf))
    nan = jnp.array(jnp.nan, values.dtype)
    return (
        jnp.where(any_valid, mean, nan),
        jnp.where(any_valid, std, nan),
        jnp.where(any_valid, minimum, nan),
        jnp.where(any_valid, maximum, nan),
    )


def _is_int(value: object) -> bool:
    """True for Python / numpy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def group_advantages(
    rewards: jax.Array,
    *,
    num_generations: int,
    scale: str = "group_std",
    std_ddof: int = 1,
    epsilon: float = 1e-4,
) -> AdvantageOutput:
    """Group-relative advantages with invalid (NaN / inf) rewards masked out and counted.

    Args:
        rewards: f32[num_groups * num_generations], the answers of one prompt contiguous.
            Computed in float32, or float64 if given float64.
        num_generations: G, answers per prompt (static).
        scale: name in ``ADVANTAGE_SCALES``: "group_std", "batch_std" or "none".
        std_ddof: delta degrees of freedom of every standard deviation (1 = torch.std, TRL, verl).
        epsilon: added to the standard deviation before dividing (ignored by "none").

    Returns:
        ``AdvantageOutput`` whose ``advantages`` and ``valid`` have ``rewards``' shape [n].

    Raises:
        ValueError: ``rewards`` is not 1-D, its length is not a multiple of ``num_generations``,
            or an option is out of range / unknown.
    """
    scale_fn = get_advantage_scale(scale)
    if not _is_int(num_generations) or num_generations < 1:
        raise ValueError(f"rl.num_generations: expected a positive int, got {num_generations!r}")
    if not _is_int(std_ddof) or std_ddof < 0:
        raise ValueError(f"rl.advantage.std_ddof: expected an int >= 0, got {std_ddof!r}")
    num_generations, std_ddof = int(num_generations), int(std_ddof)
    if not epsilon >= 0.0:
        raise ValueError(f"rl.advantage.epsilon: expected a float >= 0, got {epsilon!r}")
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards: expected a 1-D array [num_groups * G], got shape {rewards.shape}")
    if rewards.shape[0] % num_generations != 0:
        raise ValueError(
            f"rewards: length {rewards.shape[0]} is not a multiple of num_generations={num_generations}"
        )
    rewards = rewards.astype(jnp.promote_types(rewards.dtype, jnp.float32))
    num_groups = rewards.shape[0] // num_generations

    grouped_rewards = rewards.reshape(num_groups, num_generations)
    grouped_valid = jnp.isfinite(grouped_rewards)
    safe_rewards = jnp.where(grouped_valid, grouped_rewards, 0.0)
    valid_per_group = jnp.sum(grouped_valid, axis=1, keepdims=True, dtype=rewards.dtype)
    group_mean = jnp.sum(safe_rewards, axis=1, keepdims=True) / jnp.maximum(valid_per_group, 1.0)
    group_max = jnp.max(jnp.where(grouped_valid, grouped_rewards, -jnp.inf), axis=1)
    group_min = jnp.min(jnp.where(grouped_valid, grouped_rewards, jnp.inf), axis=1)
    tied = (valid_per_group[:, 0] < 2) | (group_max == group_min)
    frac_tied_groups = jnp.mean(tied.astype(rewards.dtype))

    divisor = scale_fn(grouped_rewards, grouped_valid, std_ddof=std_ddof, epsilon=epsilon)
    # A zero divisor (epsilon = 0 and a zero std) only divides rewards equal to their mean.
    safe_divisor = jnp.where(divisor > 0, divisor, 1.0)
    # Tied groups get exactly 0 (their float mean may differ from the rewards by a rounding error).
    has_signal = grouped_valid & ~tied[:, None]
    grouped_advantages = jnp.where(has_signal, (safe_rewards - group_mean) / safe_divisor, 0.0)

    advantages = grouped_advantages.reshape(-1)
    valid = grouped_valid.reshape(-1)
    mean, std, minimum, maximum = _masked_stats(advantages, valid)
    return AdvantageOutput(
        advantages=advantages,
        valid=valid,
        num_invalid=jnp.sum(~valid, dtype=jnp.int32),
        frac_tied_groups=frac_tied_groups,
        mean=mean,
        std=std,
        min=minimum,
        max=maximum,
    )
