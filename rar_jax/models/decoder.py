"""Flax NNX decoder-only transformer (Llama / Qwen2 / Qwen3) with stacked, scanned layers.

The `Decoder` module only holds parameters and orchestrates; the math lives in
`rar_jax.models.layers`. All layer parameters are stacked on a leading ``layers`` axis and the
layers run under `jax.lax.scan`, so compile time does not grow with depth. Every parameter carries
logical axis names (NNX ``out_sharding`` metadata) from
{vocab, embed, heads, kv_heads, head_dim, mlp, layers}; `rar_jax.parallel.sharding` maps them to
mesh axes.

Forward: ``model(tokens, positions, attention_mask=..., cache=..., return_hidden=...)``.

* Without a cache, `attention_mask` marks the real tokens of the t inputs (left or right padding);
  attention is causal by index among real tokens. Positions are given per row, so a left-padded row
  gives the same logits as the row alone when its positions start at 0 at its first real token.
* With a cache (`init_cache`), the t new tokens of row r are written at slots
  ``cache.end_index[r] ..`` of that row, `attention_mask` marks which of them are real, and queries
  attend to every earlier valid slot. Prefill writes t tokens, decode writes 1.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models import layers as L
from rar_jax.models.config import ModelConfig, rope_inverse_frequencies

# Layer parameter name -> logical axes (without the leading "layers" axis).
_LAYER_PARAM_AXES: dict[str, tuple[str | None, ...]] = {
    "attn_norm": ("embed",),
    "q_proj": ("embed", "heads", "head_dim"),
    "k_proj": ("embed", "kv_heads", "head_dim"),
    "v_proj": ("embed", "kv_heads", "head_dim"),
    "o_proj": ("heads", "head_dim", "embed"),
    "q_bias": ("heads", "head_dim"),
    "k_bias": ("kv_heads", "head_dim"),
    "v_bias": ("kv_heads", "head_dim"),
    "q_norm": ("head_dim",),
    "k_norm": ("head_dim",),
    "mlp_norm": ("embed",),
    "gate_proj": ("embed", "mlp"),
    "up_proj": ("embed", "mlp"),
    "down_proj": ("mlp", "embed"),
}


def layer_param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes (without the leading layers axis) of one layer's parameters for this config."""
    d, f = config.hidden_size, config.intermediate_size
    h, k, e = config.num_heads, config.num_kv_heads, config.head_dim
    shapes = {
        "attn_norm": (d,),
        "q_proj": (d, h, e),
        "k_proj": (d, k, e),
        "v_proj": (d, k, e),
        "o_proj": (h, e, d),
        "mlp_norm": (d,),
        "gate_proj": (d, f),
        "up_proj": (d, f),
        "down_proj": (f, d),
    }
    if config.attention_bias:
        shapes.update(q_bias=(h, e), k_bias=(k, e), v_bias=(k, e))
    if config.qk_norm:
        shapes.update(q_norm=(e,), k_norm=(e,))
    return shapes


def layer_param_axes(name: str) -> tuple[str | None, ...]:
    """Logical axis names of a stacked layer parameter, leading ``layers`` axis included."""
    return ("layers",) + _LAYER_PARAM_AXES[name]


def _param(value: jax.Array, axes: tuple[str | None, ...]) -> nnx.Param:
    """An `nnx.Param` annotated with logical axes; sharding is applied by rar_jax.parallel."""
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def remat_policy(name: str) -> Callable[..., Any] | None | str:
    """The `jax.checkpoint` policy for a `ModelConfig.remat_policy` name ("none" -> no remat)."""
    policies = {
        "none": "none",
        "full": None,
        "dots_saveable": jax.checkpoint_policies.dots_saveable,
        "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }
    if name not in policies:
        raise ValueError(f"unknown remat policy {name!r}; expected one of {tuple(policies)}")
    return policies[name]


class KVCache(NamedTuple):
    """Key/value cache of all layers (a pytree).

    Attributes:
        keys: [layers, b, max_len, kv_heads, head_dim].
        values: [layers, b, max_len, kv_heads, head_dim].
        key_mask: bool[b, max_len]; True for slots holding a real token.
        end_index: int32[b]; the next slot each row writes to (= slots used so far).
    """

    keys: jax.Array
    values: jax.Array
    key_mask: jax.Array
    end_index: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots per row."""
        return self.keys.shape[2]


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt + generated).

    Args:
        config: the model's config.
        batch: rows.
        max_len: slots per row; writes past it are clamped by XLA, so size it for the whole sequence.
        dtype: key/value dtype; defaults to the compute dtype.
    """
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return KVCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        key_mask=jnp.zeros((batch, max_len), bool),
        end_index=jnp.zeros((batch,), jnp.int32),
    )


def _normal_init(rngs: nnx.Rngs, shapes: dict[str, tuple[int, ...]], dtype: Any) -> dict[str, jax.Array]:
    """N(0, 0.02) values for several shapes from ONE random draw (one compile instead of one per
    shape, which dominates model creation time on CPU)."""
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    flat = 0.02 * jax.random.normal(rngs.params(), (sum(sizes),), jnp.float32)
    values, offset = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        values[name] = flat[offset:offset + size].reshape(shape).astype(dtype)
        offset += size
    return values


class StackedLayers(nnx.Module):
    """Parameters of all decoder layers, each stacked on a leading ``layers`` axis.

    Args:
        config: the model config.
        random_values: name -> initial value for the random (non-norm, non-bias) parameters.
    """

    def __init__(self, config: ModelConfig, random_values: dict[str, jax.Array]):
        param_dtype = jnp.dtype(config.param_dtype)
        n = config.num_layers
        for name, shape in layer_param_shapes(config).items():
            full_shape = (n,) + shape
            if name.endswith("norm"):
                value = jnp.ones(full_shape, param_dtype)
            elif name.endswith("bias"):
                value = jnp.zeros(full_shape, param_dtype)
            else:
                value = random_values[name]
            setattr(self, name, _param(value, layer_param_axes(name)))
        self.param_names = tuple(layer_param_shapes(config))

    def arrays(self) -> dict[str, jax.Array]:
        """The stacked parameter arrays by name."""
        return {name: getattr(self, name)[...] for name in self.param_names}


class Decoder(nnx.Module):
    """Decoder-only transformer language model.

    Attributes:
        config: the ModelConfig.
        embed: Param [vocab, embed] token embeddings.
        layers: StackedLayers.
        final_norm: Param [embed].
        lm_head: Param [embed, vocab], or None when tied to `embed`.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        param_dtype = jnp.dtype(config.param_dtype)
        d, v = config.hidden_size, config.vocab_size
        random_shapes = {"embed": (v, d)}
        if not config.tie_word_embeddings:
            random_shapes["lm_head"] = (d, v)
        for name, shape in layer_param_shapes(config).items():
            if not name.endswith(("norm", "bias")):
                random_shapes[name] = (config.num_layers,) + shape
        values = _normal_init(rngs, random_shapes, param_dtype)
        self.embed = _param(values["embed"], ("vocab", "embed"))
        self.layers = StackedLayers(config, values)
        self.final_norm = _param(jnp.ones((d,), param_dtype), ("embed",))
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _param(values["lm_head"], ("embed", "vocab"))

    def lm_head_weight(self) -> jax.Array:
        """The output projection [embed, vocab] (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed[...].T
        return self.lm_head[...]

    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        """An empty KV cache for this model (see `init_cache`)."""
        return init_cache(self.config, batch, max_len, dtype)

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Run the model.

        Args:
            tokens: int32[b, t].
            positions: int32[b, t] RoPE position of each token (per row; 0 at a row's first real
                token for left padding).
            attention_mask: bool[b, t] True for real tokens among the t inputs (None = all real).
                Padding keys are never attended to; outputs at padding queries are meaningless.
            cache: optional KVCache; the t tokens are appended at each row's `end_index`.
            return_hidden: return the final-normed hidden states instead of logits.

        Returns:
            (out, cache): out is float32[b, t, vocab] logits, or [b, t, embed] hidden states in the
            compute dtype when `return_hidden`; cache is the updated KVCache (None if none given).
        """
        config = self.config
        if tokens.ndim != 2 or positions.shape != tokens.shape:
            raise ValueError(
                f"tokens and positions must both be [batch, time]; got {tokens.shape} and "
                f"{positions.shape}"
            )
        batch, time = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((batch, time), bool)
        elif attention_mask.shape != tokens.shape:
            raise ValueError(
                f"attention_mask must be bool[batch, time] = {tokens.shape}, got {attention_mask.shape}"
            )
        attention_mask = attention_mask.astype(bool)
        dtype = jnp.dtype(config.dtype)
        x = jnp.take(self.embed[...], tokens, axis=0).astype(dtype)
        cos, sin = L.rope_cos_sin(positions, jnp.asarray(rope_inverse_frequencies(config)))

        layer_arrays = self.layers.arrays()
        if cache is None:
            slots = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
            allowed = L.causal_mask(slots, jnp.arange(time, dtype=jnp.int32), attention_mask)
            x, _ = _scan_layers(x, layer_arrays, cos, sin, allowed, config, None)
            new_cache = None
        else:
            if cache.keys.shape[1] != batch:
                raise ValueError(f"cache has {cache.keys.shape[1]} rows but tokens have {batch}")
            start = cache.end_index
            key_mask = L.write_rows(cache.key_mask, attention_mask, start)
            query_slots = start[:, None] + jnp.arange(time, dtype=jnp.int32)[None, :]
            allowed = L.causal_mask(
                query_slots, jnp.arange(cache.max_len, dtype=jnp.int32), key_mask
            )
            x, (keys, values) = _scan_layers(
                x, layer_arrays, cos, sin, allowed, config, (cache.keys, cache.values, start)
            )
            new_cache = KVCache(keys, values, key_mask, start + time)

        hidden = L.rms_norm(x, self.final_norm[...], config.rms_norm_eps)
        if return_hidden:
            return hidden, new_cache
        logits = jnp.einsum(
            "btd,dv->btv",
            hidden,
            self.lm_head_weight().astype(dtype),
            preferred_element_type=jnp.float32,
        )
        return logits, new_cache


def _scan_layers(
    x: jax.Array,
    layer_arrays: dict[str, jax.Array],
    cos: jax.Array,
    sin: jax.Array,
    allowed: jax.Array,
    config: ModelConfig,
    cache: tuple[jax.Array, jax.Array, jax.Array] | None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Scan `decoder_layer` over the stacked layers, with the config's remat policy.

    Args:
        x: [b, t, d].
        layer_arrays: stacked parameters, each [layers, ...].
        cos, sin: float32[b, t, e // 2].
        allowed: bool[b, t, s].
        config: model config (eps, attention chunk, remat policy).
        cache: optional (keys, values [layers, b, s, k, e], write_start int32[b]).

    Returns:
        (x [b, t, d], (keys, values) stacked [layers, b, s, k, e] or None without a cache).
    """
    eps = config.rms_norm_eps
    chunk = config.attention_chunk

    if cache is None:
        def body(carry: jax.Array, layer: dict[str, jax.Array]):
            out, _ = L.decoder_layer(carry, layer, cos, sin, allowed, eps, query_chunk=chunk)
            return out, None

        xs: Any = layer_arrays
    else:
        cache_keys, cache_values, start = cache

        def body(carry: jax.Array, scanned: tuple[dict[str, jax.Array], jax.Array, jax.Array]):
            layer, layer_keys, layer_values = scanned
            out, kv = L.decoder_layer(
                carry, layer, cos, sin, allowed, eps, (layer_keys, layer_values, start), chunk
            )
            return out, (kv[0].astype(layer_keys.dtype), kv[1].astype(layer_values.dtype))

        xs = (layer_arrays, cache_keys, cache_values)

    policy = remat_policy(config.remat_policy)
    if policy != "none":
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    return jax.lax.scan(body, x, xs)


def count_parameters(model: Decoder) -> int:
    """Number of scalar parameters held by the model."""
    state = nnx.state(model, nnx.Param)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(state)))
