"""Per-token log-probabilities and entropies of sampled tokens.

Two ways to get ``log pi(target_t | prefix)`` for every position:

- ``token_logprobs`` takes full logits ``[batch, time, vocab]``.
- ``chunked_token_logprobs`` takes the final hidden states ``[batch, time, d_model]`` and the output
  projection ``[d_model, vocab]`` and computes the logits a time chunk at a time under ``lax.scan``
  with ``jax.checkpoint``, so the ``[batch, time, vocab]`` logits never exist at once, neither in the
  forward pass nor in the backward pass (each chunk's logits are recomputed when its gradient is
  needed). With a 150k vocabulary this is the difference between a few and tens of GiB. The chunk
  size is config ``rl.logprob_chunk_size``.

Both return float32 (float64 if the inputs are float64) whatever the input dtype, and divide the
logits by the sampling ``temperature`` first so that the log-probs are those of the distribution the
sampler drew from. Masking is the caller's job: values at padded positions are computed like any
other and the losses take an explicit mask.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

__all__ = ["chunked_token_logprobs", "token_logprobs"]


def _check_temperature(temperature: float) -> None:
    """Raise ValueError unless ``temperature`` is a positive finite number."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature: expected a positive finite float, got {temperature!r}")
    if not 0.0 < float(temperature) < float("inf"):
        raise ValueError(f"temperature: expected a positive finite float, got {temperature!r}")


def _compute_dtype(*dtypes: jnp.dtype) -> jnp.dtype:
    """float32, or float64 when any input already is (bf16 / f16 are promoted to float32)."""
    return jnp.result_type(jnp.float32, *dtypes)


def token_logprobs(
    logits: jax.Array, targets: jax.Array, *, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Log-probability of each target token and the entropy of each next-token distribution.

    Args:
        logits: float[batch, time, vocab], any float dtype; the logits that predict ``targets``
            (i.e. already shifted so that ``logits[:, t]`` scores ``targets[:, t]``).
        targets: int32[batch, time], token ids in ``[0, vocab)``.
        temperature: the logits are divided by it before the softmax (static, > 0).

    Returns:
        logprobs: f32[batch, time], ``log softmax(logits / temperature)[target]``.
        entropy: f32[batch, time], ``-sum_v p_v log p_v`` of ``softmax(logits / temperature)``.
    """
    _check_temperature(temperature)
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    if logits.ndim != 3:
        raise ValueError(f"logits: expected shape [batch, time, vocab], got {logits.shape}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets: expected shape {logits.shape[:2]} to match logits [batch, time], got {targets.shape}"
        )
    scaled_logits = logits.astype(_compute_dtype(logits.dtype)) / temperature
    log_probs = jax.nn.log_softmax(scaled_logits, axis=-1)
    target_logprobs = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    probs = jnp.exp(log_probs)
    # A token with probability 0 (logit -inf) contributes 0 * -inf = NaN unless it is masked out;
    # masking log p (not the product) also keeps the gradient finite.
    finite_log_probs = jnp.where(probs > 0, log_probs, 0.0)
    entropy = -jnp.sum(probs * finite_log_probs, axis=-1)
    return target_logprobs, entropy


def chunked_token_logprobs(
    hidden: jax.Array,
    lm_head: jax.Array,
    targets: jax.Array,
    *,
    chunk_size: int,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """``token_logprobs(hidden @ lm_head, targets)`` without materialising the full logits.

    The time axis is padded up to a multiple of ``chunk_size`` (a chunk size larger than ``time`` is
    reduced to ``time``), split into chunks, and each chunk's logits ``[batch, chunk, vocab]`` are
    computed, reduced to log-probs and entropies and dropped inside a ``jax.checkpoint``-ed
    ``lax.scan`` body; the padding is sliced off the result. Peak memory for logits is
    ``batch * chunk_size * vocab`` floats in both the forward and the backward pass.

    A model with tied input / output embeddings passes ``lm_head = embedding.T``
    (embedding ``[vocab, d_model]``); the transpose is free under jit.

    Args:
        hidden: float[batch, time, d_model], final (normed) hidden states.
        lm_head: float[d_model, vocab], the output projection.
        targets: int32[batch, time].
        chunk_size: time steps per chunk (static, >= 1; config ``rl.logprob_chunk_size``).
        temperature: the logits are divided by it before the softmax (static, > 0).

    Returns:
        logprobs: f32[batch, time] and entropy: f32[batch, time], equal to ``token_logprobs`` on the
        full logits (matmul accumulated in float32).
    """
    _check_temperature(temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"rl.logprob_chunk_size: expected an int >= 1, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    hidden, lm_head, targets = jnp.asarray(hidden), jnp.asarray(lm_head), jnp.asarray(targets)
    if hidden.ndim != 3:
        raise ValueError(f"hidden: expected shape [batch, time, d_model], got {hidden.shape}")
    if lm_head.ndim != 2 or lm_head.shape[0] != hidden.shape[2]:
        raise ValueError(
            f"lm_head: expected shape [d_model={hidden.shape[2]}, vocab], got {lm_head.shape}"
            " (a tied-embedding model passes embedding.T)"
        )
    if targets.shape != hidden.shape[:2]:
        raise ValueError(
            f"targets: expected shape {hidden.shape[:2]} to match hidden [batch, time], got {targets.shape}"
        )
    batch, time, d_model = hidden.shape
    out_dtype = _compute_dtype(hidden.dtype, lm_head.dtype)
    if time == 0:
        empty = jnp.zeros((batch, 0), out_dtype)
        return empty, empty

    chunk_size = min(chunk_size, time)
    num_chunks = -(-time // chunk_size)
    padded_time = num_chunks * chunk_size
    pad = padded_time - time
    hidden_padded = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets_padded = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad)))
    # [num_chunks, batch, chunk, ...]: scan runs over the leading axis.
    hidden_chunks = hidden_padded.reshape(batch, num_chunks, chunk_size, d_model).transpose(1, 0, 2, 3)
    target_chunks = targets_padded.reshape(batch, num_chunks, chunk_size).transpose(1, 0, 2)

    @jax.checkpoint
    def chunk_logprobs(
        hidden_chunk: jax.Array, target_chunk: jax.Array, projection: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """hidden_chunk [batch, chunk, d], target_chunk [batch, chunk] -> two f32[batch, chunk]."""
        logits = jnp.einsum("bcd,dv->bcv", hidden_chunk, projection, preferred_element_type=out_dtype)
        return token_logprobs(logits, target_chunk, temperature=temperature)

    def scan_body(
        carry: None, chunk: tuple[jax.Array, jax.Array]
    ) -> tuple[None, tuple[jax.Array, jax.Array]]:
        hidden_chunk, target_chunk = chunk
        return carry, chunk_logprobs(hidden_chunk, target_chunk, lm_head)

    _, (logprob_chunks, entropy_chunks) = jax.lax.scan(scan_body, None, (hidden_chunks, target_chunks))
    # [num_chunks, batch, chunk] -> [batch, padded_time] -> [batch, time]
    logprobs = logprob_chunks.transpose(1, 0, 2).reshape(batch, padded_time)[:, :time]
    entropy = entropy_chunks.transpose(1, 0, 2).reshape(batch, padded_time)[:, :time]
    return logprobs, entropy
