"""A small OpenAI-compatible chat-completions server around a JAX model (run by ``rar-serve-judge``).

Puts a judge (any ``load_model_and_tokenizer`` source: the embedded SmolLM2, a .gguf file or an
HF checkpoint directory) on a host where other machines reach it with the HTTP judge backend
(``--config.judge.backend=http --config.judge.http.base_url=http://<host>:<port>/v1``). Standard
library only (``http.server.ThreadingHTTPServer``).

Routes:

- ``POST /v1/chat/completions``: ``messages`` (``{"role": system|developer|user|assistant,
  "content": str or [{"type": "text", "text": str}, ...]}``), ``max_tokens`` (or
  ``max_completion_tokens``; default and upper bound ``--max_new_tokens_cap``), ``temperature``
  (default 1; 0 = greedy), ``top_p``, ``n`` (1-16 choices), ``seed``, ``stop`` (a string or up to
  4), ``logprobs`` and ``top_logprobs`` (0-20). Other OpenAI fields (``model``, ``user``, ...)
  are accepted and ignored; ``stream: true`` is refused. The reply follows the OpenAI schema: id,
  object, created, model, ``choices[i].message.content``, ``finish_reason`` ("stop" or
  "length"), ``logprobs.content`` when asked, and ``usage``.
- ``GET /v1/models``: the one served model. ``GET /health``: ``{"status": "ok"}``.

A malformed request gets HTTP 400 with an OpenAI-style body ``{"error": {"message", "type":
"invalid_request_error", "param": <field>, "code": null}}`` naming the field; an unknown route
404; a failure inside generation 500.

Generation runs through :class:`rar_jax.models.sampler.Sampler`, one request at a time (a lock;
the HTTP threads only parse and wait). A request whose client hung up (e.g. its timeout ran out)
is not generated for nobody: dropped when its turn comes, or stopped within
``--cancel_check_tokens`` decode steps when the client leaves during its generation, with one
log line each. A retry of such a request therefore finds no abandoned work still running ahead
of it; the work lost is at most one chunk of decode steps.

The sampler compiles one program per ``max_new_tokens``, so a request's ``max_tokens`` is rounded
up to a power of two (at most the cap) and the reply cut back to ``max_tokens`` tokens: greedy
replies equal a direct greedy call with ``max_tokens``, and the number of compilations stays
logarithmic in the cap. Without a ``seed`` every request draws a
fresh key (``fold_in(key(--seed), request number)``).

Log-probabilities (``logprobs``): for each returned token (not the final end-of-sequence token),
its log-probability and the ``top_logprobs`` most likely tokens under the model's untempered
next-token distribution ``log_softmax(logits)``, from one jitted forward of prompt + reply.
Token strings are the tokenizer's decoding of the single id (a byte-level token holding part of
a UTF-8 character decodes to U+FFFD).

"""
from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import math
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models.batching import bucket_size
from rar_jax.models.decoder import Decoder
from rar_jax.models.sampler import (
    DEFAULT_PROMPT_BUCKETS,
    FINISH_LENGTH,
    GenerationCancelled,
    Sampler,
    SamplingParams,
)


CHAT_ROLES = ("system", "developer", "user", "assistant")
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 4


class ClientGone(Exception):
    """The client closed its connection: its request is dropped before or during generation."""


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-style error reply.

    Attributes:
        message: what is wrong and what was expected.
        param: the request field at fault (None for the body as a whole).
        status: the HTTP status (400 unless said otherwise).
    """

    def __init__(self, message: str, param: str | None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request.

    Attributes:
        messages: ``{"role", "content"}`` with string contents ("developer" read as "system").
        max_tokens: most tokens per choice (1 .. cap).
        temperature: 0 = greedy; > 0 samples.
        top_p: nucleus mass in (0, 1].
        n: choices to return.
        seed: seed of the sampling key, or None.
        stop: stop strings.
        logprobs: return per-token log-probabilities.
        top_logprobs: alternatives per token (0-20).
    """

    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _message_content(content: Any, field: str) -> str:
    """A message's text: a string, or the concatenated text of ``[{"type": "text", ...}]`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise RequestError(
                    f"{field}[{index}]: expected a text part {{'type': 'text', 'text': str}}; "
                    "only text is supported",
                    f"{field}[{index}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(
        f"{field}: expected a string or a list of text parts, got {type(content).__name__}", field
    )


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise RequestError("messages: expected a non-empty list of chat messages", "messages")
    messages = []
    for index, message in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise RequestError(f"{field}: expected an object with 'role' and 'content'", field)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise RequestError(
                f"{field}.role: expected one of {', '.join(CHAT_ROLES)}, got {role!r}",
                f"{field}.role",
            )
        content = _message_content(message.get("content"), f"{field}.content")
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    return tuple(messages)


def _optional(body: Mapping[str, Any], field: str, default: Any) -> Any:
    value = body.get(field)
    return default if value is None else value


def parse_chat_request(body: Any, *, max_new_tokens_cap: int) -> ChatRequest:
    """Checks a chat-completion request body (the parsed JSON).

    Args:
        body: the request's JSON value.
        max_new_tokens_cap: the largest ``max_tokens`` allowed (and the default).

    Raises:
        RequestError naming the first field at fault.
    """
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object", None)
    if body.get("stream"):
        raise RequestError("stream: streaming replies are not supported", "stream")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model: expected a string, got {type(model).__name__}", "model")
    messages = _messages(body.get("messages"))

    field = "max_tokens"
    if body.get("max_completion_tokens") is not None:
        field = "max_completion_tokens"
    max_tokens = _optional(body, field, max_new_tokens_cap)
    if not _is_int(max_tokens) or max_tokens < 1:
        raise RequestError(f"{field}: expected an integer >= 1, got {max_tokens!r}", field)
    if max_tokens > max_new_tokens_cap:
        raise RequestError(
            f"{field}: {max_tokens} is more than this server's cap of {max_new_tokens_cap} "
            "(--max_new_tokens_cap)",
            field,
        )
    temperature = _optional(body, "temperature", 1.0)
    if not _is_number(temperature) or temperature < 0:
        raise RequestError(
            f"temperature: expected a number >= 0 (0 = greedy), got {temperature!r}", "temperature"
        )
    top_p = _optional(body, "top_p", 1.0)
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise RequestError(f"top_p: expected a number in (0, 1], got {top_p!r}", "top_p")
    n = _optional(body, "n", 1)
    if not _is_int(n) or not 1 <= n <= MAX_CHOICES:
        raise RequestError(f"n: expected an integer in [1, {MAX_CHOICES}], got {n!r}", "n")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(f"seed: expected an integer, got {seed!r}", "seed")
    stop = _optional(body, "stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise RequestError(
            f"stop: expected a non-empty string or a list of up to {MAX_STOP_STRINGS}, got "
            f"{stop!r}",
            "stop",
        )
    logprobs = _optional(body, "logprobs", False)
    if not isinstance(logprobs, bool):
        raise RequestError(f"logprobs: expected a boolean, got {logprobs!r}", "logprobs")
    top_logprobs = _optional(body, "top_logprobs", 0)
    if not _is_int(top_logprobs) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise RequestError(
            f"top_logprobs: expected an integer in [0, {MAX_TOP_LOGPROBS}], got {top_logprobs!r}",
            "top_logprobs",
        )
    if top_logprobs and not logprobs:
        raise RequestError("top_logprobs: needs logprobs: true", "top_logprobs")
    return ChatRequest(
        messages=messages,
        max_tokens=int(max_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        n=int(n),
        seed=None if seed is None else int(seed),
        stop=tuple(stop),
        logprobs=logprobs,
        top_logprobs=int(top_logprobs),
    )


def generation_budget(max_tokens: int, cap: int) -> int:
    """Tokens the sampler generates for a request: the next power of two >= max_tokens, <= cap."""
    return min(cap, 1 << (max_tokens - 1).bit_length())


def _completion_logprobs(
    graphdef: Any,
    params: Any,
    tokens: jax.Array,
    mask: jax.Array,
    start: jax.Array,
    *,
    length: int,
    top_k: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Log-probabilities of a reply's tokens and the top alternatives, by one teacher-forced pass.

    Args:
        graphdef: the model's graph definition (static).
        params: its state.
        tokens: int32[1, t], prompt then reply, right-padded.
        mask: bool[1, t], True on real tokens.
        start: int32[], index of the last prompt token (its output predicts the first reply token).
        length: static; reply positions scored (>= the reply length; start + length < t).
        top_k: static; alternatives returned per position (>= 1).

    Returns:
        chosen f32[length] (log P of each next token), top_values f32[length, top_k] and
        top_ids int32[length, top_k], under ``log_softmax(logits)``.
    """
    model = nnx.merge(graphdef, params)
    positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
    hidden, _ = model(tokens, positions, attention_mask=mask, return_hidden=True)
    scored = jax.lax.dynamic_slice_in_dim(hidden[0], start, length, axis=0)  # [length, d]
    weight = model.lm_head_weight().astype(scored.dtype)
    logits = jnp.einsum("td,dv->tv", scored, weight, preferred_element_type=jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    targets = jax.lax.dynamic_slice_in_dim(tokens[0], start + 1, length)
    chosen = jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]
    top_values, top_ids = jax.lax.top_k(log_probs, top_k)
    return chosen, top_values, top_ids


_COMPLETION_LOGPROBS = jax.jit(
    _completion_logprobs, static_argnames=("graphdef", "length", "top_k")
)


class ChatCompletionEngine:
    """Turns checked requests into OpenAI chat-completion replies with a Sampler (one at a time).

    Args:
        model: the decoder.
        tokenizer: its tokenizer (needs a chat template).
        model_name: the name in replies and ``/v1/models``.
        max_new_tokens_cap: the largest ``max_tokens`` (also the default).
        seed: seed of the keys of requests without a ``seed``.
        cancel_check_tokens: decode steps between checks that the client is still there.
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer: Any,
        *,
        model_name: str,
        max_new_tokens_cap: int = 1024,
        seed: int = 0,
        cancel_check_tokens: int = 16,
    ):
        if max_new_tokens_cap < 1:
            raise ValueError(f"max_new_tokens_cap: expected >= 1, got {max_new_tokens_cap}")
        if tokenizer.chat_template is None:
            raise ValueError(f"{tokenizer.source}: the model has no chat template to serve chat")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_new_tokens_cap = int(max_new_tokens_cap)
        self.context_length = int(model.config.max_position_embeddings)
        self.sampler = Sampler(model, tokenizer)
        self._graphdef, self._params = nnx.split(model)
        self._base_key = jax.random.key(seed)
        self._lock = threading.Lock()
        self._requests = 0
        self.cancel_check_tokens = int(cancel_check_tokens)
        self.skipped_requests = 0  # Requests dropped because their client hung up while waiting.
        self.cancelled_requests = 0  # Generations stopped because their client hung up.

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of the chat-formatted conversation, ending with the assistant header."""
        try:
            return self.tokenizer.encode_chat(list(messages))
        except Exception as error:  # A template may raise anything for an odd conversation.
            raise RequestError(f"messages: the chat template failed: {error}", "messages") from None

    def _answer_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if ids and ids[-1] in self.sampler.stop_ids:
            ids = ids[:-1]
        return ids

    def _token_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode("utf-8"))}

    def _logprobs(self, prompt: list[int], reply: list[int], top: int) -> dict[str, Any]:
        """OpenAI ``logprobs`` object of a reply (see the module docstring)."""
        if not reply:
            return {"content": []}
        length = bucket_size(len(reply), DEFAULT_PROMPT_BUCKETS)
        total = bucket_size(len(prompt) + length, DEFAULT_PROMPT_BUCKETS)
        tokens = np.full((1, total), self.sampler.pad_id, np.int32)
        mask = np.zeros((1, total), bool)
        sequence = prompt + reply
        tokens[0, : len(sequence)] = sequence
        mask[0, : len(sequence)] = True
        chosen, top_values, top_ids = _COMPLETION_LOGPROBS(
            self._graphdef,
            self._params,
            jnp.asarray(tokens),
            jnp.asarray(mask),
            jnp.asarray(len(prompt) - 1, jnp.int32),
            length=length,
            top_k=max(top, 1),
        )
        chosen, top_values, top_ids = map(np.asarray, (chosen, top_values, top_ids))
        content = []
        for position, token_id in enumerate(reply):
            entry = self._token_entry(token_id, chosen[position])
            entry["top_logprobs"] = [
                self._token_entry(int(top_ids[position, rank]), top_values[position, rank])
                for rank in range(top)
            ]
            content.append(entry)
        return {"content": content}

    def complete(
        self, request: ChatRequest, client_gone: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """The OpenAI chat-completion reply to ``request``.

        Args:
            request: the checked request.
            client_gone: called once the request's turn has come and then between chunks of
                ``cancel_check_tokens`` decode steps; True (the client timed out and hung up)
                skips or stops the generation.

        Raises:
            RequestError when the prompt plus ``max_tokens`` does not fit the model's context;
            ClientGone when ``client_gone()`` said so.
        """
        prompt = self.prompt_ids(request.messages)
        if len(prompt) + request.max_tokens > self.context_length:
            raise RequestError(
                f"messages: the prompt has {len(prompt)} tokens; with max_tokens "
                f"{request.max_tokens} that exceeds the model's context of {self.context_length}",
                "messages",
            )
        greedy = request.temperature == 0
        sampling = SamplingParams(
            max_new_tokens=generation_budget(request.max_tokens, self.max_new_tokens_cap),
            temperature=1.0 if greedy else request.temperature,
            top_p=request.top_p,
            greedy=greedy,
            num_samples=request.n,
            stop_strings=request.stop,
            stop_check_interval=self.cancel_check_tokens,
        )
        with self._lock:
            if client_gone is not None and client_gone():
                self.skipped_requests += 1
                raise ClientGone("before its turn; not generated")
            self._requests += 1
            if request.seed is not None:
                key = jax.random.key(request.seed)
            else:
                key = jax.random.fold_in(self._base_key, self._requests)
            try:
                output = self.sampler.generate([prompt], sampling, key, cancelled=client_gone)
            except GenerationCancelled as stopped:
                self.cancelled_requests += 1
                raise ClientGone(f"after {stopped.steps} decode steps; generation stopped") from None
            choices, completion_tokens = [], 0
            for row in range(request.n):
                length = int(output.lengths[row])
                ids = [int(i) for i in output.tokens[row, :length]]
                if length > request.max_tokens:
                    ids = ids[: request.max_tokens]
                    reply = ids
                    text = self.tokenizer.decode(reply, skip_special_tokens=True)
                    finish = "length"
                else:
                    reply = self._answer_ids(ids)
                    text = output.texts[row]
                    finish = "length" if output.finish_reasons[row] == FINISH_LENGTH else "stop"
                completion_tokens += len(ids)
                choice: dict[str, Any] = {
                    "index": row,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                if request.logprobs:
                    choice["logprobs"] = self._logprobs(prompt, reply, request.top_logprobs)
                choices.append(choice)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt) + completion_tokens,
            },
        }

    def models(self) -> dict[str, Any]:
        """The ``GET /v1/models`` reply."""
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": 0, "owned_by": "rar-jax"}
            ],
        }


def error_body(
    message: str, param: str | None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog for many concurrent judge clients."""

    daemon_threads = True
    request_queue_size = 128  # The default 5 refuses connections of a 16-request client burst.


def make_server(
    engine: ChatCompletionEngine, host: str, port: int
) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``engine``; port 0 picks a free port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # Keep-alive: clients reuse their connections.

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            logging.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                logging.info("client %s hung up before its reply was sent", self.address_string())
                self.close_connection = True

        def _client_gone(self) -> bool:
            """True when the client closed the connection (readable with nothing to read)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, engine.models())
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, error_body(f"no route GET {self.path}", None, "not_found_error"))

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._send(400, error_body("the request needs a Content-Length header", None))
                return
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, error_body(f"no route POST {self.path}", None, "not_found_error"))
                return
            try:
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise RequestError(
                        f"the request body is not valid JSON: {error}", None
                    ) from None
                request = parse_chat_request(body, max_new_tokens_cap=engine.max_new_tokens_cap)
                reply = engine.complete(request, client_gone=self._client_gone)
            except ClientGone as gone:
                logging.info("client %s hung up %s", self.address_string(), gone)
                self.close_connection = True
                return
            except RequestError as error:
                self._send(error.status, error_body(error.message, error.param))
                return
            except Exception as error:  # Reported to the client; the server keeps serving.
                logging.exception("chat completion failed")
                self._send(
                    500, error_body(f"{type(error).__name__}: {error}", None, "server_error")
                )
                return
            self._send(200, reply)

    server = _Server((host, port), Handler)
    return server
