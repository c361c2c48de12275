"""bucket_size and left_pad: the shapes every jitted program sees."""

import numpy as np
import pytest

from rar_jax.judges.jax_backend import LENGTH_BUCKETS
from rar_jax.models.batching import bucket_size, left_pad


def test_bucket_size():
    assert bucket_size(1, (32, 64)) == 32
    assert bucket_size(32, (32, 64)) == 32
    assert bucket_size(33, (32, 64)) == 64
    assert bucket_size(65, (32, 64)) == 128  # beyond the largest: multiples of it
    assert bucket_size(130, (32, 64)) == 192
    assert bucket_size(3, (1, 2, 4), multiple_of=8) == 8
    assert bucket_size(5, (4, 12), multiple_of=8) == 16
    # The judge's length buckets.
    assert [bucket_size(n, LENGTH_BUCKETS) for n in (1, 17, 513, 8193)] == [16, 24, 768, 16384]
    with pytest.raises(ValueError, match="increasing"):
        bucket_size(3, (8, 4))
    with pytest.raises(ValueError, match=">= 1"):
        bucket_size(0, (8,))


def test_left_pad():
    tokens, positions, mask = left_pad([[7, 8, 9], [5]], length=4, rows=3, pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 7, 8, 9], [0, 0, 0, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(positions, [[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        mask, [[False, True, True, True], [False, False, False, True], [False, False, False, True]]
    )


def test_left_pad_continues_after_a_cached_prefix():
    # Suffixes of prompts whose first 5 and 2 tokens are already in a KV cache.
    tokens, positions, mask = left_pad([[7, 8], [5]], length=3, rows=2, pad_id=1,
                                       start_positions=[5, 2])
    np.testing.assert_array_equal(tokens, [[1, 7, 8], [1, 1, 5]])
    np.testing.assert_array_equal(positions, [[0, 5, 6], [0, 0, 2]])
    np.testing.assert_array_equal(mask, [[False, True, True], [False, False, True]])
