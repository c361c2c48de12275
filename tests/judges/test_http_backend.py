"""Tests of the OpenAI-compatible HTTP judge backend against a real local fault-injecting server.

Backoff and rate-limit waits go through an injected fake clock / sleep, so nothing here depends
on wall-clock timing; only the timeout tests wait (a 0.3 s timeout against a 1 s reply).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest

from rar_jax.judges.http_backend import (
    Completion,
    HttpJudgeClient,
    HttpJudgeConfig,
    RateLimiter,
    backoff_delay,
    cache_key,
    estimate_request_tokens,
    parse_retry_after,
)

SAMPLING = dict(max_tokens=16, temperature=0.0, top_p=1.0)


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def make_client(server, clock, **overrides) -> HttpJudgeClient:
    settings = dict(
        base_url=server.base_url,
        model="judge-model",
        max_concurrency=4,
        timeout_s=5.0,
        max_attempts=4,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
        progress_min_requests=0,
    )
    settings.update(overrides)
    return HttpJudgeClient(
        HttpJudgeConfig(**settings), clock=clock, sleep=clock.sleep, rng=random.Random(0)
    )


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You judge."}, {"role": "user", "content": text}]


def test_success_sends_chat_completion_request(server, clock):
    client = make_client(server, clock)
    [result] = client.complete_many([user("q1")], max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    assert result == Completion(
        text="echo: q1",
        error=None,
        attempts=1,
        cached=False,
        usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        finish_reason="stop",
        logprobs=None,
    )
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "judge-model",
        "messages": user("q1"),
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "n": 1,
    }
    assert "Authorization" not in request.headers  # No key variable set: no header.


def test_reasoning_model_requests_use_max_completion_tokens_and_no_sampling_knobs(server, clock):
    # o-series models answer 400 to max_tokens, temperature and top_p.
    client = make_client(server, clock, reasoning_model=True)
    [result] = client.complete_many([user("q1")], max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    assert result.text == "echo: q1"
    assert server.requests[0].body == {
        "model": "judge-model", "messages": user("q1"), "max_completion_tokens": 7, "seed": 3, "n": 1,
    }


@pytest.mark.parametrize("fault", ["500", "503", "429", "malformed", "drop", "slow"])
def test_each_fault_is_retried_then_succeeds(server, clock, fault):
    server.slow_s = 1.0
    server.script["q"] = [fault, fault]
    client = make_client(server, clock, timeout_s=0.3)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert (result.text, result.error, result.attempts) == ("echo: q", None, 3)
    assert [r.action for r in server.requests] == [fault, fault, "ok"]
    assert len(clock.sleeps) == 2  # One backoff between consecutive attempts.


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("500", "HTTP 500 after 3 attempts: "),
        ("429", "HTTP 429 after 3 attempts: "),
        ("malformed", "malformed response after 3 attempts: invalid JSON body"),
        ("drop", "connection error after 3 attempts: "),
        ("slow", "timeout after 3 attempts"),
    ],
)
def test_persistent_fault_records_reason_and_no_text(server, clock, fault, reason):
    server.slow_s = 1.0
    server.script["q"] = [fault] * 10
    client = make_client(server, clock, timeout_s=0.3, max_attempts=3)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.text is None
    assert result.error.startswith(reason), result.error
    assert result.attempts == 3
    assert server.count() == 3
    assert not result.ok


@pytest.mark.parametrize("status", ["400", "401"])
def test_client_errors_other_than_429_are_not_retried(server, clock, status):
    server.script["q"] = [status] * 5
    client = make_client(server, clock)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.text is None
    assert result.error.startswith(f"HTTP {status} (not retried): ")
    assert f"injected {status}" in result.error
    assert result.attempts == 1
    assert server.count() == 1
    assert clock.sleeps == []


def test_backoff_is_exponential_capped_and_jittered(server, clock):
    server.script["q"] = ["500"] * 5
    client = make_client(server, clock, max_attempts=5, backoff_initial_s=0.4, backoff_max_s=1.0)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.attempts == 5 and result.text is None
    # Bases 0.4, 0.8, 1.6 -> capped 1.0, 3.2 -> capped 1.0; jitter factor in [0.5, 1].
    bases = [0.4, 0.8, 1.0, 1.0]
    assert len(clock.sleeps) == 4
    for delay, base in zip(clock.sleeps, bases):
        assert 0.5 * base <= delay <= base


def test_backoff_delay_formula():
    upper = lambda low, high: high  # noqa: E731 - the largest jitter factor
    lower = lambda low, high: low  # noqa: E731
    assert [backoff_delay(a, 0.5, 3.0, upper) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_delay(2, 0.5, 3.0, lower) == 0.5


def test_retry_after_is_honoured(server, clock):
    server.script["q"] = ["429:7", "429"]
    client = make_client(server, clock, backoff_initial_s=0.1)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.text == "echo: q" and result.attempts == 3
    assert clock.sleeps[0] == 7.0  # Retry-After beats the 0.05-0.1 s backoff.
    assert 0.1 <= clock.sleeps[1] <= 0.2  # No header: the plain backoff of attempt 2.


def test_parse_retry_after_forms():
    assert parse_retry_after({"Retry-After": "12"}) == 12.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    date = "Wed, 21 Oct 2015 07:28:30 GMT"  # 1445412510 in Unix time.
    assert parse_retry_after({"Retry-After": date}, now=lambda: 1445412500.0) == 10.0
    assert parse_retry_after({"Retry-After": date}, now=lambda: 1445412600.0) == 0.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None


def test_results_keep_input_order(server, clock):
    # The first request fails twice, so it finishes last; results still follow the inputs.
    server.script["q0"] = ["500", "500"]
    client = make_client(server, clock)
    results = client.complete_many([user(f"q{i}") for i in range(6)], **SAMPLING)
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(6)]
    assert [r.attempts for r in results] == [3, 1, 1, 1, 1, 1]
    assert [r.action for r in server.requests][-1] == "ok"
    assert server.requests[-1].body["messages"][-1]["content"] == "q0"


def test_cache_makes_a_rerun_free_and_does_not_store_failures(server, clock, tmp_path):
    server.script["bad"] = ["500"] * 100
    batch = [user("a"), user("b"), user("bad")]
    first = make_client(server, clock, cache_dir=str(tmp_path), max_attempts=2)
    results = first.complete_many(batch, **SAMPLING)
    assert [r.text for r in results] == ["echo: a", "echo: b", None]
    assert server.count() == 4  # a, b, and two attempts of bad.
    cache_files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(cache_files) == 2  # Only successes, no temporary files left.
    assert all(not p.name.startswith(".tmp") for p in cache_files)

    server.reset()
    second = make_client(server, clock, cache_dir=str(tmp_path), max_attempts=2)
    again = second.complete_many(batch, **SAMPLING)
    assert [(r.text, r.cached, r.attempts) for r in again[:2]] == [
        ("echo: a", True, 0),
        ("echo: b", True, 0),
    ]
    assert again[0].usage == results[0].usage
    assert again[2].text is None and not again[2].cached
    assert server.count() == 2  # Only the failed request is sent again (two attempts).
    assert {r.body["messages"][-1]["content"] for r in server.requests} == {"bad"}

    # Other sampling parameters are another cache entry.
    server.reset()
    [changed] = second.complete_many([user("a")], max_tokens=16, temperature=0.7, top_p=1.0)
    assert not changed.cached and server.count() == 1


def test_cache_key_covers_url_model_messages_and_sampling():
    sampling = {"max_tokens": 16, "temperature": 0.0}
    base = cache_key("http://h/v1", "m", user("x"), sampling)
    assert base == cache_key("http://h/v1/", "m", user("x"), dict(sampling))  # Trailing slash.
    assert len(base) == 64
    others = [
        cache_key("http://other/v1", "m", user("x"), sampling),
        cache_key("http://h/v1", "m2", user("x"), sampling),
        cache_key("http://h/v1", "m", user("y"), sampling),
        cache_key("http://h/v1", "m", user("x"), {**sampling, "temperature": 1.0}),
        cache_key("http://h/v1", "m", user("x"), {**sampling, "seed": 1}),
    ]
    assert len({base, *others}) == 6


def test_unreadable_cache_entry_is_a_miss(server, clock, tmp_path):
    client = make_client(server, clock, cache_dir=str(tmp_path))
    client.complete_many([user("a")], **SAMPLING)
    [entry] = [p for p in tmp_path.rglob("*.json")]
    entry.write_text("{truncated")
    server.reset()
    [result] = client.complete_many([user("a")], **SAMPLING)
    assert result.text == "echo: a" and not result.cached and server.count() == 1


def test_concurrency_never_exceeds_the_bound(server, clock):
    server.delay_s = 0.15
    client = make_client(server, clock, max_concurrency=3)
    results = client.complete_many([user(f"q{i}") for i in range(10)], **SAMPLING)
    assert all(r.ok for r in results)
    assert server.max_in_flight == 3


def test_rate_limiter_spaces_requests_with_fake_clock():
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=30, capacity=1, clock=clock, sleep=clock.sleep)
    released = []

    async def take():
        await limiter.acquire(1)
        released.append(clock.now)

    async def main():
        await asyncio.gather(*(take() for _ in range(4)))

    asyncio.run(main())
    assert released == [0.0, 2.0, 4.0, 6.0]


def test_token_bucket_refund_and_oversized_cost():
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, capacity=60, clock=clock, sleep=clock.sleep)

    async def main():
        await limiter.acquire(50)  # 10 left.
        limiter.adjust(estimated=50, actual=20)  # Refund 30 -> 40 left.
        await limiter.acquire(40)  # 0 left, no wait.
        assert clock.now == 0.0
        await limiter.acquire(100)  # More than the capacity: waits for a full bucket (60 s).
        assert clock.now == 60.0

    asyncio.run(main())


def test_requests_per_minute_option_limits_the_client(server, clock):
    client = make_client(server, clock, requests_per_minute=30, max_concurrency=2)
    results = client.complete_many([user(f"q{i}") for i in range(4)], **SAMPLING)
    assert all(r.ok for r in results)
    assert clock.sleeps == [2.0, 2.0, 2.0]  # 60/30 s between request starts.


@pytest.mark.parametrize("usage_total, expected_wait", [(8, [2.0]), (None, [30.0, 30.0, 30.0])])
def test_tokens_per_minute_option_uses_estimate_and_usage(
    server, clock, usage_total, expected_wait
):
    # Each request is estimated at 80 chars / 4 + 10 max_tokens = 30 tokens; 60 tokens per
    # minute = 1 per second. With usage (8 tokens) 22 tokens are refunded after each reply:
    # the bucket goes 60 -> 52 -> 44 -> 36 -> 28, and the 5th request waits 2 s. Without usage
    # the estimate stands: 60 -> 30 -> 0, then each further request waits 30 s.
    server.usage_total_tokens = usage_total
    messages = [[{"role": "user", "content": f"q{i}".ljust(80, "x")}] for i in range(5)]
    assert estimate_request_tokens(messages[0], 10) == 30
    client = make_client(server, clock, tokens_per_minute=60, max_concurrency=1)
    results = client.complete_many(messages, max_tokens=10, temperature=0.0)
    assert all(r.ok for r in results)
    assert clock.sleeps == expected_wait


def test_api_key_is_read_from_the_named_variable_only(server, clock, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one")
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    server.script["q"] = ["500"]
    client = make_client(server, clock, api_key_env="MY_JUDGE_KEY", cache_dir=str(tmp_path))
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.ok
    assert {r.headers["Authorization"] for r in server.requests} == {"Bearer sk-secret-123"}
    assert "sk-secret-123" not in caplog.text
    assert all("sk-secret-123" not in p.read_text() for p in tmp_path.rglob("*.json"))

    # The key is not part of the cache key: another key reuses the cached reply.
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-other-456")
    server.reset()
    other = make_client(server, clock, api_key_env="MY_JUDGE_KEY", cache_dir=str(tmp_path))
    [again] = other.complete_many([user("q")], **SAMPLING)
    assert again.cached and server.count() == 0


def test_default_api_key_variable_is_openai_api_key(server, clock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    client = make_client(server, clock)
    client.complete_many([user("q")], **SAMPLING)
    assert server.requests[0].headers["Authorization"] == "Bearer sk-default"


def test_logprobs_are_requested_parsed_and_cached(server, clock, tmp_path):
    client = make_client(server, clock, cache_dir=str(tmp_path))
    [result] = client.complete_many([user("q")], **SAMPLING, logprobs=True, top_logprobs=2)
    body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert [(t.token, t.logprob) for t in result.logprobs] == [("echo", -0.5), (":", -1.0)]
    assert result.logprobs[0].top == (("echo#0", -1.0), ("echo#1", -2.0))
    [cached] = client.complete_many([user("q")], **SAMPLING, logprobs=True, top_logprobs=2)
    assert cached.cached and cached.logprobs == result.logprobs


def test_progress_bar_only_for_long_batches(server, clock, capsys):
    client = make_client(server, clock, progress_min_requests=3)
    client.complete_many([user("a"), user("b")], **SAMPLING)
    assert "judge requests" not in capsys.readouterr().err
    client.complete_many([user("a"), user("b"), user("c")], **SAMPLING)
    err = capsys.readouterr().err
    assert "judge requests" in err and "3/3" in err


def test_async_complete_inside_context(server, clock):
    client = make_client(server, clock)

    async def main():
        async with client:
            first = await client.complete(user("x"), **SAMPLING)
            second = await client.complete(user("y"), **SAMPLING)
        third = await client.complete(user("z"), **SAMPLING)  # One-off connection pool.
        with pytest.raises(RuntimeError, match="running event loop"):
            client.complete_many([user("w")], **SAMPLING)
        return first, second, third

    results = asyncio.run(main())
    assert [r.text for r in results] == ["echo: x", "echo: y", "echo: z"]


@pytest.mark.parametrize(
    "messages, sampling, message",
    [
        ([{"role": "user"}], SAMPLING, r"list_of_messages\[0\]\[0\].content: expected a string"),
        ([], SAMPLING, r"list_of_messages\[0\]: expected a non-empty list"),
        (user("q"), {**SAMPLING, "max_tokens": 0}, "max_tokens: expected an integer >= 1"),
        (user("q"), {**SAMPLING, "top_logprobs": 3}, "top_logprobs: needs logprobs=True"),
    ],
)
def test_bad_input_raises_before_any_request(server, clock, messages, sampling, message):
    client = make_client(server, clock)
    with pytest.raises(ValueError, match=message):
        client.complete_many([messages], **sampling)
    assert server.count() == 0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="base_url: expected an http"):
        HttpJudgeConfig(base_url="localhost:8000", model="m")
    with pytest.raises(ValueError, match="max_concurrency: expected an integer >= 1"):
        HttpJudgeConfig(base_url="http://h/v1", model="m", max_concurrency=0)
    with pytest.raises(ValueError, match="max_attempts"):
        HttpJudgeConfig(base_url="http://h/v1", model="m", max_attempts=0)


def test_reply_without_content_is_a_failure_not_text(server, clock, monkeypatch):
    original = server._reply

    def no_content(body, key):
        reply = original(body, key)
        reply["choices"][0]["message"]["content"] = None
        reply["choices"][0]["finish_reason"] = "content_filter"
        return reply

    monkeypatch.setattr(server, "_reply", no_content)
    client = make_client(server, clock)
    [result] = client.complete_many([user("q")], **SAMPLING)
    assert result.text is None
    assert "no message content" in result.error and "content_filter" in result.error
    assert json.dumps(result.error)  # A plain string, safe to log to JSONL.


def test_an_unusable_judge_reply_is_asked_again_sampled(server, clock):
    from rar_jax.judges import parsing
    from rar_jax.judges.prompts import direct_likert_prompt
    from rar_jax.judges.rewards import HttpJudgeBackend

    asked: dict[str, int] = {}

    def replies(text):
        asked[text] = asked.get(text, 0) + 1
        if "flaky" in text and asked[text] == 1:
            return '{"rating": 7} On reflection, 4/10.'  # Contradictory: unusable.
        return '{"rating": 6}' if "flaky" in text else '{"rating": 9}'

    server.replies = replies
    backend = HttpJudgeBackend(make_client(server, clock), max_tokens=16, max_resamples=2)
    judged = backend.score_rating([direct_likert_prompt("q", "steady answer"),
                                   direct_likert_prompt("q", "flaky answer")])
    assert judged.values.tolist() == [9.0, 6.0] and judged.reasons == [None, None]
    bodies = [request.body for request in server.requests]
    assert len(bodies) == 3
    assert [(b["temperature"], b.get("seed")) for b in bodies[:2]] == [(0.0, None)] * 2
    assert (bodies[2]["temperature"], bodies[2]["seed"]) == (1.0, 1)  # The re-ask is sampled.
    assert parsing.parse_rating('{"rating": 7} On reflection, 4/10.').value is None
