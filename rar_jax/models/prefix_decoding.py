"""Prefill that continues shared prompt prefixes: each group's common prefix is run once.

Prompts that share a long token prefix (the judge prompts of one answer: system text,
conversation and answer, then a different criterion) are given a group id. Per group the longest
common token prefix (leaving every prompt at least one token of its own) is run ONCE through the
model into a KV cache; each prompt's cache rows are copies of its group's row, and only the
prompt's remaining tokens (its suffix) are run through the model, continuing that cache. The
decode loop (`rar_jax.models.decoding.decode`) then runs as after a plain prefill.

Cache layout of a row (P = bucketed prefix length, T = bucketed suffix length)::

    slots 0 .. P-1       the group's prefix, LEFT-padded to P (padding slots: key_mask False)
    slots P .. P+T-1     the prompt's suffix, LEFT-padded to T (padding slots: key_mask False)
    slots P+T ..         generated tokens, every row at the same slot (``end_index`` a scalar)

Positions are exact: the prefix counts from 0 at its first real token and the suffix from the
prefix's length, so every real token has the position it has in the whole prompt, and padding
slots are never attended to (their key_mask is False). Every row writes its t-th generated token
at slot ``P + T + t - 1``, as in a plain prefill of length P + T, so the sampler's windowing and
the decode program are unchanged. A row computes what the whole prompt alone computes, up to
float rounding (the attention sums run over a different slot layout).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
from flax import nnx

from rar_jax.models.decoder import Decoder
from rar_jax.models.decoding import DecodeRules, DecodeState, first_token_state


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of the sequences (0 for none or an empty input)."""
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(sequence) for sequence in sequences)
    for sequence in sequences[1:]:
        index = 0
        while index < length and sequence[index] == first[index]:
            index += 1
        length = index
    return length


class PrefixSplit(NamedTuple):
    """Prompts split into their groups' shared prefixes and their own suffixes.

    Attributes:
        prefixes: per group (in order of first appearance), its shared prefix (non-empty).
        sources: per prompt, the index of its group's prefix.
        suffixes: per prompt, its tokens after the prefix (non-empty).
    """

    prefixes: list[list[int]]
    sources: list[int]
    suffixes: list[list[int]]


def split_shared_prefixes(
    prompts: Sequence[Sequence[int]], groups: Sequence[Hashable]
) -> PrefixSplit:
    """Per group the longest common token prefix of its prompts, leaving each >= 1 token.

    Args:
        prompts: token id lists.
        groups: one group id per prompt.

    Raises:
        ValueError when the lengths differ, or a group's prompts share no token (a prefix must
        hold at least one token).
    """
    if len(groups) != len(prompts):
        raise ValueError(f"prefix groups: {len(groups)} group ids for {len(prompts)} prompts")
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    prefixes: list[list[int]] = []
    sources = [0] * len(prompts)
    suffixes: list[list[int]] = [[] for _ in prompts]
    for number, (group, indices) in enumerate(members.items()):
        rows = [list(prompts[i]) for i in indices]
        length = min(shared_prefix_length(rows), min(len(r) for r in rows) - 1)
        if length < 1:
            raise ValueError(
                f"prefix group {group!r} (prompts {indices}): the prompts share no token prefix "
                "that leaves each at least one token of its own"
            )
        prefixes.append(rows[0][:length])
        for index, row in zip(indices, rows):
            sources[index] = number
            suffixes[index] = row[length:]
    return PrefixSplit(prefixes, sources, suffixes)


def prefill_continuing_prefixes(
    graphdef: Any,
    params: Any,
    prefix_tokens: jax.Array,
    prefix_positions: jax.Array,
    prefix_mask: jax.Array,
    row_source: jax.Array,
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
    """Prefixes forward once, their cache rows copied per prompt, suffixes forward continuing
    them, cache rows repeated per sample, first token sampled (see the module docstring).

    Args:
        graphdef, params: the `nnx.split` model.
        prefix_tokens, prefix_positions: int32[g, P] left-padded group prefixes (positions from
            0); prefix_mask: bool[g, P] real tokens.
        row_source: int32[p] the prefix row each prompt continues.
        tokens, positions: int32[p, T] left-padded suffixes, positions starting at the prefix's
            length; mask: bool[p, T] real tokens.
        row_active .. rules: as in `rar_jax.models.decoding.prefill` (``cache_slots`` >=
            P + T).

    Returns:
        The DecodeState after one generated token per row, its cache's ``end_index == P + T``.
    """
    model: Decoder = nnx.merge(graphdef, params)
    suffix_len = tokens.shape[1]
    prefix_len = prefix_tokens.shape[1]
    if cache_slots < prefix_len + suffix_len:
        raise ValueError(f"cache_slots = {cache_slots} < {prefix_len} + {suffix_len} prompt slots")
    _, prefix_cache = model.prefill(prefix_tokens, prefix_positions, attention_mask=prefix_mask)
    cache = prefix_cache.take_rows(row_source).grown(cache_slots)
    hidden, cache = model(tokens, positions, attention_mask=mask, cache=cache, return_hidden=True)
    return first_token_state(
        cache, model.logits(hidden[:, -1]), positions[:, -1] + 1, row_active, key, temperature,
        top_p, num_samples=num_samples, max_new_tokens=max_new_tokens, rules=rules,
    )


__all__ = [
    "PrefixSplit",
    "prefill_continuing_prefixes",
    "shared_prefix_length",
    "split_shared_prefixes",
]
