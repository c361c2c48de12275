"""The judge server's protocol functions (``rar_jax.serving.protocol``) and batch selection
(``rar_jax.serving.engine.batch_key`` / ``select_batch``), against hand-written expectations."""

from __future__ import annotations

import io

import pytest

from rar_jax.serving.engine import batch_key, select_batch
from rar_jax.serving.protocol import (
    ChatRequest,
    Choice,
    Completion,
    RequestError,
    read_chunked_body,
    stream_chunks,
    text_pieces,
)

MESSAGES = ({"role": "user", "content": "hi"},)


def test_chunked_body_with_extensions_and_trailers():
    raw = (b"4\r\nWiki\r\n6;name=value\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n"
           b"0\r\nX-Trailer: 1\r\n\r\nNEXT")
    stream = io.BytesIO(raw)
    assert read_chunked_body(stream) == b"Wikipedia in \r\n\r\nchunks."
    assert stream.read() == b"NEXT"  # Stops right after the message (keep-alive).


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"zz\r\nab\r\n0\r\n\r\n", 400, "is not hexadecimal"),
        (b"5\r\nab", 400, "shorter than its size"),
        (b"2\r\nab\r\n0\r\n", 400, "ends before its last empty line"),
        (b"10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 413, "larger than 8 bytes"),
    ],
)
def test_malformed_chunked_bodies(raw, status, message):
    with pytest.raises(RequestError, match=message) as error:
        read_chunked_body(io.BytesIO(raw), max_bytes=8)
    assert error.value.status == status


def test_text_pieces_wait_for_whole_characters_and_end_at_a_stop_cut():
    tokens = {1: b"a", 2: b"\xc3", 3: b"\xa9", 4: b"b", 5: b"!"}

    def decode(ids):
        return b"".join(tokens[i] for i in ids).decode("utf-8", errors="replace")

    # "é" is split over tokens 2 and 3: one piece for both.
    assert text_pieces([1, 2, 3, 4], "aéb", decode) == [("a", 0, 1), ("é", 1, 3), ("b", 3, 4)]
    # A stop string "!" cut the text after "ab": the stop token joins the last piece.
    assert text_pieces([1, 4, 5], "ab", decode) == [("a", 0, 1), ("b", 1, 2), ("", 2, 3)]
    assert text_pieces([], "", decode) == []


def test_stream_chunks_follow_the_openai_layout():
    entries = tuple({"token": t, "logprob": -float(i)} for i, t in enumerate("ab"))
    completion = Completion(
        choices=(Choice("ab", (1, 2), "stop", entries), Choice("", (), "length", None)),
        prompt_tokens=7,
        completion_tokens=3,
    )
    chunks = stream_chunks(completion, completion_id="c1", created=5, model="m",
                           include_usage=True, decode=lambda ids: "ab"[: len(ids)])
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
            "usage": None}

    def chunk(index, delta, logprobs=None, finish=None):
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}]}

    assert chunks == [
        chunk(0, {"role": "assistant", "content": ""}),
        chunk(0, {"content": "a"}, {"content": [entries[0]]}),
        chunk(0, {"content": "b"}, {"content": [entries[1]]}),
        chunk(0, {}, finish="stop"),
        chunk(1, {"role": "assistant", "content": ""}),
        chunk(1, {}, finish="length"),
        {**head, "choices": [],
         "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
    ]


def request(**fields):
    return ChatRequest(messages=MESSAGES, max_tokens=fields.pop("max_tokens", 8), **fields)


def test_batch_keys_group_requests_that_can_share_a_sampler_call():
    def key(req, budget=8, bucket=64):
        return batch_key(req, budget=budget, prompt_bucket=bucket)

    greedy = key(request(temperature=0.0))
    assert key(request(temperature=0.0, top_p=0.5, seed=3)) == greedy  # Greedy ignores them.
    assert key(request(temperature=0.0), budget=16) != greedy
    assert key(request(temperature=0.0), bucket=128) != greedy
    assert key(request(temperature=0.0, n=2)) != greedy
    assert key(request(temperature=0.0, stop=("x",))) != greedy
    sampled = key(request(temperature=0.7))
    assert sampled != greedy and sampled == key(request(temperature=0.7))
    assert key(request(temperature=0.7, top_p=0.9)) != sampled
    assert key(request(temperature=0.7, seed=1)) is None  # Runs alone.


def test_select_batch_takes_the_oldest_and_later_requests_of_its_kind():
    assert select_batch([], [], 4) == []
    assert select_batch(["g", "s", "g", "g", "g"], [1, 1, 1, 1, 1], 3) == [0, 2, 3]
    assert select_batch(["g", "g", "g"], [2, 2, 1], 3) == [0, 2]  # Rows must fit.
    assert select_batch(["g", "g"], [5, 1], 3) == [0]  # The oldest goes even when too big.
    assert select_batch([None, None], [1, 1], 4) == [0]  # Seeded sampling: alone.
    assert select_batch(["g", None, "g"], [1, 1, 1], 1) == [0]  # One at a time.
