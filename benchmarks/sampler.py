"""Sampler benchmark: rar_jax's KV-cache sampler against google-tunix 0.1.7's, side by side.

Not a test (CI never runs it). For SmolLM2-135M-Instruct (the embedded model, in ``--dtype`` on
both sides: float32, or bfloat16 weights and activations), greedy decoding, the same prompts, the
same padded prompt length and the same number of new tokens, it measures at each batch size, for
ours and for tunix's ``tunix.generate.sampler.Sampler``:

* time to first token: the median wall time of a whole call that generates ONE token (prefill and
  the first sample, host work included);
* decode tokens/s: ``batch * (max_new_tokens - 1) / (t_full - t_first_token)``, where t_full is the
  median wall time of a call generating ``max_new_tokens`` tokens;
* end-to-end tokens/s: ``batch * max_new_tokens / t_full``;
* compile time: the first call's wall time minus the median (both call shapes);
* greedy agreement: for every row of the batch, how many leading tokens of the two answers are
  equal; reported as the smallest over the rows and the number of rows equal in full.

EOS is disabled on both sides (a stop id no token can have), so every row generates exactly
``max_new_tokens`` tokens and throughput does not depend on when answers end. Both load the same
weights: ours are exported with ``export_hf`` (in float32, which holds bfloat16 values exactly)
to an HF directory that tunix reads and casts to ``--dtype``. In float32 the two decode the same
tokens (full agreement at batch 1, 8 and 32; the worker's docstring says which two tunix settings
that needs: the config's RoPE theta, which tunix 0.1.7's Llama3 ignores, and a pad id no token has). tunix lives in its
own virtual environment (``--tunix_venv``, created on first use with
``python3 -m venv DIR && DIR/bin/pip install google-tunix==0.1.7``: about 2 minutes, 1.6 GB) and runs
in a subprocess (benchmarks/tunix_sampler_worker.py); the timed calls alternate between ours and
tunix's, call by call, so that a noisy machine affects both alike. The last line printed is one JSON object with all figures
and the ratio ours / tunix of decode tokens/s per batch size.

    python benchmarks/sampler.py                      # batch 1, 8, 32; 64 new tokens
    python benchmarks/sampler.py --batch_sizes 1,8 --max_new_tokens 128 --repeats 5
    python benchmarks/sampler.py --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from rar_jax.models.batching import bucket_size  # noqa: E402
from rar_jax.models.loading import export_hf, load_model_and_tokenizer  # noqa: E402
from rar_jax.models.sampler import Sampler, SamplingParams  # noqa: E402

TUNIX_REQUIREMENT = "google-tunix==0.1.7"
WORKER = REPO_ROOT / "benchmarks" / "tunix_sampler_worker.py"
NO_EOS_ID = 1_000_000  # outside the vocabulary: no generated token ends a row
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Explain in two sentences why the sky is blue.",
    "Give me a short tip for staying hydrated during a run.",
    "What are common symptoms of the flu?",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "Suggest a name for a friendly robot.",
]


def ensure_tunix_venv(venv: pathlib.Path) -> pathlib.Path:
    """The venv's python, creating the venv with tunix on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {TUNIX_REQUIREMENT} (about 2 minutes, 1.6 GB)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", TUNIX_REQUIREMENT], check=True
        )
    return python


class TunixWorker:
    """The tunix half, a subprocess in tunix's venv speaking ``worker``'s line protocol (default
    benchmarks/tunix_sampler_worker.py; its first reply is ``self.ready``)."""

    def __init__(self, python: pathlib.Path, job: dict, worker: pathlib.Path = WORKER):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.process = subprocess.Popen(
            [str(python), str(worker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.ready = self.request(job)

    def request(self, message: dict) -> dict:
        """Send one JSON line, return the worker's JSON reply (other output lines are skipped)."""
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"tunix worker exited with {self.process.wait()} (see its stderr above)")

    def call(self, batch: int, steps: int) -> tuple[float, list[list[int]]]:
        reply = self.request({"batch": batch, "steps": steps})
        return reply["seconds"], reply["answer_ids"]

    def close(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)


def figures(batch: int, max_new: int, first: dict[str, float], runs: dict[str, list[float]]) -> dict:
    """Derived throughput and latency figures of one side at one batch size.

    Args:
        batch: rows.
        max_new: new tokens of a full call.
        first: wall time of the first (compiling) call of each kind ("first_token", "full").
        runs: wall times of the timed calls of each kind.
    """
    ttft, full = statistics.median(runs["first_token"]), statistics.median(runs["full"])
    decode_s = full - ttft
    return {
        "time_to_first_token_s": ttft,
        "full_call_s": full,
        "decode_tokens_per_s": batch * (max_new - 1) / decode_s if decode_s > 0 else float("nan"),
        "end_to_end_tokens_per_s": batch * max_new / full,
        "compile_s": (first["first_token"] - ttft) + (first["full"] - full),
        "runs_s": runs,
    }


def greedy_agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict[str, int]:
    """How far two sides' greedy answers to the same rows agree.

    Returns:
        ``min_prefix``: the smallest number of equal leading tokens over the rows;
        ``rows_equal``: rows whose answers are equal in full; ``rows``.
    """
    if len(ours) != len(theirs):
        raise ValueError(f"greedy_agreement: {len(ours)} rows against {len(theirs)}")
    prefixes, equal = [], 0
    for a, b in zip(ours, theirs):
        same = np.equal(a[: len(b)], b[: len(a)])
        prefixes.append(int(np.argmin(same)) if not same.all() else len(same))
        equal += int(list(a) == list(b))
    return {"min_prefix": min(prefixes), "rows_equal": equal, "rows": len(ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights and activations on both sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--tunix_venv", default="/work/tunix-venv",
                        help="tunix's venv (created on first use; benchmarks/grpo_step.py uses the same)")
    parser.add_argument("--skip_tunix", action="store_true", help="time ours only")
    parser.add_argument("--work_dir", default=None, help="where the HF export goes (default: a temp dir)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    max_new = args.max_new_tokens

    model, tokenizer = load_model_and_tokenizer("smollm2", dtype=args.dtype, param_dtype=args.dtype)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    prompt_ids = [tokenizer.encode(t) for t in texts]
    sampler = Sampler(model, tokenizer, stop_ids=(NO_EOS_ID,))
    prompt_length = bucket_size(max(len(p) for p in prompt_ids), sampler.prompt_buckets)

    work = tempfile.TemporaryDirectory() if args.work_dir is None else None
    work_dir = pathlib.Path(args.work_dir or work.name)
    model_dir = export_hf(model, work_dir / "smollm2-hf", tokenizer=tokenizer, dtype="float32")
    tunix_python = None if args.skip_tunix else ensure_tunix_venv(pathlib.Path(args.tunix_venv))

    report: dict = {
        "model": f"SmolLM2-135M-Instruct (embedded, {args.dtype})",
        "dtype": args.dtype,
        "device": str(jax.devices()[0]),
        "max_new_tokens": max_new,
        "prompt_length": prompt_length,
        "repeats": args.repeats,
        "ours": {},
        "tunix": {},
        "ratio_decode_tokens_per_s": {},
        "ratio_time_to_first_token": {},
        "greedy_agreement": {},
    }
    tunix = None
    if tunix_python is not None:
        tunix = TunixWorker(tunix_python, {
            "model_dir": str(model_dir), "prompts": texts, "prompt_ids": prompt_ids,
            "max_new_tokens": max_new, "prompt_length": prompt_length, "no_eos_id": NO_EOS_ID,
            "rope_theta": model.config.rope_theta, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
            "dtype": args.dtype,
        })
    sides = ["ours"] + (["tunix"] if tunix is not None else [])
    load_before = os.getloadavg()[0]
    for batch in batch_sizes:
        prompts = [prompt_ids[i % len(prompt_ids)] for i in range(batch)]
        answers: dict[str, list[list[int]]] = {}

        def call(side: str, steps: int) -> float:
            start = time.perf_counter()
            if side == "ours":
                out = sampler.generate(prompts, SamplingParams(max_new_tokens=steps, greedy=True), jax.random.key(0))
                seconds, answer_ids = time.perf_counter() - start, out.tokens[:batch].tolist()
            else:
                seconds, answer_ids = tunix.call(batch, steps)
            if steps == max_new:
                answers[side] = answer_ids
            return seconds

        kinds = {"first_token": 1, "full": max_new}
        first = {side: {kind: call(side, steps) for kind, steps in kinds.items()} for side in sides}
        runs = {side: {kind: [] for kind in kinds} for side in sides}
        for _ in range(args.repeats):  # alternate the sides call by call
            for kind, steps in kinds.items():
                for side in sides:
                    runs[side][kind].append(call(side, steps))
        for side in sides:
            report[side][str(batch)] = figures(batch, max_new, first[side], runs[side])
            shown = {k: round(v, 3) for k, v in report[side][str(batch)].items() if k != "runs_s"}
            print(f"{side:5s} batch {batch:3d}: {json.dumps(shown)}", flush=True)
        if tunix is None:
            continue
        ours_fig, tunix_fig = report["ours"][str(batch)], report["tunix"][str(batch)]
        report["ratio_decode_tokens_per_s"][str(batch)] = (
            ours_fig["decode_tokens_per_s"] / tunix_fig["decode_tokens_per_s"]
        )
        report["ratio_time_to_first_token"][str(batch)] = (
            ours_fig["time_to_first_token_s"] / tunix_fig["time_to_first_token_s"]
        )
        agreement = greedy_agreement(answers["ours"], answers["tunix"])
        report["greedy_agreement"][str(batch)] = agreement
        print(f"greedy agreement at batch {batch}: {json.dumps(agreement)} of {max_new} tokens", flush=True)
    report["load_avg_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if tunix is not None:
        tunix.close()
    if work is not None:
        work.cleanup()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
