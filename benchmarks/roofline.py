"""Roofline benchmark: this machine's bounds, and each program of a GRPO step as a fraction of them.

Not a test (CI never runs it). In one run it measures:

* the machine's bounds: the f32 and bf16 (f32 accumulation) matrix-multiply rate of square
  ``n x n`` products (best of ``--repeats`` timed calls after a compiling call; the rate is the
  best over ``--matmul_sizes``), and the memory read bandwidth (best of ``--repeats`` jitted sums
  of an f32 array of ``--bandwidth_mib`` MiB). Measured before the programs and again after them;
  each bound is the better of the two, and both are reported so that a drift shows.
* the decode loop (``Sampler.decode_program``, greedy, EOS disabled so that every row runs every
  step) of the embedded SmolLM2-135M-Instruct in float32 at the quickstart's shapes (prompts padded
  to ``rl.max_prompt_length``, ``rl.max_completion_length`` new tokens) at each of
  ``--decode_batches``. The state after the prefill is made once per batch size; each timed call
  decodes from a fresh copy of it, so the time excludes the prefill, the copy and compilation
  (the per-call per-layer weights of ``StackedLayers.per_layer`` are part of the program and are
  included).
  tokens/s = rows x decode steps / seconds; bytes per step = the weights in the compute dtype
  (read once per step) + the KV cache buffers a step reads (the whole attention window of every
  layer, their sizes as allocated); FLOPs per step from ``rar_jax.models.flops.decode_flops`` over
  the window.
* the in-process judge's verdict scoring (``JaxJudge.score_binary``, ``judge.batch_size`` rows
  per call) of every criterion of the first ``--judge_examples`` answers of ``--judge_dataset``
  (the prompts of ``benchmarks/judge.py``; ``--judge_max_prompts`` keeps the first few), with
  and without prefix reuse, ``--judge_repeats`` timed calls each, alternated. Tokens/s counts real
  context tokens (``JaxJudge.last_stats``); FLOPs are counted per jitted call from the shapes it
  ran (``forward_flops`` over the padded tokens and the cache slots attended, the LM head only
  where it runs: the last position of each row, and each multi-token option's positions).
  The time is the whole call (host tokenization included: what a trainer pays).
* the GRPO update (``rl.train_step.grpo_step`` jitted by ``jit_train_step``, the quickstart's
  ``rl`` and ``optim`` sections) on ``rows x tokens`` (default: the quickstart's 8 rows of
  prompt + answer); FLOPs from ``train_flops`` over the ``tokens - 1`` positions the model runs,
  the LM head over the answer positions only (where the step computes log-probs). These are
  the FLOPs of a per-row update: since ``rl.share_prompt_prefix`` (on by default) runs each
  prompt once per group of ``rl.num_generations`` rows, the update executes fewer (0.54 of them
  at the quickstart's shapes), so its fraction is an effective rate and can pass 100%.

Program rates use the best (fastest) timed call, as the bounds do, so that a shared machine's
noise lowers neither side alone; medians are reported beside them. Each program is reported as a
fraction of its bound: the bandwidth bound for decode at batch 1 and
8 (``BANDWIDTH_BOUND_BATCHES``: every step must read all weights), the f32 matmul bound otherwise
(the model runs in f32); each line names the bound it used, and decode lines give both fractions.
The last line printed is one JSON object with every figure and fraction.

With ``--baseline REV`` every program is measured twice, on this working tree ("after") and on the
files of git revision REV ("before", e.g. 1c14401, the commit that introduced this script), each
tree in its own worker process (`benchmarks/roofline_worker.py` through `benchmarks/revisions.py`)
that builds the programs with that tree's own roofline.py functions, so each tree is called
through its own sampler, cache, judge and train-step API. The parent measures the bounds (before
and after the programs, as above), sends each program to both workers at once (their compiling
calls overlap), then alternates the timed calls between them call by call. Both sides' rates use
this tree's counts of the work (the same ``rar_jax.models.flops`` formulas and bytes on the same
shapes), so the ratio of their fractions is the ratio of their speeds. Each program reports
before, after, after/before (the speed-up) and both sides' fractions of its bound; decode reports
whether both trees' greedy tokens are equal (or the first position where they differ), the judge
the largest difference of P(true) between the trees. The JSON's ``"programs"`` holds it all.

    .venv/bin/python benchmarks/roofline.py --small      # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/roofline.py --small --baseline 1c14401   # before/after
    .venv/bin/python benchmarks/roofline.py              # fuller: more sizes and repeats
    .venv/bin/python benchmarks/roofline.py --decode_batches 1,32 --judge_dataset kqa

``--small``: one timed call per figure, 2048^2 matmuls, a 1 GiB array, the first 8 criteria of one
K-QA answer; default: 5 timed calls, 2048^2 and 4096^2 matmuls, a 2 GiB array, every criterion of
one HealthBench answer (2 timed judge calls per path).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.judge import DEFAULT_PATHS, count_flops  # noqa: E402
from benchmarks.revisions import Worker, source_trees  # noqa: E402
from benchmarks.roofline_worker import chat_prompt_ids, judge_inputs  # noqa: E402
# QUESTIONS and the judge_quality names are read as this module's attributes (chat_prompt_ids,
# judge_inputs), as every tree's roofline.py has them.
from benchmarks.sampler import NO_EOS_ID, QUESTIONS  # noqa: E402,F401
from rar_jax.models import flops as flops_lib  # noqa: E402
from rar_jax.eval.judge_quality import (  # noqa: E402,F401
    healthbench_pairs, judge_prompts, kqa_pairs)
from rar_jax.judges.jax_backend import JaxJudge  # noqa: E402
from rar_jax.models.batching import left_pad  # noqa: E402
from rar_jax.models.loading import load_from_config  # noqa: E402
from rar_jax.models.sampler import Sampler, SamplingParams  # noqa: E402
from rar_jax.rl import train_step  # noqa: E402

QUICKSTART = REPO_ROOT / "configs" / "quickstart.py"
WORKER = REPO_ROOT / "benchmarks" / "roofline_worker.py"
BANDWIDTH_BOUND_BATCHES = (1, 8)  # Decode batches measured against the memory bound.


# ------------------------------------------------------------------------------- timing
def timed_runs(run: Callable[[], Any], repeats: int, prepare: Callable[[], Any] | None = None
               ) -> tuple[float, list[float]]:
    """The first call's seconds (compilation) and ``repeats`` further calls' seconds.

    Args:
        run: the work; called as ``run()`` or ``run(prepare())``, its result is waited for.
        repeats: timed calls after the first.
        prepare: optional untimed setup whose result is passed to ``run`` (e.g. a fresh copy of a
            donated state).
    """
    def once() -> float:
        argument = () if prepare is None else (jax.block_until_ready(prepare()),)
        start = time.perf_counter()
        jax.block_until_ready(run(*argument))
        return time.perf_counter() - start

    first = once()
    return first, [once() for _ in range(repeats)]


# ------------------------------------------------------------------------------- machine bounds
def matmul_rate(size: int, dtype: str, repeats: int) -> dict[str, Any]:
    """FLOP/s of a square ``[n, n] @ [n, n]`` product (2 n^3 FLOPs) in ``dtype``, f32 results."""
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys)
    product = jax.jit(functools.partial(jnp.matmul, preferred_element_type=jnp.float32))
    _, seconds = timed_runs(lambda: product(a, b), repeats)
    return {"size": size, "dtype": dtype, "best_s": min(seconds),
            "flops_per_s": 2 * size**3 / min(seconds)}


def read_bandwidth(mib: int, repeats: int) -> dict[str, Any]:
    """Bytes/s of a jitted sum over an f32 array of ``mib`` MiB (each element read once)."""
    array = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    _, seconds = timed_runs(lambda: total(array), repeats)
    return {"mib": mib, "best_s": min(seconds), "bytes_per_s": array.nbytes / min(seconds)}


def machine_bounds(sizes: list[int], bandwidth_mib: int, repeats: int) -> dict[str, Any]:
    """Matmul rates per dtype and size (best over sizes) and the read bandwidth."""
    bounds: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        runs = [matmul_rate(size, dtype, repeats) for size in sizes]
        bounds[f"matmul_{dtype}"] = {"flops_per_s": max(r["flops_per_s"] for r in runs),
                                     "runs": runs}
    bounds["read_bandwidth"] = read_bandwidth(bandwidth_mib, repeats)
    return bounds


def best_bounds(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """The better of the two measurements of each bound."""
    both = (before, after)
    return {
        "matmul_float32_flops_per_s": max(m["matmul_float32"]["flops_per_s"] for m in both),
        "matmul_bfloat16_flops_per_s": max(m["matmul_bfloat16"]["flops_per_s"] for m in both),
        "read_bytes_per_s": max(m["read_bandwidth"]["bytes_per_s"] for m in both),
    }


# ------------------------------------------------------------------------------- decode
def decode_figures(sampler: Sampler, prompts: list[list[int]], batch: int, prompt_len: int,
                   max_new: int, repeats: int) -> dict[str, Any]:
    """Times the decode loop of ``batch`` rows after one prefill (see the module docstring).

    Rows are ``min(batch, len(prompts))`` prompts times ``num_samples`` (the prefill replicates
    each prompt's cache rows), so the prefill stays small while the decode work is ``batch`` rows.
    """
    count = min(batch, len(prompts))
    if batch % count:
        raise ValueError(f"decode batch {batch} is not a multiple of {count} prompts")
    samples = batch // count
    params = SamplingParams(max_new_tokens=max_new, greedy=True, num_samples=samples)
    window = sampler.attention_window(prompt_len, 1, max_new)
    stop_step = min(max_new, window - prompt_len + 1)
    rules = sampler.decode_rules(params, batch)
    tokens, positions, mask = left_pad(prompts[:count], prompt_len, count, sampler.pad_id)
    temperature = jnp.asarray(params.temperature, jnp.float32)
    top_p = jnp.asarray(params.top_p, jnp.float32)
    state = sampler.prefill_program(
        sampler.graphdef, sampler.params, jnp.asarray(tokens), jnp.asarray(positions),
        jnp.asarray(mask), jnp.ones(batch, bool), jax.random.key(0), temperature, top_p,
        num_samples=samples, max_new_tokens=max_new, cache_slots=window, rules=rules)
    stop = jnp.asarray(stop_step, jnp.int32)

    def decode(fresh: Any) -> Any:
        return sampler.decode_program(sampler.graphdef, sampler.params, fresh, stop, temperature,
                                      top_p, window=window, rules=rules)

    copy = functools.partial(jax.tree.map, jnp.copy, state)
    first, seconds = timed_runs(decode, repeats, prepare=copy)
    check = decode(copy())
    steps = int(check.step) - 1
    if steps != stop_step - 1 or not bool(jnp.all(check.lengths == stop_step)):
        raise RuntimeError(f"decode batch {batch}: ran {steps} steps, expected {stop_step - 1}")
    counts = decode_counts(sampler.config, state.cache, batch, window)
    best = min(seconds)
    return {"prompt_length": prompt_len, "decode_steps": steps, "first_call_s": first,
            "best_s": best, "median_s": statistics.median(seconds), **counts,
            **decode_rates(counts, steps, best)}


def decode_counts(config: Any, cache: Any, batch: int, window: int) -> dict[str, Any]:
    """The work of one decode step of ``batch`` rows over ``window`` cache slots.

    Bytes: the weights in the compute dtype (every step reads all of them) and ``cache``'s key and
    value buffers as allocated (every layer reads its whole window); FLOPs: ``decode_flops``.
    """
    return {"rows": batch, "cache_slots": window,
            "weight_bytes_per_step": config.num_parameters() * jnp.dtype(config.dtype).itemsize,
            "cache_bytes_per_step": sum(a.nbytes for a in (*cache.keys, *cache.values)),
            "flops_per_step": flops_lib.decode_flops(config, batch, window)}


def decode_rates(counts: dict[str, Any], steps: int, seconds: float) -> dict[str, float]:
    """tokens/s, bytes/s and FLOP/s of ``steps`` decode steps of ``counts`` (`decode_counts`)
    in ``seconds``."""
    steps_per_s = steps / seconds
    step_bytes = counts["weight_bytes_per_step"] + counts["cache_bytes_per_step"]
    return {"tokens_per_s": counts["rows"] * steps_per_s, "bytes_per_s": step_bytes * steps_per_s,
            "flops_per_s": counts["flops_per_step"] * steps_per_s}


# ------------------------------------------------------------------------------- judge
def judge_figures(model: Any, tokenizer: Any, prompts: list, groups: list[int], batch_size: int,
                  repeats: int) -> dict[str, dict[str, Any]]:
    """Verdict scoring with and without prefix reuse, calls alternated between the two."""
    judges, counters = {}, {}
    for name, reuse in (("reuse", True), ("no_reuse", False)):
        judge = JaxJudge(model, tokenizer, prefix_reuse=reuse, batch_size=batch_size)
        judges[name], counters[name] = judge, count_flops(judge)

    def call(name: str) -> tuple[float, float]:
        """(seconds, FLOPs) of one scoring call."""
        for counter in counters[name]:
            counter.flops = 0.0
        start = time.perf_counter()
        judges[name].score_binary(prompts, groups)
        return time.perf_counter() - start, sum(counter.flops for counter in counters[name])

    first = {name: call(name)[0] for name in judges}
    seconds: dict[str, list[float]] = {name: [] for name in judges}
    flops: dict[str, float] = {}
    for _ in range(repeats):
        for name in judges:
            elapsed, flops[name] = call(name)
            seconds[name].append(elapsed)
    out = {}
    for name, judge in judges.items():
        stats, best = judge.last_stats, min(seconds[name])
        work = {"judgments": len(prompts), "real_tokens": stats.real_tokens,
                "padded_tokens": stats.padded_tokens, "option_tokens": stats.option_tokens,
                "forwards": stats.forwards}
        out[name] = {**work, "first_call_s": first[name], "best_s": best,
                     "median_s": statistics.median(seconds[name]),
                     **judge_rates(work, flops[name], best)}
    return out


def judge_rates(work: dict[str, Any], flops: float, seconds: float) -> dict[str, float]:
    """Judgments/s, real and padded context tokens/s and FLOP/s of one scoring call of ``work``
    (its ``judgments``, ``real_tokens``, ``padded_tokens``) and ``flops`` in ``seconds``."""
    return {"judgments_per_s": work["judgments"] / seconds,
            "tokens_per_s": work["real_tokens"] / seconds,
            "padded_tokens_per_s": work["padded_tokens"] / seconds,
            "flops": flops, "flops_per_s": flops / seconds}


# ------------------------------------------------------------------------------- train step
def train_figures(config: Any, rows: int, tokens: int, repeats: int) -> dict[str, Any]:
    """Times the jitted GRPO update on a synthetic ``rows x tokens`` batch (answers: the last
    ``rl.max_completion_length`` tokens)."""
    policy, _ = load_from_config(config.model)
    graphdef, params = nnx.split(policy)
    state, optimizer = train_step.make_train_state(params, config.optim)
    step = train_step.jit_train_step(functools.partial(
        train_step.grpo_step, graphdef=graphdef, optimizer=optimizer, rl=config.rl,
        optim=config.optim, temperature=config.sampling.temperature))
    rng = np.random.default_rng(0)
    answer = min(config.rl.max_completion_length, tokens - 1)
    loss_mask = np.zeros((rows, tokens), bool)
    loss_mask[:, tokens - answer:] = True
    batch = train_step.Batch(
        tokens=jnp.asarray(rng.integers(0, policy.config.vocab_size, (rows, tokens)), jnp.int32),
        positions=jnp.asarray(np.broadcast_to(np.arange(tokens), (rows, tokens)), jnp.int32),
        attention_mask=jnp.ones((rows, tokens), bool), loss_mask=jnp.asarray(loss_mask),
        advantages=jnp.asarray(rng.standard_normal(rows), jnp.float32),
        old_logprobs=jnp.zeros((rows, tokens), jnp.float32),
        ref_logprobs=jnp.zeros((rows, tokens), jnp.float32))
    holder = {"state": state}

    def run() -> Any:
        holder["state"], metrics = step(holder["state"], batch)
        return metrics["loss"]

    first, seconds = timed_runs(run, repeats)
    counts = train_counts(config, policy.config, rows, tokens)
    best = min(seconds)
    return {**counts, "first_call_s": first, "best_s": best,
            "median_s": statistics.median(seconds), "flops_per_s": counts["flops"] / best}


def train_counts(config: Any, model_config: Any, rows: int, tokens: int) -> dict[str, Any]:
    """FLOPs of one update on ``rows x tokens`` (``train_flops`` over the ``tokens - 1``
    positions the model runs, the LM head over the answer positions only)."""
    remat = config.model.remat_policy != "none"
    answer = min(config.rl.max_completion_length, tokens - 1)
    return {"rows": rows, "tokens": tokens, "remat": remat, "flops": flops_lib.train_flops(
        model_config, rows, tokens - 1, remat=remat, head_time=answer)}


# ------------------------------------------------------------------------------- fractions
def add_fractions(figures: dict[str, Any], bounds: dict[str, float], memory_bound: bool) -> float:
    """Adds ``figures``' fraction of the f32 matmul bound (and of the read bandwidth where it has
    ``bytes_per_s``), the bound it is measured against and that fraction, which it returns."""
    figures["fraction_of_matmul"] = figures["flops_per_s"] / bounds["matmul_float32_flops_per_s"]
    if "bytes_per_s" in figures:
        figures["fraction_of_bandwidth"] = figures["bytes_per_s"] / bounds["read_bytes_per_s"]
    figures["bound"] = "read_bandwidth" if memory_bound else "matmul_float32"
    figures["fraction"] = figures[
        "fraction_of_bandwidth" if memory_bound else "fraction_of_matmul"]
    return figures["fraction"]


# ------------------------------------------------------------------------------- this tree
def measure_programs(args: argparse.Namespace, config: Any) -> dict[str, dict[str, Any]]:
    """Every program of this tree, in this process: ``{name: figures}`` (module docstring)."""
    rl = config.rl
    model, tokenizer = load_from_config(config.model)
    prompt_ids = chat_prompt_ids(sys.modules[__name__], tokenizer, rl.max_prompt_length)
    sampler = Sampler(model, tokenizer, stop_ids=(NO_EOS_ID,),
                      prompt_buckets=(rl.max_prompt_length,))
    programs = {}
    for batch in args.decode_batches:
        programs[f"decode_{batch}"] = decode_figures(
            sampler, prompt_ids, batch, rl.max_prompt_length, args.max_new_tokens, args.repeats)
        print(f"decode batch {batch}: {rounded(programs[f'decode_{batch}'])}", flush=True)
    prompts, groups = judge_inputs(sys.modules[__name__], args.judge_dataset,
                                   str(DEFAULT_PATHS[args.judge_dataset]), args.judge_examples,
                                   args.judge_max_prompts)
    judge = judge_figures(model, tokenizer, prompts, groups, config.judge.batch_size,
                          args.judge_repeats)
    for name, figures in judge.items():
        programs[f"judge_{name}"] = figures
        print(f"judge {name}: {rounded(figures)}", flush=True)
    programs["train_step"] = train_figures(config, args.train_rows, args.train_tokens,
                                           args.repeats)
    print(f"train step: {rounded(programs['train_step'])}", flush=True)
    return programs


# ------------------------------------------------------------------------------- two trees
def time_trees(workers: dict[str, Worker], request: dict[str, Any], repeats: int
               ) -> dict[str, dict[str, Any]]:
    """Builds ``request``'s program in every worker at once (their compiling calls overlap), then
    times ``repeats`` calls of it in each, alternating between the workers call by call (the
    order reversed every other round). ``{worker: its build answer + best_s, median_s}``."""
    for worker in workers.values():
        worker.send(json.dumps(request))
    sides = {name: worker.reply() for name, worker in workers.items()}
    seconds: dict[str, list[float]] = {name: [] for name in workers}
    names = list(workers)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            seconds[name].append(workers[name].call()["seconds"])
    for name, side in sides.items():
        side.update(best_s=min(seconds[name]), median_s=statistics.median(seconds[name]))
    return sides


def first_difference(after: list[list[int]], before: list[list[int]]) -> dict[str, Any] | None:
    """None if both trees' greedy tokens ``[rows, new tokens]`` are equal; else the first new-token
    position where any row differs, that row and both tokens."""
    a, b = np.asarray(after), np.asarray(before)
    if a.shape != b.shape:
        return {"shape_after": list(a.shape), "shape_before": list(b.shape)}
    differ = np.argwhere(a != b)
    if not len(differ):
        return None
    row, position = min(differ.tolist(), key=lambda rc: (rc[1], rc[0]))
    return {"row": row, "position": position, "after": int(a[row, position]),
            "before": int(b[row, position])}


def compare_sides(name: str, sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One program's ``{"before": baseline figures, "after": this tree's figures, ...}``: both
    sides' rates from this tree's counts (the same FLOPs and bytes for both), and what they must
    share (decode: greedy tokens; judge: verdict values)."""
    counts, entry = sides["current"], {}
    for label, side in (("before", sides["baseline"]), ("after", sides["current"])):
        best = side["best_s"]
        if name.startswith("decode"):
            rates = decode_rates(counts, side["decode_steps"], best)
        elif name.startswith("judge"):
            rates = judge_rates(side, counts["flops"], best)
        else:
            rates = {"flops": counts["flops"], "flops_per_s": counts["flops"] / best}
        entry[label] = {k: v for k, v in side.items() if k not in ("tokens", "values")}
        entry[label].update(rates)
    entry["speedup"] = sides["baseline"]["best_s"] / sides["current"]["best_s"]
    if name.startswith("decode"):
        entry["greedy_first_difference"] = first_difference(sides["current"]["tokens"],
                                                            sides["baseline"]["tokens"])
        entry["same_greedy_tokens"] = entry["greedy_first_difference"] is None
    if name.startswith("judge"):
        after, before = (np.asarray(sides[n]["values"]) for n in ("current", "baseline"))
        entry["max_abs_value_difference"] = float(np.nanmax(np.abs(after - before)))
    return entry


def compare_programs(args: argparse.Namespace, config: Any) -> dict[str, dict[str, Any]]:
    """Every program of this tree and of ``args.baseline``, each tree in its own worker
    (`benchmarks/roofline_worker.py`), timed alternately: ``{name: compare_sides(...)}``."""
    rl = config.rl
    settings = {"prompt_length": rl.max_prompt_length, "max_new_tokens": args.max_new_tokens,
                "judge_dataset": args.judge_dataset,
                "judge_path": str(DEFAULT_PATHS[args.judge_dataset]),
                "judge_examples": args.judge_examples,
                "judge_max_prompts": args.judge_max_prompts,
                "judge_batch_size": config.judge.batch_size, "train_rows": args.train_rows,
                "train_tokens": args.train_tokens}
    requests = [(f"decode_{b}", {"build": "decode", "batch": b}, args.repeats)
                for b in args.decode_batches]
    requests += [("judge_reuse", {"build": "judge", "reuse": True}, args.judge_repeats),
                 ("judge_no_reuse", {"build": "judge", "reuse": False}, args.judge_repeats),
                 ("train_step", {"build": "train"}, args.repeats)]
    programs = {}
    with tempfile.TemporaryDirectory() as scratch:
        trees = source_trees(None, args.baseline, pathlib.Path(scratch))
        workers = {name: Worker(tree, str(WORKER),
                                [json.dumps({**settings, "count": name == "current"})])
                   for name, tree in trees.items()}
        try:
            for name, request, repeats in requests:
                programs[name] = compare_sides(name, time_trees(workers, request, repeats))
                print(f"{name}: {compared_line(name, programs[name])}", flush=True)
        finally:
            for worker in workers.values():
                worker.close()
    return programs


def compared_line(name: str, entry: dict[str, Any], bound: str | None = None) -> str:
    """Before, after and their ratio (and each side's fraction of ``bound`` once known)."""
    rate = "tokens_per_s" if name.startswith("decode") else "flops_per_s"
    scale, unit = (1.0, "tokens/s") if name.startswith("decode") else (1e-9, "GFLOP/s")
    line = (f"before {entry['before'][rate] * scale:.1f}, after {entry['after'][rate] * scale:.1f}"
            f" {unit} (best {entry['before']['best_s']:.2f} / {entry['after']['best_s']:.2f} s), "
            f"after/before {entry['speedup']:.2f}")
    if bound:
        line += (f"; of the {bound} bound {entry['before']['fraction']:.1%} -> "
                 f"{entry['after']['fraction']:.1%}")
    if "same_greedy_tokens" in entry:
        difference = entry["greedy_first_difference"]
        line += ("; same greedy tokens" if difference is None
                 else f"; greedy tokens differ first at {difference}")
    if "max_abs_value_difference" in entry:
        line += f"; max |P(true) after - before| {entry['max_abs_value_difference']:.2g}"
    return line


# ------------------------------------------------------------------------------- main
def rounded(figures: dict[str, Any]) -> str:
    """A figures dict as a JSON line, floats to 3 decimals."""
    return json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})


def quickstart_config() -> Any:
    """``configs/quickstart.py``'s config."""
    spec = importlib.util.spec_from_file_location("quickstart_config", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def parse_args(config: Any) -> argparse.Namespace:
    """The options; shapes left unset are the quickstart ``config``'s."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None,
                        help="a git revision (e.g. 1c14401) whose programs are timed beside this "
                        "tree's, alternating call by call (default: this tree only)")
    parser.add_argument("--small", action="store_true",
                        help="few sizes and repeats: a few minutes on 2 CPU cores")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure "
                        "(default 5; --small: 1)")
    parser.add_argument("--matmul_sizes", default=None,
                        help="comma-separated n of n x n matmuls "
                        "(default 2048,4096; --small: 2048)")
    parser.add_argument("--bandwidth_mib", type=int, default=None,
                        help="MiB of the f32 array summed (default 2048; --small: 1024)")
    parser.add_argument("--decode_batches", default="1,8,32,128")
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="default: the quickstart's rl.max_completion_length")
    parser.add_argument("--judge_dataset", choices=sorted(DEFAULT_PATHS), default=None,
                        help="default healthbench (long answers); --small: kqa (shorter)")
    parser.add_argument("--judge_examples", type=int, default=None,
                        help="answers whose criteria are judged (default 1)")
    parser.add_argument("--judge_repeats", type=int, default=None,
                        help="timed judge calls per path (default 2; --small: 1): without prefix "
                        "reuse a HealthBench answer's call takes minutes")
    parser.add_argument("--judge_max_prompts", type=int, default=None,
                        help="judge at most this many of those criteria (default all; --small: 8)")
    parser.add_argument("--train_rows", type=int, default=None,
                        help="default: the quickstart's prompts x generations")
    parser.add_argument("--train_tokens", type=int, default=None,
                        help="default: the quickstart's prompt + completion lengths")
    args = parser.parse_args()
    small = args.small
    defaults = dict(repeats=1 if small else 5, matmul_sizes="2048" if small else "2048,4096",
                    bandwidth_mib=1024 if small else 2048,
                    judge_dataset="kqa" if small else "healthbench",
                    judge_examples=1, judge_repeats=1 if small else 2,
                    judge_max_prompts=8 if small else 0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("repeats", "bandwidth_mib", "judge_examples", "judge_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.judge_max_prompts < 0:
        parser.error("--judge_max_prompts must be >= 0 (0 = all)")
    rl = config.rl
    args.matmul_sizes = [int(s) for s in args.matmul_sizes.split(",")]
    args.decode_batches = [int(b) for b in args.decode_batches.split(",")]
    args.max_new_tokens = args.max_new_tokens or rl.max_completion_length
    args.train_rows = args.train_rows or rl.prompts_per_step * rl.num_generations
    args.train_tokens = args.train_tokens or rl.max_prompt_length + rl.max_completion_length
    return args


def main() -> None:
    config = quickstart_config()
    args = parse_args(config)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f}", flush=True)
    before = machine_bounds(args.matmul_sizes, args.bandwidth_mib, args.repeats)
    print(f"bounds before: {json.dumps(best_bounds(before, before))}", flush=True)
    if args.baseline:
        programs = compare_programs(args, config)
    else:
        programs = measure_programs(args, config)
    after = machine_bounds(args.matmul_sizes, args.bandwidth_mib, args.repeats)
    bounds = best_bounds(before, after)
    fractions: dict[str, Any] = {}
    for name, entry in programs.items():
        memory_bound = name.startswith("decode") and int(name.split("_")[1]) in \
            BANDWIDTH_BOUND_BATCHES
        if args.baseline:
            fractions[name] = {side: add_fractions(entry[side], bounds, memory_bound)
                               for side in ("before", "after")}
            entry["bound"] = entry["after"]["bound"]
        else:
            fractions[name] = add_fractions(entry, bounds, memory_bound)
    load_after = os.getloadavg()
    print(f"bounds after: {json.dumps(best_bounds(after, after))}; load average after: "
          f"{load_after[0]:.2f}")
    for name, entry in programs.items():
        if args.baseline:
            print(f"{name:>16}: {compared_line(name, entry, entry['bound'])}")
        else:
            print(f"{name:>16}: {fractions[name]:6.1%} of its bound ({entry['bound']})")
    report = {
        "model": "SmolLM2-135M-Instruct (embedded, float32)", "backend": jax.default_backend(),
        "devices": str(jax.devices()), "small": args.small, "repeats": args.repeats,
        "judge_repeats": args.judge_repeats, "baseline": args.baseline,
        "load_average": {"before": load[0], "after": load_after[0]},
        "bounds": bounds, "bounds_before": before, "bounds_after": after,
        "judge": {"dataset": args.judge_dataset, "examples": args.judge_examples,
                  "max_prompts": args.judge_max_prompts, "batch_size": config.judge.batch_size},
        "fractions": fractions,
    }
    if args.baseline:
        report["programs"] = programs
    else:  # The layout of the runs before --baseline.
        report["decode"] = {name[len("decode_"):]: figures for name, figures in programs.items()
                            if name.startswith("decode_")}
        report["judge"].update({name[len("judge_"):]: figures for name, figures
                                in programs.items() if name.startswith("judge_")})
        report["train_step"] = programs["train_step"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
