"""OpenAI-compatible chat-completions judge backend (OpenAI, vLLM, SGLang) over HTTP.

:class:`HttpJudgeClient` sends ``POST {base_url}/chat/completions`` requests with ``httpx``:

- **Concurrency**: at most ``max_concurrency`` requests in flight (an ``asyncio.Semaphore``).
- **Rate limits**: ``requests_per_minute`` spaces request starts evenly (one every 60/rpm s);
  ``tokens_per_minute`` is a token bucket holding one minute of tokens. A request's cost is
  estimated as ``ceil(characters of the messages / 4) + max_tokens`` and corrected to the
  server's ``usage.total_tokens`` when the reply has one. 0 disables a limit.
- **Timeouts and retries**: each attempt has a total deadline of ``timeout_s``. An attempt is
  retried (up to ``max_attempts`` in all) on a timeout, a dropped or refused connection, HTTP 429,
  HTTP 5xx, or a 200 reply whose body is not a chat completion. Other 4xx replies are not
  retried. Between attempts it sleeps ``backoff_initial_s * 2**(attempt - 1)`` capped at
  ``backoff_max_s``, times a random factor in [0.5, 1] (jitter), and at least the server's
  ``Retry-After`` (seconds or HTTP date; also ``retry-after-ms``).
- **Failures are recorded, never faked**: after the last attempt the :class:`Completion` has
  ``text=None`` and ``error`` saying why (e.g. ``"HTTP 500 after 4 attempts: ..."``,
  ``"timeout after 3 attempts"``). :meth:`HttpJudgeClient.complete_many` never raises for a
  failed request and returns results in input order.
- **Cache**: with ``cache_dir`` set, every successful reply is stored as one JSON file named by
  the SHA-256 of (base URL, model, messages, sampling parameters), written atomically (temporary
  file + ``os.replace``). A cached reply is returned without any request (``cached=True``,
  ``attempts=0``); failures are not cached. With temperature > 0 a rerun therefore returns the
  same sample: include a ``seed`` or clear the cache when fresh samples are wanted.
- **API key**: read from the environment variable *named* by ``api_key_env`` (default
  ``OPENAI_API_KEY``) when a client is created, sent as ``Authorization: Bearer ...``; never
  logged, never part of the cache key. An unset or empty variable sends no header (local vLLM /
  SGLang servers need none).

Log-probabilities: with ``logprobs=True, top_logprobs=n`` the completion carries, for each
generated token, the token, its log-probability and the n most likely alternatives
(:class:`TokenLogprobs`), for a dense-scoring path over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import json
import logging
import math
import os
import pathlib
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import tqdm

__all__ = [
    "Completion",
    "HttpJudgeClient",
    "HttpJudgeConfig",
    "RateLimiter",
    "TokenLogprobs",
    "backoff_delay",
    "cache_key",
    "estimate_request_tokens",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class HttpJudgeConfig:
    """Settings of an :class:`HttpJudgeClient` (config section ``judge.http``).

    Attributes:
        base_url: the API root, e.g. ``"https://api.openai.com/v1"`` or
            ``"http://127.0.0.1:8000/v1"``; requests go to ``{base_url}/chat/completions``.
        model: the model name sent with every request.
        api_key_env: NAME of the environment variable holding the API key.
        max_concurrency: most requests in flight at once.
        requests_per_minute: request-start rate limit; 0 = none.
        tokens_per_minute: token rate limit (estimated, corrected by ``usage``); 0 = none.
        timeout_s: total deadline of one attempt, in seconds.
        max_attempts: attempts per request, the first included (>= 1).
        backoff_initial_s: backoff before the second attempt (before jitter).
        backoff_max_s: cap of the exponential backoff (before jitter).
        cache_dir: folder of the on-disk reply cache; None or "" disables caching.
        progress_min_requests: ``complete_many`` shows a tqdm progress bar for batches of at
            least this many requests; 0 never shows one.
        reasoning_model: the server is an OpenAI o-series reasoning model (o1, o3-mini, ...),
            which rejects ``max_tokens``, ``temperature`` and ``top_p``: requests then send the
            token limit as ``max_completion_tokens`` (it also bounds the hidden reasoning tokens,
            so give it room) and no temperature / top_p (the model samples as it does).
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 16
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    timeout_s: float = 60.0
    max_attempts: int = 4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    cache_dir: str | None = None
    progress_min_requests: int = 32
    reasoning_model: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
            ("http://", "https://")
        ):
            problems.append(f"base_url: expected an http(s) URL, got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model:
            problems.append(f"model: expected a non-empty model name, got {self.model!r}")
        if not isinstance(self.api_key_env, str) or not self.api_key_env:
            problems.append("api_key_env: expected the name of an environment variable")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            problems.append(
                f"max_concurrency: expected an integer >= 1, got {self.max_concurrency!r}"
            )
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            problems.append(f"max_attempts: expected an integer >= 1, got {self.max_attempts!r}")
        for name in (
            "requests_per_minute",
            "tokens_per_minute",
            "backoff_initial_s",
            "backoff_max_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                problems.append(f"{name}: expected a finite number >= 0, got {value!r}")
        if not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            problems.append(f"timeout_s: expected a number > 0, got {self.timeout_s!r}")
        if not isinstance(self.progress_min_requests, int) or self.progress_min_requests < 0:
            problems.append(
                "progress_min_requests: expected an integer >= 0, got "
                f"{self.progress_min_requests!r}"
            )
        if not isinstance(self.reasoning_model, bool):
            problems.append(f"reasoning_model: expected a bool, got {self.reasoning_model!r}")
        if problems:
            raise ValueError("HttpJudgeConfig: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class TokenLogprobs:
    """One generated token: its text, log-probability and the top alternatives (incl. itself)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclasses.dataclass(frozen=True)
class Completion:
    """The outcome of one chat-completion request.

    Attributes:
        text: the reply text; None when the request failed.
        error: why the request failed after its last attempt; None on success.
        attempts: HTTP attempts made (0 for a cached reply).
        cached: True when the reply came from the on-disk cache.
        usage: the server's ``usage`` object (prompt / completion / total tokens) or None.
        finish_reason: the server's ``finish_reason`` ("stop", "length", ...) or None.
        logprobs: per generated token, when requested and returned; else None.
    """

    text: str | None
    error: str | None
    attempts: int
    cached: bool = False
    usage: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprobs, ...] | None = None

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None


def estimate_request_tokens(messages: Sequence[Mapping[str, str]], max_tokens: int) -> int:
    """Token cost estimate of a request: ceil(characters of all contents / 4) + max_tokens."""
    characters = sum(len(message["content"]) for message in messages)
    return math.ceil(characters / 4) + max_tokens


def backoff_delay(
    attempt: int, initial_s: float, maximum_s: float, uniform: Callable[[float, float], float]
) -> float:
    """Delay after failed attempt ``attempt`` (1-based): min(max, init 2^(attempt-1)) U(.5, 1)."""
    base = min(maximum_s, initial_s * 2.0 ** (attempt - 1))
    return base * uniform(0.5, 1.0)


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait by ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), or None."""
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


class RateLimiter:
    """Token bucket: ``rate_per_minute`` units per minute, holding at most ``capacity`` units.

    ``capacity=1`` with cost 1 per request spaces requests 60/rate seconds apart (RPM limit);
    ``capacity=rate`` lets one minute's worth through at once (TPM limit). A cost above the
    capacity waits for a full bucket and then drives it negative, so it cannot deadlock.
    Waiters are served first come, first served.
    """

    def __init__(self, rate_per_minute: float, capacity: float, clock: Clock, sleep: Sleep):
        if rate_per_minute <= 0 or capacity <= 0:
            raise ValueError("RateLimiter: expected rate_per_minute > 0 and capacity > 0")
        self.rate_per_second = rate_per_minute / 60.0
        self.capacity = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._available = float(capacity)
        self._updated = clock()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._available = min(self.capacity, self._available + elapsed * self.rate_per_second)
        self._updated = now

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self, cost: float) -> None:
        """Waits until ``cost`` units (at most the capacity) are available, then takes ``cost``."""
        async with self._loop_lock():
            needed = min(float(cost), self.capacity)
            self._refill()
            while self._available < needed:
                await self._sleep((needed - self._available) / self.rate_per_second)
                self._refill()
            self._available -= float(cost)

    def adjust(self, estimated: float, actual: float) -> None:
        """Corrects a taken estimate to the actual cost (refund or extra debit)."""
        self._refill()
        self._available = min(self.capacity, self._available + float(estimated) - float(actual))


def _canonical_base_url(base_url: str) -> str:
    return base_url.rstrip("/")


def cache_key(
    base_url: str, model: str, messages: Sequence[Mapping[str, str]], sampling: Mapping[str, Any]
) -> str:
    """SHA-256 hex digest of (base URL, model, messages, sampling parameters); no API key."""
    material = {
        "base_url": _canonical_base_url(base_url),
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "sampling": dict(sampling),
    }
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of chat messages")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"{where}[{index}]: expected a {{'role', 'content'}} mapping")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ValueError(f"{where}[{index}].role: expected a non-empty string, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(
                f"{where}[{index}].content: expected a string, got {type(content).__name__}"
            )
        checked.append({"role": role, "content": content})
    return checked


def _check_sampling(
    max_tokens: Any, temperature: Any, top_p: Any, seed: Any, logprobs: Any, top_logprobs: Any
) -> dict[str, Any]:
    problems = []
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        problems.append(f"max_tokens: expected an integer >= 1, got {max_tokens!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            problems.append(f"{name}: expected a number >= 0, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"seed: expected an integer or None, got {seed!r}")
    if not isinstance(logprobs, bool):
        problems.append(f"logprobs: expected a bool, got {logprobs!r}")
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 0:
        problems.append(f"top_logprobs: expected an integer >= 0, got {top_logprobs!r}")
    elif top_logprobs and not logprobs:
        problems.append("top_logprobs: needs logprobs=True")
    if problems:
        raise ValueError("sampling parameters: " + "; ".join(problems))
    return {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": seed,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
    }


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; ``kind`` groups it for the final message."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None):
        super().__init__(kind)
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after


class _Fatal(Exception):
    """An attempt failed in a way that retrying cannot fix (e.g. HTTP 400 / 401)."""


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_logprobs(choice: Mapping[str, Any]) -> tuple[TokenLogprobs, ...] | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, Mapping) or not isinstance(logprobs.get("content"), list):
        return None
    tokens = []
    for entry in logprobs["content"]:
        top = tuple(
            (str(item["token"]), float(item["logprob"])) for item in entry.get("top_logprobs") or ()
        )
        tokens.append(TokenLogprobs(str(entry["token"]), float(entry["logprob"]), top))
    return tuple(tokens)


def _parse_reply(body: bytes) -> dict[str, Any]:
    """The fields we keep from a chat-completion body; raises _Retryable / _Fatal when malformed."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _Retryable("malformed response", f"invalid JSON body ({error})") from None
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable(
            "malformed response",
            f"no choices[0].message in {_excerpt(body.decode(errors='replace'))}",
        ) from None
    if not isinstance(content, str):
        raise _Fatal(
            f"reply has no message content (finish_reason={choice.get('finish_reason')!r})"
        )
    try:
        logprobs = _parse_logprobs(choice)
    except (KeyError, TypeError, ValueError) as error:
        raise _Retryable("malformed response", f"bad logprobs ({error!r})") from None
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else None
    return {
        "text": content,
        "usage": usage,
        "finish_reason": choice.get("finish_reason"),
        "logprobs": logprobs,
    }


def _logprobs_to_json(logprobs: tuple[TokenLogprobs, ...] | None) -> Any:
    if logprobs is None:
        return None
    return [
        {"token": t.token, "logprob": t.logprob, "top": [list(p) for p in t.top]} for t in logprobs
    ]


def _logprobs_from_json(value: Any) -> tuple[TokenLogprobs, ...] | None:
    if value is None:
        return None
    return tuple(
        TokenLogprobs(
            item["token"], float(item["logprob"]), tuple((t, float(p)) for t, p in item["top"])
        )
        for item in value
    )


class HttpJudgeClient:
    """Async client for an OpenAI-compatible chat-completions server (see the module docstring).

    Use :meth:`complete_many` from synchronous code. From async code, either ``await
    client.complete(...)`` directly (a connection pool is opened per call) or inside ``async with
    client:`` (one pool shared by all calls).

    Args:
        config: the settings.
        clock: monotonic clock used by the rate limiters (injected by tests).
        sleep: coroutine used for rate-limit and backoff waits (injected by tests).
        rng: source of the backoff jitter.
    """

    def __init__(
        self,
        config: HttpJudgeConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._api_key = os.environ.get(config.api_key_env) or None
        if self._api_key is None:
            logger.info(
                "environment variable %s is not set: sending requests without an API key",
                config.api_key_env,
            )
        self._url = _canonical_base_url(config.base_url) + "/chat/completions"
        self._request_limiter = (
            RateLimiter(config.requests_per_minute, 1.0, clock, sleep)
            if config.requests_per_minute > 0
            else None
        )
        self._token_limiter = (
            RateLimiter(config.tokens_per_minute, config.tokens_per_minute, clock, sleep)
            if config.tokens_per_minute > 0
            else None
        )
        self._cache_dir = pathlib.Path(config.cache_dir) if config.cache_dir else None
        self._http: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None

    # --- connection pool -------------------------------------------------------------------------
    def _new_http_client(self) -> httpx.AsyncClient:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        limit = self.config.max_concurrency
        return httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.config.timeout_s),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def __aenter__(self) -> HttpJudgeClient:
        if self._http is not None:
            raise RuntimeError("HttpJudgeClient: already entered")
        self._http = self._new_http_client()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def _loop_semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    # --- cache -----------------------------------------------------------------------------------
    def _cache_path(self, key: str) -> pathlib.Path | None:
        if self._cache_dir is None:
            return None
        return self._cache_dir / key[:2] / f"{key}.json"

    def _read_cache(self, key: str) -> Completion | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            return Completion(
                text=entry["text"],
                error=None,
                attempts=0,
                cached=True,
                usage=entry.get("usage"),
                finish_reason=entry.get("finish_reason"),
                logprobs=_logprobs_from_json(entry.get("logprobs")),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring unreadable cache entry %s: %s", path, error)
            return None

    def _write_cache(self, key: str, reply: Mapping[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        entry = {
            "model": self.config.model,
            "text": reply["text"],
            "usage": reply["usage"],
            "finish_reason": reply["finish_reason"],
            "logprobs": _logprobs_to_json(reply["logprobs"]),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as stream:
                    json.dump(entry, stream, ensure_ascii=False)
                os.replace(temporary, path)
            except BaseException:
                pathlib.Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            logger.warning("could not write cache entry %s: %s", path, error)

    # --- requests --------------------------------------------------------------------------------
    async def _attempt(
        self, http: httpx.AsyncClient, payload: Mapping[str, Any], estimated_tokens: int
    ) -> dict[str, Any]:
        """One HTTP attempt (rate limits taken here); raises _Retryable or _Fatal on failure."""
        if self._request_limiter is not None:
            await self._request_limiter.acquire(1)
        if self._token_limiter is not None:
            await self._token_limiter.acquire(estimated_tokens)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await http.post(self._url, json=payload)
        except (TimeoutError, httpx.TimeoutException):
            raise _Retryable("timeout") from None
        except httpx.TransportError as error:
            raise _Retryable("connection error", f"{type(error).__name__}: {error}") from None
        body_text = response.text if response.status_code != 200 else ""
        if response.status_code == 429:
            raise _Retryable("HTTP 429", _excerpt(body_text), parse_retry_after(response.headers))
        if response.status_code >= 500:
            raise _Retryable(
                f"HTTP {response.status_code}",
                _excerpt(body_text),
                parse_retry_after(response.headers),
            )
        if response.status_code != 200:
            raise _Fatal(f"HTTP {response.status_code} (not retried): {_excerpt(body_text)}")
        reply = _parse_reply(response.content)
        if self._token_limiter is not None and reply["usage"] is not None:
            total = reply["usage"].get("total_tokens")
            if isinstance(total, (int, float)) and not isinstance(total, bool):
                self._token_limiter.adjust(estimated_tokens, total)
        return reply

    async def _complete_checked(
        self, messages: list[dict[str, str]], sampling: dict[str, Any]
    ) -> Completion:
        key = cache_key(self.config.base_url, self.config.model, messages, sampling)
        cached = self._read_cache(key)
        if cached is not None:
            return cached
        payload: dict[str, Any] = {"model": self.config.model, "messages": messages, "n": 1}
        if self.config.reasoning_model:
            payload["max_completion_tokens"] = sampling["max_tokens"]
        else:
            payload.update(
                max_tokens=sampling["max_tokens"],
                temperature=sampling["temperature"],
                top_p=sampling["top_p"],
            )
        if sampling["seed"] is not None:
            payload["seed"] = sampling["seed"]
        if sampling["logprobs"]:
            payload["logprobs"] = True
            if sampling["top_logprobs"]:
                payload["top_logprobs"] = sampling["top_logprobs"]
        estimated = estimate_request_tokens(messages, sampling["max_tokens"])
        if self._http is not None:
            return await self._run_attempts(self._http, key, payload, estimated)
        async with self._new_http_client() as http:
            return await self._run_attempts(http, key, payload, estimated)

    async def _run_attempts(
        self, http: httpx.AsyncClient, key: str, payload: Mapping[str, Any], estimated: int
    ) -> Completion:
        attempts = self.config.max_attempts
        last: _Retryable | None = None
        for attempt in range(1, attempts + 1):
            try:
                async with self._loop_semaphore():
                    reply = await self._attempt(http, payload, estimated)
            except _Fatal as error:
                logger.warning("judge request failed: %s", error)
                return Completion(text=None, error=str(error), attempts=attempt)
            except _Retryable as error:
                last = error
                if attempt == attempts:
                    break
                delay = backoff_delay(
                    attempt,
                    self.config.backoff_initial_s,
                    self.config.backoff_max_s,
                    self._rng.uniform,
                )
                if error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                logger.info(
                    "judge request attempt %d/%d failed (%s%s); retrying in %.2f s",
                    attempt,
                    attempts,
                    error.kind,
                    f": {error.detail}" if error.detail else "",
                    delay,
                )
                await self._sleep(delay)
                continue
            self._write_cache(key, reply)
            return Completion(
                text=reply["text"],
                error=None,
                attempts=attempt,
                usage=reply["usage"],
                finish_reason=reply["finish_reason"],
                logprobs=reply["logprobs"],
            )
        assert last is not None
        plural = "attempt" if attempts == 1 else "attempts"
        message = f"{last.kind} after {attempts} {plural}"
        if last.detail:
            message += f": {last.detail}"
        logger.warning("judge request failed: %s", message)
        return Completion(text=None, error=message, attempts=attempts)

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> Completion:
        """One chat completion, from the cache or the server, with retries.

        Raises ValueError for malformed messages or sampling parameters (a caller bug); every
        request failure is returned as a Completion with ``text=None`` and ``error`` set.
        """
        checked = _check_messages(messages, "messages")
        sampling = _check_sampling(max_tokens, temperature, top_p, seed, logprobs, top_logprobs)
        return await self._complete_checked(checked, sampling)

    async def complete_many_async(
        self,
        list_of_messages: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> list[Completion]:
        """Async :meth:`complete_many`: all requests concurrently, results in input order."""
        checked = [
            _check_messages(messages, f"list_of_messages[{index}]")
            for index, messages in enumerate(list_of_messages)
        ]
        sampling = _check_sampling(max_tokens, temperature, top_p, seed, logprobs, top_logprobs)
        threshold = self.config.progress_min_requests
        show = threshold > 0 and len(checked) >= threshold
        progress = tqdm.tqdm(total=len(checked), desc="judge requests", disable=not show)

        async def run_one(messages: list[dict[str, str]]) -> Completion:
            try:
                return await self._complete_checked(messages, sampling)
            except Exception as error:  # A bug must not cost the whole batch; it is recorded.
                logger.exception("unexpected error in a judge request")
                return Completion(
                    text=None,
                    error=f"unexpected error: {type(error).__name__}: {error}",
                    attempts=0,
                )
            finally:
                progress.update(1)

        entered = self._http is None
        if entered:
            await self.__aenter__()
        try:
            return list(await asyncio.gather(*(run_one(messages) for messages in checked)))
        finally:
            progress.close()
            if entered:
                await self.__aexit__(None, None, None)

    def complete_many(
        self,
        list_of_messages: Sequence[Sequence[Mapping[str, str]]],
        **sampling: Any,
    ) -> list[Completion]:
        """Runs every request concurrently (bounded) and returns the completions in input order.

        Sampling keywords as for :meth:`complete`. Never raises for a failed request. Must not be
        called from a running event loop (use :meth:`complete_many_async` there).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.complete_many_async(list_of_messages, **sampling))
        raise RuntimeError(
            "HttpJudgeClient.complete_many: called inside a running event loop; "
            "await complete_many_async instead"
        )
