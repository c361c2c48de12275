"""The GRPO update alone: this tree's against a baseline revision's, side by side in one run.

Not a test (CI never runs it). Times the two jitted programs of a GRPO step after the rollout, on
SmolLM2-135M-Instruct's shapes in float32 (random weights: the time does not depend on them),
with the work of ``benchmarks/grpo_step.py``'s settings (A = 2 prompts x 2 generations x 16 new
tokens, B = 2 x 8 x 64; prompts padded to 64 tokens; beta 0.04 with the k3 estimator, one update
per step, AdamW after clipping to norm 1):

* the update (``train_step.grpo_step`` through ``jit_train_step``, the state donated);
* the reference model's log-prob pass (``train_step.jit_logprobs``).

Each tree runs in its own worker process (this script with ``--worker``, its ``rar_jax`` imported
from that tree): this working tree (or with ``--current REV`` the files of git revision REV), and
with ``--baseline REV`` those of revision REV (``git archive``, into a temporary directory). After each worker's first (compiling) call the
calls alternate between the workers, so a noisy machine affects both alike. Reported per tree:
median and best wall seconds of each program, the worker's CPU seconds per call (all threads),
the update's FLOP/s and its fraction of the f32 matmul rate measured in the same run (before and
after the programs, the better kept), the load average before and after. The FLOPs are the work
the update needs (``rar_jax.models.flops.train_flops``: the layers forward and backward over every
position, the LM head over the answer positions only), the same for both trees: since
``rl.share_prompt_prefix`` runs each prompt once per group of its answers, this tree executes
fewer, and its fraction is an effective rate (the work a per-row update needs, per second). The
batch is shaped like the trainer's: each prompt's rows consecutive, sharing its prompt columns.
The last line is one JSON object.

    python benchmarks/grpo_update.py --baseline 3c2d5e6 --settings A,B --repeats 5
    python benchmarks/grpo_update.py --baseline 3c2d5e6 --current HEAD --settings A
    python benchmarks/grpo_update.py --settings A --repeats 3      # this tree only
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Appended, not inserted: a worker's rar_jax comes first, from its tree (PYTHONPATH).
sys.path.append(str(REPO_ROOT))

from benchmarks.revisions import Worker, serve, source_trees  # noqa: E402
PROMPT_LENGTH = 64
# setting -> (prompts, generations, new tokens), as in benchmarks/grpo_step.py.
SETTINGS = {"A": (2, 2, 16), "B": (2, 8, 64)}
SMOLLM2 = dict(architecture="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
               num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
               tie_word_embeddings=True)


# ------------------------------------------------------------------------------- worker
def worker(setting: str) -> None:
    """Builds the programs of ``setting`` with the ``rar_jax`` on ``sys.path``, then answers each
    stdin line with one timed call of each program as a JSON line (an empty line ends it)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rar_jax import config as rar_config
    from rar_jax.models.config import ModelConfig
    from rar_jax.models.decoder import Decoder
    from rar_jax.rl import train_step

    prompts, generations, new_tokens = SETTINGS[setting]
    rows, width = prompts * generations, PROMPT_LENGTH + new_tokens
    config = rar_config.base_config()
    config.rl.prompts_per_step, config.rl.num_generations = prompts, generations
    config.rl.max_prompt_length, config.rl.max_completion_length = PROMPT_LENGTH, new_tokens
    config.rl.kl.beta, config.rl.kl.estimator = 0.04, "k3"
    config.optim.learning_rate, config.optim.warmup_fraction = 1e-6, 0.0
    graphdef, params = nnx.split(Decoder(ModelConfig(**SMOLLM2), rngs=nnx.Rngs(0)))
    reference = jax.tree.map(jnp.copy, params)
    state, optimizer = train_step.make_train_state(params, config.optim)
    update = train_step.jit_train_step(functools.partial(
        train_step.grpo_step, graphdef=graphdef, optimizer=optimizer, rl=config.rl,
        optim=config.optim, temperature=1.0))
    logprobs = train_step.jit_logprobs(graphdef, config.rl, temperature=1.0)

    # Stored log-probs near the random model's own (log 1/vocab), so that the k3 KL and the ratio
    # stay finite and every update is applied.
    uniform = float(-np.log(SMOLLM2["vocab_size"]))
    rng = np.random.default_rng(0)
    # Each prompt's left padding and tokens, repeated for its generations (consecutive rows,
    # as the trainer's batch is); the answers differ per row.
    starts = np.repeat(rng.integers(0, PROMPT_LENGTH // 2, prompts), generations)
    tokens = rng.integers(0, SMOLLM2["vocab_size"], (rows, width))
    tokens[:, :PROMPT_LENGTH] = np.repeat(tokens[::generations, :PROMPT_LENGTH], generations, 0)
    columns = np.arange(width)[None, :]
    real = columns >= starts[:, None]
    batch = train_step.Batch(
        tokens=jnp.asarray(tokens, jnp.int32),
        positions=jnp.asarray(np.maximum(columns - starts[:, None], 0), jnp.int32),
        attention_mask=jnp.asarray(real),
        loss_mask=jnp.asarray(np.broadcast_to(columns >= PROMPT_LENGTH, (rows, width))),
        advantages=jnp.asarray(rng.standard_normal(rows), jnp.float32),
        old_logprobs=jnp.full((rows, width), uniform, jnp.float32),
        ref_logprobs=jnp.full((rows, width), uniform, jnp.float32))

    def timed(run: Any) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(run())
        return time.perf_counter() - wall, time.process_time() - cpu

    holder = {"state": state}

    def one_update() -> Any:
        holder["state"], metrics = update(holder["state"], batch)
        if int(metrics["update_skipped"]):
            raise SystemExit("the benchmark's update was skipped (non-finite gradients)")
        return metrics

    def call() -> dict[str, float]:
        reference_s, reference_cpu_s = timed(
            lambda: logprobs(reference, batch.tokens, batch.positions, batch.attention_mask))
        update_s, update_cpu_s = timed(one_update)
        return {"update_s": update_s, "update_cpu_s": update_cpu_s,
                "reference_s": reference_s, "reference_cpu_s": reference_cpu_s}

    print(json.dumps({"first": call()}), flush=True)
    serve(lambda _: call())


# ------------------------------------------------------------------------------- parent
def matmul_bound(repeats: int) -> float:
    """The best f32 FLOP/s of a 2048^2 matmul (``benchmarks/roofline.py``'s measure)."""
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.roofline import matmul_rate

    return matmul_rate(2048, "float32", repeats)["flops_per_s"]


def needed_flops(setting: str) -> float:
    """The update's FLOPs: layers forward + backward over every position, LM head over answers."""
    from rar_jax.models import flops
    from rar_jax.models.config import ModelConfig

    prompts, generations, new_tokens = SETTINGS[setting]
    return flops.train_flops(ModelConfig(**SMOLLM2), prompts * generations,
                             PROMPT_LENGTH + new_tokens - 1, remat=False, head_time=new_tokens)


def run_setting(setting: str, trees: dict[str, pathlib.Path], repeats: int) -> dict[str, Any]:
    """Workers for every tree, then ``repeats`` alternating calls; the figures per tree."""
    load_before = os.getloadavg()[0]
    bound_before = matmul_bound(3)
    workers = {name: Worker(tree, __file__, [setting]) for name, tree in trees.items()}
    calls: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, one in workers.items():
            calls[name].append(one.call())
    for one in workers.values():
        one.close()
    bound = max(bound_before, matmul_bound(3))
    flops = needed_flops(setting)
    report: dict[str, Any] = {"load_avg_before_after": [load_before, os.getloadavg()[0]],
                              "matmul_f32_flops_per_s": bound, "update_flops": flops}
    for name, figures in calls.items():
        side = {"first_update_s": workers[name].first["first"]["update_s"]}
        for key in figures[0]:
            values = [f[key] for f in figures]
            side[f"{key[:-2]}_median_s" if key.endswith("_s") else key] = statistics.median(values)
            side[f"{key[:-2]}_best_s"] = min(values)
        side["update_flops_per_s"] = flops / side["update_best_s"]
        side["update_fraction_of_matmul"] = side["update_flops_per_s"] / bound
        report[name] = side
        print(f"setting {setting} {name:8s}: update median {side['update_median_s']:.2f} s "
              f"(best {side['update_best_s']:.2f}, CPU {side['update_cpu_median_s']:.2f} s), "
              f"reference median {side['reference_median_s']:.2f} s, update "
              f"{side['update_flops_per_s'] / 1e9:.1f} GFLOP/s = "
              f"{100 * side['update_fraction_of_matmul']:.0f}% of f32 matmul "
              f"{bound / 1e9:.0f} GFLOP/s", flush=True)
    if "baseline" in report:
        report["update_speedup"] = (report["baseline"]["update_median_s"]
                                    / report["current"]["update_median_s"])
    print(f"setting {setting}: load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
          flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="A,B", help="comma-separated, of " + ", ".join(
        f"{k} = {p} prompts x {g} generations x {n} new tokens" for k, (p, g, n) in SETTINGS.items()))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per tree and program")
    parser.add_argument("--baseline", default=None, help="a git revision to compare against")
    parser.add_argument("--current", default=None,
                        help="a git revision to time instead of the working tree")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    if any(n not in SETTINGS for n in names) or args.repeats < 1:
        parser.error(f"--settings must name {', '.join(SETTINGS)}; --repeats >= 1")
    with tempfile.TemporaryDirectory() as scratch:
        trees = source_trees(args.current, args.baseline, pathlib.Path(scratch))
        sys.path.insert(0, str(REPO_ROOT))
        report = {f"setting_{n}": run_setting(n, trees, args.repeats) for n in names}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
