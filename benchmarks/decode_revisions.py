"""The sampler's prefill and decode loop: this tree's against a baseline revision's, side by side.

Not a test (CI never runs it). Times the two jitted programs of one `Sampler.generate` call of the
embedded SmolLM2-135M-Instruct (float32, greedy, EOS disabled so every row runs every step): the
prefill of ``--batch`` copies of a chat prompt padded to 64 tokens, and the decode loop of
``--max_new_tokens - 1`` steps from a copy of the prefill's state. Each tree runs in its own
worker (`benchmarks/revisions.py`); after each worker's compiling call the calls alternate. For
each batch size and tree: the best and median seconds of each program, decode tokens/s, and
whether the greedy tokens of both trees are equal. The last line is one JSON object.

    python benchmarks/decode_revisions.py --baseline 3c2d5e6 --batches 1,8,32 --repeats 3

Works with revisions before and after the decode loop moved into `rar_jax.models.decoding`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

# Appended, not inserted: a worker's rar_jax comes first, from its tree (PYTHONPATH).
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.revisions import Worker, serve, source_trees  # noqa: E402

PROMPT_LENGTH = 64
NO_EOS_ID = 1_000_000


def worker(batch: int, max_new_tokens: int) -> None:
    """Builds the programs with the ``rar_jax`` on ``sys.path`` and answers timing requests."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rar_jax.models.batching import left_pad
    from rar_jax.models.loading import load_model_and_tokenizer
    from rar_jax.models.sampler import Sampler, SamplingParams

    model, tokenizer = load_model_and_tokenizer("smollm2")
    sampler = Sampler(model, tokenizer, stop_ids=(NO_EOS_ID,))
    prompt = tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    tokens, positions, mask = left_pad([prompt] * batch, PROMPT_LENGTH, batch, sampler.pad_id)
    window = sampler.attention_window(PROMPT_LENGTH, 1, max_new_tokens)
    static = dict(top_k=0, use_top_p=False, greedy=True, stop_ids=sampler.stop_ids,
                  pad_id=sampler.pad_id, shardings=None)
    if hasattr(sampler, "decode_rules"):  # newer trees take the static rules as one argument
        static = {"rules": sampler.decode_rules(
            SamplingParams(max_new_tokens=max_new_tokens, greedy=True), batch)}
    one = jnp.asarray(1.0, jnp.float32)
    stop = jnp.asarray(max_new_tokens, jnp.int32)

    def prefill() -> Any:
        return sampler.prefill_program(
            sampler.graphdef, sampler.params, jnp.asarray(tokens), jnp.asarray(positions),
            jnp.asarray(mask), jnp.ones(batch, bool), jax.random.key(0), one, one,
            num_samples=1, max_new_tokens=max_new_tokens, cache_slots=window, **static)

    # Revisions before rar_jax.models.decoding took the padded prompt length as well.
    decode_static = dict(static, window=window)
    if "prompt_len" in inspect.signature(sampler.decode_program).parameters:
        decode_static["prompt_len"] = PROMPT_LENGTH

    def decode(state: Any) -> Any:
        return sampler.decode_program(sampler.graphdef, sampler.params, state, stop, one, one,
                                      **decode_static)

    def call(_: str = "") -> dict[str, Any]:
        start = time.perf_counter()
        state = jax.block_until_ready(prefill())
        middle = time.perf_counter()
        out = jax.block_until_ready(decode(state))
        end = time.perf_counter()
        return {"prefill_s": middle - start, "decode_s": end - middle,
                "tokens": np.asarray(out.tokens).tolist()}

    print(json.dumps({"first": call()}), flush=True)
    serve(call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=None, help="a git revision to compare against")
    parser.add_argument("--current", default=None,
                        help="a git revision to time instead of the working tree")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1 or args.repeats < 1 or args.max_new_tokens < 2:
        parser.error("--batches >= 1, --repeats >= 1, --max_new_tokens >= 2")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        trees = source_trees(args.current, args.baseline, pathlib.Path(scratch))
        for batch in batches:
            load_before = os.getloadavg()[0]
            workers = {name: Worker(tree, __file__, [str(batch), str(args.max_new_tokens)])
                       for name, tree in trees.items()}
            calls: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, one in workers.items():
                    calls[name].append(one.call())
            for one in workers.values():
                one.close()
            figures: dict[str, Any] = {"load_avg_before_after": [load_before, os.getloadavg()[0]]}
            for name, runs in calls.items():
                side = {}
                for part in ("prefill", "decode"):
                    values = [run[f"{part}_s"] for run in runs]
                    side[f"{part}_best_s"], side[f"{part}_median_s"] = min(values), statistics.median(values)
                side["decode_tokens_per_s"] = batch * (args.max_new_tokens - 1) / side["decode_best_s"]
                figures[name] = side
                print(f"batch {batch:4d} {name:8s}: prefill {side['prefill_best_s'] * 1e3:7.0f} ms, "
                      f"decode {side['decode_best_s']:.2f} s = {side['decode_tokens_per_s']:.1f} "
                      f"tokens/s (best of {args.repeats})", flush=True)
            if "baseline" in calls:
                figures["same_tokens"] = calls["baseline"][-1]["tokens"] == calls["current"][-1]["tokens"]
                for part in ("prefill", "decode"):
                    figures[f"{part}_speedup"] = (figures["baseline"][f"{part}_best_s"]
                                                  / figures["current"][f"{part}_best_s"])
                print(f"batch {batch:4d}: speedup prefill {figures['prefill_speedup']:.2f}, decode "
                      f"{figures['decode_speedup']:.2f}, same greedy tokens: "
                      f"{figures['same_tokens']}; load {load_before:.1f} -> "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            report[f"batch_{batch}"] = figures
    print(json.dumps(report))


if __name__ == "__main__":
    main()
