"""KV-cache sampler: jitted prefill and an on-device decode loop with bucketed static shapes.

How a call runs (`Sampler.generate`):

1. The prompts (token ids) are LEFT-padded to a prompt-length bucket and the batch of prompts is
   padded to a batch bucket (`bucket_size`), so every length inside a bucket reuses one compiled
   program. Each row's positions start at 0 at its first real token and the attention mask marks the
   real tokens, so a padded row computes what the row alone would.
2. `prefill` (jitted) runs each prompt ONCE through the model into a KV cache, replicates every
   prompt's cache rows for its ``num_samples`` samples (GRPO's G answers per prompt; rows are
   prompt-major: row ``p * num_samples + s``) and samples the first token of every row.
   With ``prefix_groups`` (`Sampler.generate`), each group's common token prefix is run once
   instead and every prompt runs only its own remaining tokens, continuing the prefix's cache
   (`rar_jax.models.prefix_decoding`; the judge server's prefix reuse).
3. `decode` (jitted) runs a `jax.lax.while_loop` on device: one token per iteration for all rows,
   until every row has finished or the step limit is reached; no host round trip per token. The
   cache holds only the slots of the current attention window (a multiple of
   ``attention_window_multiple`` covering the tokens so far); when generation passes its end, the
   host grows the cache and the next decode call (one compile per window) continues.
4. Stop strings are checked on the host between chunks of ``stop_check_interval`` decode steps (only
   when stop strings are given; otherwise the loop runs to the end in one call). A row whose decoded
   text contains a stop string is marked finished on device, so it no longer grows, and its tokens,
   log-probs and length are truncated right after the token that completed the stop string.

The programs are in `rar_jax.models.decoding`, the sampling rules and the meaning of the returned
log-probs in `rar_jax.models.sampling`, the cache in `rar_jax.models.cache`, the padding in
`rar_jax.models.batching`; this module orchestrates them.

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
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models import decoding, prefix_decoding
from rar_jax.models.batching import bucket_size, left_pad
from rar_jax.models.cache import init_cache
from rar_jax.models.decoder import Decoder
from rar_jax.models.prefix_decoding import PrefixSplit, split_shared_prefixes
from rar_jax.models.sampling import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP_STRING,
    SamplingParams,
    find_stop_string,
)

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_ATTENTION_WINDOW_MULTIPLE = 256


# ------------------------------------------------------------------------------- results
class PrefillShape(NamedTuple):
    """Padded blocks of a prefill: ``rows`` prompts of ``length`` tokens (their suffixes when
    prefixes are reused), after ``prefix_rows`` group prefixes of ``prefix_length`` tokens (0, 0
    without prefix reuse)."""

    rows: int
    length: int
    prefix_rows: int
    prefix_length: int


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
        self._traces = {"prefill": 0, "decode": 0}  # "prefill" counts both prefill programs
        static = ("graphdef", "rules", "num_samples", "max_new_tokens", "cache_slots")
        self.prefill_program = jax.jit(
            self._counted("prefill", decoding.prefill), static_argnames=static)
        self.prefix_prefill_program = jax.jit(
            self._counted("prefill", prefix_decoding.prefill_continuing_prefixes),
            static_argnames=static,
        )
        self._grow_cache = jax.jit(decoding.grow_cache, static_argnames=("slots", "shardings"))
        self.decode_program = jax.jit(
            self._counted("decode", decoding.decode),
            static_argnames=("graphdef", "rules", "window"),
            donate_argnames=("state",),
            compiler_options=decoding.decode_compiler_options(mesh),
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
    def call_shardings(self, rows: int, max_new_tokens: int) -> decoding.ProgramShardings | None:
        """Shardings of a call's rows and KV cache (batch over ("data", "fsdp"), kv heads over
        "tensor", by `rar_jax.parallel` rules), or None without a mesh."""
        if self.mesh is None:
            return None
        from jax.sharding import NamedSharding

        from rar_jax.parallel.sharding import cache_shardings, logical_to_mesh_spec

        def named(axes: tuple[str | None, ...], shape: tuple[int, ...]) -> NamedSharding:
            return NamedSharding(self.mesh, logical_to_mesh_spec(axes, shape, self.mesh))

        cache = jax.eval_shape(lambda: init_cache(self.config, rows, 1))
        return decoding.ProgramShardings(
            rows=named(("batch",), (rows,)),
            rows2d=named(("batch", None), (rows, max_new_tokens)),
            cache=cache_shardings(cache, self.mesh),
        )

    def decode_rules(self, sampling: SamplingParams, rows: int) -> decoding.DecodeRules:
        """The static `decoding.DecodeRules` of a call of ``rows`` rows under ``sampling``."""
        return decoding.DecodeRules(
            top_k=int(sampling.top_k), use_top_p=sampling.top_p < 1.0,
            greedy=bool(sampling.greedy), stop_ids=self.stop_ids, pad_id=self.pad_id,
            shardings=self.call_shardings(rows, int(sampling.max_new_tokens)),
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

    def prefill_shape(
        self, prompts: Sequence[Sequence[int]], prefix_groups: Sequence[Hashable] | None = None
    ) -> tuple[PrefillShape, PrefixSplit | None]:
        """The padded blocks that ``generate(prompts, prefix_groups=...)`` prefills (one
        compiled prefill per shape), and the prompts' split into prefixes and suffixes."""
        rows = bucket_size(len(prompts), self.batch_buckets, self.data_parallel_size)
        if prefix_groups is None:
            length = bucket_size(max(map(len, prompts)), self.prompt_buckets)
            return PrefillShape(rows, length, 0, 0), None
        split = split_shared_prefixes(prompts, prefix_groups)
        return PrefillShape(
            rows, bucket_size(max(map(len, split.suffixes)), self.prompt_buckets),
            bucket_size(len(split.prefixes), self.batch_buckets),
            bucket_size(max(map(len, split.prefixes)), self.prompt_buckets),
        ), split

    def prefill_slots(
        self, prompts: Sequence[Sequence[int]], prefix_groups: Sequence[Hashable] | None = None
    ) -> int:
        """Token slots, padding included, that ``generate(prompts, prefix_groups=...)`` runs
        through the model before decoding (its prefill cost)."""
        shape, _ = self.prefill_shape(prompts, prefix_groups)
        return shape.rows * shape.length + shape.prefix_rows * shape.prefix_length

    # ---------------------------------------------------------------- generation
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        key: jax.Array,
        *,
        params: Any = None,
        cancelled: Callable[[], bool] | None = None,
        prefix_groups: Sequence[Hashable] | None = None,
    ) -> SampleOutput:
        """Generate ``sampling.num_samples`` answers for every prompt.

        Args:
            prompts: token id lists (already chat-formatted), each non-empty.
            sampling: the sampling settings.
            key: PRNG key; the same key, prompts and settings give the same output.
            params: optional weights for this call (default: the current ones, see `set_params`).
            cancelled: asked on the host between chunks of ``sampling.stop_check_interval``
                decode steps; True stops the generation (e.g. the judge server's client hung up).
            prefix_groups: optional group id per prompt: the longest common token prefix of each
                group's prompts is prefilled once and the prompts continue it
                (`rar_jax.models.prefix_decoding`); None prefills every prompt whole. Greedy
                output is the same either way, up to float rounding.

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
        shape, split = self.prefill_shape(prompts, prefix_groups)
        batch = shape.rows
        samples = sampling.num_samples
        rows = batch * samples
        max_new = int(sampling.max_new_tokens)
        row_active = np.repeat(np.arange(batch) < num_prompts, samples)
        rules = self.decode_rules(sampling, rows)
        temperature = jnp.asarray(sampling.temperature, jnp.float32)
        top_p = jnp.asarray(sampling.top_p, jnp.float32)
        prompt_len = shape.prefix_length + shape.length
        static = dict(num_samples=samples, max_new_tokens=max_new,
                      cache_slots=self.attention_window(prompt_len, 1, max_new), rules=rules)
        if split is None:
            tokens, positions, mask = left_pad(prompts, shape.length, batch, self.pad_id)
            state = self.prefill_program(
                self.graphdef, params, self._put_rows(tokens), self._put_rows(positions),
                self._put_rows(mask), self._put_rows(row_active), key, temperature, top_p,
                **static)
        else:
            prefix_blocks = left_pad(
                split.prefixes, shape.prefix_length, shape.prefix_rows, self.pad_id)
            tokens, positions, mask = left_pad(
                split.suffixes, shape.length, batch, self.pad_id,
                [len(split.prefixes[source]) for source in split.sources])
            row_source = np.zeros(batch, np.int32)
            row_source[:num_prompts] = split.sources
            state = self.prefix_prefill_program(
                self.graphdef, params, *map(jnp.asarray, prefix_blocks),
                *map(self._put_rows, (row_source, tokens, positions, mask, row_active)), key,
                temperature, top_p, **static)
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
                if state.cache.max_len < window:
                    state = state._replace(cache=self._grow_cache(
                        state.cache, slots=window, shardings=rules.shardings
                    ))
                state = self.decode_program(
                    self.graphdef, params, state, jnp.asarray(stop_step, jnp.int32), temperature,
                    top_p, window=window, rules=rules,
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
        self, state: decoding.DecodeState, rows: int, samples: int,
        stop_rows: dict[int, tuple[int, str]],
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
