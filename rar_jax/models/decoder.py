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
* With a cache (`init_cache`, `rar_jax.models.cache.KVCache`), the t new tokens are written at
  slots ``cache.end_index ..`` (of every row, or of each row), `attention_mask` marks which of them
  are real, and queries attend to every earlier valid slot. Prefill writes t tokens, decode writes
  1. Two schedules of the same layers (measured in benchmarks/README.md): by default the layers
  are scanned (the per-layer cache buffers stacked for the scan), which suits many tokens per
  call; a caller that runs a few tokens many times (a decode loop) passes ``layers=``
  (`StackedLayers.per_layer`, made once) and the layers run unrolled, each reading and updating
  its own cache buffer in place, since a scan copies each layer's weights and cache every call.
* `Decoder.extend` runs t tokens after a read-only cached prefix without writing them: the
  training pass of rows that share a prompt (the prompt runs once, via `prefill`, per group).

Training forward, prefill, decode (`rar_jax.models.decoding`) and the judge's scoring all run the
same `rar_jax.models.layers.decoder_layer`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models import layers as L
from rar_jax.models.cache import KVCache, init_cache
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

    def per_layer(self, dtype: Any) -> list[dict[str, jax.Array]]:
        """Each layer's parameters in the decode layout (`rar_jax.models.layers.decode_layout`:
        q/k/v and gate/up fused), for a forward with a cache that runs the layers unrolled (a
        decode loop, which makes them once per call); the matrices cast to the compute `dtype`
        once here, the norms and biases as stored."""
        arrays = self.arrays()
        cast = lambda name, a: a if name.endswith(("norm", "bias")) else a.astype(dtype)  # noqa: E731
        return [L.decode_layout({name: cast(name, a[i]) for name, a in arrays.items()})
                for i in range(next(iter(arrays.values())).shape[0])]


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

    def logits(self, hidden: jax.Array) -> jax.Array:
        """The LM head: [..., d] final-normed hidden states -> float32[..., vocab].

        A tied embedding [vocab, d] is contracted as it is stored, not through its transpose
        (`lm_head_weight`), which XLA on CPU materialises: a copy of the embedding per call.
        """
        dtype = hidden.dtype
        if self.lm_head is None:
            return jnp.einsum("...d,vd->...v", hidden, self.embed[...].astype(dtype),
                              preferred_element_type=jnp.float32)
        return jnp.einsum("...d,dv->...v", hidden, self.lm_head[...].astype(dtype),
                          preferred_element_type=jnp.float32)

    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        """An empty KV cache for this model (see `init_cache`)."""
        return init_cache(self.config, batch, max_len, dtype)

    def _inputs(
        self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Checked inputs -> (embeddings [b, t, d], cos, sin, mask bool[b, t], causal mask among
        the t tokens bool[b, t, t])."""
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
        x = jnp.take(self.embed[...], tokens, axis=0).astype(jnp.dtype(config.dtype))
        cos, sin = L.rope_cos_sin(positions, jnp.asarray(rope_inverse_frequencies(config)))
        slots = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
        allowed = L.causal_mask(slots, jnp.arange(time, dtype=jnp.int32), attention_mask)
        return x, cos, sin, attention_mask, allowed

    def prefill(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        max_len: int | None = None,
    ) -> tuple[jax.Array, KVCache]:
        """Run t tokens from an empty cache.

        The same values as ``self(tokens, positions, attention_mask=..., cache=
        self.init_cache(b, max_len), return_hidden=True)``, computed without attending to an
        empty cache: the scanned forward returns each layer's keys and values, which become the
        cache (XLA would otherwise constant-fold the attention to the all-masked empty cache at
        compile time, which takes minutes at large shapes).

        Args:
            tokens, positions: int32[b, t]; attention_mask: bool[b, t] (None = all real).
            max_len: static slots of the returned cache (>= t; default t).

        Returns:
            (hidden [b, t, d] final-normed, in the compute dtype; KVCache of `max_len` slots
            holding the t tokens, ``end_index == t``).
        """
        config = self.config
        x, cos, sin, attention_mask, allowed = self._inputs(tokens, positions, attention_mask)
        time = tokens.shape[1]
        max_len = time if max_len is None else max_len
        if max_len < time:
            raise ValueError(f"prefill: max_len = {max_len} < {time} tokens")
        x, (keys, values) = _scan_layers(x, self.layers.arrays(), cos, sin, allowed, config,
                                         collect_kv=True)
        cache = KVCache(keys, values, attention_mask, jnp.asarray(time, jnp.int32)).grown(max_len)
        return L.rms_norm(x, self.final_norm[...], config.rms_norm_eps), cache

    def extend(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        *,
        prefix: KVCache,
        attention_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Run t tokens that follow each row's cached prefix, leaving the cache unwritten.

        The same hidden states as ``self(tokens, positions, attention_mask=..., cache=prefix,
        return_hidden=True)``, without writing the t tokens into the cache (so it needs no free
        slots): the scanned, differentiable forward of a training pass whose rows continue a
        shared prompt (`rar_jax.rl.train_step.token_logprobs`). Layers are rematerialised as
        ``config.remat_policy`` says.

        Args:
            tokens, positions: int32[b, t]; attention_mask: bool[b, t] (None = all real).
            prefix: KVCache of b rows; the t tokens attend to its slots before ``end_index``
                that its ``key_mask`` marks.

        Returns:
            hidden [b, t, d], final-normed, in the compute dtype.
        """
        config = self.config
        x, cos, sin, _, allowed = self._inputs(tokens, positions, attention_mask)
        if prefix.batch != tokens.shape[0]:
            raise ValueError(f"prefix has {prefix.batch} rows but tokens have {tokens.shape[0]}")
        x, _, _ = _scan_layers(
            x, self.layers.arrays(), cos, sin, allowed, config,
            (jnp.stack(prefix.keys), jnp.stack(prefix.values), None,
             _cache_allowed(prefix, tokens.shape[1])),
        )
        return L.rms_norm(x, self.final_norm[...], config.rms_norm_eps)

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        layers: list[dict[str, jax.Array]] | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Run the model.

        Args:
            tokens: int32[b, t].
            positions: int32[b, t] RoPE position of each token (per row; 0 at a row's first real
                token for left padding).
            attention_mask: bool[b, t] True for real tokens among the t inputs (None = all real).
                Padding keys are never attended to; outputs at padding queries are meaningless.
            cache: optional KVCache; the t tokens are written from its `end_index`.
            return_hidden: return the final-normed hidden states instead of logits.
            layers: with a cache, optionally ``self.layers.per_layer(dtype)`` made once by a caller
                that runs the model many times in one program (a decode loop): the layers then
                run unrolled over them instead of scanned.

        Returns:
            (out, cache): out is float32[b, t, vocab] logits, or [b, t, embed] hidden states in the
            compute dtype when `return_hidden`; cache is the updated KVCache (None if none given).
        """
        config = self.config
        x, cos, sin, attention_mask, allowed = self._inputs(tokens, positions, attention_mask)
        batch, time = tokens.shape
        if cache is None:
            x = _scan_layers(x, self.layers.arrays(), cos, sin, allowed, config)
            new_cache = None
        else:
            if cache.batch != batch:
                raise ValueError(f"cache has {cache.batch} rows but tokens have {batch}")
            start = cache.end_index
            cached = (start, _cache_allowed(cache, time))
            if layers is None:
                x, keys, values = _scan_layers(
                    x, self.layers.arrays(), cos, sin, allowed, config,
                    (jnp.stack(cache.keys), jnp.stack(cache.values)) + cached,
                )
                keys, values = tuple(keys), tuple(values)
            else:
                keys, values = [], []
                for layer, layer_keys, layer_values in zip(layers, cache.keys, cache.values):
                    x, (k, v) = L.decoder_layer(
                        x, layer, cos, sin, allowed, config.rms_norm_eps,
                        (layer_keys, layer_values) + cached, config.attention_chunk,
                    )
                    keys.append(k)
                    values.append(v)
            key_mask = L.write_slots(cache.key_mask, attention_mask, start, axis=1)
            new_cache = KVCache(tuple(keys), tuple(values), key_mask, start + time)

        hidden = L.rms_norm(x, self.final_norm[...], config.rms_norm_eps)
        if return_hidden:
            return hidden, new_cache
        return self.logits(hidden), new_cache


def _cache_allowed(cache: KVCache, time: int) -> jax.Array:
    """bool[b, time, s]: the cache slots that `time` new tokens may attend to, those holding a
    real token before the write position (later ones hold nothing or stale tokens)."""
    written = jnp.arange(cache.max_len, dtype=jnp.int32) < cache.end_index[..., None]
    return jnp.broadcast_to((cache.key_mask & written)[:, None, :],
                            (cache.batch, time, cache.max_len))


def _scan_layers(
    x: jax.Array,
    layer_arrays: dict[str, jax.Array],
    cos: jax.Array,
    sin: jax.Array,
    allowed: jax.Array,
    config: ModelConfig,
    cached: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None,
    collect_kv: bool = False,
) -> Any:
    """Scan `decoder_layer` over the stacked layers.

    Args:
        x: [b, t, d].
        layer_arrays: stacked parameters, each [layers, ...].
        cos, sin: float32[b, t, e // 2].
        allowed: bool[b, t, t].
        config: model config (eps, attention chunk, remat policy: every layer body is
            rematerialised by it, which costs nothing where nothing is differentiated).
        cached: optional (keys, values stacked [layers, b, k, s, e], write start or None,
            cache_allowed bool[b, t, s]) (see `decoder_layer`).
        collect_kv: without a cache, also return each layer's keys and values.

    Returns:
        x [b, t, d]; with `cached`, (x, keys, values) with the updated stacked buffers (with a
        None write start, the t new keys and values [layers, b, k, t, e]); with `collect_kv`,
        (x, (keys, values)), each a tuple of per-layer [b, k, t, e] in the compute dtype.
    """
    eps = config.rms_norm_eps
    chunk = config.attention_chunk
    policy = remat_policy(config.remat_policy)
    remat = (lambda body: body) if policy == "none" else functools.partial(
        jax.checkpoint, policy=policy, prevent_cse=False)
    if cached is not None:
        cache_keys, cache_values, start, cache_allowed = cached

        def cached_body(carry: jax.Array, scanned: tuple[dict[str, jax.Array], jax.Array, jax.Array]):
            layer, layer_keys, layer_values = scanned
            out, kv = L.decoder_layer(carry, layer, cos, sin, allowed, eps,
                                      (layer_keys, layer_values, start, cache_allowed), chunk)
            return out, kv

        x, (keys, values) = jax.lax.scan(remat(cached_body), x,
                                         (layer_arrays, cache_keys, cache_values))
        return x, keys, values

    if collect_kv:
        def collecting_body(carry: jax.Array, layer: dict[str, jax.Array]):
            return L.decoder_layer(carry, layer, cos, sin, allowed, eps, query_chunk=chunk)

        x, (keys, values) = jax.lax.scan(remat(collecting_body), x, layer_arrays)
        return x, (tuple(keys), tuple(values))

    def body(carry: jax.Array, layer: dict[str, jax.Array]):
        out, _ = L.decoder_layer(carry, layer, cos, sin, allowed, eps, query_chunk=chunk)
        return out, None

    return jax.lax.scan(remat(body), x, layer_arrays)[0]


def count_parameters(model: Decoder) -> int:
    """Number of scalar parameters held by the model."""
    state = nnx.state(model, nnx.Param)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(state)))
