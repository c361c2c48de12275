"""The key/value cache: the one cache type of the project (prefill, decode, judge scoring).

Layout, and why:

* One buffer per layer (a tuple), not one stacked ``[layers, ...]`` array. The forward with a cache
  runs the layers unrolled over per-layer weights, and each layer reads and updates its own buffer
  in place; slicing a layer out of a stacked buffer inside a loop is a copy of that layer every
  step on CPU (the decode loop would copy the whole cache per token).
* Keys and values are ``[b, kv_heads, s, head_dim]``: the slot axis next to head_dim, so attention
  of a few query tokens reads each head's keys contiguously.
* ``end_index`` is where the next tokens are written. A scalar int32[] means every row writes at
  the same slot (one `jax.lax.dynamic_update_slice` per layer, in place): this is what the sampler
  and the judge use, since their prompts are left-padded to a common length. An int32[b] gives
  each row its own slot (e.g. right-padded prompts), at the price of a per-row scatter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rar_jax.models.config import ModelConfig

class KVCache(NamedTuple):
    """Key/value cache of all layers (a pytree).

    Attributes:
        keys: per layer, [b, kv_heads, s, head_dim].
        values: per layer, [b, kv_heads, s, head_dim].
        key_mask: bool[b, s]; True for slots holding a real token.
        end_index: int32[] (all rows) or int32[b] (per row): the next slot written.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    key_mask: jax.Array
    end_index: jax.Array

    @property
    def max_len(self) -> int:
        """Slots per row (s)."""
        return self.key_mask.shape[1]

    @property
    def batch(self) -> int:
        """Rows (b)."""
        return self.key_mask.shape[0]

    def grown(self, slots: int) -> "KVCache":
        """This cache with `slots` slots per row (>= the current number); new slots are empty."""
        extra = slots - self.max_len
        if extra < 0:
            raise ValueError(f"cannot shrink a KV cache of {self.max_len} slots to {slots}")
        if extra == 0:
            return self
        pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, extra), (0, 0)))  # noqa: E731
        return self._replace(
            keys=tuple(pad(a) for a in self.keys),
            values=tuple(pad(a) for a in self.values),
            key_mask=jnp.pad(self.key_mask, ((0, 0), (0, extra))),
        )

    def take_rows(self, rows: jax.Array) -> "KVCache":
        """The cache of rows ``rows`` (int32[r], repeats allowed), e.g. a prompt's cache for each
        of its samples."""
        take = lambda a: jnp.take(a, rows, axis=0)  # noqa: E731
        end = self.end_index if self.end_index.ndim == 0 else take(self.end_index)
        return KVCache(
            keys=tuple(take(a) for a in self.keys),
            values=tuple(take(a) for a in self.values),
            key_mask=take(self.key_mask),
            end_index=end,
        )


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens, written from slot 0 by all rows.

    Args:
        config: the model's config.
        batch: rows.
        max_len: slots per row; writes past it are clamped by XLA, so size it for the whole sequence.
        dtype: key/value dtype; defaults to the compute dtype.
    """
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (batch, config.num_kv_heads, max_len, config.head_dim)
    return KVCache(
        keys=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        key_mask=jnp.zeros((batch, max_len), bool),
        end_index=jnp.zeros((), jnp.int32),
    )

