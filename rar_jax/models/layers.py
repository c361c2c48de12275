"""Pure transformer math: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP and one decoder layer.

Every function here is a plain function of arrays (no parameters held, no state), so it can be
tested against a numpy reference and composed under `jax.lax.scan`. Shapes use
b = batch, t = query time, s = key time, d = hidden size, h = query heads, k = key/value heads,
g = h // k query groups, e = head dim, f = MLP width.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

# A large finite negative score for masked keys: a fully masked query row then gives a uniform
# (finite) distribution instead of NaN, and masked keys get exactly zero weight otherwise.
MASKED_SCORE = float(jnp.finfo(jnp.float32).min)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """Root-mean-square normalisation over the last axis, computed in float32.

    Args:
        x: [..., d] activations (any float dtype).
        scale: [d] learned gain.
        eps: added to the mean square.

    Returns:
        [..., d] in x.dtype: ``(x / rms(x)).astype(x.dtype) * scale`` (HF Llama order).
    """
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * scale.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cosines and sines of the rotary angles.

    Args:
        positions: int32[b, t] position of each token.
        inv_freq: float32[e // 2] inverse frequencies.

    Returns:
        (cos, sin), each float32[b, t, e // 2].
    """
    angles = positions.astype(jnp.float32)[..., None] * inv_freq.astype(jnp.float32)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE (HF layout: the first and second halves of each head form the pairs).

    Args:
        x: [b, t, heads, e].
        cos: float32[b, t, e // 2].
        sin: float32[b, t, e // 2].

    Returns:
        [b, t, heads, e] in x.dtype.
    """
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x32[..., :half], x32[..., half:]
    cos = cos[:, :, None, :]
    sin = sin[:, :, None, :]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def grouped_query_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, *, query_chunk: int = 0
) -> jax.Array:
    """Scaled dot-product attention with grouped key/value heads and an explicit mask.

    Args:
        q: [b, t, h, e] queries (RoPE applied).
        k: [b, s, k, e] keys (RoPE applied).
        v: [b, s, k, e] values.
        allowed: bool[b, t, s]; True where query i may attend to key j.
        query_chunk: static; when 0 < query_chunk < t, the queries attend in blocks of this many
            (`jax.lax.map` over blocks, t padded up to a multiple), so the float32 scores and
            probabilities take [b, h, query_chunk, s] at a time instead of [b, h, t, s]. Same
            values either way (each query row's softmax is independent of the others).

    Returns:
        [b, t, h, e] in q.dtype. Scores and softmax are float32. A query with no allowed key gets a
        uniform average (finite, never NaN); callers mask such rows out.
    """
    b, t, h, e = q.shape
    if not 0 < query_chunk < t:
        return _attend(q, k, v, allowed)
    blocks = -(-t // query_chunk)
    padded = blocks * query_chunk
    if padded != t:
        q = jnp.pad(q, ((0, 0), (0, padded - t), (0, 0), (0, 0)))
        allowed = jnp.pad(allowed, ((0, 0), (0, padded - t), (0, 0)))
    q_blocks = q.reshape(b, blocks, query_chunk, h, e).swapaxes(0, 1)
    allowed_blocks = allowed.reshape(b, blocks, query_chunk, -1).swapaxes(0, 1)
    out = jax.lax.map(lambda block: _attend(block[0], k, v, block[1]), (q_blocks, allowed_blocks))
    return out.swapaxes(0, 1).reshape(b, padded, h, e)[:, :t]


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """`grouped_query_attention` of all t queries at once (same arguments, no chunking)."""
    b, t, h, e = q.shape
    num_kv = k.shape[2]
    groups = h // num_kv
    q = q.reshape(b, t, num_kv, groups, e)
    scores = jnp.einsum("btkge,bske->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * (e ** -0.5)
    scores = jnp.where(allowed[:, None, None, :, :], scores, MASKED_SCORE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bske->btkge", probs.astype(v.dtype), v)
    return out.reshape(b, t, h, e)


def swiglu_mlp(
    x: jax.Array, gate_proj: jax.Array, up_proj: jax.Array, down_proj: jax.Array
) -> jax.Array:
    """SwiGLU feed-forward: ``down(silu(x @ gate) * (x @ up))``.

    Args:
        x: [b, t, d].
        gate_proj: [d, f].
        up_proj: [d, f].
        down_proj: [f, d].

    Returns:
        [b, t, d] in x.dtype.
    """
    dtype = x.dtype
    gate = jnp.einsum("btd,df->btf", x, gate_proj.astype(dtype))
    up = jnp.einsum("btd,df->btf", x, up_proj.astype(dtype))
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, down_proj.astype(dtype))


def project_qkv(
    x: jax.Array,
    layer: Mapping[str, jax.Array],
    cos: jax.Array,
    sin: jax.Array,
    eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Query/key/value projections with optional biases (Qwen2), q/k norms (Qwen3) and RoPE.

    Args:
        x: [b, t, d] normed input.
        layer: one layer's parameters: q_proj [d, h, e], k_proj/v_proj [d, k, e]; optionally
            q_bias [h, e], k_bias/v_bias [k, e], q_norm/k_norm [e].
        cos, sin: float32[b, t, e // 2].
        eps: RMSNorm epsilon for the q/k norms.

    Returns:
        q [b, t, h, e], k [b, t, k, e], v [b, t, k, e] in x.dtype.
    """
    dtype = x.dtype
    q = jnp.einsum("btd,dhe->bthe", x, layer["q_proj"].astype(dtype))
    k = jnp.einsum("btd,dke->btke", x, layer["k_proj"].astype(dtype))
    v = jnp.einsum("btd,dke->btke", x, layer["v_proj"].astype(dtype))
    return qkv_bias_norm_rope(q, k, v, layer, cos, sin, eps)


def qkv_bias_norm_rope(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    layer: Mapping[str, jax.Array],
    cos: jax.Array,
    sin: jax.Array,
    eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What follows the q/k/v projections: optional biases (Qwen2), q/k norms (Qwen3), RoPE.

    Args:
        q: [b, t, h, e], k and v: [b, t, k, e] projected queries, keys and values.
        layer: optional q_bias [h, e], k_bias/v_bias [k, e], q_norm/k_norm [e].
        cos, sin: float32[b, t, e // 2].
        eps: RMSNorm epsilon for the q/k norms.

    Returns:
        q, k, v in q.dtype, shapes unchanged.
    """
    dtype = q.dtype
    if "q_bias" in layer:
        q = q + layer["q_bias"].astype(dtype)
        k = k + layer["k_bias"].astype(dtype)
        v = v + layer["v_bias"].astype(dtype)
    if "q_norm" in layer:
        q = rms_norm(q, layer["q_norm"], eps)
        k = rms_norm(k, layer["k_norm"], eps)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def decoder_layer(
    x: jax.Array,
    layer: Mapping[str, jax.Array],
    cos: jax.Array,
    sin: jax.Array,
    allowed: jax.Array,
    eps: float,
    cached_kv: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    query_chunk: int = 0,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One pre-norm decoder layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        x: [b, t, d] residual stream.
        layer: this layer's parameters (see `project_qkv`, plus attn_norm [d], o_proj [h, e, d],
            mlp_norm [d], gate_proj/up_proj [d, f], down_proj [f, d]).
        cos, sin: float32[b, t, e // 2] rotary tables of the t query positions.
        allowed: bool[b, t, s] attention mask; s = t without a cache, the cache length with one.
        eps: RMSNorm epsilon.
        cached_kv: optional (keys [b, s, k, e], values [b, s, k, e], write_start int32[b]); the t new
            keys/values of each row are written at slots write_start[row] .. + t, and attention runs
            over the whole updated cache.
        query_chunk: static query block size of the attention (see `grouped_query_attention`).

    Returns:
        (x [b, t, d], (keys, values)): the new residual stream and the keys/values attended to
        ([b, s, k, e] each; the updated cache when `cached_kv` is given).
    """
    eps = float(eps)
    normed = rms_norm(x, layer["attn_norm"], eps)
    q, k, v = project_qkv(normed, layer, cos, sin, eps)
    if cached_kv is not None:
        cache_k, cache_v, write_start = cached_kv
        k = write_rows(cache_k, k.astype(cache_k.dtype), write_start).astype(x.dtype)
        v = write_rows(cache_v, v.astype(cache_v.dtype), write_start).astype(x.dtype)
    attn = grouped_query_attention(q, k, v, allowed, query_chunk=query_chunk)
    x = x + jnp.einsum("bthe,hed->btd", attn, layer["o_proj"].astype(x.dtype))
    normed = rms_norm(x, layer["mlp_norm"], eps)
    x = x + swiglu_mlp(normed, layer["gate_proj"], layer["up_proj"], layer["down_proj"])
    return x, (k, v)


def write_rows(buffer: jax.Array, update: jax.Array, start: jax.Array) -> jax.Array:
    """Write each row's update into its buffer at its own start slot.

    Args:
        buffer: [b, s, ...].
        update: [b, t, ...] with t <= s.
        start: int32[b] first slot per row; slots start .. start + t - 1 are overwritten (XLA clamps
            the start so that the write fits, so callers must size the buffer).

    Returns:
        [b, s, ...] updated buffer.
    """

    def write_one(row_buffer: jax.Array, row_update: jax.Array, row_start: jax.Array) -> jax.Array:
        index = (row_start,) + (0,) * (row_buffer.ndim - 1)
        return jax.lax.dynamic_update_slice(row_buffer, row_update, index)

    return jax.vmap(write_one)(buffer, update, start)


def causal_mask(
    query_slots: jax.Array, key_slots: jax.Array, key_valid: jax.Array
) -> jax.Array:
    """Attention mask from slot indices: a query sees valid keys at slots not after its own.

    Args:
        query_slots: int32[b, t] slot index of each query.
        key_slots: int32[s] slot index of each key.
        key_valid: bool[b, s] whether each key slot holds a real token.

    Returns:
        bool[b, t, s].
    """
    return (key_slots[None, None, :] <= query_slots[:, :, None]) & key_valid[:, None, :]
