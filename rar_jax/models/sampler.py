"""KV-cache sampler: jitted prefill and an on-device decode loop with bucketed static shapes.

How a call runs (`Sampler.generate`):

1. The prompts (token ids) are LEFT-padded to a prompt-length bucket and the batch of prompts is
   padded to a batch bucket (`bucket_size`), so every length inside a bucket reuses one compiled
   program. Each row's positions start at 0 at its first real token and the attention mask marks the
   real tokens, so a padded row computes what the row alone would.
2. `prefill` (jitted) runs each prompt ONCE through the model into a KV cache, replicates every
   prompt's cache rows for its ``num_samples`` samples (GRPO's G answers per prompt; rows are
   prompt-major: row ``p * num_samples + s``) and samples the first token of every row.
3. `decode` (jitted) runs a `jax.lax.while_loop` on device: one token per iteration for all rows,
   until every row has finished or the step limit is reached; no host round trip per token. The
   cache holds only the slots of the current attention window (a multiple of
   ``attention_window_multiple`` covering the tokens so far); when generation passes its end, the
   host grows the cache and the next decode call (one compile per window) continues.
4. Stop strings are checked on the host between chunks of ``stop_check_interval`` decode steps (only
   when stop strings are given; otherwise the loop runs to the end in one call). A row whose decoded
   text contains a stop string is marked finished on device, so it no longer grows, and its tokens,
   log-probs and length are truncated right after the token that completed the stop string.

Sampling (`sample_next_tokens`): greedy (argmax of the logits), or a draw from
``softmax(logits / temperature)`` optionally truncated to the ``top_k`` most likely tokens and then to
the nucleus of mass ``top_p`` (the smallest set of the most likely remaining tokens whose
renormalised probability reaches ``top_p``; the most likely token is always kept).

Log-probs: the returned ``logprobs[r, t]`` is ``log_softmax(logits / temperature)[token]``, the log-prob
of the sampled token under the tempered, UNTRUNCATED distribution (top-k / top-p are ignored for the
log-prob, also under greedy decoding). This is what ``rar_jax.rl.logprobs.token_logprobs(logits,
targets, temperature=T)`` recomputes in the trainer, so the sampler's values are directly usable as
GRPO's old log-probs and comparable with recomputed ones.

Output conventions (`SampleOutput`): ``tokens[r, :lengths[r]]`` are the generated tokens; a row that
ended on a stop id (EOS) includes that stop token in its length; a row stopped by a stop string
includes the token that completed the string. Past ``lengths[r]`` tokens are the pad id and log-probs
0. ``texts[r]`` is the decoded answer without the final stop token, without special tokens and cut
right before the stop string. ``finish_reasons[r]`` is "eos", "stop" (stop string) or "length".

Weights are arguments of the jitted functions (`nnx.split` state), so a trainer can pass new
parameters every step without recompiling (`Sampler.set_params` or ``generate(..., params=...)``).
With a mesh, rows are sharded over ("data", "fsdp") and the cache by
`rar_jax.parallel.cache_shardings`; parameters keep the shardings they were placed with.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models import layers as L
from rar_jax.models.batching import bucket_size, left_pad
from rar_jax.models.config import rope_inverse_frequencies
from rar_jax.models.decoder import Decoder

logger = logging.getLogger(__name__)

FINISH_EOS = "eos"
FINISH_STOP_STRING = "stop"
FINISH_LENGTH = "length"

DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_ATTENTION_WINDOW_MULTIPLE = 256


# ------------------------------------------------------------------------------- options / results
@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        max_new_tokens: most tokens generated per row (a static shape: changing it recompiles).
        temperature: logits are divided by it before sampling and for the returned log-probs (> 0).
        top_k: keep only the k most likely tokens (0 = off). Static: each value compiles once.
        top_p: keep the smallest set of most likely tokens with this much mass (1.0 = off).
        greedy: take the argmax instead of sampling (temperature / top-k / top-p then only affect the
            returned log-probs, which use the temperature).
        num_samples: rows sampled per prompt; each prompt is prefilled once.
        stop_strings: generation of a row ends when its decoded text contains one of these.
        stop_check_interval: decode steps between host checks for stop strings.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    num_samples: int = 1
    stop_strings: tuple[str, ...] = ()
    stop_check_interval: int = 32

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise ValueError(
                f"SamplingParams.{field} = {getattr(self, field)!r}; expected {expected}"
            )

        if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            fail("max_new_tokens", "an integer >= 1")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            fail("temperature", "a finite float > 0 (use greedy=True for argmax decoding)")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            fail("top_k", "an integer >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "a float in (0, 1] (1 = off)")
        if not isinstance(self.num_samples, (int, np.integer)) or self.num_samples < 1:
            fail("num_samples", "an integer >= 1")
        if isinstance(self.stop_strings, str) or any(
            not isinstance(s, str) or not s for s in self.stop_strings
        ):
            fail("stop_strings", "a tuple of non-empty strings")
        if not isinstance(self.stop_check_interval, (int, np.integer)) or self.stop_check_interval < 1:
            fail("stop_check_interval", "an integer >= 1")


class GenerationCancelled(Exception):
    """`Sampler.generate` stopped because its ``cancelled()`` callback said so.

    Attributes:
        steps: decode steps run before it stopped.
    """

    def __init__(self, steps: int):
        super().__init__(f"generation cancelled after {steps} decode steps")
        self.steps = steps


@dataclasses.dataclass
class SampleOutput:
    """Generated answers, ``n = num_prompts * num_samples`` rows, prompt-major.

    Attributes:
        tokens: int32[n, max_new_tokens] generated ids, the pad id after each row's length.
        lengths: int32[n] tokens generated per row (a final stop token included).
        logprobs: float32[n, max_new_tokens] log-prob of each generated token under the tempered,
            untruncated distribution ``log_softmax(logits / temperature)``; 0 after the length.
        texts: the decoded answers (see the module docstring); empty strings without a tokenizer.
        finish_reasons: "eos", "stop" or "length" per row.
        prompt_indices: int32[n] index of each row's prompt.
        num_decode_steps: decode steps the device ran (<= max_new_tokens - 1); early exits show here.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    logprobs: np.ndarray
    texts: list[str]
    finish_reasons: list[str]
    prompt_indices: np.ndarray
    num_decode_steps: int

    @classmethod
    def concatenate(cls, outputs: Sequence["SampleOutput"], prompt_offsets: Sequence[int]
                    ) -> "SampleOutput":
        """The outputs of consecutive calls (the prompts of call i start at ``prompt_offsets[i]``)
        as one output, as if the prompts had been generated in one call."""
        return cls(
            tokens=np.concatenate([o.tokens for o in outputs]),
            lengths=np.concatenate([o.lengths for o in outputs]),
            logprobs=np.concatenate([o.logprobs for o in outputs]),
            texts=[text for o in outputs for text in o.texts],
            finish_reasons=[reason for o in outputs for reason in o.finish_reasons],
            prompt_indices=np.concatenate(
                [o.prompt_indices + offset for o, offset in zip(outputs, prompt_offsets)]),
            num_decode_steps=max(o.num_decode_steps for o in outputs),
        )


class DecodeCache(NamedTuple):
    """The decode loop's KV cache: one array per layer, the slot axis next to head_dim.

    Each layer has its own buffer (not one stacked [layers, ...] array) and keys are stored
    [b, kv_heads, s, head_dim], so a decode step reads each layer's keys and values in place: on CPU,
    slicing a layer out of a stacked array inside the loop is a copy per layer per step. The slot
    axis is as long as the current attention window (see `Sampler.attention_window`): `_decode`
    grows it when the window grows, so attention always reads the whole buffer and never a slice.

    Attributes:
        keys: per layer, [b, kv_heads, s, head_dim].
        values: per layer, [b, kv_heads, s, head_dim].
        key_mask: bool[b, s] True for slots holding a real token.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    key_mask: jax.Array

    @property
    def num_slots(self) -> int:
        """Slots per row (s)."""
        return self.key_mask.shape[1]

    def grown(self, slots: int) -> "DecodeCache":
        """This cache with `slots` slots per row (>= the current number); new slots are empty."""
        extra = slots - self.num_slots
        if extra < 0:
            raise ValueError(f"cannot shrink a decode cache of {self.num_slots} slots to {slots}")
        if extra == 0:
            return self
        pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, extra), (0, 0)))  # noqa: E731
        return DecodeCache(
            keys=tuple(pad(a) for a in self.keys),
            values=tuple(pad(a) for a in self.values),
            key_mask=jnp.pad(self.key_mask, ((0, 0), (0, extra))),
        )


class DecodeState(NamedTuple):
    """On-device state of the decode loop (a pytree); n rows, m = max_new_tokens.

    Attributes:
        cache: the KV cache of all rows (`DecodeCache` layout).
        last_tokens: int32[n] the token each row feeds next.
        next_positions: int32[n] its RoPE position.
        tokens: int32[n, m] generated tokens so far (pad after a row's length).
        logprobs: float32[n, m] their tempered log-probs (0 after a row's length).
        done: bool[n] rows that finished (stop id, stop string, or padding rows).
        lengths: int32[n] tokens generated per row.
        step: int32[] tokens generated so far (column of the next write).
        key: PRNG key; step t draws with ``fold_in(key, t)``.
    """

    cache: DecodeCache
    last_tokens: jax.Array
    next_positions: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    done: jax.Array
    lengths: jax.Array
    step: jax.Array
    key: jax.Array


# ------------------------------------------------------------------------------- pure helpers
def sample_next_tokens(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array | float,
    top_p: jax.Array | float,
    *,
    top_k: int = 0,
    use_top_p: bool = False,
    greedy: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row and its tempered log-prob.

    Args:
        logits: float[b, v] next-token logits.
        key: PRNG key for the draw (unused when greedy).
        temperature: scalar > 0; the sampling distribution is ``softmax(logits / temperature)``.
        top_p: scalar in (0, 1]; nucleus mass (used only when `use_top_p`).
        top_k: static; keep the k most likely tokens (0 or >= v: off).
        use_top_p: static; apply the nucleus truncation (after top-k, on the renormalised mass).
        greedy: static; argmax instead of a draw.

    Returns:
        tokens int32[b]; logprobs float32[b] = ``log_softmax(logits / temperature)[token]`` (the
        tempered distribution before any top-k / top-p truncation).
    """
    scaled = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    log_probs = jax.nn.log_softmax(scaled, axis=-1)
    vocab = scaled.shape[-1]
    if greedy:
        tokens = jnp.argmax(scaled, axis=-1).astype(jnp.int32)
    elif (0 < top_k < vocab) or use_top_p:
        k = top_k if 0 < top_k < vocab else vocab
        values, indices = jax.lax.top_k(scaled, k)  # descending
        if use_top_p:
            probs = jax.nn.softmax(values, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs
            keep = mass_before < jnp.asarray(top_p, jnp.float32)
            keep = keep.at[:, 0].set(True)
            values = jnp.where(keep, values, -jnp.inf)
        choice = jax.random.categorical(key, values, axis=-1)
        tokens = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    else:
        tokens = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    token_log_probs = jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]
    return tokens, token_log_probs


def find_stop_string(text: str, stop_strings: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in `text`, or -1."""
    hits = [index for index in (text.find(s) for s in stop_strings) if index >= 0]
    return min(hits) if hits else -1


# ------------------------------------------------------------------------------- jitted steps
def _constrain(tree: Any, shardings: Any) -> Any:
    """`with_sharding_constraint` when shardings are given (None: unsharded)."""
    if shardings is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, shardings)


def last_position_logits(model: Decoder, hidden: jax.Array) -> jax.Array:
    """Logits of the last position only (the prompt's other positions need none).

    A tied embedding [vocab, embed] is contracted as it is stored (``bd,vd->bv``) rather than through
    ``Decoder.lm_head_weight()`` (its transpose), which XLA on CPU materialises: a copy of the whole
    embedding per decode step.

    Args:
        model: the decoder (for its LM head).
        hidden: [b, t, d] final-normed hidden states (``model(..., return_hidden=True)``).

    Returns:
        float32[b, vocab].
    """
    dtype = jnp.dtype(model.config.dtype)
    last = hidden[:, -1]
    if model.lm_head is None:
        return jnp.einsum(
            "bd,vd->bv", last, model.embed[...].astype(dtype), preferred_element_type=jnp.float32
        )
    return jnp.einsum(
        "bd,dv->bv", last, model.lm_head[...].astype(dtype), preferred_element_type=jnp.float32
    )


def decode_attention(
    q: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    allowed: jax.Array,
    new_key: jax.Array,
    new_value: jax.Array,
) -> jax.Array:
    """Grouped-query attention of one new token per row over the cache and its own key/value.

    Same math as `rar_jax.models.layers.grouped_query_attention` with t = 1 (query head j uses
    key/value head j // groups), on the `DecodeCache` layout. The new token's key/value are passed
    apart from the cache (which does not hold them yet) so that the caller's write of them into the
    cache is the cache's only use after this read: XLA then updates the cache in place instead of
    copying each layer's buffer every step.

    Args:
        q: [b, h, e] queries (RoPE applied).
        keys: [b, k, s, e] cached keys.
        values: [b, k, s, e] cached values.
        allowed: bool[b, s] cached keys each row may attend to.
        new_key: [b, k, e] the new token's key (RoPE applied); always attended to.
        new_value: [b, k, e] its value.

    Returns:
        [b, h, e] in q.dtype; scores and softmax in float32.
    """
    b, h, e = q.shape
    num_kv = keys.shape[1]
    q = q.reshape(b, num_kv, h // num_kv, e)
    scale = e ** -0.5
    scores = jnp.einsum("bkge,bkse->bkgs", q, keys, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(allowed[:, None, None, :], scores, L.MASKED_SCORE)
    own = jnp.einsum("bkge,bke->bkg", q, new_key, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.concatenate([scores, own[..., None]], axis=-1), axis=-1)
    out = jnp.einsum("bkgs,bkse->bkge", probs[..., :-1].astype(values.dtype), values)
    out = out + probs[..., -1:].astype(values.dtype) * new_value[:, :, None, :]
    return out.reshape(b, h, e)


class DecodeWeights(NamedTuple):
    """The weights in the decode step's layout (`decode_weights`).

    Attributes:
        layers: per layer, q [h*e, d], k and v [k*e, d], o [d, h*e], gate and up [f, d], down
            [d, f] in the compute dtype; attn_norm, mlp_norm [d] and the optional q/k/v biases
            and q/k norms as stored (see `rar_jax.models.layers.qkv_bias_norm_rope`).
        lm_head: [vocab, d] in the compute dtype (the embedding itself when tied).
    """

    layers: list[dict[str, jax.Array]]
    lm_head: jax.Array


def decode_weights(model: Decoder) -> DecodeWeights:
    """The model's weights in the decode step's layout: 2-D matrices [out, in], one set per layer.

    Made once per decode call, outside the decode loop, for two reasons (XLA on CPU; the figures
    are in benchmarks/README.md): slicing a layer out of the stacked [layers, ...] arrays inside
    the loop (what `jax.lax.scan` does) copies that layer's weights every step, as much memory
    traffic as the matmuls themselves; and a matrix product contracting over the weight's
    contiguous last axis is faster at the few rows of a decode step. The price is a transient copy
    of the layer weights (and of an untied LM head) during a decode call, sharded like the weights.
    """
    config = model.config
    dtype = jnp.dtype(config.dtype)
    d, h, kv, e = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    arrays = model.layers.arrays()
    matrices = {
        "q": lambda a: a["q_proj"].reshape(d, h * e).T,
        "k": lambda a: a["k_proj"].reshape(d, kv * e).T,
        "v": lambda a: a["v_proj"].reshape(d, kv * e).T,
        "o": lambda a: a["o_proj"].reshape(h * e, d).T,
        "gate": lambda a: a["gate_proj"].T,
        "up": lambda a: a["up_proj"].T,
        "down": lambda a: a["down_proj"].T,
    }
    kept = ("attn_norm", "mlp_norm", "q_bias", "k_bias", "v_bias", "q_norm", "k_norm")
    layers = []
    for index in range(config.num_layers):
        layer = {name: value[index] for name, value in arrays.items()}
        weights = {name: make(layer).astype(dtype) for name, make in matrices.items()}
        weights.update({name: layer[name] for name in kept if name in layer})
        layers.append(weights)
    head = model.embed[...] if model.lm_head is None else model.lm_head[...].T
    return DecodeWeights(layers, head.astype(dtype))


def _linear(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``x @ weight.T``: x [b, in], weight [out, in] -> [b, out]."""
    return jnp.einsum("bi,oi->bo", x, weight)


def decode_step(
    model: Decoder,
    weights: DecodeWeights,
    tokens: jax.Array,
    positions: jax.Array,
    cache: DecodeCache,
    slot: jax.Array,
) -> tuple[jax.Array, DecodeCache]:
    """One decode step of all rows, writing every row's new key/value at the SAME cache slot.

    The same math as ``Decoder.__call__`` with a cache (norms, RoPE and the q/k/v epilogue from
    `rar_jax.models.layers`), specialised for the sampler's left-padded layout in which every row
    writes its t-th generated token at one shared slot: each layer's buffer is updated in place with
    `jax.lax.dynamic_update_slice` (no per-row scatter, no copy of the cache per step) and the layers
    are unrolled over the `decode_weights` layout.

    Args:
        model: the decoder (embedding, final norm and config).
        weights: `decode_weights(model)`.
        tokens: int32[b] the token each row feeds.
        positions: int32[b] its RoPE position.
        cache: DecodeCache; keys/values per layer [b, kv_heads, s, head_dim], key_mask bool[b, s].
        slot: int32[] the slot written (< s).

    Returns:
        (logits float32[b, vocab], the updated cache).
    """
    config = model.config
    dtype = jnp.dtype(config.dtype)
    batch = tokens.shape[0]
    eps = float(config.rms_norm_eps)
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    x = jnp.take(model.embed[...], tokens, axis=0).astype(dtype)  # [b, d]
    cos, sin = L.rope_cos_sin(positions[:, None], jnp.asarray(rope_inverse_frequencies(config)))
    new_keys, new_values = [], []
    for layer, keys, values in zip(weights.layers, cache.keys, cache.values):
        normed = L.rms_norm(x, layer["attn_norm"], eps)
        q, k, v = L.qkv_bias_norm_rope(
            _linear(normed, layer["q"]).reshape(batch, 1, heads, head_dim),
            _linear(normed, layer["k"]).reshape(batch, 1, kv_heads, head_dim),
            _linear(normed, layer["v"]).reshape(batch, 1, kv_heads, head_dim),
            layer, cos, sin, eps,
        )
        k = k[:, 0].astype(keys.dtype)  # [b, kv_heads, e], rounded as the cache stores it
        v = v[:, 0].astype(values.dtype)
        attn = decode_attention(
            q[:, 0], keys.astype(dtype), values.astype(dtype), cache.key_mask,
            k.astype(dtype), v.astype(dtype),
        )
        new_keys.append(jax.lax.dynamic_update_slice(keys, k[:, :, None], (0, 0, slot, 0)))
        new_values.append(jax.lax.dynamic_update_slice(values, v[:, :, None], (0, 0, slot, 0)))
        x = x + _linear(attn.reshape(batch, heads * head_dim), layer["o"])
        normed = L.rms_norm(x, layer["mlp_norm"], eps)
        x = x + _linear(jax.nn.silu(_linear(normed, layer["gate"])) * _linear(normed, layer["up"]),
                        layer["down"])
    hidden = L.rms_norm(x, model.final_norm[...], eps)
    logits = jnp.einsum("bd,vd->bv", hidden, weights.lm_head, preferred_element_type=jnp.float32)
    key_mask = jax.lax.dynamic_update_slice(cache.key_mask, jnp.ones((batch, 1), bool), (0, slot))
    return logits, DecodeCache(tuple(new_keys), tuple(new_values), key_mask)


def _prefill(
    graphdef: Any,
    params: Any,
    tokens: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    row_active: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    num_samples: int,
    max_new_tokens: int,
    cache_slots: int,
    top_k: int,
    use_top_p: bool,
    greedy: bool,
    stop_ids: tuple[int, ...],
    pad_id: int,
    shardings: Any,
) -> DecodeState:
    """Prompt forward into a fresh cache, cache rows replicated per sample, first token sampled.

    Args:
        graphdef, params: the `nnx.split` model.
        tokens, positions: int32[p, t] left-padded prompts; mask: bool[p, t] real tokens.
        row_active: bool[p * num_samples]; False for filler rows (start finished).
        key: PRNG key of the call.
        temperature, top_p: float32[] sampling parameters (traced: changing them never recompiles).
        num_samples, max_new_tokens: static settings (see `SamplingParams`).
        cache_slots: static slots of the returned cache (the first decode call's window).
        top_k .. pad_id: static settings (see `SamplingParams`).
        shardings: None, or a `_StaticShardings` of the rows and cache.

    Returns:
        The DecodeState after one generated token per row.
    """
    model: Decoder = nnx.merge(graphdef, params)
    prompts, prompt_len = tokens.shape
    cache = model.init_cache(prompts, prompt_len)
    hidden, cache = model(tokens, positions, attention_mask=mask, cache=cache, return_hidden=True)
    last_logits = last_position_logits(model, hidden)
    prompt_lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)
    per_layer = lambda a: tuple(a[i].transpose(0, 2, 1, 3) for i in range(a.shape[0]))  # noqa: E731
    cache = DecodeCache(
        keys=per_layer(cache.keys), values=per_layer(cache.values), key_mask=cache.key_mask
    ).grown(cache_slots)
    if num_samples > 1:
        cache = jax.tree.map(lambda a: jnp.repeat(a, num_samples, axis=0), cache)
        last_logits = jnp.repeat(last_logits, num_samples, axis=0)
        prompt_lengths = jnp.repeat(prompt_lengths, num_samples)
    rows = prompts * num_samples
    cache = _constrain(cache, shardings and shardings.cache)
    first, first_logprob = sample_next_tokens(
        last_logits, jax.random.fold_in(key, 0), temperature, top_p,
        top_k=top_k, use_top_p=use_top_p, greedy=greedy,
    )
    done = ~row_active
    first = jnp.where(done, pad_id, first)
    first_logprob = jnp.where(done, 0.0, first_logprob)
    lengths = jnp.where(done, 0, 1).astype(jnp.int32)
    done = done | jnp.isin(first, jnp.asarray(stop_ids, jnp.int32))
    out_tokens = jnp.full((rows, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    out_logprobs = jnp.zeros((rows, max_new_tokens), jnp.float32).at[:, 0].set(first_logprob)
    row_sharding = shardings and shardings.rows
    row2d_sharding = shardings and shardings.rows2d
    return DecodeState(
        cache=cache,
        last_tokens=_constrain(first, row_sharding),
        next_positions=_constrain(prompt_lengths, row_sharding),
        tokens=_constrain(out_tokens, row2d_sharding),
        logprobs=_constrain(out_logprobs, row2d_sharding),
        done=_constrain(done, row_sharding),
        lengths=_constrain(lengths, row_sharding),
        step=jnp.asarray(1, jnp.int32),
        key=key,
    )


def _decode(
    graphdef: Any,
    params: Any,
    state: DecodeState,
    stop_step: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    prompt_len: int,
    window: int,
    top_k: int,
    use_top_p: bool,
    greedy: bool,
    stop_ids: tuple[int, ...],
    pad_id: int,
    shardings: Any,
) -> DecodeState:
    """Decode on device (`jax.lax.while_loop`) until every row is done or ``step == stop_step``.

    The layer weights are laid out once per call, outside the loop (see `decode_weights`).

    Args:
        graphdef, params: the `nnx.split` model.
        state: the loop state (see `DecodeState`).
        stop_step: int32[]; run while ``step < stop_step``; the caller keeps every slot written,
            ``prompt_len + step - 1``, below `window`.
        temperature, top_p: float32[] sampling parameters.
        prompt_len: static padded prompt length (slot of the first generated token).
        window: static number of cache slots (the cache must have exactly this many).
        top_k .. shardings: as in `_prefill`.

    Returns:
        The updated DecodeState.
    """
    model: Decoder = nnx.merge(graphdef, params)
    stop_array = jnp.asarray(stop_ids, jnp.int32)
    if state.cache.num_slots != window:
        raise ValueError(f"decode: the cache has {state.cache.num_slots} slots, the window {window}")
    weights = decode_weights(model)

    def cond(s: DecodeState) -> jax.Array:
        return (s.step < stop_step) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
        slot = prompt_len + s.step - 1
        logits, cache = decode_step(model, weights, s.last_tokens, s.next_positions, s.cache, slot)
        cache = _constrain(cache, shardings and shardings.cache)
        tokens, logprobs = sample_next_tokens(
            logits, jax.random.fold_in(s.key, s.step), temperature, top_p,
            top_k=top_k, use_top_p=use_top_p, greedy=greedy,
        )
        tokens = jnp.where(s.done, pad_id, tokens)
        logprobs = jnp.where(s.done, 0.0, logprobs)
        column = (0, s.step)
        return DecodeState(
            cache=cache,
            last_tokens=tokens,
            next_positions=s.next_positions + 1,
            tokens=jax.lax.dynamic_update_slice(s.tokens, tokens[:, None], column),
            logprobs=jax.lax.dynamic_update_slice(s.logprobs, logprobs[:, None], column),
            done=s.done | jnp.isin(tokens, stop_array),
            lengths=s.lengths + (~s.done).astype(jnp.int32),
            step=s.step + 1,
            key=s.key,
        )

    return jax.lax.while_loop(cond, body, state)


def _grow_cache(cache: DecodeCache, *, slots: int, shardings: Any) -> DecodeCache:
    """`DecodeCache.grown` with the cache's shardings kept (the jitted step between windows)."""
    return _constrain(cache.grown(slots), shardings and shardings.cache)


def decode_compiler_options(mesh: jax.sharding.Mesh | None) -> dict[str, Any]:
    """XLA options for the decode loop on the platform it runs on.

    On CPU, XLA's default copy insertion copies every layer's key and value buffers each decode
    step (the loop reads a buffer, then updates it in place); its region analysis proves the read
    happens first and removes those copies (counted in benchmarks/README.md).
    GPU and TPU compilers do not copy there, so they get no options.
    """
    devices = mesh.devices.flat if mesh is not None else jax.devices()
    if next(iter(devices)).platform == "cpu":
        return {"xla_cpu_copy_insertion_use_region_analysis": True}
    return {}


class _StaticShardings(NamedTuple):
    """Shardings of one call's arrays; hashable, so it can be a static jit argument.

    Attributes:
        rows: NamedSharding of [n] arrays.
        rows2d: NamedSharding of [n, max_new_tokens] arrays.
        cache: DecodeCache of NamedShardings.
    """

    rows: Any
    rows2d: Any
    cache: Any


# ------------------------------------------------------------------------------- orchestration
class Sampler:
    """Generates answers with a `Decoder` (see the module docstring for the algorithm).

    Args:
        model: the decoder; its current parameters are the default weights.
        tokenizer: optional rar_jax.models.tokenizer.Tokenizer for stop ids, pad id, texts and stop
            strings; without one, pass `stop_ids` and no texts are produced.
        mesh: optional mesh; rows are sharded over ("data", "fsdp").
        stop_ids: ids that end a row (default: the tokenizer's stop ids).
        pad_id: id for padding (default: the tokenizer's pad id, else 0).
        prompt_buckets: prompt lengths are padded up to one of these (see `bucket_size`).
        batch_buckets: numbers of prompts are padded up to one of these (then to a multiple of the
            mesh's data-parallel size).
        attention_window_multiple: decoding attends only to the cache slots filled so far, rounded
            up to a multiple of this (one compiled decode loop per window size, at most
            ``(prompt + max_new_tokens) / multiple`` of them); 0 always attends to the whole cache.
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer: Any = None,
        *,
        mesh: jax.sharding.Mesh | None = None,
        stop_ids: Sequence[int] | None = None,
        pad_id: int | None = None,
        prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
        batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
        attention_window_multiple: int = DEFAULT_ATTENTION_WINDOW_MULTIPLE,
    ):
        self.graphdef, self.params = nnx.split(model)
        self.config = model.config
        self.tokenizer = tokenizer
        self.mesh = mesh
        if stop_ids is None:
            stop_ids = tokenizer.stop_ids if tokenizer is not None else ()
        self.stop_ids = tuple(int(i) for i in stop_ids)
        if pad_id is None:
            pad_id = tokenizer.pad_id if tokenizer is not None else 0
        self.pad_id = int(pad_id)
        bucket_size(1, prompt_buckets)  # validates
        bucket_size(1, batch_buckets)
        self.prompt_buckets = tuple(int(b) for b in prompt_buckets)
        self.batch_buckets = tuple(int(b) for b in batch_buckets)
        if attention_window_multiple < 0:
            raise ValueError(
                f"attention_window_multiple = {attention_window_multiple}; expected >= 0 (0 = off)"
            )
        self.attention_window_multiple = int(attention_window_multiple)
        self.data_parallel_size = 1
        if mesh is not None:
            self.data_parallel_size = int(mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1))
        self._traces = {"prefill": 0, "decode": 0}
        static = ("graphdef", "top_k", "use_top_p", "greedy", "stop_ids", "pad_id", "shardings")
        self.prefill_program = jax.jit(
            self._counted("prefill", _prefill),
            static_argnames=static + ("num_samples", "max_new_tokens", "cache_slots"),
        )
        self._grow_cache = jax.jit(_grow_cache, static_argnames=("slots", "shardings"))
        self.decode_program = jax.jit(
            self._counted("decode", _decode),
            static_argnames=static + ("prompt_len", "window"),
            donate_argnames=("state",),
            compiler_options=decode_compiler_options(mesh),
        )

    def _counted(self, name: str, function: Any) -> Any:
        """`function` wrapped to count its traces (= compilations) for this sampler."""

        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            self._traces[name] += 1
            return function(*args, **kwargs)

        return traced

    # ---------------------------------------------------------------- weights
    def set_params(self, params: Any) -> None:
        """Use new weights (an `nnx.State` like ``nnx.split(model)[1]``, or a Decoder) from now on.

        The jitted functions take the weights as arguments, so this never recompiles as long as the
        shapes, dtypes and shardings are unchanged.
        """
        if isinstance(params, nnx.Module):
            params = nnx.split(params)[1]
        self.params = params

    def compile_counts(self) -> dict[str, int]:
        """How many times each jitted function was traced and compiled by this sampler."""
        return dict(self._traces)

    # ---------------------------------------------------------------- placement
    def call_shardings(self, rows: int, max_new_tokens: int) -> _StaticShardings | None:
        """Shardings of a call's rows and decode cache (batch over ("data", "fsdp"), kv heads
        over "tensor", by `rar_jax.parallel` rules), or None without a mesh."""
        if self.mesh is None:
            return None
        from jax.sharding import NamedSharding

        from rar_jax.parallel.sharding import logical_to_mesh_spec

        config = self.config
        kv_shape = (rows, config.num_kv_heads, 1, config.head_dim)

        def named(axes: tuple[str | None, ...], shape: tuple[int, ...]) -> NamedSharding:
            return NamedSharding(self.mesh, logical_to_mesh_spec(axes, shape, self.mesh))

        kv = (named(("batch", "kv_heads", None, "head_dim"), kv_shape),) * config.num_layers
        return _StaticShardings(
            rows=named(("batch",), (rows,)),
            rows2d=named(("batch", None), (rows, max_new_tokens)),
            cache=DecodeCache(keys=kv, values=kv, key_mask=named(("batch", None), (rows, 1))),
        )

    def _put_rows(self, array: np.ndarray) -> jax.Array:
        """Place a [rows, ...] host array, sharded over the batch axes when there is a mesh."""
        if self.mesh is None:
            return jnp.asarray(array)
        from jax.sharding import NamedSharding

        from rar_jax.parallel.sharding import logical_to_mesh_spec

        spec = logical_to_mesh_spec(("batch",) + (None,) * (array.ndim - 1), array.shape, self.mesh)
        return jax.device_put(array, NamedSharding(self.mesh, spec))

    def attention_window(self, prompt_len: int, step: int, max_new_tokens: int) -> int:
        """The static attention window of decode steps starting at `step` (>= the slot written,
        ``prompt_len + step - 1``, plus one), or the whole cache."""
        cache_len = prompt_len + max_new_tokens
        multiple = self.attention_window_multiple
        if multiple == 0:
            return cache_len
        return min(cache_len, -(-(prompt_len + step) // multiple) * multiple)

    # ---------------------------------------------------------------- generation
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        key: jax.Array,
        *,
        params: Any = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> SampleOutput:
        """Generate ``sampling.num_samples`` answers for every prompt.

        Args:
            prompts: token id lists (already chat-formatted), each non-empty.
            sampling: the sampling settings.
            key: PRNG key; the same key, prompts and settings give the same output.
            params: optional weights for this call (default: the current ones, see `set_params`).
            cancelled: asked on the host between chunks of ``sampling.stop_check_interval``
                decode steps; True stops the generation (e.g. the judge server's client hung up).

        Returns:
            SampleOutput with ``len(prompts) * num_samples`` rows, prompt-major.

        Raises:
            GenerationCancelled: when ``cancelled()`` said so; it holds the decode steps run.
        """
        if not prompts:
            raise ValueError("generate: no prompts given")
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"generate: prompts[{index}] is empty; expected at least one token id")
        if sampling.stop_strings and self.tokenizer is None:
            raise ValueError("generate: stop_strings need a tokenizer to decode the answers")
        params = self.params if params is None else params
        if isinstance(params, nnx.Module):
            params = nnx.split(params)[1]
        num_prompts = len(prompts)
        prompt_len = bucket_size(max(len(p) for p in prompts), self.prompt_buckets)
        batch = bucket_size(num_prompts, self.batch_buckets, self.data_parallel_size)
        samples = sampling.num_samples
        rows = batch * samples
        max_new = int(sampling.max_new_tokens)
        tokens, positions, mask = left_pad(prompts, prompt_len, batch, self.pad_id)
        row_active = np.repeat(np.arange(batch) < num_prompts, samples)
        static = dict(
            top_k=int(sampling.top_k), use_top_p=sampling.top_p < 1.0, greedy=bool(sampling.greedy),
            stop_ids=self.stop_ids, pad_id=self.pad_id,
            shardings=self.call_shardings(rows, max_new),
        )
        temperature = jnp.asarray(sampling.temperature, jnp.float32)
        top_p = jnp.asarray(sampling.top_p, jnp.float32)
        state = self.prefill_program(
            self.graphdef, params, self._put_rows(tokens), self._put_rows(positions),
            self._put_rows(mask), self._put_rows(row_active), key, temperature, top_p,
            num_samples=samples, max_new_tokens=max_new,
            cache_slots=self.attention_window(prompt_len, 1, max_new), **static,
        )
        stop_rows: dict[int, tuple[int, str]] = {}  # row -> (truncated length, text)
        checked: set[int] = set()
        step, next_check = 1, 1 + sampling.stop_check_interval
        all_done = False
        while True:
            if step < max_new and not all_done:
                window = self.attention_window(prompt_len, step, max_new)
                stop_step = min(max_new, window - prompt_len + 1)
                if sampling.stop_strings or cancelled is not None:
                    stop_step = min(stop_step, next_check)
                if state.cache.num_slots < window:
                    state = state._replace(cache=self._grow_cache(
                        state.cache, slots=window, shardings=static["shardings"]
                    ))
                state = self.decode_program(
                    self.graphdef, params, state, jnp.asarray(stop_step, jnp.int32), temperature,
                    top_p, prompt_len=prompt_len, window=window, **static,
                )
                step = int(state.step)
                all_done = bool(jnp.all(state.done))
            finished = step >= max_new or all_done
            if (sampling.stop_strings or cancelled is not None) and (step >= next_check or finished):
                next_check = step + sampling.stop_check_interval
                if cancelled is not None and not finished and cancelled():
                    raise GenerationCancelled(step)
                if sampling.stop_strings:
                    host_done = np.asarray(state.done)
                    newly_stopped = self._check_stop_strings(
                        np.asarray(state.tokens), np.asarray(state.lengths), host_done,
                        row_active, sampling.stop_strings, stop_rows, checked,
                    )
                    if newly_stopped.any():
                        host_done = host_done | newly_stopped
                        all_done = bool(np.all(host_done))
                        state = state._replace(done=self._put_rows(host_done))
                    finished = step >= max_new or all_done
            if finished:
                break
        return self._finish(state, num_prompts * samples, samples, stop_rows)

    def _check_stop_strings(
        self,
        tokens: np.ndarray,
        lengths: np.ndarray,
        done: np.ndarray,
        row_active: np.ndarray,
        stop_strings: Sequence[str],
        stop_rows: dict[int, tuple[int, str]],
        checked: set[int],
    ) -> np.ndarray:
        """Find rows whose text now contains a stop string and record their truncation.

        Args:
            tokens: int32[n, m], lengths: int32[n], done: bool[n] the host copy of the state.
            row_active: bool[n] real (non-filler) rows.
            stop_strings: the strings.
            stop_rows: row -> (length, text) of rows stopped so far; updated.
            checked: rows that ended on a stop id without a stop string (final); updated.

        Returns:
            bool[n] rows newly stopped by a stop string in this check.
        """
        newly = np.zeros(len(lengths), bool)
        for row in np.flatnonzero(row_active):
            row = int(row)
            if row in stop_rows or row in checked:
                continue
            length = int(lengths[row])
            text = self.tokenizer.decode(self._answer_ids(tokens[row, :length]), skip_special_tokens=True)
            if find_stop_string(text, stop_strings) < 0:
                if done[row]:
                    checked.add(row)
                continue
            for end in range(1, length + 1):  # the shortest prefix whose text has a stop string
                prefix = self.tokenizer.decode(
                    self._answer_ids(tokens[row, :end]), skip_special_tokens=True
                )
                cut = find_stop_string(prefix, stop_strings)
                if cut >= 0:
                    stop_rows[row] = (end, prefix[:cut])
                    break
            newly[row] = True
        return newly

    def _answer_ids(self, ids: np.ndarray) -> list[int]:
        """Ids to decode for a row's text: without a final stop id."""
        ids = [int(i) for i in ids]
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        return ids

    def _finish(
        self, state: DecodeState, rows: int, samples: int, stop_rows: dict[int, tuple[int, str]]
    ) -> SampleOutput:
        """Fetch the device state, apply stop-string truncation and decode the texts."""
        tokens = np.array(state.tokens)[:rows]
        logprobs = np.array(state.logprobs)[:rows]
        lengths = np.array(state.lengths)[:rows]
        max_new = tokens.shape[1]
        reasons, texts = [], []
        for row in range(rows):
            text = None
            if row in stop_rows:
                length, text = stop_rows[row]
                lengths[row] = length
                reasons.append(FINISH_STOP_STRING)
            else:
                length = int(lengths[row])
                ended_on_stop_id = length > 0 and int(tokens[row, length - 1]) in self.stop_ids
                if not ended_on_stop_id and length < max_new:
                    raise RuntimeError(
                        f"sampler: row {row} stopped after {length} < {max_new} tokens without a stop id"
                    )
                reasons.append(FINISH_EOS if ended_on_stop_id else FINISH_LENGTH)
            tokens[row, length:] = self.pad_id
            logprobs[row, length:] = 0.0
            if text is None:
                text = ""
                if self.tokenizer is not None:
                    text = self.tokenizer.decode(
                        self._answer_ids(tokens[row, :length]), skip_special_tokens=True
                    )
            texts.append(text)
        if not np.all(np.isfinite(logprobs)):
            bad_row, bad_step = np.argwhere(~np.isfinite(logprobs))[0]
            raise FloatingPointError(
                f"sampler: non-finite log-prob at row {bad_row}, step {bad_step} (NaN logits?)"
            )
        return SampleOutput(
            tokens=tokens.astype(np.int32),
            lengths=lengths.astype(np.int32),
            logprobs=logprobs.astype(np.float32),
            texts=texts,
            finish_reasons=reasons,
            prompt_indices=np.repeat(np.arange(rows // samples), samples).astype(np.int32),
            num_decode_steps=int(state.step) - 1,
        )
