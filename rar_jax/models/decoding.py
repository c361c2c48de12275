"""The sampler's two jitted programs: prefill and the on-device decode loop.

`prefill` runs each left-padded prompt once through `Decoder` into a `KVCache`, repeats each
prompt's cache rows for its samples and samples the first token. `decode` runs a
`jax.lax.while_loop`: one token for all rows per iteration, no host round trip, until every row is
done or the step limit is reached. Both call the model's own forward (the same
`rar_jax.models.layers.decoder_layer` as training); a decode step is the forward of one token per
row at one shared cache slot (all prompts are left-padded to one length, so the t-th generated
token of every row lands at slot ``prompt_len + t - 1``), which XLA updates in place.

Layout choices for the decode loop (measured in benchmarks/README.md):

* the per-layer weights (`StackedLayers.per_layer`) are made once per call, outside the loop: a
  `jax.lax.scan` over the stacked weights copies each layer's weights every step on CPU; they come
  in the decode layout (`rar_jax.models.layers.decode_layout`: q/k/v and gate/up fused, attention
  contracted kv-major, o_proj one matrix), with which the loop body copies no weight and no cache
  buffer transposed (the stored layout's attention order made XLA copy o_proj and each layer's
  cached values every step);
* the cache is one buffer per layer (`rar_jax.models.cache`), updated in place;
* on CPU, `decode_compiler_options` turns on XLA's region analysis in copy insertion, which proves
  that each cache buffer can be updated in place inside the loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rar_jax.models.cache import KVCache
from rar_jax.models.decoder import Decoder
from rar_jax.models.sampling import sample_next_tokens


class ProgramShardings(NamedTuple):
    """Shardings of one call's arrays; hashable, so it can be a static jit argument.

    Attributes:
        rows: NamedSharding of [n] arrays.
        rows2d: NamedSharding of [n, max_new_tokens] arrays.
        cache: KVCache of NamedShardings.
    """

    rows: Any
    rows2d: Any
    cache: Any


class DecodeRules(NamedTuple):
    """What one sampler call fixes at compile time; hashable, so one static argument of every
    program here.

    Attributes:
        top_k, use_top_p, greedy: the sampling rules (see `sample_next_tokens`).
        stop_ids: ids that end a row.
        pad_id: id written after a row ends.
        shardings: None, or the `ProgramShardings` of the rows and cache.
    """

    top_k: int
    use_top_p: bool
    greedy: bool
    stop_ids: tuple[int, ...]
    pad_id: int
    shardings: ProgramShardings | None

    def sample(self, logits: jax.Array, key: jax.Array, temperature: jax.Array,
               top_p: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`sample_next_tokens` under these rules."""
        return sample_next_tokens(logits, key, temperature, top_p, top_k=self.top_k,
                                  use_top_p=self.use_top_p, greedy=self.greedy)


class DecodeState(NamedTuple):
    """On-device state of the decode loop (a pytree); n rows, m = max_new_tokens.

    Attributes:
        cache: the KV cache of all rows; its ``end_index`` (int32[]) is the next slot written.
        last_tokens: int32[n] the token each row feeds next.
        next_positions: int32[n] its RoPE position.
        tokens: int32[n, m] generated tokens so far (pad after a row's length).
        logprobs: float32[n, m] their tempered log-probs (0 after a row's length).
        done: bool[n] rows that finished (stop id, stop string, or padding rows).
        lengths: int32[n] tokens generated per row.
        step: int32[] tokens generated so far (column of the next write).
        key: PRNG key; step t draws with ``fold_in(key, t)``.
    """

    cache: KVCache
    last_tokens: jax.Array
    next_positions: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    done: jax.Array
    lengths: jax.Array
    step: jax.Array
    key: jax.Array


def constrain(tree: Any, shardings: Any) -> Any:
    """`with_sharding_constraint` when shardings are given (None: unsharded)."""
    if shardings is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, shardings)


def prefill(
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
    rules: DecodeRules,
) -> DecodeState:
    """Prompt forward into a fresh cache, cache rows repeated per sample, first token sampled.

    Args:
        graphdef, params: the `nnx.split` model.
        tokens, positions: int32[p, t] left-padded prompts; mask: bool[p, t] real tokens.
        row_active: bool[p * num_samples]; False for filler rows (start finished).
        key: PRNG key of the call.
        temperature, top_p: float32[] sampling parameters (traced: changing them never recompiles).
        num_samples: rows per prompt (prompt-major: row ``p * num_samples + s``).
        max_new_tokens: static columns of the output.
        cache_slots: static slots of the returned cache (the first decode call's window).
        rules: the call's static `DecodeRules`.

    Returns:
        The DecodeState after one generated token per row.
    """
    model: Decoder = nnx.merge(graphdef, params)
    hidden, cache = model.prefill(tokens, positions, attention_mask=mask, max_len=cache_slots)
    return first_token_state(
        cache, model.logits(hidden[:, -1]), jnp.sum(mask, axis=1, dtype=jnp.int32), row_active,
        key, temperature, top_p, num_samples=num_samples, max_new_tokens=max_new_tokens,
        rules=rules,
    )


def first_token_state(
    cache: KVCache,
    last_logits: jax.Array,
    next_positions: jax.Array,
    row_active: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    num_samples: int,
    max_new_tokens: int,
    rules: DecodeRules,
) -> DecodeState:
    """The decode loop's state once p prompts are in the cache: each prompt's cache row, last
    logits and next position repeated for its `num_samples` rows, and their first token sampled
    (the end of `prefill` and of `rar_jax.models.prefix_decoding`'s prefill).

    Args:
        cache: KVCache of the p prompts.
        last_logits: f32[p, vocab] logits after each prompt's last token.
        next_positions: int32[p] RoPE position of each prompt's first generated token.
        row_active .. rules: as in `prefill` (``row_active`` has p * num_samples rows).
    """
    shardings, pad_id = rules.shardings, rules.pad_id
    prompts = last_logits.shape[0]
    if num_samples > 1:
        cache = cache.take_rows(jnp.repeat(jnp.arange(prompts), num_samples))
        last_logits = jnp.repeat(last_logits, num_samples, axis=0)
        next_positions = jnp.repeat(next_positions, num_samples)
    rows = prompts * num_samples
    cache = constrain(cache, shardings and shardings.cache)
    first, first_logprob = rules.sample(last_logits, jax.random.fold_in(key, 0), temperature,
                                        top_p)
    done = ~row_active
    first = jnp.where(done, pad_id, first)
    first_logprob = jnp.where(done, 0.0, first_logprob)
    lengths = jnp.where(done, 0, 1).astype(jnp.int32)
    done = done | jnp.isin(first, jnp.asarray(rules.stop_ids, jnp.int32))
    out_tokens = jnp.full((rows, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    out_logprobs = jnp.zeros((rows, max_new_tokens), jnp.float32).at[:, 0].set(first_logprob)
    row_sharding = shardings and shardings.rows
    row2d_sharding = shardings and shardings.rows2d
    return DecodeState(
        cache=cache,
        last_tokens=constrain(first, row_sharding),
        next_positions=constrain(next_positions.astype(jnp.int32), row_sharding),
        tokens=constrain(out_tokens, row2d_sharding),
        logprobs=constrain(out_logprobs, row2d_sharding),
        done=constrain(done, row_sharding),
        lengths=constrain(lengths, row_sharding),
        step=jnp.asarray(1, jnp.int32),
        key=key,
    )


def decode(
    graphdef: Any,
    params: Any,
    state: DecodeState,
    stop_step: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    window: int,
    rules: DecodeRules,
) -> DecodeState:
    """Decode on device (`jax.lax.while_loop`) until every row is done or ``step == stop_step``.

    Args:
        graphdef, params: the `nnx.split` model.
        state: the loop state (see `DecodeState`).
        stop_step: int32[]; run while ``step < stop_step``; the caller keeps every slot written,
            ``state.cache.end_index`` onwards, below `window`.
        temperature, top_p: float32[] sampling parameters.
        window: static number of cache slots (the cache must have exactly this many).
        rules: as in `prefill`.

    Returns:
        The updated DecodeState.
    """
    model: Decoder = nnx.merge(graphdef, params)
    stop_array = jnp.asarray(rules.stop_ids, jnp.int32)
    if state.cache.max_len != window:
        raise ValueError(f"decode: the cache has {state.cache.max_len} slots, the window {window}")
    layers = model.layers.per_layer(jnp.dtype(model.config.dtype))

    def cond(s: DecodeState) -> jax.Array:
        return (s.step < stop_step) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
        logits, cache = model(
            s.last_tokens[:, None], s.next_positions[:, None], cache=s.cache, layers=layers
        )
        cache = constrain(cache, rules.shardings and rules.shardings.cache)
        tokens, logprobs = rules.sample(logits[:, 0], jax.random.fold_in(s.key, s.step),
                                        temperature, top_p)
        tokens = jnp.where(s.done, rules.pad_id, tokens)
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


def grow_cache(cache: KVCache, *, slots: int, shardings: ProgramShardings | None) -> KVCache:
    """`KVCache.grown` with the cache's shardings kept (the jitted step between windows)."""
    return constrain(cache.grown(slots), shardings and shardings.cache)


def decode_compiler_options(mesh: jax.sharding.Mesh | None) -> dict[str, Any]:
    """XLA options for the decode loop on the platform it runs on.

    On CPU, XLA's default copy insertion copies every layer's key and value buffers each decode
    step (the loop carries a buffer that it updates in place); its region analysis proves the
    update is the buffer's last use and removes those copies. GPU and TPU compilers do not copy
    there, so they get no options.
    """
    devices = mesh.devices.flat if mesh is not None else jax.devices()
    if next(iter(devices)).platform == "cpu":
        return {"xla_cpu_copy_insertion_use_region_analysis": True}
    return {}
