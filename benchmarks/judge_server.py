"""Judge server benchmark: judgments per second of ``rar-serve-judge`` at 1, 8 and 32 clients.

Not a test (CI never runs it). Starts the judge server (:mod:`rar_jax.serving.server`) in this
process on a free loopback port around the embedded SmolLM2-135M-Instruct (or ``--model``) and
sends it what a trainer's HTTP judge sends: explicit per-criterion judge prompts
(:func:`rar_jax.eval.judge_quality.judge_prompts`, built from the graded HealthBench answers in the
shared data and their rubric items), greedy, ``--max_tokens`` tokens (the config's
``judge.max_tokens`` by default), through the project's own
:class:`rar_jax.judges.http_backend.HttpJudgeClient`. ``c`` concurrent clients are ``c`` asyncio
tasks sharing one client (``max_concurrency = c``), each sending its share of the round's
requests one after the other; a round has ``max(c, --min_requests)`` requests.

Three server modes, measured side by side in one run, alternating (the order reversed every
other repeat) on the same engine, whose settings are switched between rounds:

* ``single``: one request at a time (``batch_window_s = 0``, ``max_batch_rows = 1``), the
  server's behaviour before requests were batched;
* ``batched``: requests arriving within ``--batch_window_ms`` (and the queue that built up while a
  batch ran) are generated together, up to ``--max_batch_rows`` rows, every prompt prefilled
  whole (``prefix_reuse = False``);
* ``reuse``: batched, and the prefix that a batch's prompts share (one answer's criterion
  prompts) is prefilled once (``prefix_reuse = True``, the server's default).

The judge prompts are sent in file order, so the criterion prompts of one answer arrive
together, as a trainer sends them. Only prompts of at most ``--max_prompt_tokens`` tokens are
used (the shortest HealthBench judge prompts; the median one has about 1,100 tokens), so that
every batch has one padded prompt length. A round at c clients sends requests 0 .. max(c,
--min_requests) - 1 (prompt ``i mod`` the number of prompts), client k the requests k, k + c,
...; the warm-up runs, untimed, every sampler call shape that the rounds' batches of
consecutive requests have (decode stopped after ``cancel_check_tokens`` steps), timing each,
so that the timed rounds compile nothing (the JSON reports the compilations during each round).
Per mode and client count it reports judgments per second (requests / wall seconds of the
round) and the p50 / p90 latency of one request, then the ratios to ``single`` and reuse /
batched. The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/judge_server.py              # 1, 8, 32 clients, 64 tokens
    .venv/bin/python benchmarks/judge_server.py --small      # 1 and 8 clients, 16 tokens
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import re
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from rar_jax.eval.judge_quality import healthbench_pairs, judge_prompts  # noqa: E402
from rar_jax.judges.http_backend import HttpJudgeClient, HttpJudgeConfig  # noqa: E402
from rar_jax.models.batching import bucket_size  # noqa: E402
from rar_jax.models.loading import load_model_and_tokenizer  # noqa: E402
from rar_jax.models.sampler import GenerationCancelled, SamplingParams  # noqa: E402
from rar_jax.serving import server as judge_server  # noqa: E402

SHARED_DATA = pathlib.Path(os.environ.get("RAR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "healthbench_graded_m42" / "judge_responses_100.jsonl"
MODES = ("single", "batched", "reuse")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="judge checkpoint (any loader source)")
    parser.add_argument("--data_path", default=str(DEFAULT_DATA), help="graded HealthBench JSONL")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--min_requests", type=int, default=8, help="least requests per round")
    parser.add_argument("--max_tokens", type=int, default=64,
                        help="max_tokens of every request (the config's judge.max_tokens)")
    parser.add_argument("--max_prompt_tokens", type=int, default=512,
                        help="use only judge prompts of at most this many tokens")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds per mode and count")
    parser.add_argument("--batch_window_ms", type=float, default=100.0,
                        help="batched modes' window (the server's default is 10 ms; a round's "
                        "first requests take longer to arrive on a loaded machine, and a batch "
                        "split in two has call shapes that the warm-up did not compile)")
    parser.add_argument("--max_batch_rows", type=int, default=32, help="batched modes' batch rows")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--small", action="store_true",
                        help="a quick run: --clients 1,8 --max_tokens 16")
    args = parser.parse_args()
    if args.small:
        args.clients, args.max_tokens = "1,8", 16
    args.clients = [int(c) for c in args.clients.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    for name in ("min_requests", "max_tokens", "max_prompt_tokens", "repeats", "max_batch_rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if any(c < 1 for c in args.clients):
        parser.error("--clients must be >= 1 each")
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes: expected a comma-separated subset of {', '.join(MODES)}")
    return args


def set_mode(engine: judge_server.ChatCompletionEngine, mode: str, args: argparse.Namespace
             ) -> None:
    """Switch the engine's batching and prefix reuse (read before each batch)."""
    if mode == "single":
        engine.batch_window_s, engine.max_batch_rows = 0.0, 1
    else:
        engine.batch_window_s = args.batch_window_ms / 1000
        engine.max_batch_rows = args.max_batch_rows
    engine.prefix_reuse = mode == "reuse"


def round_batches(clients: int, requests: int, max_batch_rows: int, mode: str) -> list[list[int]]:
    """The request indices of the batches a round is expected to make: its clients' requests
    go out together, ``clients`` consecutive indices at a time (one at a time when single)."""
    size = 1 if mode == "single" else min(clients, max_batch_rows)
    return [list(range(first, min(first + size, requests))) for first in range(0, requests, size)]


def warm_up(engine: judge_server.ChatCompletionEngine, prompt_ids: list[list[int]],
            args: argparse.Namespace) -> dict[str, Any]:
    """Compile, untimed, the programs of every sampler call shape the rounds' batches have.

    Each call is stopped at its first cancellation check (after ``cancel_check_tokens`` decode
    steps): the decode program is compiled by then and the rest would only cost time.

    Returns:
        total seconds, and per call shape its seconds and the compilations it caused.
    """
    budget = judge_server.generation_budget(args.max_tokens, engine.max_new_tokens_cap)
    sampling = SamplingParams(max_new_tokens=budget, greedy=True,
                              stop_check_interval=engine.cancel_check_tokens)
    calls: dict[tuple[Any, ...], Any] = {}
    for mode in args.modes:
        set_mode(engine, mode, args)
        for clients in args.clients:
            requests = max(clients, args.min_requests)
            for batch in round_batches(clients, requests, args.max_batch_rows, mode):
                prompts = [prompt_ids[i % len(prompt_ids)] for i in batch]
                groups = engine.prefix_plan(prompts)
                calls.setdefault(engine.sampler.prefill_shape(prompts, groups)[0],
                                 (prompts, groups))
    start = time.perf_counter()
    shapes = []
    for shape, (prompts, groups) in calls.items():
        del COMPILES[:]
        call_start = time.perf_counter()
        try:
            engine.sampler.generate(prompts, sampling, jax.random.key(0),
                                    cancelled=lambda: True, prefix_groups=groups)
        except GenerationCancelled:
            pass
        seconds = time.perf_counter() - call_start
        compiles = {name: round(s, 1) for name, s in COMPILES if s >= 0.5}
        shapes.append({"shape": shape._asdict(), "seconds": seconds, "compile_s": compiles})
        print(f"  warm-up call {shape._asdict()}: {seconds:.1f} s, of which compiling "
              f"{compiles}", flush=True)
    return {"seconds": time.perf_counter() - start, "calls": shapes}


COMPILES: list[tuple[str, float]] = []  # (program, seconds) of the compilations since cleared


class _CompileLog(logging.Handler):
    """Collects JAX's "Finished XLA compilation of jit(<name>) in <s> sec" log lines."""

    PATTERN = re.compile(r"Finished XLA compilation of jit\((\w+)\) in ([0-9.e-]+) sec")

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            COMPILES.append((match.group(1), float(match.group(2))))


def log_compile_times() -> None:
    """Record every compilation's seconds in COMPILES instead of printing JAX's log lines."""
    jax.config.update("jax_log_compiles", True)
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(_CompileLog())
    jax_logger.propagate = False


async def run_round(client: HttpJudgeClient, messages: list, clients: int, requests: int,
                    max_tokens: int) -> dict[str, Any]:
    """``requests`` judge requests from ``clients`` concurrent tasks; wall time and latencies."""
    latencies: list[float] = []
    failures: list[str] = []
    texts: dict[int, str] = {}

    async def one_client(first: int) -> None:
        for index in range(first, requests, clients):
            start = time.perf_counter()
            completion = await client.complete(
                messages[index % len(messages)], max_tokens=max_tokens, temperature=0.0)
            latencies.append(time.perf_counter() - start)
            if completion.ok:
                texts[index] = completion.text
            else:
                failures.append(completion.error)

    async with client:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(first) for first in range(clients)))
        wall = time.perf_counter() - start
    return {
        "requests": requests,
        "failed": len(failures),
        "failures": failures[:3],
        "wall_s": wall,
        "judgments_per_s": (requests - len(failures)) / wall,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p90_s": float(np.percentile(latencies, 90)),
        "texts": texts,
    }


def main() -> None:
    args = parse_args()
    log_compile_times()
    pairs = healthbench_pairs(args.data_path).pairs
    prompts, _ = judge_prompts(pairs)
    model, tokenizer = load_model_and_tokenizer(args.model)
    lengths = [len(tokenizer.encode_chat(p.messages)) for p in prompts]
    chosen = [i for i, n in enumerate(lengths) if n <= args.max_prompt_tokens]
    if not chosen:
        raise SystemExit(f"no judge prompt of {args.data_path} has <= {args.max_prompt_tokens} "
                         f"tokens (shortest: {min(lengths)})")
    messages = [prompts[i].messages for i in chosen]
    prompt_ids = [tokenizer.encode_chat(m) for m in messages]
    engine = judge_server.ChatCompletionEngine(
        model, tokenizer, model_name="judge", max_new_tokens_cap=max(64, args.max_tokens))
    httpd = judge_server.make_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    base_url = f"http://{host}:{port}/v1"
    buckets = sorted({bucket_size(n, engine.sampler.prompt_buckets) for n in map(len, prompt_ids)})
    print(f"{len(messages)} judge prompts of <= {args.max_prompt_tokens} tokens (padded to "
          f"{buckets}); max_tokens {args.max_tokens}; server at {base_url}; load "
          f"{open('/proc/loadavg').read().split()[:3]}", flush=True)
    warm = warm_up(engine, prompt_ids, args)
    print(f"warm-up ({len(warm['calls'])} sampler call shapes): {warm['seconds']:.1f} s",
          flush=True)

    results: dict[str, dict[int, list[dict[str, Any]]]] = {m: {} for m in args.modes}
    for clients in args.clients:
        requests = max(clients, args.min_requests)
        for repeat in range(args.repeats):
            order = args.modes if repeat % 2 == 0 else args.modes[::-1]
            for mode in order:
                set_mode(engine, mode, args)
                client = HttpJudgeClient(HttpJudgeConfig(
                    base_url=base_url, model="judge", max_concurrency=clients, timeout_s=3600.0,
                    max_attempts=1, progress_min_requests=0))
                calls_before = len(engine.batch_sizes)
                compiles_before = sum(engine.sampler.compile_counts().values())
                result = asyncio.run(run_round(client, messages, clients, requests,
                                               args.max_tokens))
                result["batches"] = engine.batch_sizes[calls_before:]
                result["shared_prefixes"] = engine.batch_prefixes[calls_before:]
                result["compiles"] = sum(engine.sampler.compile_counts().values()) - compiles_before
                result["load"] = float(open("/proc/loadavg").read().split()[0])
                results[mode].setdefault(clients, []).append(result)
                print(f"{mode:7s} {clients:3d} clients: {result['judgments_per_s']:.3f} "
                      f"judgments/s, latency p50 {result['latency_p50_s']:.2f} s, p90 "
                      f"{result['latency_p90_s']:.2f} s, {result['failed']} failed, "
                      f"batches {result['batches']}, shared prefixes {result['shared_prefixes']}, "
                      f"{result['compiles']} compiles (load {result['load']:.2f})",
                      flush=True)
    httpd.shutdown()
    httpd.server_close()

    summary: dict[str, Any] = {
        "model": args.model, "prompts": len(messages), "prompt_buckets": buckets,
        "max_tokens": args.max_tokens, "repeats": args.repeats,
        "batch_window_ms": args.batch_window_ms, "max_batch_rows": args.max_batch_rows,
        "warmup_s": warm["seconds"], "warmup_calls": warm["calls"],
        "backend": jax.default_backend(),
    }
    for mode, by_clients in results.items():
        summary[mode] = {}
        for clients, rounds in by_clients.items():
            best = max(rounds, key=lambda r: r["judgments_per_s"])
            summary[mode][str(clients)] = {
                "judgments_per_s": best["judgments_per_s"],
                "latency_p50_s": best["latency_p50_s"],
                "latency_p90_s": best["latency_p90_s"],
                "requests": best["requests"], "failed": sum(r["failed"] for r in rounds),
                "requests_per_sampler_call": best["batches"],
                "shared_prefixes_per_call": best["shared_prefixes"],
                "compiles": sum(r["compiles"] for r in rounds),
                "load": [r["load"] for r in rounds],
            }
    pairs = [(a, b) for a, b in (("batched", "single"), ("reuse", "single"),
                                 ("reuse", "batched")) if a in results and b in results]
    for mode, base in pairs:
        ratios = {str(c): summary[mode][str(c)]["judgments_per_s"]
                  / summary[base][str(c)]["judgments_per_s"] for c in args.clients}
        summary[f"{mode}_over_{base}"] = ratios
        print(f"{mode} / {base} judgments per second: " + ", ".join(
            f"{c} clients {r:.2f}x" for c, r in ratios.items()))
    # Greedy replies must not depend on batching or prefix reuse: compare with the first mode.
    first = args.modes[0]
    differing = {}
    for mode in args.modes[1:]:
        differing[mode] = sum(
            reference["texts"][i] != other["texts"].get(i)
            for clients in args.clients
            for reference, other in zip(results[first][clients], results[mode][clients])
            for i in reference["texts"])
    summary[f"replies_differing_from_{first}"] = differing
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
