"""Bucketed shapes and left padding: the one way the project turns token id lists into blocks.

A jitted program compiles once per shape, so lengths and row counts are rounded up to a bucket
(:func:`bucket_size`, over fixed buckets or :func:`power_of_two_buckets`) and id lists are left-padded into a ``[rows, length]`` block with explicit
positions and mask (:func:`left_pad`). The sampler, the in-process judge, the trainer and the judge
server all use these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket_size(value: int, buckets: Sequence[int], multiple_of: int = 1) -> int:
    """The smallest bucket >= value (beyond the largest: the next multiple of the largest), rounded
    up to a multiple of `multiple_of`.

    Args:
        value: a length or batch size (>= 1).
        buckets: increasing positive sizes.
        multiple_of: e.g. the number of data-parallel devices, so the batch divides evenly.
    """
    if value < 1:
        raise ValueError(f"bucket_size: value must be >= 1, got {value}")
    if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(buckets):
        raise ValueError(f"buckets must be increasing positive integers, got {tuple(buckets)}")
    size = next((b for b in buckets if b >= value), None)
    if size is None:
        largest = buckets[-1]
        size = -(-value // largest) * largest
    return int(-(-size // multiple_of) * multiple_of)


def power_of_two_buckets(largest: int) -> tuple[int, ...]:
    """Buckets of 1, 2, 4, ... below ``largest``, then ``largest`` (e.g. a judge's row counts up to
    its batch size: 12 -> (1, 2, 4, 8, 12))."""
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    sizes.append(largest)
    return tuple(sizes)


def left_pad(
    sequences: Sequence[Sequence[int]],
    length: int,
    rows: int,
    pad_id: int,
    start_positions: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-pads token id lists into a [rows, length] block.

    Rows past ``len(sequences)`` are filler: a single pad token marked real (so no row is empty).

    Args:
        sequences: token id lists, each of length 1 .. `length`.
        length: padded length.
        rows: padded number of rows (>= len(sequences)).
        pad_id: id written into padding slots.
        start_positions: the position of each sequence's first token (a suffix continuing a
            cached prefix starts past it); None = 0 for every row.

    Returns:
        tokens int32[rows, length], positions int32[rows, length] (each row's start position at
        its first real token, counting up; 0 on padding), mask bool[rows, length] (True on real
        tokens).
    """
    tokens = np.full((rows, length), pad_id, np.int32)
    positions = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), bool)
    for row in range(rows):
        real = row < len(sequences)
        ids = list(sequences[row]) if real else [pad_id]
        start = int(start_positions[row]) if real and start_positions is not None else 0
        count = len(ids)
        tokens[row, length - count:] = ids
        positions[row, length - count:] = start + np.arange(count)
        mask[row, length - count:] = True
    return tokens, positions, mask
