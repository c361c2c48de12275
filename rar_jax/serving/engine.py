"""The judge server's generation engine: requests collected into batched ``Sampler.generate`` calls.

HTTP threads call :meth:`ChatCompletionEngine.complete`, which queues the request and waits. One
worker thread owns the :class:`~rar_jax.models.sampler.Sampler`: it takes the oldest queued
request, waits until ``batch_window_s`` after that request's arrival for more (or until
``max_batch_rows`` rows of any kind are queued), picks the queued requests that can share its
sampler call (:func:`batch_key`, :func:`select_batch`) and generates them in ONE call, then
answers each with its own choices, usage and log-probs; prompts of a batch that share a long
token prefix are grouped (:func:`prefix_groups`) and each group's prefix is prefilled once. Requests queued while a batch runs have
waited longer than the window, so the next batch starts as soon as the worker is free. The
batching decisions are listed in :mod:`rar_jax.serving.server`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models.batching import bucket_size
from rar_jax.models.decoder import Decoder
from rar_jax.models.prefix_decoding import shared_prefix_length
from rar_jax.models.sampler import (
    DEFAULT_PROMPT_BUCKETS,
    FINISH_LENGTH,
    GenerationCancelled,
    SampleOutput,
    Sampler,
    SamplingParams,
)
from rar_jax.serving.protocol import ChatRequest, Choice, Completion, RequestError

logger = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client closed its connection: its request is dropped before or during generation."""


def generation_budget(max_tokens: int, cap: int) -> int:
    """Tokens the sampler generates for a request: the next power of two >= max_tokens, <= cap."""
    return min(cap, 1 << (max_tokens - 1).bit_length())


def batch_key(request: ChatRequest, *, budget: int, prompt_bucket: int) -> Hashable | None:
    """What a request's sampler call is defined by; requests with equal keys share one call.

    The sampler takes one ``SamplingParams`` per call, so a batch shares the generation budget,
    the number of choices, the stop strings and the sampling rule (greedy; or temperature and
    top_p). Greedy requests ignore temperature and top_p (the server samples them at
    temperature 1 for the log-probs). The padded prompt length is part of the key, so a short
    prompt is never padded to a long one's bucket (prefill is compute-bound: padding costs).

    Returns:
        The key, or None for a seeded sampled request: it runs alone, so that its reply depends
        on its seed only, never on the requests that happened to arrive with it.
    """
    if request.temperature == 0:
        rule: tuple[Any, ...] = ("greedy",)
    elif request.seed is not None:
        return None
    else:
        rule = ("sample", request.temperature, request.top_p)
    return (budget, prompt_bucket, request.n, request.stop, *rule)


def select_batch(keys: Sequence[Hashable | None], rows: Sequence[int], max_rows: int) -> list[int]:
    """Indices of the queued requests generated together: the oldest, then every later one with
    its key while the rows fit.

    Args:
        keys: per queued request (oldest first), its :func:`batch_key`.
        rows: per queued request, its rows (its ``n``).
        max_rows: most rows of a batch; the oldest request is taken even when it has more.

    Returns:
        Increasing indices, starting with 0; empty for an empty queue.
    """
    if not keys:
        return []
    chosen, total = [0], rows[0]
    if keys[0] is None:
        return chosen
    for index in range(1, len(keys)):
        if keys[index] == keys[0] and total + rows[index] <= max_rows:
            chosen.append(index)
            total += rows[index]
    return chosen


MIN_PREFIX_TOKENS = 32


def prefix_groups(prompts: Sequence[Sequence[int]], min_prefix_tokens: int) -> list[int]:
    """Groups of prompts that share a token prefix, chosen to skip the most prefill tokens.

    A group of k prompts whose longest common prefix (leaving each prompt a token) has p tokens
    saves ``(k - 1) * p`` tokens when the prefix is prefilled once. Prompts sorted in lexicographic
    order put every set sharing a prefix next to each other, so the best grouping is a partition
    of the sorted prompts into consecutive runs; dynamic programming over the run ends finds the
    one with the largest saving (O(n^2), n <= a batch). A run of two or more prompts must share at
    least ``min_prefix_tokens`` tokens; the others are groups of one.

    E.g. 8 judge prompts, 2 answers x 4 criteria, with a 100-token system text in common and
    400-token answers: two groups of 4 save 2 * 3 * 400 tokens, one group of 8 only 7 * 100.

    Args:
        prompts: token id lists (non-empty).
        min_prefix_tokens: the least prefix worth sharing (>= 1).

    Returns:
        A group id per prompt (0, 1, ... in order of first appearance).
    """
    count = len(prompts)
    order = sorted(range(count), key=lambda i: list(prompts[i]))
    adjacent = [shared_prefix_length([prompts[a], prompts[b]]) for a, b in zip(order, order[1:])]
    best = [0] * (count + 1)  # best[j]: the largest saving over the first j sorted prompts
    start = list(range(-1, count))  # start[j]: where the last run of that grouping begins
    for end in range(1, count + 1):
        best[end], start[end] = best[end - 1], end - 1
        shared = shortest = len(prompts[order[end - 1]])
        for first in range(end - 2, -1, -1):  # the run order[first:end]
            shared = min(shared, adjacent[first])
            shortest = min(shortest, len(prompts[order[first]]))
            prefix = min(shared, shortest - 1)
            if prefix < min_prefix_tokens:
                break  # a longer run shares no more
            saving = best[first] + (end - first - 1) * prefix
            if saving > best[end]:
                best[end], start[end] = saving, first
    run_of = [0] * count
    end = count
    while end > 0:
        for position in range(start[end], end):
            run_of[order[position]] = start[end]
        end = start[end]
    numbers: dict[int, int] = {}
    return [numbers.setdefault(run, len(numbers)) for run in run_of]


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


@dataclasses.dataclass
class _Pending:
    """A queued request, its result once generated, and the event its HTTP thread waits on."""

    request: ChatRequest
    prompt: list[int]
    key: Hashable | None
    client_gone: Callable[[], bool] | None
    arrival: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: Completion | None = None
    error: BaseException | None = None

    def finish(self, result: Completion | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class ChatCompletionEngine:
    """Turns checked requests into completions with a Sampler, batching concurrent requests.

    Args:
        model: the decoder.
        tokenizer: its tokenizer (needs a chat template).
        model_name: the name in replies and ``/v1/models``.
        max_new_tokens_cap: the largest ``max_tokens`` (also the default).
        seed: seed of the keys of requests without a ``seed``.
        cancel_check_tokens: decode steps between checks that the clients are still there.
        batch_window_s: how long after the oldest queued request's arrival the worker waits for
            more requests to batch with it (0: no wait; what queued meanwhile is still batched).
        max_batch_rows: most rows (sum of ``n``) of one sampler call; 1 with a window of 0
            serves one request at a time.
        prefix_reuse: prefill the prefix that a batch's prompts share once (:func:`prefix_groups`,
            ``Sampler.generate(prefix_groups=...)``) when that runs fewer padded prefill tokens.
        min_prefix_tokens: the least shared prefix worth a group (default `MIN_PREFIX_TOKENS`).

    ``batch_window_s``, ``max_batch_rows`` and ``prefix_reuse`` are read before each batch, so
    they may be changed while serving (the benchmark switches them).
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
        batch_window_s: float = 0.01,
        max_batch_rows: int = 32,
        prefix_reuse: bool = True,
        min_prefix_tokens: int = MIN_PREFIX_TOKENS,
    ):
        if max_new_tokens_cap < 1:
            raise ValueError(f"max_new_tokens_cap: expected >= 1, got {max_new_tokens_cap}")
        if not batch_window_s >= 0:
            raise ValueError(f"batch_window_s: expected >= 0, got {batch_window_s}")
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows: expected >= 1, got {max_batch_rows}")
        if min_prefix_tokens < 1:
            raise ValueError(f"min_prefix_tokens: expected >= 1, got {min_prefix_tokens}")
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
        self.cancel_check_tokens = int(cancel_check_tokens)
        self.batch_window_s = float(batch_window_s)
        self.max_batch_rows = int(max_batch_rows)
        self.prefix_reuse = bool(prefix_reuse)
        self.min_prefix_tokens = int(min_prefix_tokens)
        self._lock = threading.Lock()  # Held while a batch generates.
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queue_changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._batches = 0
        self.batch_sizes: list[int] = []  # Requests per sampler call, in order (for tests, logs).
        self.batch_prefixes: list[int] = []  # Shared prefixes per sampler call (0: no reuse).
        self.skipped_requests = 0  # Requests dropped because their client hung up while waiting.
        self.cancelled_requests = 0  # Requests whose generation stopped because all clients left.

    # ------------------------------------------------------------------ requests
    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of the chat-formatted conversation, ending with the assistant header."""
        try:
            return self.tokenizer.encode_chat(list(messages))
        except Exception as error:  # A template may raise anything for an odd conversation.
            raise RequestError(f"messages: the chat template failed: {error}", "messages") from None

    def complete(
        self, request: ChatRequest, client_gone: Callable[[], bool] | None = None
    ) -> Completion:
        """The completion of ``request``, generated in a batch with concurrent requests.

        Args:
            request: the checked request.
            client_gone: called when the request's batch is about to start and then between
                chunks of ``cancel_check_tokens`` decode steps; True (the client timed out and
                hung up) drops the request before generation, and stops a generation whose
                clients all left.

        Raises:
            RequestError when the prompt plus ``max_tokens`` does not fit the model's context;
            ClientGone when ``client_gone()`` said so; any error of the generation.
        """
        prompt = self.prompt_ids(request.messages)
        if len(prompt) + request.max_tokens > self.context_length:
            raise RequestError(
                f"messages: the prompt has {len(prompt)} tokens; with max_tokens "
                f"{request.max_tokens} that exceeds the model's context of {self.context_length}",
                "messages",
            )
        key = batch_key(
            request,
            budget=generation_budget(request.max_tokens, self.max_new_tokens_cap),
            prompt_bucket=bucket_size(len(prompt), self.sampler.prompt_buckets),
        )
        pending = _Pending(request, prompt, key, client_gone, time.monotonic())
        with self._queue_changed:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._serve, name="judge-batcher", daemon=True
                )
                self._worker.start()
            self._queue.append(pending)
            self._queue_changed.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self) -> None:
        """Stop the worker after its current batch; queued requests fail with RuntimeError."""
        with self._queue_changed:
            self._closed = True
            self._queue_changed.notify_all()
            left = list(self._queue)
            self._queue.clear()
        for pending in left:
            pending.finish(error=RuntimeError("the server is shutting down"))
        if self._worker is not None:
            self._worker.join(timeout=60)

    # ------------------------------------------------------------------ the worker
    def _next_batch(self) -> list[_Pending] | None:
        """Wait for the oldest request's window (or a full batch) and take its batch off the
        queue; None once closed."""
        with self._queue_changed:
            while True:
                while not self._queue and not self._closed:
                    self._queue_changed.wait()
                if self._closed:
                    return None
                queued = list(self._queue)
                chosen = select_batch(
                    [p.key for p in queued], [p.request.n for p in queued], self.max_batch_rows
                )
                # The window ends early once the queue holds a full batch of rows (of any kind).
                queued_rows = sum(p.request.n for p in queued)
                remaining = queued[0].arrival + self.batch_window_s - time.monotonic()
                if remaining <= 0 or queued_rows >= self.max_batch_rows or queued[0].key is None:
                    break
                self._queue_changed.wait(remaining)
            batch = [queued[i] for i in chosen]
            for pending in batch:
                self._queue.remove(pending)
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run_batch(batch)
            except BaseException as error:  # Delivered to the waiting clients (HTTP 500).
                logger.exception("a batch of %d requests failed", len(batch))
                for pending in batch:
                    if not pending.done.is_set():
                        pending.finish(error=error)

    def _run_batch(self, batch: list[_Pending]) -> None:
        with self._lock:
            live = []
            for pending in batch:
                if pending.client_gone is not None and pending.client_gone():
                    self.skipped_requests += 1
                    pending.finish(error=ClientGone("before its turn; not generated"))
                else:
                    live.append(pending)
            if not live:
                return
            checks = [p.client_gone for p in live]
            cancelled = None
            if all(check is not None for check in checks):
                cancelled = lambda: all(check() for check in checks)  # noqa: E731
            try:
                results = self._generate([p.request for p in live], [p.prompt for p in live],
                                         cancelled)
            except GenerationCancelled as stopped:
                self.cancelled_requests += len(live)
                gone = ClientGone(f"after {stopped.steps} decode steps; generation stopped")
                for pending in live:
                    pending.finish(error=gone)
                return
        for pending, result in zip(live, results, strict=True):
            pending.finish(result)

    def _generate(
        self,
        requests: Sequence[ChatRequest],
        prompts: Sequence[list[int]],
        cancelled: Callable[[], bool] | None,
    ) -> list[Completion]:
        """One sampler call for requests of one :func:`batch_key`; a completion per request."""
        first = requests[0]
        greedy = first.temperature == 0
        sampling = SamplingParams(
            max_new_tokens=generation_budget(
                max(r.max_tokens for r in requests), self.max_new_tokens_cap
            ),
            temperature=1.0 if greedy else first.temperature,
            top_p=1.0 if greedy else first.top_p,
            greedy=greedy,
            num_samples=first.n,
            stop_strings=first.stop,
            stop_check_interval=self.cancel_check_tokens,
        )
        self._batches += 1
        if first.seed is not None and not greedy:
            key = jax.random.key(first.seed)  # A seeded sampled request is always alone.
        else:
            key = jax.random.fold_in(self._base_key, self._batches)
        self.batch_sizes.append(len(requests))
        groups = self.prefix_plan(prompts)
        self.batch_prefixes.append(0 if groups is None else len(set(groups)))
        logger.info("generating %d requests (%d rows) in one batch, %d shared prefixes",
                    len(requests), len(requests) * first.n, self.batch_prefixes[-1])
        output = self.sampler.generate(list(prompts), sampling, key, cancelled=cancelled,
                                       prefix_groups=groups)
        return [
            self._completion(request, prompt, output, index * first.n)
            for index, (request, prompt) in enumerate(zip(requests, prompts, strict=True))
        ]

    def prefix_plan(self, prompts: Sequence[list[int]]) -> list[int] | None:
        """The batch's :func:`prefix_groups` when reuse is on and it prefills fewer padded token
        slots than the whole prompts (``Sampler.prefill_slots``); else None."""
        if not self.prefix_reuse or len(prompts) < 2 or min(map(len, prompts)) < 2:
            return None
        groups = prefix_groups(prompts, self.min_prefix_tokens)
        if len(set(groups)) == len(prompts):
            return None
        if self.sampler.prefill_slots(prompts, groups) >= self.sampler.prefill_slots(prompts):
            return None
        return groups

    # ------------------------------------------------------------------ replies
    def _answer_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if ids and ids[-1] in self.sampler.stop_ids:
            ids = ids[:-1]
        return ids

    def _completion(
        self, request: ChatRequest, prompt: list[int], output: SampleOutput, first_row: int
    ) -> Completion:
        """A request's completion from its rows ``first_row ..`` of a batch's sampler output.

        The sampler generated a power-of-two budget (:func:`generation_budget`); a longer row
        is cut back to ``max_tokens`` tokens and finishes with "length".
        """
        choices, completion_tokens = [], 0
        for row in range(first_row, first_row + request.n):
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
            logprobs = None
            if request.logprobs:
                logprobs = self._logprobs(prompt, reply, request.top_logprobs)
            choices.append(Choice(text, tuple(reply), finish, logprobs))
        return Completion(tuple(choices), len(prompt), completion_tokens)

    def _token_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode("utf-8"))}

    def _logprobs(
        self, prompt: list[int], reply: list[int], top: int
    ) -> tuple[dict[str, Any], ...]:
        """OpenAI ``logprobs.content`` entries of a reply (see :mod:`rar_jax.serving.server`)."""
        if not reply:
            return ()
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
        return tuple(content)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of answer tokens, as the answers' texts are decoded (for streamed pieces)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def models(self) -> dict[str, Any]:
        """The ``GET /v1/models`` reply."""
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": 0, "owned_by": "rar-jax"}
            ],
        }
