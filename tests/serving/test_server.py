"""The judge server (``rar_jax.serving.server``) in-process on a loopback port, around the tiny
fixture checkpoint.

Replies are checked against independent paths: the reply text and the per-token log-probs
against a direct greedy ``Sampler.generate`` call with the request's ``max_tokens`` (the server
generates a power-of-two budget and cuts the reply back), queried through the project's own
``HttpJudgeClient``. Malformed requests must get HTTP 400 with an OpenAI-style error naming the
field. Batching: concurrent greedy requests generated in one sampler call must equal each request
generated alone by the Sampler, token for token. Streaming: the server-sent chunks must
concatenate to the plain reply (and the official ``openai`` client must read both). Chunked
request bodies are sent with ``http.client``'s chunked encoding.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import threading
import time

import httpx
import jax
import openai
import pytest

from rar_jax.judges.http_backend import HttpJudgeClient, HttpJudgeConfig
from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.models.batching import bucket_size
from rar_jax.models.sampler import DEFAULT_PROMPT_BUCKETS, Sampler, SamplingParams
from rar_jax.serving import server as judge_server
from rar_jax.serving.engine import prefix_groups
from tiny_checkpoint import write_tiny_checkpoint

CAP = 16
CONVERSATIONS = [
    [{"role": "user", "content": "Is the answer correct?"}],
    [{"role": "system", "content": "You judge."}, {"role": "user", "content": "Rate it."}],
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    engine = judge_server.ChatCompletionEngine(
        model, tokenizer, model_name="tiny-judge", max_new_tokens_cap=CAP
    )
    yield engine
    engine.close()


@contextlib.contextmanager
def serving(engine):
    """The engine behind an HTTP server on a free loopback port; yields its base URL."""
    httpd = judge_server.make_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def base_url(engine):
    with serving(engine) as url:
        yield url


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def client(base_url: str) -> HttpJudgeClient:
    return HttpJudgeClient(
        HttpJudgeConfig(
            base_url=base_url,
            model="tiny-judge",
            max_attempts=1,
            timeout_s=120.0,
            progress_min_requests=0,
        )
    )


@pytest.fixture(scope="module")
def reference(tiny):
    """Greedy 5-token replies to CONVERSATIONS straight from the Sampler, with the prompt ids."""
    model, tokenizer = tiny
    ids = [
        tokenizer.encode(tokenizer.apply_chat_template(c, add_generation_prompt=True))
        for c in CONVERSATIONS
    ]
    output = Sampler(model, tokenizer).generate(
        ids, SamplingParams(max_new_tokens=5, greedy=True), jax.random.key(0)
    )
    return ids, output


def test_greedy_replies_and_logprobs_equal_the_sampler(tiny, reference, base_url):
    _, tokenizer = tiny
    ids, reference = reference
    completions = client(base_url).complete_many(
        CONVERSATIONS, max_tokens=5, temperature=0.0, logprobs=True, top_logprobs=3
    )
    for row, completion in enumerate(completions):
        assert completion.ok, completion.error
        assert completion.text == reference.texts[row]
        length = int(reference.lengths[row])
        expected_finish = "stop" if reference.finish_reasons[row] == "eos" else "length"
        assert completion.finish_reason == expected_finish
        assert completion.usage == {
            "prompt_tokens": len(ids[row]),
            "completion_tokens": length,
            "total_tokens": len(ids[row]) + length,
        }
        shown = length - (reference.finish_reasons[row] == "eos")
        tokens = completion.logprobs
        assert len(tokens) == shown
        for position, token in enumerate(tokens):
            token_id = int(reference.tokens[row, position])
            assert token.token == tokenizer.decode([token_id])
            # Greedy at temperature 1: the sampler's log-prob of the argmax token.
            expected = float(reference.logprobs[row, position])
            assert token.logprob == pytest.approx(expected, abs=1e-4)
            assert len(token.top) == 3
            assert token.top[0] == (token.token, pytest.approx(token.logprob, abs=1e-6))
            values = [value for _, value in token.top]
            assert values == sorted(values, reverse=True)


def test_stop_strings_cut_the_reply(reference, base_url):
    _, reference = reference
    text = reference.texts[0]
    assert len(text) >= 3
    stop = text[2]
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={"messages": CONVERSATIONS[0], "max_tokens": 5, "temperature": 0, "stop": stop},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop"


def test_a_request_whose_client_hung_up_is_not_generated(engine, base_url, monkeypatch):
    calls = []
    generate = engine.sampler.generate
    monkeypatch.setattr(
        engine.sampler, "generate", lambda *a, **k: calls.append(1) or generate(*a, **k)
    )
    body = {"messages": CONVERSATIONS[0], "max_tokens": 5, "temperature": 0}
    skipped = engine.skipped_requests
    with engine._lock:  # Another request is generating: this one waits, and its client gives up.
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{base_url}/chat/completions", json=body, timeout=0.5)
    deadline = time.monotonic() + 10
    while engine.skipped_requests == skipped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.skipped_requests == skipped + 1
    assert calls == []
    served = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120)
    assert served.status_code == 200 and calls == [1]


def test_models_route_and_unknown_routes(base_url):
    models = httpx.get(f"{base_url}/models", timeout=10).json()
    assert [entry["id"] for entry in models["data"]] == ["tiny-judge"]
    missing = httpx.post(f"{base_url}/completions", json={}, timeout=10)
    assert missing.status_code == 404


GOOD = {"messages": CONVERSATIONS[0], "max_tokens": 4, "temperature": 0}


@pytest.mark.parametrize(
    "body, param, message",
    [
        ({"model": "tiny-judge"}, "messages", "messages: expected a non-empty list"),
        ({**GOOD, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role",
         "messages[0].role: expected one of system, developer, user, assistant, got 'robot'"),
        ({**GOOD, "messages": [{"role": "user", "content": 3}]}, "messages[0].content",
         "messages[0].content: expected a string or a list of text parts, got int"),
        ({**GOOD, "temperature": -1}, "temperature", "temperature: expected a number >= 0"),
        ({**GOOD, "max_tokens": CAP + 1}, "max_tokens",
         f"max_tokens: {CAP + 1} is more than this server's cap of {CAP}"),
        ({**GOOD, "max_tokens": "5"}, "max_tokens", "max_tokens: expected an integer >= 1"),
        ({**GOOD, "top_logprobs": 2}, "top_logprobs", "top_logprobs: needs logprobs: true"),
        ({**GOOD, "n": 0}, "n", "n: expected an integer in [1, 16]"),
        ({**GOOD, "stream": "yes"}, "stream", "stream: expected a boolean, got 'yes'"),
        ({**GOOD, "stream_options": {"include_usage": True}}, "stream_options",
         "stream_options: only allowed with stream: true"),
        ({**GOOD, "messages": [{"role": "user", "content": "x" * 200}]}, "messages",
         "exceeds the model's context of 128"),
    ],
)
def test_malformed_requests_get_400_naming_the_field(base_url, body, param, message):
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]


def test_a_body_that_is_not_json_gets_400(base_url):
    response = httpx.post(
        f"{base_url}/chat/completions",
        content=b'{"messages": [',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] is None
    assert "not valid JSON" in response.json()["error"]["message"]


def test_generation_budget_rounds_up_to_a_power_of_two_within_the_cap():
    assert [judge_server.generation_budget(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)] == [
        1, 2, 4, 8, 8, 16, 16,
    ]
    assert judge_server.generation_budget(600, 1000) == 1000


@pytest.mark.slow
def test_seeded_sampling_with_several_choices(base_url):
    body = {"messages": CONVERSATIONS[1], "max_tokens": 6, "temperature": 1.0, "n": 2, "seed": 3}
    first = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).json()
    again = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).json()
    other = httpx.post(
        f"{base_url}/chat/completions", json={**body, "seed": 4}, timeout=120
    ).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1]
    assert texts == [c["message"]["content"] for c in again["choices"]]
    assert texts != [c["message"]["content"] for c in other["choices"]]
    assert texts[0] != texts[1]


def test_a_client_that_leaves_during_generation_stops_it(tiny, monkeypatch, caplog):
    model, tokenizer = tiny
    engine = judge_server.ChatCompletionEngine(model, tokenizer, model_name="tiny-judge",
                                              max_new_tokens_cap=64, cancel_check_tokens=4)
    chunks = []
    decode = engine.sampler.decode_program
    monkeypatch.setattr(engine.sampler, "decode_program",
                        lambda *a, **k: chunks.append(1) or decode(*a, **k))
    request = judge_server.parse_chat_request(
        {"messages": CONVERSATIONS[0], "max_tokens": 64, "temperature": 0,
         "logprobs": False}, max_new_tokens_cap=64)
    # The client is there when the turn comes and for the first check, then gone.
    answers = iter([False, False, True])
    with pytest.raises(judge_server.ClientGone, match="after 9 decode steps; generation stopped"):
        engine.complete(request, client_gone=lambda: next(answers))
    assert engine.cancelled_requests == 1 and len(chunks) == 2  # Of 16 chunks of 4 steps.
    # Without a departure the same request runs to the end.
    chunks.clear()
    reply = engine.complete(request, client_gone=lambda: False)
    engine.close()
    assert reply.choices[0].finish_reason in ("stop", "length") and len(chunks) >= 2


def test_a_reply_to_a_closed_connection_is_one_log_line(base_url, engine, monkeypatch, caplog):
    import socket

    host, port = base_url.removeprefix("http://").removesuffix("/v1").split(":")
    generate = engine.sampler.generate
    closed = threading.Event()

    def generate_after_the_client_left(*args, **kwargs):
        closed.wait(10)
        return generate(*args, **kwargs)

    monkeypatch.setattr(engine.sampler, "generate", generate_after_the_client_left)
    monkeypatch.setattr(engine, "cancel_check_tokens", 1000)  # Not noticed before the reply.
    body = b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}'
    with caplog.at_level("INFO"):
        connection = socket.create_connection((host, int(port)))
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # The server has read the request and waits in generate.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection.close()  # A reset, as a client that timed out.
        closed.set()
        deadline = time.monotonic() + 30
        while "hung up" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "hung up before its reply was sent" in caplog.text
    assert "Traceback" not in caplog.text and "BrokenPipeError" not in caplog.text


BATCHED = [  # (conversation, max_tokens, logprobs): budgets of 8 tokens, one prompt bucket.
    (CONVERSATIONS[0], 5, True),
    (CONVERSATIONS[1], 8, False),
    ([{"role": "user", "content": "Does it cite a source?"}], 8, False),
    ([{"role": "user", "content": "Is the reply kind to them?"}], 5, True),
]


def replies_of_concurrent_requests(engine, payloads):
    """Posts every chat-completion payload to a server of `engine` at once, closes the engine,
    and returns the JSON replies in the payloads' order."""
    with serving(engine) as url, concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        replies = list(pool.map(lambda payload: httpx.post(
            f"{url}/chat/completions", timeout=120, json=payload).json(), payloads))
    engine.close()
    return replies


def test_concurrent_greedy_requests_share_one_batch_and_equal_replies_served_alone(tiny):
    model, tokenizer = tiny
    ids = [tokenizer.encode_chat(c) for c, _, _ in BATCHED]
    # One prompt bucket of the sampler (else they would not share a call).
    assert len({bucket_size(len(i), DEFAULT_PROMPT_BUCKETS) for i in ids}) == 1
    # The worker waits (up to a minute) until all four requests are queued, then runs them at once.
    engine = judge_server.ChatCompletionEngine(
        model, tokenizer, model_name="tiny-judge", max_new_tokens_cap=CAP,
        batch_window_s=60.0, max_batch_rows=len(BATCHED))
    replies = replies_of_concurrent_requests(engine, [
        {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "logprobs": logprobs}
        for messages, max_tokens, logprobs in BATCHED])
    assert engine.batch_sizes == [len(BATCHED)]
    sampler = Sampler(model, tokenizer)
    for (_, max_tokens, logprobs), prompt, reply in zip(BATCHED, ids, replies, strict=True):
        # Served alone: one prompt, exactly max_tokens new tokens, no budget rounding.
        alone = sampler.generate([prompt], SamplingParams(max_new_tokens=max_tokens, greedy=True),
                                 jax.random.key(0))
        choice = reply["choices"][0]
        assert choice["message"]["content"] == alone.texts[0]
        assert choice["finish_reason"] == ("stop" if alone.finish_reasons[0] == "eos" else "length")
        assert reply["usage"]["completion_tokens"] == int(alone.lengths[0])
        assert reply["usage"]["prompt_tokens"] == len(prompt)
        if logprobs:
            shown = int(alone.lengths[0]) - (alone.finish_reasons[0] == "eos")
            content = choice["logprobs"]["content"]
            assert [entry["token"] for entry in content] == [
                tokenizer.decode([int(t)]) for t in alone.tokens[0, :shown]]
            assert [entry["logprob"] for entry in content] == pytest.approx(
                [float(v) for v in alone.logprobs[0, :shown]], abs=1e-4)
        else:
            assert choice["logprobs"] is None


def test_prefix_groups_by_hand():
    system = list(range(100, 140))  # 40 tokens every prompt shares
    answer_a, answer_b = list(range(1, 61)), list(range(200, 260))  # 60 tokens each
    prompts = [system + answer_a + [7], system + answer_b + [7], system + answer_a + [8, 9],
               system + answer_b + [8], system + answer_a + [5], [3, 3, 3]]
    # Per answer: 2 x 100 and 1 x 100 tokens saved, more than one group of 5 (4 x 40).
    assert prefix_groups(prompts, 32) == [0, 1, 0, 1, 0, 2]
    # Sharing only 40 tokens: with a minimum of 41 nothing else qualifies.
    assert prefix_groups([system + [1], system + [2]], 41) == [0, 1]
    assert prefix_groups([system + [1], system + [2]], 40) == [0, 0]
    # A prompt that is the whole prefix of another keeps one token of its own: 39 shared.
    assert prefix_groups([system, system + [5]], 40) == [0, 1]
    assert prefix_groups([system, system + [5]], 39) == [0, 0]


@pytest.mark.slow  # 6-15 s at load 3: three programs compile (tests/models/test_prefix_decoding.py
# checks the prefix path's equality fast).
def test_concurrent_requests_sharing_a_prefix_prefill_it_once_and_equal_replies_served_alone(tiny):
    model, tokenizer = tiny
    answers = ["Rest, drink water and see a doctor soon.", "Take two tablets every six hours."]
    criteria = ["Cites a doctor?", "Short?"]
    conversations = [[{"role": "user", "content": f"{answer}\nCriterion: {criterion}"}]
                     for criterion in criteria for answer in answers]
    ids = [tokenizer.encode_chat(c) for c in conversations]
    assert max(map(len, ids)) + 8 <= model.config.max_position_embeddings
    assert len({bucket_size(len(i), DEFAULT_PROMPT_BUCKETS) for i in ids}) == 1
    engine = judge_server.ChatCompletionEngine(
        model, tokenizer, model_name="tiny-judge", max_new_tokens_cap=CAP,
        batch_window_s=60.0, max_batch_rows=len(conversations))
    replies = replies_of_concurrent_requests(engine, [
        {"messages": messages, "max_tokens": 8, "temperature": 0} for messages in conversations])
    # One call; the two answers' prompts form two groups (their prefixes: template and answer).
    assert engine.batch_sizes == [4] and engine.batch_prefixes == [2]
    sampler = Sampler(model, tokenizer)
    alone = sampler.generate(ids, SamplingParams(max_new_tokens=8, greedy=True), jax.random.key(0))
    assert [r["choices"][0]["message"]["content"] for r in replies] == alone.texts


def test_requests_of_different_kinds_are_generated_in_separate_calls(tiny, monkeypatch):
    model, tokenizer = tiny
    engine = judge_server.ChatCompletionEngine(
        model, tokenizer, model_name="tiny-judge", max_new_tokens_cap=CAP,
        batch_window_s=60.0, max_batch_rows=3)
    greedy = judge_server.parse_chat_request(GOOD, max_new_tokens_cap=CAP)
    sampled = judge_server.parse_chat_request({**GOOD, "temperature": 0.8}, max_new_tokens_cap=CAP)
    generate = engine.sampler.generate

    def generate_then_stop_waiting(*args, **kwargs):
        engine.batch_window_s = 0.0  # The request left over needs no more window.
        return generate(*args, **kwargs)

    monkeypatch.setattr(engine.sampler, "generate", generate_then_stop_waiting)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(engine.complete, [greedy, sampled, greedy]))
    engine.close()
    # Three rows were queued (the window ends): the greedy requests share a call, the sampled
    # one has its own.
    assert sorted(engine.batch_sizes) == [1, 2]
    assert results[0] == results[2]
    assert all(len(r.choices) == 1 for r in results)


def read_events(response: httpx.Response) -> list:
    """The ``data:`` payloads of a server-sent-event stream (JSON, or the final "[DONE]")."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", line
    return events


def test_a_streamed_reply_concatenates_to_the_plain_reply(base_url):
    body = {**GOOD, "max_tokens": 8, "logprobs": True, "top_logprobs": 2}
    plain = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).json()
    with httpx.stream("POST", f"{base_url}/chat/completions", timeout=120,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}
                      ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        events = read_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    *choice_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    deltas = [c["choices"][0] for c in choice_chunks]
    assert deltas[0]["delta"] == {"role": "assistant", "content": ""}
    assert deltas[-1]["delta"] == {}
    assert deltas[-1]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert all(d["finish_reason"] is None for d in deltas[:-1])
    pieces = deltas[1:-1]
    assert len(pieces) >= 2  # Token by token, not the whole text at once.
    text = plain["choices"][0]["message"]["content"]
    assert "".join(d["delta"]["content"] for d in pieces) == text
    streamed_logprobs = [entry for d in pieces for entry in d["logprobs"]["content"]]
    assert streamed_logprobs == plain["choices"][0]["logprobs"]["content"]


def test_a_chunked_request_body_is_read(base_url):
    plain = httpx.post(f"{base_url}/chat/completions", json=GOOD, timeout=120).json()
    host, port = base_url.removeprefix("http://").removesuffix("/v1").split(":")
    payload = json.dumps(GOOD).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request("POST", "/v1/chat/completions", body=iter([payload[:7], payload[7:]]),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 200
    reply = json.loads(response.read())
    assert reply["choices"] == plain["choices"] and reply["usage"] == plain["usage"]
    # The connection stays usable: a malformed chunked body next gets 400 naming the problem.
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders(b"zz\r\n{}\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 400
    assert "is not hexadecimal" in json.loads(response.read())["error"]["message"]
    connection.close()


def test_the_official_openai_client_reads_plain_and_streamed_replies(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    request = dict(model="tiny-judge", messages=CONVERSATIONS[1], max_tokens=8, temperature=0)
    plain = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}))
    with_choices = [chunk for chunk in chunks if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason] == [
        plain.choices[0].finish_reason]
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_a_failed_generation_gets_500_and_the_server_keeps_serving(base_url, engine, monkeypatch):
    generate = engine.sampler.generate
    calls = []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return generate(*args, **kwargs)

    monkeypatch.setattr(engine.sampler, "generate", fail_once)
    failed = httpx.post(f"{base_url}/chat/completions", json=GOOD, timeout=120)
    assert failed.status_code == 500
    assert failed.json()["error"] == {"message": "RuntimeError: device lost",
                                      "type": "server_error", "param": None, "code": None}
    served = httpx.post(f"{base_url}/chat/completions", json=GOOD, timeout=120)
    assert served.status_code == 200 and len(calls) == 2
