"""A real HTTP server on 127.0.0.1 speaking OpenAI chat-completions JSON, with fault injection.

Test helper (not part of the library). ``FakeOpenAIServer`` runs a
``http.server.ThreadingHTTPServer`` in a background thread. Each request is keyed by the content
of its last message; ``script[key]`` is a list of actions consumed one per request with that key
(``"ok"`` once the list is empty), so concurrent requests get deterministic faults:

- ``"ok"``: 200 with the reply ``"echo: <last message content>"`` (or ``replies(<last message
  content>)`` when the ``replies`` function is set) and a ``usage`` object
  (``usage_total_tokens``; none when that is None), plus logprobs when the request asked;
- ``"slow"``: sleeps ``slow_s`` seconds, then replies ok (beyond a small client timeout);
- ``"500"``, ``"503"``, ``"400"``, ``"401"``: that status with a JSON error body;
- ``"429"`` or ``"429:<seconds>"``: 429 with ``Retry-After: <seconds>`` when given;
- ``"malformed"``: 200 with a body that is not JSON;
- ``"drop"``: a 200 header promising 1000 bytes, a partial body, then the socket is closed.

It records every request (headers, JSON body, action) and the largest number of requests in
flight at once; ``delay_s`` holds every reply that long so that concurrency can be observed.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class RecordedRequest:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    action: str


class _Server(http.server.ThreadingHTTPServer):
    """One thread per request, and a listen backlog above any client's concurrency: the stdlib
    default of 5 lets a loaded machine refuse connections of a 16-request burst, which a client
    with one attempt reports as a failed request."""

    daemon_threads = True
    request_queue_size = 128


class FakeOpenAIServer:
    """Start with ``start()``, stop with ``stop()``; ``base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.requests: list[RecordedRequest] = []
        self.slow_s = 1.0
        self.delay_s = 0.0
        self.usage_total_tokens: int | None = 8
        self.replies: Callable[[str], str] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset(self) -> None:
        """Forgets recorded requests and counters (script and settings kept)."""
        with self._lock:
            self.requests.clear()
            self.in_flight = 0
            self.max_in_flight = 0

    def count(self, action: str | None = None) -> int:
        """Requests received, or those answered with ``action``."""
        with self._lock:
            return sum(1 for r in self.requests if action is None or r.action == action)

    def _next_action(self, key: str) -> str:
        with self._lock:
            actions = self.script.get(key)
            return actions.pop(0) if actions else "ok"

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                del format, args  # Keep test output quiet.

            def _send_json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                    key = body["messages"][-1]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    body, key = None, ""
                action = server._next_action(key)
                with server._lock:
                    server.requests.append(
                        RecordedRequest(self.path, dict(self.headers.items()), body, action)
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._respond(action, body, key)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _respond(self, action: str, body: dict[str, Any] | None, key: str) -> None:
                if server.delay_s:
                    time.sleep(server.delay_s)
                if self.path != "/v1/chat/completions" or body is None:
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                name, _, argument = action.partition(":")
                if name == "slow":
                    time.sleep(server.slow_s)
                    name = "ok"
                if name in ("500", "503", "400", "401"):
                    self._send_json(int(name), {"error": {"message": f"injected {name}"}})
                elif name == "429":
                    headers = {"Retry-After": argument} if argument else {}
                    self._send_json(429, {"error": {"message": "rate limited"}}, headers)
                elif name == "malformed":
                    data = b'{"choices": [ this is not json'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif name == "drop":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [{"mess')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif name == "ok":
                    self._send_json(200, server._reply(body, key))
                else:
                    raise ValueError(f"unknown scripted action {action!r}")

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _reply(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        text = self.replies(key) if self.replies is not None else f"echo: {key}"
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            count = int(body.get("top_logprobs") or 0)
            tokens = ["echo", ":"]
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": -0.5 * (position + 1),
                        "bytes": list(token.encode()),
                        "top_logprobs": [
                            {"token": f"{token}#{rank}", "logprob": -1.0 - rank, "bytes": []}
                            for rank in range(count)
                        ],
                    }
                    for position, token in enumerate(tokens)
                ]
            }
        reply: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [choice],
        }
        if self.usage_total_tokens is not None:
            reply["usage"] = {
                "prompt_tokens": self.usage_total_tokens - 3,
                "completion_tokens": 3,
                "total_tokens": self.usage_total_tokens,
            }
        return reply

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
