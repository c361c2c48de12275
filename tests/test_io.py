"""rar_jax.io.check_records: every bad record is found before one error that lists them."""

from __future__ import annotations

import pytest

from rar_jax.errors import UserError
from rar_jax.io import RecordErrors, check_records


def _even(row: int) -> int | None:
    """Keeps even rows (halved), leaves out multiples of 3, rejects odd rows."""
    if row % 2:
        raise ValueError(f"f.jsonl:{row}: n: expected an even number")
    return None if row % 3 == 0 else row // 2


def test_good_rows_are_kept_in_order_and_none_leaves_a_row_out():
    assert check_records([2, 4, 6, 8], _even) == [1, 2, 4]
    assert check_records([], _even) == []


def test_every_bad_row_is_listed_up_to_max_errors():
    with pytest.raises(RecordErrors) as error:
        check_records([1, 2, 3, 5, 7, 9], _even, max_errors=3)
    assert str(error.value).splitlines() == [
        "f.jsonl:1: n: expected an even number",
        "f.jsonl:3: n: expected an even number",
        "f.jsonl:5: n: expected an even number",
        "... and 2 more bad records",
    ]
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)


def test_limit_counts_kept_and_bad_rows_but_not_left_out_ones():
    # 6 is left out and not counted; 2, 3 and 4 make the limit of 3; 5 is never read.
    with pytest.raises(RecordErrors, match="f.jsonl:3") as error:
        check_records([6, 2, 3, 4, 5], _even, limit=3)
    assert "f.jsonl:5" not in str(error.value)
    assert check_records([6, 2, 4, 8, 10], _even, limit=2) == [1, 2]
