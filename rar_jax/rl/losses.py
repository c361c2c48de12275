"""GRPO policy loss: clipped importance-weighted surrogate, KL penalty and loss aggregation.

Every option is picked by name from a registry so a config string selects it:

- ``KL_ESTIMATORS`` (config ``rl.kl.estimator``): Schulman's estimators of KL(pi || ref) from
  samples of pi, written with ``d = logp - ref_logp``: ``k1 = d`` (unbiased, high variance, can be
  negative), ``k2 = d^2 / 2`` (biased, low variance), ``k3 = exp(-d) + d - 1`` (unbiased, low variance,
  always >= 0; the GRPO paper's choice).
- ``IMPORTANCE_RATIOS`` (config ``rl.loss.importance_ratio``): ``"token"`` is PPO / GRPO's per-token
  ratio ``pi(y_t) / pi_old(y_t)``; ``"sequence"`` is GSPO's (Zheng et al. 2025) length-normalised
  sequence ratio ``s_i = exp(mean_t (logp - old_logp))`` applied to every token of the answer.
- ``LOSS_AGGREGATIONS`` (config ``rl.loss.aggregation``): how per-token losses become one number:
  ``"seq_mean_token_mean"`` (GRPO: mean over each answer's tokens, then over answers),
  ``"token_mean"`` (DAPO, "BNPO": one mean over all tokens of the batch) and
  ``"seq_mean_token_sum_norm"`` (Dr.GRPO: token sums divided by a constant ``max_completion_length``,
  then averaged over answers).

Exact accumulation: ``policy_loss`` never divides by anything that depends on how the batch was
split. It returns a ``loss_sum`` and a ``denominator``; the global loss is
``sum(loss_sum over micro-batches and shards) / sum(denominator over the same)``, which equals the
loss of the one big batch up to float summation order. The trainer should differentiate ``loss_sum``
per micro-batch, add the gradients and the denominators, and divide once. Metrics follow the same
rule: each is a ``(sum, count)`` pair, added up (``jax.tree.map(jnp.add, a, b)``, or a ``psum``) and
then divided by ``reduce_metrics``.

Masked positions: ``mask`` (bool, or float where nonzero means "counted") marks real answer tokens.
Values of ``logprobs`` / ``old_logprobs`` / ``ref_logprobs`` / ``entropy`` at masked-out positions are
ignored entirely (even NaN there affects neither the loss nor its gradient).

All options are static Python values: wrap with ``functools.partial`` (or ``static_argnames``) under
``jax.jit``.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "IMPORTANCE_RATIOS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "LossOutput",
    "get_importance_ratio",
    "get_kl_estimator",
    "get_loss_aggregation",
    "kl_divergence",
    "policy_loss",
    "reduce_metrics",
]

MetricSums = dict[str, tuple[jax.Array, jax.Array]]


def _float_dtype(*arrays: jax.Array) -> jnp.dtype:
    """float32, or float64 when an input already is (bf16 / f16 are promoted to float32)."""
    return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def _registry_lookup(registry: dict, name: str, config_key: str, what: str):
    """Return ``registry[name]`` or raise ValueError naming the config key and the valid names."""
    if name not in registry:
        raise ValueError(f"{config_key}: unknown {what} {name!r}; expected one of {sorted(registry)}")
    return registry[name]


# ----------------------------------------------------------------------------------------- KL


def kl_k1(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k1 = logp - ref_logp. Args: two float[b, t]. Returns float[b, t]."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k2 = (logp - ref_logp)^2 / 2. Args: two float[b, t]. Returns float[b, t]."""
    return 0.5 * jnp.square(logprobs - ref_logprobs)


def kl_k3(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1. Args: two float[b, t]. Returns float[b, t]."""
    log_ratio = ref_logprobs - logprobs
    return jnp.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def get_kl_estimator(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Return the KL estimator registered as ``name`` (config ``rl.kl.estimator``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    return _registry_lookup(KL_ESTIMATORS, name, "rl.kl.estimator", "KL estimator")


def kl_divergence(
    logprobs: jax.Array, ref_logprobs: jax.Array, *, estimator: str, clamp: float = 0.0
) -> jax.Array:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi.

    Args:
        logprobs: float[b, t], log pi of the sampled tokens.
        ref_logprobs: float[b, t], log ref of the same tokens.
        estimator: "k1", "k2" or "k3" (config ``rl.kl.estimator``).
        clamp: if > 0 the estimate is clipped to [-clamp, clamp]; 0 disables (config ``rl.kl.clamp``).

    Returns:
        f32[b, t] (float64 if the inputs are).
    """
    estimator_fn = get_kl_estimator(estimator)
    logprobs, ref_logprobs = jnp.asarray(logprobs), jnp.asarray(ref_logprobs)
    if not clamp >= 0.0:
        raise ValueError(f"rl.kl.clamp: expected a float >= 0 (0 disables), got {clamp!r}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"ref_logprobs: expected shape {logprobs.shape} to match logprobs, got {ref_logprobs.shape}"
        )
    dtype = _float_dtype(logprobs, ref_logprobs)
    kl = estimator_fn(logprobs.astype(dtype), ref_logprobs.astype(dtype))
    if clamp > 0.0:
        kl = jnp.clip(kl, -clamp, clamp)
    return kl


# ----------------------------------------------------------------------------- importance ratios


def token_importance_ratio(logprobs: jax.Array, old_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """PPO's per-token ratio exp(logp - old_logp).

    Args:
        logprobs, old_logprobs: float[b, t], finite at every position.
        mask: bool[b, t] (unused).

    Returns:
        float[b, t].
    """
    del mask
    return jnp.exp(logprobs - old_logprobs)


def sequence_importance_ratio(logprobs: jax.Array, old_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """GSPO's sequence ratio s_i = exp(masked mean_t (logp - old_logp)), given to every token.

    Written as ``stop_gradient(s_i) * exp(logp_t - stop_gradient(logp_t))`` ("GSPO-token"): the value
    is ``s_i`` at every token, and the gradient at token t is ``s_i * grad logp_t``, so the mean over an
    answer's tokens is GSPO's ``grad s_i = s_i * mean_t grad logp_t``. Rows without tokens get ratio 1.

    Args:
        logprobs, old_logprobs: float[b, t], finite at every position.
        mask: bool[b, t].

    Returns:
        float[b, t].
    """
    token_count = jnp.sum(mask, axis=-1, dtype=logprobs.dtype)
    log_ratio_sum = jnp.sum(jnp.where(mask, logprobs - old_logprobs, 0.0), axis=-1)
    sequence_ratio = jnp.exp(log_ratio_sum / jnp.maximum(token_count, 1.0))
    return jax.lax.stop_gradient(sequence_ratio)[:, None] * jnp.exp(
        logprobs - jax.lax.stop_gradient(logprobs)
    )


IMPORTANCE_RATIOS: dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "token": token_importance_ratio,
    "sequence": sequence_importance_ratio,
}


def get_importance_ratio(name: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """Return the importance ratio registered as ``name`` (config ``rl.loss.importance_ratio``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    return _registry_lookup(IMPORTANCE_RATIOS, name, "rl.loss.importance_ratio", "importance ratio")


# ------------------------------------------------------------------------------------ aggregation


def seq_mean_token_mean(
    per_token_loss: jax.Array, mask: jax.Array, *, max_completion_length: int | None
) -> tuple[jax.Array, jax.Array]:
    """GRPO: sum over rows of (row token sum / row token count); denominator = rows with >= 1 token.

    Args:
        per_token_loss: float[b, t], 0 at masked positions.
        mask: bool[b, t].
        max_completion_length: unused.

    Returns:
        (sum, denominator): two float[] scalars. Empty rows add nothing to either.
    """
    del max_completion_length
    token_count = jnp.sum(mask, axis=-1, dtype=per_token_loss.dtype)
    row_means = jnp.sum(per_token_loss, axis=-1) / jnp.maximum(token_count, 1.0)
    return jnp.sum(row_means), jnp.sum(token_count > 0, dtype=per_token_loss.dtype)


def token_mean(
    per_token_loss: jax.Array, mask: jax.Array, *, max_completion_length: int | None
) -> tuple[jax.Array, jax.Array]:
    """DAPO / BNPO: sum over all masked tokens; denominator = number of masked tokens.

    Args:
        per_token_loss: float[b, t], 0 at masked positions.
        mask: bool[b, t].
        max_completion_length: unused.

    Returns:
        (sum, denominator): two float[] scalars.
    """
    del max_completion_length
    return jnp.sum(per_token_loss), jnp.sum(mask, dtype=per_token_loss.dtype)


def seq_mean_token_sum_norm(
    per_token_loss: jax.Array, mask: jax.Array, *, max_completion_length: int | None
) -> tuple[jax.Array, jax.Array]:
    """Dr.GRPO: (sum over all masked tokens) / max_completion_length; denominator = number of rows.

    Args:
        per_token_loss: float[b, t], 0 at masked positions.
        mask: bool[b, t].
        max_completion_length: the constant normaliser (required, > 0).

    Returns:
        (sum, denominator): two float[] scalars. Every row, empty or not, counts in the denominator.
    """
    if max_completion_length is None:
        raise ValueError(
            "rl.loss.aggregation='seq_mean_token_sum_norm' needs max_completion_length (the constant "
            "Dr.GRPO divides token sums by); got None"
        )
    is_int = isinstance(max_completion_length, numbers.Integral) and not isinstance(
        max_completion_length, bool
    )
    if not is_int or max_completion_length < 1:
        raise ValueError(f"max_completion_length: expected an int >= 1, got {max_completion_length!r}")
    return (
        jnp.sum(per_token_loss) / max_completion_length,
        jnp.asarray(mask.shape[0], per_token_loss.dtype),
    )


LossAggregation = Callable[..., tuple[jax.Array, jax.Array]]

LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "seq_mean_token_mean": seq_mean_token_mean,
    "token_mean": token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


def get_loss_aggregation(name: str) -> LossAggregation:
    """Return the loss aggregation registered as ``name`` (config ``rl.loss.aggregation``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    return _registry_lookup(LOSS_AGGREGATIONS, name, "rl.loss.aggregation", "loss aggregation")


# ------------------------------------------------------------------------------------ the loss


class LossOutput(NamedTuple):
    """Un-normalised policy loss and metrics; ``loss = loss_sum / denominator`` after accumulation.

    Attributes:
        loss_sum: f32[], differentiable.
        denominator: f32[], no gradient.
        metrics: name -> (sum, count), both f32[] without gradient; see ``policy_loss`` for names.
    """

    loss_sum: jax.Array
    denominator: jax.Array
    metrics: MetricSums


def _check_shape(name: str, array: jax.Array, expected: tuple[int, ...]) -> None:
    """Raise ValueError unless ``array.shape == expected``."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(array.shape)}")


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    aggregation: str = "seq_mean_token_mean",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: float = 0.0,
    importance_ratio: str = "token",
    beta: float = 0.0,
    ref_logprobs: jax.Array | None = None,
    kl_estimator: str = "k3",
    kl_clamp: float = 0.0,
    max_completion_length: int | None = None,
    entropy: jax.Array | None = None,
) -> LossOutput:
    """Clipped surrogate policy loss with optional dual clip and KL penalty, aggregated as (sum, denom).

    Per token, with ratio r (``importance_ratio``) and the answer's advantage A::

        loss_t = max(-A r, -A clip(r, 1 - epsilon_low, 1 + epsilon_high))   # PPO, asymmetric (DAPO)
        if dual_clip > 0 and A < 0: loss_t = min(loss_t, -dual_clip * A)    # dual-clip PPO (Ye et al.)
        loss_t += beta * KL_t(pi || ref)                                   # only if beta > 0

    and the per-token losses are aggregated by ``aggregation``.

    Args:
        logprobs: float[b, t], log pi_theta of the answer tokens (the differentiated input).
        old_logprobs: float[b, t], log pi of the policy that sampled them (no gradient is taken).
        advantages: float[b], one advantage per answer.
        mask: bool or float[b, t]; nonzero marks an answer token.
        aggregation: "seq_mean_token_mean", "token_mean" or "seq_mean_token_sum_norm"
            (``rl.loss.aggregation``).
        epsilon_low, epsilon_high: clip range [1 - epsilon_low, 1 + epsilon_high]
            (``rl.loss.epsilon_low`` / ``epsilon_high``); 0 <= epsilon_low < 1, epsilon_high >= 0.
        dual_clip: c > 1 caps the loss of negative-advantage tokens at -c A; 0 disables
            (``rl.loss.dual_clip``).
        importance_ratio: "token" or "sequence" (GSPO) (``rl.loss.importance_ratio``).
        beta: KL coefficient (``rl.kl.beta``); 0 disables the KL term and ``ref_logprobs`` is not read.
        ref_logprobs: float[b, t], log pi_ref; required when beta > 0.
        kl_estimator: "k1", "k2" or "k3" (``rl.kl.estimator``).
        kl_clamp: clip of the per-token KL estimate, 0 disables (``rl.kl.clamp``).
        max_completion_length: Dr.GRPO's constant; required by "seq_mean_token_sum_norm", unused otherwise.
        entropy: optional float[b, t] per-token entropy (from ``logprobs.token_logprobs``), reported only.

    Returns:
        ``LossOutput`` with metrics (each a (sum, count) over masked tokens): ``clip_frac_low``
        (A < 0 and r < 1 - epsilon_low), ``clip_frac_high`` (A > 0 and r > 1 + epsilon_high),
        ``dual_clip_frac`` (A < 0 and the dual clip capped the loss; always 0 when disabled),
        ``approx_kl`` (k3 between old and current policy), ``ratio_mean``, ``kl`` (only if beta > 0)
        and ``entropy`` (only if given).

    Raises:
        ValueError: on a bad shape, an unknown name, an option out of range, beta > 0 without
            ``ref_logprobs``, or "seq_mean_token_sum_norm" without ``max_completion_length``.
    """
    aggregate = get_loss_aggregation(aggregation)
    ratio_fn = get_importance_ratio(importance_ratio)
    if not 0.0 <= epsilon_low < 1.0:
        raise ValueError(f"rl.loss.epsilon_low: expected 0 <= value < 1, got {epsilon_low!r}")
    if not epsilon_high >= 0.0:
        raise ValueError(f"rl.loss.epsilon_high: expected a value >= 0, got {epsilon_high!r}")
    if not (dual_clip == 0.0 or dual_clip > 1.0):
        raise ValueError(f"rl.loss.dual_clip: expected 0 (disabled) or a value > 1, got {dual_clip!r}")
    if not beta >= 0.0:
        raise ValueError(f"rl.kl.beta: expected a value >= 0, got {beta!r}")
    get_kl_estimator(kl_estimator)
    if not kl_clamp >= 0.0:
        raise ValueError(f"rl.kl.clamp: expected a float >= 0 (0 disables), got {kl_clamp!r}")
    if beta > 0.0 and ref_logprobs is None:
        raise ValueError("rl.kl.beta > 0 needs ref_logprobs (the reference policy's log-probs); got None")

    logprobs, old_logprobs = jnp.asarray(logprobs), jnp.asarray(old_logprobs)
    advantages, mask = jnp.asarray(advantages), jnp.asarray(mask)
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs: expected shape [batch, time], got {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    _check_shape("old_logprobs", old_logprobs, shape)
    _check_shape("mask", mask, shape)
    _check_shape("advantages", advantages, shape[:1])
    if beta > 0.0:
        ref_logprobs = jnp.asarray(ref_logprobs)
        _check_shape("ref_logprobs", ref_logprobs, shape)
    if entropy is not None:
        entropy = jnp.asarray(entropy)
        _check_shape("entropy", entropy, shape)

    dtype = _float_dtype(logprobs, old_logprobs, advantages)
    token_mask = mask.astype(bool)
    # Sanitise padding first: a NaN / inf at a masked position must not reach the loss or its gradient.
    logprobs = jnp.where(token_mask, logprobs.astype(dtype), 0.0)
    old_logprobs = jax.lax.stop_gradient(jnp.where(token_mask, old_logprobs.astype(dtype), 0.0))
    advantage = jax.lax.stop_gradient(advantages.astype(dtype))[:, None]

    ratio = ratio_fn(logprobs, old_logprobs, token_mask)
    clipped_ratio = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    clipped_loss = jnp.maximum(-advantage * ratio, -advantage * clipped_ratio)
    negative_advantage = advantage < 0
    if dual_clip > 0.0:
        dual_clip_cap = -advantage * dual_clip
        dual_clipped = negative_advantage & (clipped_loss > dual_clip_cap)
        per_token_loss = jnp.where(negative_advantage, jnp.minimum(clipped_loss, dual_clip_cap), clipped_loss)
    else:
        dual_clipped = jnp.zeros(shape, bool)
        per_token_loss = clipped_loss

    kl = None
    if beta > 0.0:
        ref = jax.lax.stop_gradient(jnp.where(token_mask, ref_logprobs.astype(dtype), 0.0))
        kl = kl_divergence(logprobs, ref, estimator=kl_estimator, clamp=kl_clamp)
        per_token_loss = per_token_loss + beta * kl

    per_token_loss = jnp.where(token_mask, per_token_loss, 0.0)
    loss_sum, denominator = aggregate(per_token_loss, token_mask, max_completion_length=max_completion_length)

    def token_metric(values: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(sum over masked tokens, number of masked tokens) of float[b, t] values, no gradient."""
        values = jax.lax.stop_gradient(values.astype(dtype))
        return jnp.sum(jnp.where(token_mask, values, 0.0)), jnp.sum(token_mask, dtype=dtype)

    metrics: MetricSums = {
        "clip_frac_low": token_metric(negative_advantage & (ratio < 1.0 - epsilon_low)),
        "clip_frac_high": token_metric((advantage > 0) & (ratio > 1.0 + epsilon_high)),
        "dual_clip_frac": token_metric(dual_clipped),
        "approx_kl": token_metric(kl_k3(logprobs, old_logprobs)),
        "ratio_mean": token_metric(ratio),
    }
    if kl is not None:
        metrics["kl"] = token_metric(kl)
    if entropy is not None:
        metrics["entropy"] = token_metric(entropy)
    return LossOutput(
        loss_sum=loss_sum,
        denominator=jax.lax.stop_gradient(denominator),
        metrics=metrics,
    )


def sft_loss(logprobs: jax.Array, mask: jax.Array, *, entropy: jax.Array | None = None) -> LossOutput:
    """Supervised fine-tuning loss: negative log-likelihood of the target tokens, as (sum, denom).

    The global loss ``sum(loss_sum) / sum(denominator)`` is the mean NLL over every target token
    of the batch (token-mean), however the batch was split into micro-batches or shards.

    Args:
        logprobs: float[b, t], log pi_theta of the target tokens (the differentiated input).
        mask: bool or float[b, t]; nonzero marks a target (answer) token.
        entropy: optional float[b, t], the model's next-token entropy (a metric only).

    Returns:
        LossOutput: ``loss_sum = -sum(logprobs * mask)``, ``denominator = sum(mask)``; metrics
        ``entropy`` (with ``entropy``) as (sum, count) over the target tokens.
    """
    _check_shape("mask", mask, logprobs.shape)
    token_mask = mask.astype(bool)
    dtype = jnp.result_type(jnp.float32, logprobs.dtype)
    count = jnp.sum(token_mask, dtype=dtype)
    loss_sum = -jnp.sum(jnp.where(token_mask, logprobs.astype(dtype), 0.0))
    metrics: MetricSums = {}
    if entropy is not None:
        values = jax.lax.stop_gradient(jnp.where(token_mask, entropy.astype(dtype), 0.0))
        metrics["entropy"] = (jnp.sum(values), count)
    return LossOutput(loss_sum=loss_sum, denominator=count, metrics=metrics)


def reduce_metrics(metrics: MetricSums) -> dict[str, jax.Array]:
    """Divide each accumulated (sum, count) pair: name -> f32[] mean (NaN when count is 0)."""
    return {name: metric_sum / count for name, (metric_sum, count) in metrics.items()}
