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
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    allowed: jax.Array,
    *,
    query_chunk: int = 0,
    cached: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    kv_major: bool = False,
) -> jax.Array:
    """Scaled dot-product attention with grouped key/value heads and explicit masks.

    The t queries attend, in one softmax, to their own t keys (`k`, `v`, mask `allowed`) and,
    when `cached` is given, to the keys already in a KV cache. The new keys are kept apart from the
    cache (the caller writes them into it afterwards) so that the cache's only use after this
    read is that write: XLA then updates each cache buffer in place instead of copying it per step.

    Args:
        q: [b, t, h, e] queries (RoPE applied).
        k: [b, k, t, e] the t new keys (RoPE applied), in the KV cache's layout.
        v: [b, k, t, e] their values.
        allowed: bool[b, t, t]; True where query i may attend to new key j.
        query_chunk: static; when 0 < query_chunk < t, the queries attend in blocks of this many
            (`jax.lax.map` over blocks, t padded up to a multiple), so the float32 scores and
            probabilities take [b, h, query_chunk, s] at a time instead of [b, h, t, s]. Same
            values either way (each query row's softmax is independent of the others).
        cached: optional (keys [b, k, s, e], values [b, k, s, e], cache_allowed bool[b, t, s]) of
            the cache (`rar_jax.models.cache`) before the new tokens are written.
        kv_major: static; contract in the cache's own order, queries and output [b, k, g, t, e]
            (transposed to [b, t, h, e] at the end). For a decode step's few queries this is what
            XLA on CPU multiplies without copying every layer's cached values (and the next
            projection's weights) transposed each step (benchmarks/README.md); the default
            [b, t, k, g, e] order is what the training forward and prefill were measured with.

    Returns:
        [b, t, h, e] in q.dtype. Scores and softmax are float32. A query with no allowed key gets a
        uniform average (finite, never NaN); callers mask such rows out.
    """
    b, t, h, e = q.shape
    cache_kv = None if cached is None else cached[:2]
    if not 0 < query_chunk < t:
        return _attend(q, k, v, allowed, cache_kv, None if cached is None else cached[2], kv_major)
    blocks = -(-t // query_chunk)
    padded = blocks * query_chunk

    def split(a: jax.Array) -> jax.Array:
        """[b, t, ...] -> [blocks, b, query_chunk, ...], t padded up to blocks * query_chunk."""
        a = jnp.pad(a, ((0, 0), (0, padded - t)) + ((0, 0),) * (a.ndim - 2))
        return a.reshape((b, blocks, query_chunk) + a.shape[2:]).swapaxes(0, 1)

    masks = (allowed,) if cached is None else (allowed, cached[2])
    out = jax.lax.map(
        lambda block: _attend(block[0], k, v, block[1], cache_kv, block[2] if cached else None,
                              kv_major),
        (split(q),) + tuple(split(mask) for mask in masks),
    )
    return out.swapaxes(0, 1).reshape(b, padded, h, e)[:, :t]


def _attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    allowed: jax.Array,
    cache_kv: tuple[jax.Array, jax.Array] | None,
    cache_allowed: jax.Array | None,
    kv_major: bool = False,
) -> jax.Array:
    """`grouped_query_attention` of all t queries at once (same arguments, no chunking)."""
    b, t, h, e = q.shape
    num_kv = k.shape[1]
    q = q.reshape(b, t, num_kv, h // num_kv, e)
    order = "btkge"
    if kv_major:
        q, order = q.transpose(0, 2, 3, 1, 4), "bkgte"

    def scores_of(keys: jax.Array, mask: jax.Array) -> jax.Array:
        scores = jnp.einsum(f"{order},bkse->bkgts", q, keys, preferred_element_type=jnp.float32)
        return jnp.where(mask[:, None, None, :, :], scores * (e ** -0.5), MASKED_SCORE)

    scores = scores_of(k, allowed)
    if cache_kv is None:
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum(f"bkgts,bkse->{order}", probs.astype(v.dtype), v)
    else:
        cache_keys, cache_values = cache_kv
        slots = cache_keys.shape[2]
        probs = jax.nn.softmax(
            jnp.concatenate([scores_of(cache_keys, cache_allowed), scores], axis=-1), axis=-1
        )
        out = jnp.einsum(f"bkgts,bkse->{order}", probs[..., :slots].astype(v.dtype), cache_values)
        out = out + jnp.einsum(f"bkgts,bkse->{order}", probs[..., slots:].astype(v.dtype), v)
    if kv_major:
        out = out.transpose(0, 3, 1, 2, 4)
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


def fused_swiglu_mlp(x: jax.Array, gate_up_proj: jax.Array, down_proj: jax.Array) -> jax.Array:
    """`swiglu_mlp` with the gate and up projections side by side in one matrix.

    Args:
        x: [b, t, d].
        gate_up_proj: [d, 2f], gate_proj's f columns then up_proj's (`decode_layout`).
        down_proj: [f, d].

    Returns:
        [b, t, d] in x.dtype.
    """
    dtype = x.dtype
    gate, up = jnp.split(jnp.einsum("btd,df->btf", x, gate_up_proj.astype(dtype)), 2, axis=-1)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, down_proj.astype(dtype))


def decode_layout(layer: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """One layer's weights rearranged for decode steps (`decoder_layer` accepts either layout).

    The q/k/v projections become one ``qkv_proj`` [d, h + 2k, e] (concatenated on the heads
    axis) and the gate/up projections one ``gate_up_proj`` [d, 2f]: one larger matmul each
    instead of three and two, which a decode step's few rows run closer to the memory bandwidth
    (benchmarks/README.md). Made once per decode call, outside its loop; the other parameters
    are passed through.

    Args:
        layer: one layer's parameters as `decoder_layer` takes them (q_proj [d, h, e], k_proj and
            v_proj [d, k, e], gate_proj and up_proj [d, f], ...).

    Returns:
        the same parameters with qkv_proj and gate_up_proj in place of the five matrices.
    """
    fused = {name: a for name, a in layer.items()
             if name not in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")}
    fused["qkv_proj"] = jnp.concatenate([layer["q_proj"], layer["k_proj"], layer["v_proj"]], axis=1)
    fused["gate_up_proj"] = jnp.concatenate([layer["gate_proj"], layer["up_proj"]], axis=1)
    return fused


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
    cached_kv: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None,
    query_chunk: int = 0,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One pre-norm decoder layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        x: [b, t, d] residual stream.
        layer: this layer's parameters (see `project_qkv`, plus attn_norm [d], o_proj [h, e, d],
            mlp_norm [d], gate_proj/up_proj [d, f], down_proj [f, d]), or their `decode_layout`
            (a decode loop's: fused matrices, and attention contracted in the cache's order).
        cos, sin: float32[b, t, e // 2] rotary tables of the t query positions.
        allowed: bool[b, t, t] attention mask among the t new tokens.
        eps: RMSNorm epsilon.
        cached_kv: optional (keys [b, k, s, e], values [b, k, s, e], write_start int32[] or
            int32[b] or None, cache_allowed bool[b, t, s]) of this layer
            (`rar_jax.models.cache.KVCache`): the queries also attend to the cached keys that
            `cache_allowed` marks, and the t new keys/values are then written at slots
            write_start .. + t (of every row, or of each row), in place; a None write_start
            leaves the cache as it is (a read-only prefix, e.g. a prompt shared by the rows).
        query_chunk: static query block size of the attention (see `grouped_query_attention`).

    Returns:
        (x [b, t, d], (keys, values)): the new residual stream and the t new keys/values
        ([b, k, t, e]), or with `cached_kv` and a write_start the updated cache buffers
        ([b, k, s, e], its dtype).
    """
    eps = float(eps)
    dtype = x.dtype
    decoding = "qkv_proj" in layer  # the `decode_layout` of a decode loop
    normed = rms_norm(x, layer["attn_norm"], eps)
    if decoding:
        heads = layer["o_proj"].shape[0]
        qkv = jnp.einsum("btd,dne->btne", normed, layer["qkv_proj"].astype(dtype))
        kv_heads = (qkv.shape[2] - heads) // 2
        q, k, v = qkv_bias_norm_rope(
            qkv[:, :, :heads], qkv[:, :, heads:heads + kv_heads], qkv[:, :, heads + kv_heads:],
            layer, cos, sin, eps,
        )
    else:
        q, k, v = project_qkv(normed, layer, cos, sin, eps)
    k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)  # [b, k, t, e]
    if cached_kv is None:
        attn = grouped_query_attention(q, k, v, allowed, query_chunk=query_chunk,
                                       kv_major=decoding)
    else:
        cache_k, cache_v, write_start, cache_allowed = cached_kv
        attn = grouped_query_attention(
            q, k, v, allowed, query_chunk=query_chunk,
            cached=(cache_k.astype(x.dtype), cache_v.astype(x.dtype), cache_allowed),
            kv_major=decoding,
        )
        if write_start is not None:
            k = write_slots(cache_k, k.astype(cache_k.dtype), write_start, axis=2)
            v = write_slots(cache_v, v.astype(cache_v.dtype), write_start, axis=2)
    if decoding:  # one [h * e, d] matrix: XLA on CPU then keeps o_proj as stored
        b, t, h, e = attn.shape
        out = jnp.einsum("btf,fd->btd", attn.reshape(b, t, h * e),
                         layer["o_proj"].astype(dtype).reshape(h * e, -1))
    else:
        out = jnp.einsum("bthe,hed->btd", attn, layer["o_proj"].astype(dtype))
    x = x + out
    normed = rms_norm(x, layer["mlp_norm"], eps)
    if decoding:
        x = x + fused_swiglu_mlp(normed, layer["gate_up_proj"], layer["down_proj"])
    else:
        x = x + swiglu_mlp(normed, layer["gate_proj"], layer["up_proj"], layer["down_proj"])
    return x, (k, v)


def write_slots(buffer: jax.Array, update: jax.Array, start: jax.Array, *, axis: int) -> jax.Array:
    """Write `update` into `buffer` along its slot axis, at one start for all rows or one per row.

    Args:
        buffer: [b, ...] with the slot axis `axis` (s slots).
        update: like buffer with t <= s slots.
        start: int32[] first slot of every row (one in-place `dynamic_update_slice`), or int32[b]
            per row (a per-row scatter). Slots start .. start + t - 1 are overwritten; XLA clamps
            the start so that the write fits, so callers must size the buffer.
        axis: static slot axis (>= 1).

    Returns:
        the updated buffer.
    """
    if start.ndim == 0:
        index = tuple(start if a == axis else 0 for a in range(buffer.ndim))
        return jax.lax.dynamic_update_slice(buffer, update, index)

    def write_one(row_buffer: jax.Array, row_update: jax.Array, row_start: jax.Array) -> jax.Array:
        index = tuple(row_start if a == axis - 1 else 0 for a in range(row_buffer.ndim))
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
