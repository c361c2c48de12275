"""Where a decode step's time goes: the sampler's decode loop and ablations of its body.

Not a test (CI never runs it). On the embedded SmolLM2-135M-Instruct (float32), for each batch
size, times ``--steps`` iterations of an on-device `jax.lax.while_loop` whose body is:

* ``full``: the sampler's own decode program (`rar_jax.models.decoding.decode`, greedy), from a
  prefilled state whose cache window is ``--window`` slots (64 prompt tokens filled);
* ``layers``: the 30 layers only (attention over the cache included), no LM head, no sampling;
* ``no_attention``: the layers without attention and RoPE (q/k/v/o projections and MLPs kept);
  every variant uses the decode loop's weight layout (`StackedLayers.per_layer`);
* ``mlp``: only the norms and SwiGLU MLPs of the layers;
* ``head``: only the final norm, the LM head and greedy sampling (with its log-softmax).

Each variant's difference to the next smaller one is the cost of what it adds. Variants alternate
call by call after a compiling call; the best of ``--repeats`` is reported with the weight bytes
each variant reads per step and the rate that makes. The last line is one JSON object.

    .venv/bin/python benchmarks/decode_breakdown.py --batches 1,32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable

sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rar_jax.models import decoding  # noqa: E402
from rar_jax.models import layers as L  # noqa: E402
from rar_jax.models.config import rope_inverse_frequencies  # noqa: E402
from rar_jax.models.loading import load_model_and_tokenizer  # noqa: E402

PROMPT_LENGTH = 64
NO_EOS_ID = 1_000_000
VARIANTS = ("full", "layers", "no_attention", "mlp", "head")


def ablated_loop(model: Any, variant: str, steps: int, window: int) -> Callable[..., Any]:
    """A jitted function (params, tokens int32[b], cache) -> tokens running `steps` iterations of
    the `variant` body (see the module doc) in a while loop."""
    config = model.config
    graphdef = nnx.graphdef(model)
    eps = config.rms_norm_eps
    inv_freq = jnp.asarray(rope_inverse_frequencies(config))

    def run(params: Any, tokens: jax.Array, cache: Any) -> jax.Array:
        m = nnx.merge(graphdef, params)
        per_layer = m.layers.per_layer(jnp.float32)

        def layer_body(x, layer, cos, sin, allowed, cached):
            if variant == "layers":
                return L.decoder_layer(x, layer, cos, sin, allowed, eps, cached)
            if variant == "no_attention":  # q + k + v stand in for the attention output
                normed = L.rms_norm(x, layer["attn_norm"], eps)
                qkv = jnp.einsum("btd,dne->btne", normed, layer["qkv_proj"])
                heads = layer["o_proj"].shape[0]
                kv = (qkv.shape[2] - heads) // 2
                attn = qkv[:, :, :heads] + jnp.repeat(
                    qkv[:, :, heads:heads + kv] + qkv[:, :, heads + kv:], heads // kv, axis=2)
                b, t = attn.shape[:2]
                x = x + attn.reshape(b, t, -1) @ layer["o_proj"].reshape(-1, x.shape[-1])
            normed = L.rms_norm(x, layer["mlp_norm"], eps)
            x = x + L.fused_swiglu_mlp(normed, layer["gate_up_proj"], layer["down_proj"])
            return x, (cached[0], cached[1])

        def body(carry):
            i, last, cache = carry
            positions = jnp.full((last.shape[0], 1), PROMPT_LENGTH, jnp.int32) + i
            x = jnp.take(m.embed[...], last[:, None], axis=0)
            if variant != "head":
                cos, sin = L.rope_cos_sin(positions, inv_freq)
                allowed = jnp.ones((last.shape[0], 1, 1), bool)
                written = jnp.arange(window) < PROMPT_LENGTH + i
                cache_allowed = jnp.broadcast_to((cache.key_mask & written)[:, None, :],
                                                 (last.shape[0], 1, window))
                keys, values = [], []
                for layer, k, v in zip(per_layer, cache.keys, cache.values):
                    x, (k, v) = layer_body(x, layer, cos, sin, allowed,
                                           (k, v, PROMPT_LENGTH + i, cache_allowed))
                    keys.append(k)
                    values.append(v)
                cache = cache._replace(keys=tuple(keys), values=tuple(values))
            hidden = L.rms_norm(x, m.final_norm[...], eps)
            if variant == "head":
                logits = m.logits(hidden[:, 0])
                from rar_jax.models.sampling import sample_next_tokens
                nxt, _ = sample_next_tokens(logits, jax.random.key(0), 1.0, 1.0, greedy=True)
            else:
                nxt = jnp.argmax(hidden[:, 0], axis=-1).astype(jnp.int32)
            return i + 1, nxt, cache

        return jax.lax.while_loop(lambda c: c[0] < steps, body, (jnp.int32(0), tokens, cache))[1]

    return jax.jit(run, compiler_options=decoding.decode_compiler_options(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    model, tokenizer = load_model_and_tokenizer("smollm2")
    graphdef, params = nnx.split(model)
    config = model.config
    sizes = {name: int(np.prod(a.shape)) * 4 for name, a in model.layers.arrays().items()}
    embed_bytes = config.vocab_size * config.hidden_size * 4
    weight_bytes = {
        "full": sum(sizes.values()) + embed_bytes,
        "layers": sum(sizes.values()),
        "no_attention": sum(sizes.values()),
        "mlp": sum(sizes[n] for n in ("gate_proj", "up_proj", "down_proj", "mlp_norm")),
        "head": embed_bytes,
    }
    prompt = tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    report: dict[str, Any] = {"load_avg_before": os.getloadavg()[0]}
    for batch in [int(b) for b in args.batches.split(",")]:
        tokens = jnp.asarray(np.full((batch, PROMPT_LENGTH), 1, np.int32))
        tokens = tokens.at[:, -len(prompt):].set(jnp.asarray(prompt[-PROMPT_LENGTH:]))
        positions = jnp.broadcast_to(jnp.arange(PROMPT_LENGTH, dtype=jnp.int32), tokens.shape)
        one = jnp.asarray(1.0, jnp.float32)
        rules = decoding.DecodeRules(top_k=0, use_top_p=False, greedy=True,
                                     stop_ids=(NO_EOS_ID,), pad_id=0, shardings=None)
        prefill = jax.jit(decoding.prefill, static_argnums=(0,), static_argnames=(
            "num_samples", "max_new_tokens", "cache_slots", "rules"))
        state = prefill(graphdef, params, tokens, positions, jnp.ones(tokens.shape, bool),
                        jnp.ones(batch, bool), jax.random.key(0), one, one, num_samples=1,
                        max_new_tokens=args.steps + 1, cache_slots=args.window, rules=rules)
        full = jax.jit(decoding.decode, static_argnums=(0,), static_argnames=("window", "rules"),
                       compiler_options=decoding.decode_compiler_options(None))
        stop = jnp.asarray(args.steps + 1, jnp.int32)
        programs = {}
        for variant in variants:
            if variant == "full":
                programs[variant] = lambda: full(graphdef, params, state, stop, one, one,
                                                 window=args.window, rules=rules).tokens
            else:
                loop = ablated_loop(model, variant, args.steps, args.window)
                programs[variant] = (lambda loop=loop: loop(params, state.last_tokens, state.cache))
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(args.repeats + 1):
            for variant, program in programs.items():
                start = time.perf_counter()
                jax.block_until_ready(program())
                if repeat:
                    times[variant].append(time.perf_counter() - start)
        figures = {}
        for variant in variants:
            step_s = min(times[variant]) / args.steps
            figures[variant] = {"step_ms": step_s * 1e3,
                                "weight_gb_per_s": weight_bytes[variant] / step_s / 1e9}
            print(f"batch {batch:4d} {variant:13s}: {step_s * 1e3:7.2f} ms/step, weights "
                  f"{weight_bytes[variant] / 1e6:5.0f} MB = {figures[variant]['weight_gb_per_s']:5.1f}"
                  f" GB/s", flush=True)
        report[f"batch_{batch}"] = figures
    report["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
