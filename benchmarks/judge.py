"""Judge benchmark: the JAX judge's prefix reuse (and verdict scoring vs generate-and-parse).

Not a test (CI never runs it). The same explicit per-criterion judgments (every criterion of the
first ``--examples`` answers of ``--dataset``: the graded HealthBench answers and their rubric
items, or K-QA's LLM answers and gold statements; the prompts of
:func:`rar_jax.eval.judge_quality.judge_prompts`, one prefix-reuse group per answer) are scored
by :class:`rar_jax.judges.jax_backend.JaxJudge` with the embedded SmolLM2-135M-Instruct (or
``--model``), side by side in one run:

* verdict scoring with ``prefix_reuse=True``: each answer's shared prefix (system text,
  conversation, answer) is prefilled once and reused for its k criteria through the KV cache;
* verdict scoring with ``prefix_reuse=False``: every prompt runs in full;
* (unless ``--generate_pairs=0``) generate-and-parse on the first ``--generate_pairs`` of the
  same prompts: the judge writes its JSON reply (greedy, at most ``--max_tokens`` tokens) and
  :mod:`rar_jax.judges.parsing` reads it.

For each it reports tokens computed (real context tokens, padded token slots and option tokens,
from ``JaxJudge.last_stats``), jitted calls, the first call's seconds (compilation included) and
the median seconds of ``--repeats`` further calls on the same prompts (all shapes compiled), and
judgments per second; for verdict scoring also the FLOPs of one call (counted analytically per
jitted call from the shapes it ran, ``prefill_call_flops`` and ``score_call_flops`` below, as
benchmarks/roofline.py counts them; split into prefix prefill and scoring) and FLOP/s over the
median call, host tokenization included. Then the ratios no-reuse / reuse (tokens, padded slots, seconds), the
largest |P(true) difference| between the two verdict paths (float rounding only), and the speed of
verdict scoring (with reuse) over generate-and-parse in judgments per second. The last line
printed is one JSON object with every figure.

    .venv/bin/python benchmarks/judge.py                       # 2 HealthBench answers, 29 judgments
    .venv/bin/python benchmarks/judge.py --dataset kqa --examples 2 --generate_pairs 4
    .venv/bin/python benchmarks/judge.py --examples 4 --repeats 3 --generate_pairs 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from rar_jax.models import flops as flops_lib  # noqa: E402
from rar_jax.eval.judge_quality import healthbench_pairs, judge_prompts, kqa_pairs  # noqa: E402
from rar_jax.judges.jax_backend import JaxJudge  # noqa: E402
from rar_jax.models.config import ModelConfig  # noqa: E402
from rar_jax.models.loading import load_model_and_tokenizer  # noqa: E402

SHARED_DATA = pathlib.Path(os.environ.get("RAR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_PATHS = {
    "healthbench": SHARED_DATA / "healthbench_graded_m42" / "judge_responses_100.jsonl",
    "kqa": SHARED_DATA / "kqa" / "NLI_medical_annotator.csv",
}


# ------------------------------------------------------------------------------- FLOP counts
def lm_head_flops(config: ModelConfig, tokens: int) -> float:
    """The LM head's share of ``forward_flops`` for ``tokens`` tokens (its ``2 d V`` term)."""
    return tokens * 2.0 * config.hidden_size * config.vocab_size


class CountedCalls:
    """Wraps a jitted judge function, adding each call's FLOPs (``count(args, kwargs)``)."""

    def __init__(self, function: Any, count: Callable[..., float]):
        self.function, self.count, self.flops = function, count, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.flops += self.count(args, kwargs)
        return self.function(*args, **kwargs)


def prefill_call_flops(config: ModelConfig, args: tuple, kwargs: dict) -> float:
    """``PREFILL_PREFIXES(graphdef, params, tokens [g, p], ...)``: g x p tokens over p slots, no
    LM head. Checked on 2026-12-04 against XLA's cost analysis of the compiled call (2 x 64
    tokens; XLA counts the scanned layer body once): 30 x XLA's count within 0.3%."""
    rows, length = args[2].shape
    return (flops_lib.forward_flops(config, rows, length, length)
            - lm_head_flops(config, rows * length))


def score_call_flops(config: ModelConfig, args: tuple, kwargs: dict) -> float:
    """``SCORE_OPTIONS(graphdef, params, cache, row_source, tokens [r, t], ..., option_tokens
    [r, R, O], ...)``: r x t tokens over (cached prefix +) t + O slots with the LM head at the
    last position of each row; then, for multi-token or terminated options, R forwards of r x O
    tokens with the LM head at every position."""
    cache, tokens, options = args[2], args[4], args[7]
    rows, length = tokens.shape
    _, num_options, option_length = options.shape
    context = length + option_length + (0 if cache is None else cache.key_mask.shape[1])
    total = (flops_lib.forward_flops(config, rows, length, context)
             - lm_head_flops(config, rows * (length - 1)))
    if option_length > 1 or kwargs.get("terminated", False):
        total += num_options * flops_lib.forward_flops(config, rows, option_length, context)
    return total


def count_flops(judge: JaxJudge) -> tuple[CountedCalls, CountedCalls]:
    """Wrap ``judge``'s jitted prefix prefill and scoring functions in FLOP counters (returned as
    (prefill, score); zero their ``flops`` before a call, read them after)."""
    config = judge.model.config
    judge._prefill = CountedCalls(judge._prefill, functools.partial(prefill_call_flops, config))
    judge._score = CountedCalls(judge._score, functools.partial(score_call_flops, config))
    return judge._prefill, judge._score


# ------------------------------------------------------------------------------- benchmark
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="judge checkpoint (any loader source)")
    parser.add_argument(
        "--dataset",
        choices=sorted(DEFAULT_PATHS),
        default="healthbench",
        help="healthbench: graded answers and their rubric items (long answers, k ~ 12); "
        "kqa: LLM answers and K-QA statements (shorter answers, k ~ 8)",
    )
    parser.add_argument("--data_path", default=None, help="default: the shared data file")
    parser.add_argument("--examples", type=int, default=2, help="answers (all their criteria)")
    parser.add_argument("--batch_size", type=int, default=8, help="JaxJudge batch_size")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the first")
    parser.add_argument(
        "--generate_pairs", type=int, default=8, help="judgments for generate-and-parse; 0 skips"
    )
    parser.add_argument("--max_tokens", type=int, default=64, help="tokens per generated reply")
    args = parser.parse_args()
    for name in ("examples", "batch_size", "repeats", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.generate_pairs < 0:
        parser.error("--generate_pairs must be >= 0")
    return args


def time_judge(judge: JaxJudge, prompts: list, groups: list[int], repeats: int) -> dict[str, Any]:
    """First call (compiles) and ``repeats`` timed calls of ``judge.score_binary``; for verdict
    scoring also the FLOPs of one call and FLOP/s over the median call."""
    counters = count_flops(judge) if judge.scoring == "verdict_probs" else ()
    start = time.perf_counter()
    judgments = judge.score_binary(prompts, groups)
    first = time.perf_counter() - start
    stats = judge.last_stats if judge.scoring == "verdict_probs" else None
    seconds = []
    for _ in range(repeats):
        for counter in counters:
            counter.flops = 0.0
        start = time.perf_counter()
        judge.score_binary(prompts, groups)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    reasons: dict[str, int] = {}
    for reason in judgments.reasons:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    tokens = {}
    if stats is not None:  # Generate-and-parse does not count its tokens.
        tokens = {
            "real_tokens": stats.real_tokens,
            "padded_tokens": stats.padded_tokens,
            "option_tokens": stats.option_tokens,
            "forwards": stats.forwards,
        }
    if counters:  # The same prompts every call, so the last call's count is every call's.
        prefill, score = counters
        total = prefill.flops + score.flops
        tokens.update(prefill_flops=prefill.flops, score_flops=score.flops, flops=total,
                      flops_per_s=total / median)
    return {
        "judgments": len(prompts),
        "failed": int(np.isnan(judgments.values).sum()),
        "failure_reasons": reasons,
        **tokens,
        "first_call_s": first,
        "median_s": median,
        "judgments_per_s": len(prompts) / median,
        "values": judgments.values,
    }


def main() -> None:
    args = parse_args()
    path = args.data_path or str(DEFAULT_PATHS[args.dataset])
    pairs = (healthbench_pairs if args.dataset == "healthbench" else kqa_pairs)(path).pairs
    answers = list(dict.fromkeys(pair.answer_id for pair in pairs))[: args.examples]
    pairs = [pair for pair in pairs if pair.answer_id in set(answers)]
    prompts, groups = judge_prompts(pairs)
    model, tokenizer = load_model_and_tokenizer(args.model)
    context_lengths = [
        len(tokenizer.encode_chat(p.messages))
        for p in prompts
    ]
    print(
        f"{len(prompts)} judgments over {len(answers)} answers from {path}; "
        f"prompt tokens: median {int(np.median(context_lengths))}, max {max(context_lengths)}",
        flush=True,
    )

    results: dict[str, dict[str, Any]] = {}
    for name, reuse in (("reuse", True), ("no_reuse", False)):
        judge = JaxJudge(model, tokenizer, prefix_reuse=reuse, batch_size=args.batch_size)
        results[name] = time_judge(judge, prompts, groups, args.repeats)
        print(
            f"verdict scoring, prefix_reuse={reuse}: {results[name]['real_tokens']} real / "
            f"{results[name]['padded_tokens']} padded context tokens, "
            f"{results[name]['first_call_s']:.1f} s first call, "
            f"{results[name]['median_s']:.1f} s median, "
            f"{results[name]['flops_per_s'] / 1e9:.1f} GFLOP/s",
            flush=True,
        )
    reuse, plain = results["reuse"], results["no_reuse"]
    both = ~np.isnan(reuse["values"]) & ~np.isnan(plain["values"])
    difference = np.abs(reuse["values"][both] - plain["values"][both])
    max_dp = float(difference.max()) if both.any() else None

    generated: dict[str, Any] | None = None
    if args.generate_pairs:
        count = min(args.generate_pairs, len(prompts))
        judge = JaxJudge(
            model,
            tokenizer,
            scoring="generate",
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
        )
        generated = time_judge(judge, prompts[:count], groups[:count], args.repeats)
        parsed = ~np.isnan(generated["values"])
        verdicts = reuse["values"][:count] >= 0.5
        generated["parsed"] = int(parsed.sum())
        generated["agree_with_verdict_scoring"] = int(
            np.sum(parsed & ((generated["values"] >= 0.5) == verdicts))
        )
        print(
            f"generate-and-parse on {count} judgments: {generated['first_call_s']:.1f} s first "
            f"call, {generated['median_s']:.1f} s median, {generated['parsed']} parsed; "
            f"failures: {generated['failure_reasons'] or 'none'}",
            flush=True,
        )

    summary: dict[str, Any] = {
        "model": args.model,
        "dataset": args.dataset,
        "answers": len(answers),
        "judgments": len(prompts),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "backend": jax.default_backend(),
    }
    for name, result in results.items():
        summary[name] = {k: v for k, v in result.items() if k != "values"}
    summary["token_ratio_no_reuse_over_reuse"] = plain["real_tokens"] / reuse["real_tokens"]
    summary["padded_token_ratio_no_reuse_over_reuse"] = (
        plain["padded_tokens"] / reuse["padded_tokens"]
    )
    summary["seconds_ratio_no_reuse_over_reuse"] = plain["median_s"] / reuse["median_s"]
    summary["max_abs_dp"] = max_dp
    if generated is not None:
        summary["generate"] = {
            key: value for key, value in generated.items() if key != "values"
        }
        summary["generate"]["max_tokens"] = args.max_tokens
        summary["verdict_over_generate_judgments_per_s"] = (
            reuse["judgments_per_s"] / generated["judgments_per_s"]
        )
    print(
        f"prefix reuse: {summary['token_ratio_no_reuse_over_reuse']:.2f}x fewer real tokens, "
        f"{summary['padded_token_ratio_no_reuse_over_reuse']:.2f}x fewer padded slots, "
        f"{summary['seconds_ratio_no_reuse_over_reuse']:.2f}x faster; max |dP| = {max_dp}"
    )
    if generated is not None:
        print(
            "verdict scoring (reuse) vs generate-and-parse: "
            f"{summary['verdict_over_generate_judgments_per_s']:.1f}x judgments per second"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
