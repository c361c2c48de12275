"""The pure transformer math against numpy references written here."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax.models import layers as L
from rar_jax.models.config import ModelConfig, RopeScaling, rope_inverse_frequencies


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    scale = rng.normal(size=(8,)).astype(np.float32)
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(L.rms_norm(jnp.asarray(x), jnp.asarray(scale), 1e-5), expected, rtol=1e-5)


def test_rms_norm_keeps_bfloat16_dtype_but_normalises_in_float32():
    x = jnp.full((1, 4), 300.0, jnp.bfloat16)
    out = L.rms_norm(x, jnp.ones((4,), jnp.float32), 1e-6)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), 1.0)


def test_rope_rotates_each_half_pair_by_position_times_frequency():
    # Pair j of a head is (x[j], x[j + e/2]); RoPE rotates it by angle pos * inv_freq[j].
    rng = np.random.default_rng(1)
    e = 8
    x = rng.normal(size=(1, 3, 2, e)).astype(np.float32)
    positions = np.array([[0, 5, 17]], np.int32)
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, e, 2) / e))
    cos, sin = L.rope_cos_sin(jnp.asarray(positions), jnp.asarray(inv_freq, jnp.float32))
    out = np.asarray(L.apply_rope(jnp.asarray(x), cos, sin))
    complex_in = x[..., : e // 2] + 1j * x[..., e // 2 :]
    angles = positions[..., None, None] * inv_freq
    complex_out = complex_in * np.exp(1j * angles)
    np.testing.assert_allclose(out[..., : e // 2], complex_out.real, atol=1e-5)
    np.testing.assert_allclose(out[..., e // 2 :], complex_out.imag, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-7)  # position 0 is unrotated


def _attention_reference(q, k, v, allowed):
    """Plain numpy GQA: repeat each kv head for its query group, softmax over allowed keys."""
    b, t, h, e = q.shape
    groups = h // k.shape[2]
    k = np.repeat(k, groups, axis=2)
    v = np.repeat(v, groups, axis=2)
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            scores = q[bi, :, hi] @ k[bi, :, hi].T / math.sqrt(e)
            scores = np.where(allowed[bi], scores, -np.inf)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out[bi, :, hi] = weights @ v[bi, :, hi]
    return out


@pytest.mark.parametrize(
    "t, query_chunk",
    [(3, 0), (7, 2), (7, 7), (8, 4)],  # all at once; blocks with padding; one block; exact blocks
)
def test_grouped_query_attention_matches_numpy(t, query_chunk):
    rng = np.random.default_rng(2)
    b, s, h, kv, e = 2, 9, 4, 2, 8
    q = rng.normal(size=(b, t, h, e)).astype(np.float32)
    k = rng.normal(size=(b, s, kv, e)).astype(np.float32)
    v = rng.normal(size=(b, s, kv, e)).astype(np.float32)
    allowed = rng.random((b, t, s)) < 0.6
    allowed[..., 0] = True
    # the function takes keys/values in the cache layout [b, kv, s, e]
    cache_layout = lambda a: jnp.asarray(a.transpose(0, 2, 1, 3))  # noqa: E731
    out = L.grouped_query_attention(
        jnp.asarray(q), cache_layout(k), cache_layout(v), jnp.asarray(allowed), query_chunk=query_chunk
    )
    assert out.shape == (b, t, h, e)
    np.testing.assert_allclose(out, _attention_reference(q, k, v, allowed), atol=1e-5)


def test_fully_masked_query_is_finite():
    q = jnp.ones((1, 1, 2, 4))
    k = jnp.ones((1, 1, 3, 4))
    v = jnp.arange(12.0).reshape(1, 1, 3, 4)
    out = L.grouped_query_attention(q, k, v, jnp.zeros((1, 1, 3), bool))
    assert np.isfinite(np.asarray(out)).all()


def test_swiglu_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 2, 4)).astype(np.float32)
    gate, up = rng.normal(size=(2, 4, 6)).astype(np.float32)
    down = rng.normal(size=(6, 4)).astype(np.float32)
    g = x @ gate
    expected = (g / (1 + np.exp(-g)) * (x @ up)) @ down
    np.testing.assert_allclose(L.swiglu_mlp(*map(jnp.asarray, (x, gate, up, down))), expected, rtol=1e-5)


def test_write_slots_at_each_rows_own_slot_or_one_shared_slot():
    buffer = jnp.zeros((2, 5), jnp.int32)
    update = jnp.array([[1, 2], [3, 4]], jnp.int32)
    out = L.write_slots(buffer, update, jnp.array([0, 3], jnp.int32), axis=1)
    np.testing.assert_array_equal(out, [[1, 2, 0, 0, 0], [0, 0, 0, 3, 4]])
    out = L.write_slots(buffer, update, jnp.asarray(2, jnp.int32), axis=1)
    np.testing.assert_array_equal(out, [[0, 0, 1, 2, 0], [0, 0, 3, 4, 0]])
    # the slot axis of a cache buffer [b, kv, s, e]
    cache = jnp.zeros((2, 1, 4, 2))
    new = jnp.arange(4.0).reshape(2, 1, 1, 2)
    out = L.write_slots(cache, new, jnp.array([3, 1], jnp.int32), axis=2)
    np.testing.assert_array_equal(out[0, 0], [[0, 0], [0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(out[1, 0], [[0, 0], [2, 3], [0, 0], [0, 0]])


def test_causal_mask_by_slot_and_validity():
    mask = L.causal_mask(
        jnp.array([[1, 2]]), jnp.arange(4), jnp.array([[False, True, True, True]])
    )
    np.testing.assert_array_equal(mask, [[[False, True, False, False], [False, True, True, False]]])


def _config(**kw):
    return ModelConfig("llama", 16, 8, 8, 1, 1, 1, 16, **kw)


def test_inverse_frequencies_plain():
    expected = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    np.testing.assert_allclose(rope_inverse_frequencies(_config(rope_theta=10000.0)), expected, rtol=1e-6)


def test_inverse_frequencies_linear_scaling_divides_by_factor():
    plain = rope_inverse_frequencies(_config())
    scaled = rope_inverse_frequencies(_config(rope_scaling=RopeScaling("linear", 4.0)))
    np.testing.assert_allclose(scaled, plain / 4.0, rtol=1e-6)


def test_inverse_frequencies_llama3_scaling_by_hand():
    # theta 500000, e 16 -> wavelengths 2*pi*500000**(j/8). With original context 64, low factor 1,
    # high factor 4: low_freq_wavelen = 64, high_freq_wavelen = 16.
    scaling = RopeScaling("llama3", 8.0, 1.0, 4.0, 64)
    config = _config(rope_theta=500000.0, rope_scaling=scaling)
    plain = 1.0 / 500000.0 ** (np.arange(0, 16, 2) / 16)
    wavelen = 2 * np.pi / plain
    out = rope_inverse_frequencies(config)
    assert wavelen[0] < 16  # high frequency: unchanged
    np.testing.assert_allclose(out[0], plain[0], rtol=1e-6)
    assert 16 <= wavelen[1] <= 64  # medium: smooth = (64 / wavelen - 1) / 3
    smooth = (64 / wavelen[1] - 1) / 3
    np.testing.assert_allclose(out[1], (1 - smooth) * plain[1] / 8 + smooth * plain[1], rtol=1e-5)
    assert (wavelen[2:] > 64).all()  # low frequency: divided by the factor
    np.testing.assert_allclose(out[2:], plain[2:] / 8, rtol=1e-5)


def test_rope_scaling_rejects_unknown_type():
    with pytest.raises(ValueError, match="yarn"):
        RopeScaling("yarn", 2.0)


def test_fused_swiglu_mlp_matches_numpy():
    rng = np.random.default_rng(7)
    x, gate, up, down = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 4), (4, 6), (4, 6), (6, 4)))
    g = x @ gate
    expected = (g / (1 + np.exp(-g)) * (x @ up)) @ down
    out = L.fused_swiglu_mlp(jnp.asarray(x), jnp.asarray(np.concatenate([gate, up], 1)), jnp.asarray(down))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extras", [(), ("q_bias", "q_norm")])
def test_decode_layout_gives_the_stored_layouts_layer(extras):
    """A decode step through `decode_layout` weights (fused q/k/v and gate/up, attention in the
    cache's order) equals the stored layout's step: new residual and written cache buffers."""
    rng = np.random.default_rng(8)
    b, t, d, h, kv, e, f, s = 2, 1, 16, 4, 2, 8, 24, 6
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32) * 0.3)  # noqa: E731
    layer = dict(attn_norm=1 + normal(d), q_proj=normal(d, h, e), k_proj=normal(d, kv, e),
                 v_proj=normal(d, kv, e), o_proj=normal(h, e, d), mlp_norm=1 + normal(d),
                 gate_proj=normal(d, f), up_proj=normal(d, f), down_proj=normal(f, d))
    if "q_bias" in extras:
        layer.update(q_bias=normal(h, e), k_bias=normal(kv, e), v_bias=normal(kv, e))
    if "q_norm" in extras:
        layer.update(q_norm=1 + normal(e), k_norm=1 + normal(e))
    fused = L.decode_layout(layer)
    assert {"q_proj", "gate_proj"}.isdisjoint(fused) and fused["qkv_proj"].shape == (d, h + 2 * kv, e)
    x = normal(b, t, d)
    cos, sin = L.rope_cos_sin(jnp.full((b, t), 4, jnp.int32), jnp.asarray([1.0, 0.1, 0.01, 0.001]))
    cache_allowed = jnp.asarray([[[True] * 4 + [False] * 2], [[False, True, True, True, False, False]]])
    cached = (normal(b, kv, s, e), normal(b, kv, s, e), jnp.asarray(4, jnp.int32), cache_allowed)
    allowed = jnp.ones((b, t, t), bool)
    want_x, (want_k, want_v) = L.decoder_layer(x, layer, cos, sin, allowed, 1e-5, cached)
    got_x, (got_k, got_v) = L.decoder_layer(x, fused, cos, sin, allowed, 1e-5, cached)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_k, want_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got_k[:, :, 4], cached[0][:, :, 4])  # the new key was written


def test_kv_major_attention_equals_the_default_order():
    rng = np.random.default_rng(9)
    q = jnp.asarray(rng.normal(size=(2, 3, 4, 8)).astype(np.float32))
    k, v = (jnp.asarray(rng.normal(size=(2, 2, 3, 8)).astype(np.float32)) for _ in range(2))
    cache = tuple(jnp.asarray(rng.normal(size=(2, 2, 5, 8)).astype(np.float32)) for _ in range(2))
    allowed = jnp.tril(jnp.ones((3, 3), bool))[None].repeat(2, 0)
    cached = cache + (jnp.asarray(rng.random((2, 3, 5)) < 0.6),)
    for kwargs in ({}, {"cached": cached}):
        want = L.grouped_query_attention(q, k, v, allowed, **kwargs)
        got = L.grouped_query_attention(q, k, v, allowed, kv_major=True, **kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
