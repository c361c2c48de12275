"""The OpenAI chat-completions protocol of the judge server: checked requests, replies, SSE chunks.

Pure functions of JSON values and of :class:`Completion` results (no model, no HTTP): the request
check (:func:`parse_chat_request`, which names the field at fault), the reply body
(:func:`completion_body`), the server-sent-event chunks of ``stream: true``
(:func:`stream_chunks`), and the reader of ``Transfer-Encoding: chunked`` request bodies
(:func:`read_chunked_body`). See :mod:`rar_jax.serving.server` for the routes and the decisions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

CHAT_ROLES = ("system", "developer", "user", "assistant")
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 4
MAX_BODY_BYTES = 32 * 1024 * 1024  # A larger request body gets HTTP 413.


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
        stream: answer with server-sent events (``chat.completion.chunk`` objects).
        include_usage: with ``stream``, a last chunk carries ``usage`` (``stream_options``).
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
    stream: bool = False
    include_usage: bool = False


@dataclasses.dataclass(frozen=True)
class Choice:
    """One generated answer of a request.

    Attributes:
        text: the answer text (after stop-string truncation, without the end-of-sequence token).
        token_ids: the answer's tokens as returned (no final end-of-sequence token).
        finish_reason: "stop" or "length".
        logprobs: per token of ``token_ids``, the OpenAI ``logprobs.content`` entry; None when
            the request did not ask for them.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    logprobs: tuple[dict[str, Any], ...] | None


@dataclasses.dataclass(frozen=True)
class Completion:
    """The result of one request: its choices and token counts.

    Attributes:
        choices: one per requested choice, in order.
        prompt_tokens: tokens of the chat-formatted prompt.
        completion_tokens: tokens generated over all choices (final stop tokens included).
    """

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int


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


def _stream_settings(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage`` of a request body."""
    stream = _optional(body, "stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream: expected a boolean, got {stream!r}", "stream")
    options = _optional(body, "stream_options", {})
    if not isinstance(options, Mapping):
        raise RequestError(
            f"stream_options: expected an object, got {type(options).__name__}", "stream_options"
        )
    if options and not stream:
        raise RequestError("stream_options: only allowed with stream: true", "stream_options")
    include_usage = _optional(options, "include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError(
            f"stream_options.include_usage: expected a boolean, got {include_usage!r}",
            "stream_options.include_usage",
        )
    return stream, include_usage


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
    stream, include_usage = _stream_settings(body)
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
        stream=stream,
        include_usage=include_usage,
    )


def error_body(
    message: str, param: str | None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def completion_body(
    completion: Completion, *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """The ``chat.completion`` reply object of a request."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": choice.text},
                "finish_reason": choice.finish_reason,
                "logprobs": None if choice.logprobs is None else {"content": list(choice.logprobs)},
            }
            for index, choice in enumerate(completion.choices)
        ],
        "usage": _usage(completion),
    }


def text_pieces(
    token_ids: Sequence[int], text: str, decode: Callable[[Sequence[int]], str]
) -> list[tuple[str, int, int]]:
    """The answer cut into streamed pieces, one per token where the text allows.

    A piece ends after token ``i`` when the decoding of ``token_ids[:i]`` is a prefix of ``text``
    longer than what was sent: a token holding part of a UTF-8 character waits for the rest, and
    tokens past a stop string's cut add no text (they join the last piece).

    Args:
        token_ids: the answer's tokens.
        text: the final answer text.
        decode: ids -> text, as the answer's text was decoded.

    Returns:
        ``(text, first token, end token)`` per piece; the texts concatenate to ``text`` and the
        token ranges tile ``range(len(token_ids))``. No pieces for an empty answer.
    """
    pieces: list[tuple[str, int, int]] = []
    sent, start = 0, 0
    for end in range(1, len(token_ids) + 1):
        prefix = decode(token_ids[:end])
        if len(prefix) > sent and text.startswith(prefix):
            pieces.append((text[sent:len(prefix)], start, end))
            sent, start = len(prefix), end
    if sent < len(text) or start < len(token_ids):
        pieces.append((text[sent:], start, len(token_ids)))
    return pieces


def stream_chunks(
    completion: Completion,
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    decode: Callable[[Sequence[int]], str],
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply, as the OpenAI API sends them.

    Per choice: a first chunk with ``delta = {"role": "assistant", "content": ""}``, one chunk
    per text piece (:func:`text_pieces`; with ``logprobs`` it carries its tokens' entries), and a
    chunk with an empty delta and the ``finish_reason``. With ``include_usage`` every chunk has
    ``"usage": null`` and a last chunk with no choices carries the usage. The ``data: [DONE]``
    line that ends the stream is the server's.
    """
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model}
    if include_usage:
        head["usage"] = None

    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None,
              finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs,
                  "finish_reason": finish_reason}
        return {**head, "choices": [choice]}

    chunks = []
    for index, choice in enumerate(completion.choices):
        chunks.append(chunk(index, {"role": "assistant", "content": ""}))
        for piece, first, end in text_pieces(choice.token_ids, choice.text, decode):
            logprobs = None
            if choice.logprobs is not None:
                logprobs = {"content": list(choice.logprobs[first:end])}
            chunks.append(chunk(index, {"content": piece}, logprobs))
        chunks.append(chunk(index, {}, finish_reason=choice.finish_reason))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": _usage(completion)})
    return chunks


def read_chunked_body(stream: BinaryIO, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` HTTP message (RFC 9112, section 7.1).

    Reads ``<hex size>[;extensions]\\r\\n<data>\\r\\n`` chunks up to the zero-size chunk, then the
    trailer lines up to the empty line (trailers are ignored).

    Raises:
        RequestError (400) for a malformed chunk, 413 when the body exceeds ``max_bytes``.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        line = stream.readline(1024)
        if not line.endswith(b"\n"):
            raise RequestError("chunked request body: a chunk size line is missing or too long",
                               None)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise RequestError(
                f"chunked request body: the chunk size {size_text[:20]!r} is not hexadecimal",
                None,
            ) from None
        if size < 0:
            raise RequestError("chunked request body: a negative chunk size", None)
        if size == 0:
            break
        total += size
        if total > max_bytes:
            raise RequestError(f"the request body is larger than {max_bytes} bytes", None, 413)
        data = stream.read(size)
        if len(data) != size or stream.read(2) != b"\r\n":
            raise RequestError("chunked request body: a chunk is shorter than its size", None)
        parts.append(data)
    while True:  # Trailer fields, up to the empty line.
        line = stream.readline(8192)
        if not line:
            raise RequestError("chunked request body: it ends before its last empty line", None)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)
