"""Decode-step matmuls with f32, bf16 and int8 weights: does storing decode weights in a smaller
dtype pay on this machine?

Not a test (CI never runs it). Issue 14 suggests decoding from bf16 or int8 weights with f32
accumulation (a ``sampler.weight_dtype`` option): at batch 1 a decode step reads every weight
once, so halving the bytes could halve the step if the matmuls ran at the read bandwidth. This
benchmark times the matmuls of one decode step of a model's shapes (default the embedded
SmolLM2-135M-Instruct's, from ``rar_jax.aot.model_shapes``; random weights, the time does not
depend on them): per layer the q, k, v and o projections and the SwiGLU gate, up and down
projections (with the RMS norms and residual adds between them; attention itself is left out),
the layers under ``lax.scan`` over stacked weights as the model runs them, then the LM head.
Weight storage, each its own jitted program:

* ``float32``: f32 weights and activations (what the sampler runs today);
* ``bfloat16``: bf16 weights, activations cast to bf16 at each matmul, f32 accumulation
  (``preferred_element_type=float32``);
* ``bfloat16_upcast``: bf16 weights converted to f32 inside the program, f32 matmuls;
* ``int8``: int8 weights with one f32 scale per output channel (symmetric, the channel's largest
  magnitude / 127), converted to f32 inside the program; the scale multiplies the matmul's output
  (the same as scaling the weight's columns).

For each batch of ``--batches`` the programs are compiled (one call each), then timed
``--repeats`` times each, alternating between the storage dtypes call by call, so a noisy machine
affects them alike; figures use the best call. Reported per batch and dtype: ms per step, weight
bytes read per step (scales included), bytes/s as a fraction of the read bandwidth measured in
the same run (``benchmarks/roofline.py``'s bound functions, before and after, the better kept),
GFLOP/s and its fraction of the f32 matmul rate, the time against f32's, and the largest
logit difference from f32 relative to f32's logit spread (a check that each program computes the
same step). With ``--xla_flags`` each given XLA_FLAGS setting is run again in a subprocess (its
own bounds; sequential, not alternated with this run); its figures are reported beside this
run's. The last line is one JSON object.

    .venv/bin/python benchmarks/weight_dtype.py                 # about 2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/weight_dtype.py --library_flags # + 5 XLA CPU library flag runs
    .venv/bin/python benchmarks/weight_dtype.py --batches 1 --xla_flags "--xla_cpu_use_onednn=true"
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.roofline import best_bounds, machine_bounds, timed_runs  # noqa: E402
from rar_jax.aot.model_shapes import model_architecture  # noqa: E402

STORAGE = ("float32", "bfloat16", "bfloat16_upcast", "int8")
# The XLA CPU options compared by --library_flags: each runs in its own subprocess.
LIBRARY_FLAGS = (
    "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_use_xnnpack=true",
)
# Per layer: name -> (input, output) features, from the model config.
LAYER_MATRICES = ("q", "k", "v", "o", "gate", "up", "down")


# ------------------------------------------------------------------------------- weights
def matrix_shapes(config: Any) -> dict[str, tuple[int, int]]:
    """``[in, out]`` of each per-layer matrix of ``config`` (a ModelConfig)."""
    d, f, hd = config.hidden_size, config.intermediate_size, config.head_dim
    return {"q": (d, config.num_heads * hd), "k": (d, config.num_kv_heads * hd),
            "v": (d, config.num_kv_heads * hd), "o": (config.num_heads * hd, d),
            "gate": (d, f), "up": (d, f), "down": (f, d)}


def random_weights(config: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """f32 weights ``[layers, in, out]`` per matrix and ``head`` ``[d, vocab]``, entries drawn
    from N(0, 1 / in)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (fan_in, fan_out) in matrix_shapes(config).items():
        weights[name] = rng.standard_normal((config.num_layers, fan_in, fan_out), np.float32)
    weights["head"] = rng.standard_normal((config.hidden_size, config.vocab_size), np.float32)
    return {name: w / np.float32(np.sqrt(w.shape[-2])) for name, w in weights.items()}


def int8_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization with one scale per output channel (last axis).

    Args:
        weight: f32[..., in, out].

    Returns:
        (int8[..., in, out], f32[..., out]) with ``weight ~= q * scale``.
    """
    scale = np.maximum(np.abs(weight).max(axis=-2), np.float32(1e-12)) / np.float32(127)
    quantized = np.clip(np.rint(weight / scale[..., None, :]), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def stored_weights(weights: dict[str, np.ndarray], storage: str) -> dict[str, Any]:
    """``{name: (weight in its storage dtype, f32 per-channel scale or None)}`` on the device."""
    stored = {}
    for name, weight in weights.items():
        if storage == "int8":
            quantized, scale = int8_per_channel(weight)
            stored[name] = (jnp.asarray(quantized), jnp.asarray(scale))
        else:
            dtype = jnp.float32 if storage == "float32" else jnp.bfloat16
            stored[name] = (jnp.asarray(weight, dtype), None)
    return stored


def weight_bytes(stored: dict[str, Any]) -> int:
    """Bytes one step reads: every weight once, and the int8 scales."""
    return sum(a.nbytes for pair in stored.values() for a in pair if a is not None)


# ------------------------------------------------------------------------------- the step
def project(x: jax.Array, weight: jax.Array, scale: jax.Array | None, storage: str) -> jax.Array:
    """``x @ weight`` with ``weight`` in its storage dtype, f32 out.

    Args:
        x: f32[b, in].
        weight: [in, out] in ``storage``'s dtype.
        scale: f32[out] (int8) or None.
        storage: one of ``STORAGE``.

    Returns:
        f32[b, out].
    """
    if storage == "bfloat16":
        return jnp.matmul(x.astype(jnp.bfloat16), weight, preferred_element_type=jnp.float32)
    product = x @ weight.astype(jnp.float32)
    return product if scale is None else product * scale


def rms_norm(x: jax.Array) -> jax.Array:
    """f32[b, d] -> f32[b, d] scaled to unit root mean square (no learned gain)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5)


def decode_step(stored: dict[str, Any], x: jax.Array, *, storage: str) -> jax.Array:
    """The matmuls of one decode step: f32[b, d] -> logits f32[b, vocab].

    Per layer (``lax.scan`` over the stacked weights): q, k, v of the normed input, the output
    projection of q (attention left out; k and v enter the residual through their row means so
    that they are computed), then the SwiGLU MLP; finally the LM head of the normed state.
    """
    layers = {name: stored[name] for name in LAYER_MATRICES}

    def layer(h: jax.Array, weights: dict[str, Any]) -> tuple[jax.Array, None]:
        def p(name: str, inputs: jax.Array) -> jax.Array:
            return project(inputs, *weights[name], storage)

        normed = rms_norm(h)
        q, k, v = p("q", normed), p("k", normed), p("v", normed)
        kv = jnp.mean(k, axis=-1, keepdims=True) + jnp.mean(v, axis=-1, keepdims=True)
        h = h + p("o", q) + kv
        normed = rms_norm(h)
        return h + p("down", jax.nn.silu(p("gate", normed)) * p("up", normed)), None

    x, _ = jax.lax.scan(layer, x, layers)
    return project(rms_norm(x), *stored["head"], storage)


def step_flops(config: Any, batch: int) -> float:
    """2 b in out over every matrix of the step."""
    per_layer = sum(i * o for i, o in matrix_shapes(config).values())
    return 2.0 * batch * (config.num_layers * per_layer + config.hidden_size * config.vocab_size)


# ------------------------------------------------------------------------------- measuring
def measure_batch(config: Any, programs: dict[str, Any], batch: int, repeats: int
                  ) -> dict[str, dict[str, Any]]:
    """Times every storage's step at ``batch`` rows, alternating call by call after one
    compiling call each. ``programs``: ``{storage: (jitted step, stored weights)}``."""
    x = jax.random.normal(jax.random.key(batch), (batch, config.hidden_size), jnp.float32)
    logits, seconds = {}, {storage: [] for storage in programs}
    for storage, (step, stored) in programs.items():
        logits[storage] = np.asarray(step(stored, x))
    for _ in range(repeats):
        for storage, (step, stored) in programs.items():
            seconds[storage].append(timed_runs(lambda: step(stored, x), 0)[0])
    reference = logits["float32"]
    spread = float(reference.std())
    out = {}
    for storage, (_, stored) in programs.items():
        best = min(seconds[storage])
        out[storage] = {
            "ms_per_step": best * 1e3, "median_ms": statistics.median(seconds[storage]) * 1e3,
            "weight_bytes_per_step": weight_bytes(stored),
            "bytes_per_s": weight_bytes(stored) / best,
            "flops_per_s": step_flops(config, batch) / best,
            "max_logit_difference_over_std": float(
                np.abs(logits[storage] - reference).max()) / spread,
        }
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Bounds, every batch and storage, bounds again (module docstring)."""
    config = model_architecture(args.model)
    load = os.getloadavg()[0]
    before = machine_bounds(args.matmul_sizes, args.bandwidth_mib, args.bound_repeats)
    weights = random_weights(config)
    programs = {storage: (jax.jit(lambda s, x, storage=storage: decode_step(s, x, storage=storage)),
                          stored_weights(weights, storage)) for storage in STORAGE}
    del weights
    batches = {}
    for batch in args.batches:
        batches[str(batch)] = measure_batch(config, programs, batch, args.repeats)
        print(f"batch {batch}: " + ", ".join(
            f"{storage} {figures['ms_per_step']:.1f} ms" for storage, figures
            in batches[str(batch)].items()), flush=True)
    after = machine_bounds(args.matmul_sizes, args.bandwidth_mib, args.bound_repeats)
    bounds = best_bounds(before, after)
    for figures_of in batches.values():
        f32_ms = figures_of["float32"]["ms_per_step"]
        for figures in figures_of.values():
            figures["fraction_of_bandwidth"] = figures["bytes_per_s"] / bounds["read_bytes_per_s"]
            figures["fraction_of_matmul"] = (figures["flops_per_s"]
                                             / bounds["matmul_float32_flops_per_s"])
            figures["time_over_float32"] = figures["ms_per_step"] / f32_ms
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "model": args.model,
            "load_average": {"before": load, "after": os.getloadavg()[0]}, "bounds": bounds,
            "flops_per_step": {str(b): step_flops(config, b) for b in args.batches},
            "batches": batches}


def flags_run(flags: str, argv: list[str]) -> dict[str, Any]:
    """This script's ``measure`` in a subprocess with ``XLA_FLAGS=flags``: its JSON line."""
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip())
    done = subprocess.run([sys.executable, __file__, *argv, "--no_flag_runs"], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"xla_flags": flags, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def table(run: dict[str, Any]) -> str:
    """Rows of batch x storage: ms, MB read, fraction of bandwidth, GFLOP/s, time over f32."""
    lines = [f"XLA_FLAGS={run['xla_flags'] or '(none)'}; load {run['load_average']['before']:.1f}"
             f" -> {run['load_average']['after']:.1f}; bounds: read "
             f"{run['bounds']['read_bytes_per_s'] / 1e9:.1f} GB/s, f32 matmul "
             f"{run['bounds']['matmul_float32_flops_per_s'] / 1e9:.0f} GFLOP/s",
             f"{'batch':>5} {'weights':>16} {'ms/step':>8} {'MB read':>8} {'of bw':>6} "
             f"{'GFLOP/s':>8} {'of f32':>6} {'x f32':>6} {'dlogit':>7}"]
    for batch, figures_of in run["batches"].items():
        for storage, f in figures_of.items():
            lines.append(
                f"{batch:>5} {storage:>16} {f['ms_per_step']:8.1f} "
                f"{f['weight_bytes_per_step'] / 1e6:8.0f} {f['fraction_of_bandwidth']:6.1%} "
                f"{f['flops_per_s'] / 1e9:8.1f} {f['fraction_of_matmul']:6.1%} "
                f"{f['time_over_float32']:6.2f} {f['max_logit_difference_over_std']:7.1e}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2",
                        help="architecture (rar_jax.aot.model_shapes: a known name or an HF "
                        "directory with config.json)")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per batch and storage, alternated")
    parser.add_argument("--matmul_sizes", default="2048", help="bounds: n of n x n matmuls")
    parser.add_argument("--bandwidth_mib", type=int, default=1024,
                        help="bounds: MiB of the f32 array summed")
    parser.add_argument("--bound_repeats", type=int, default=3, help="bounds: timed calls")
    parser.add_argument("--xla_flags", action="append", default=[],
                        help="an XLA_FLAGS setting to run in a subprocess (repeatable)")
    parser.add_argument("--library_flags", action="store_true",
                        help="--xla_flags for each of the XLA CPU library options "
                        f"({', '.join(LIBRARY_FLAGS)})")
    parser.add_argument("--no_flag_runs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.matmul_sizes = [int(s) for s in args.matmul_sizes.split(",")]
    if min(args.batches) < 1 or args.repeats < 1 or args.bound_repeats < 1:
        parser.error("--batches, --repeats and --bound_repeats must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    run = measure(args)
    print(table(run), flush=True)
    if args.no_flag_runs:
        print(json.dumps(run))
        return
    argv = [f"--model={args.model}", f"--batches={','.join(map(str, args.batches))}",
            f"--repeats={args.repeats}",
            f"--matmul_sizes={','.join(map(str, args.matmul_sizes))}",
            f"--bandwidth_mib={args.bandwidth_mib}", f"--bound_repeats={args.bound_repeats}"]
    flag_runs = []
    for flags in [*args.xla_flags, *(LIBRARY_FLAGS if args.library_flags else ())]:
        flag_runs.append(flags_run(flags, argv))
        print(table(flag_runs[-1]) if "batches" in flag_runs[-1]
              else f"XLA_FLAGS={flags}: failed: {flag_runs[-1]['error']}", flush=True)
    print(json.dumps({**run, "flag_runs": flag_runs}))


if __name__ == "__main__":
    main()
