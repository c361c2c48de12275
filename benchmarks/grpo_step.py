"""GRPO step benchmark: rar_jax's GRPOTrainer against google-tunix 0.1.7's GRPOLearner, side by side.

Not a test (CI never runs it). Steps per second of one whole GRPO step (rollout, reward, reference
log-probs, one update) on the embedded SmolLM2-135M-Instruct in float32, with the same work on both
sides, so that only the frameworks differ:

* the same chat-formatted prompts (``QUESTIONS``, at most ``PROMPT_LENGTH`` tokens), padded to
  ``PROMPT_LENGTH`` on both sides (ours with ``rl.pad_prompts_to_max_length``);
* G answers per prompt sampled at temperature 1.0 over the whole vocabulary, EOS disabled on both
  sides (a stop id no token has), so every answer has exactly ``max_new_tokens`` tokens;
* the programmatic reward ``distinct_words`` (ours: ``reward.method="programmatic"``; the worker
  writes the same function), which costs nothing;
* GRPO's clipped objective (epsilon 0.2, sequence-mean-token-mean) with the k3 KL estimator,
  ``beta`` 0.04 against a reference model (a copy of the starting weights), one update per step
  (``num_iterations=1``, pi_old = the current policy, no old log-prob pass);
* AdamW (b1 0.9, b2 0.999, eps 1e-8, no weight decay) after clipping the global gradient norm to
  1.0, at a constant learning rate of 1e-6.

Settings (``--settings``): A = 2 prompts x 2 generations x 16 new tokens; B = 2 prompts x 8
generations x 64 new tokens. Per setting: a warm-up step (compilation included; its time is
reported as ``first_step_s``) on each side, then ``--steps`` measured steps alternating ours and
tunix's step by step, so that a noisy machine affects both alike. Ours is ``GRPOTrainer.train_step``
called directly; tunix's is its own training loop (``learner.train``) in a subprocess of its venv
(benchmarks/tunix_grpo_worker.py), fed one batch per step. Reported per side: the median step
time, steps/s (1 / median), the first step's time, CPU seconds per step (``time.process_time`` of
the process, all threads), per-phase medians (ours: sample, reward, reference, update = the rest of
``time/train_s``; tunix: sample, reference, update, timed around its cluster's calls), the load
average before and after. The last line printed is one JSON object
``{"setting_A": {"ours_steps_per_s", "tunix_steps_per_s", "ratio", "ours": {...}, "tunix": {...},
...}, "setting_B": {...}}`` with ratio = ours / tunix steps per second.

    python benchmarks/grpo_step.py --settings=A --steps=2          # a quick check
    python benchmarks/grpo_step.py --settings=A,B --steps=5        # the full comparison
    python benchmarks/grpo_step.py --skip_tunix --settings=B       # ours only

tunix's venv (``--tunix_python``, default /work/tunix-venv/bin/python) is created on first use
(``python3 -m venv DIR && DIR/bin/pip install google-tunix==0.1.7``: about 2 minutes, 1.6 GB).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

import jax

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.sampler import NO_EOS_ID, QUESTIONS, TunixWorker, ensure_tunix_venv  # noqa: E402
from rar_jax import config as rar_config  # noqa: E402
from rar_jax import metrics as metrics_lib  # noqa: E402
from rar_jax.data.examples import Example  # noqa: E402
from rar_jax.judges.rewards import make_reward_fn  # noqa: E402
from rar_jax.models.loading import export_hf, load_from_config  # noqa: E402
from rar_jax.rl.trainer import GRPOTrainer, prompt_tokens  # noqa: E402

TUNIX_WORKER = REPO_ROOT / "benchmarks" / "tunix_grpo_worker.py"
PROMPT_LENGTH = 64  # Padded prompt length on both sides; every prompt must fit.
BETA = 0.04
LEARNING_RATE = 1e-6
TEMPERATURE = 1.0
REWARD = "distinct_words"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One benchmark shape: prompts per step x generations per prompt x new tokens per answer."""

    prompts: int
    generations: int
    max_new_tokens: int


SETTINGS = {"A": Setting(2, 2, 16), "B": Setting(2, 8, 64)}


def our_config(setting: Setting, steps: int, output_dir: str) -> Any:
    """The GRPOTrainer config of a setting (see the module docstring), validated."""
    config = rar_config.base_config()
    config.output_dir = output_dir
    config.model.source, config.model.dtype, config.model.param_dtype = "smollm2", "float32", "float32"
    config.rl.prompts_per_step = setting.prompts
    config.rl.num_generations = setting.generations
    config.rl.max_prompt_length = PROMPT_LENGTH
    config.rl.pad_prompts_to_max_length = True
    config.rl.max_completion_length = setting.max_new_tokens
    config.rl.num_iterations = 1
    config.rl.old_logprobs = "current"
    config.rl.kl.beta = BETA
    config.rl.kl.estimator = "k3"
    config.sampling.temperature = TEMPERATURE
    config.optim.learning_rate = LEARNING_RATE
    config.optim.warmup_fraction = 0.0
    config.optim.num_steps = steps + 1
    config.reward.method = "programmatic"
    config.reward.programmatic_fn = REWARD
    config.checkpoint.every_steps = 0
    config.train.eval_every = 0
    config.train.eval_criteria = False
    config.train.log_samples_every = 0
    config.metrics.tensorboard = False
    rar_config.validate(config, num_devices=jax.device_count())
    return config


def examples_of(questions: list[str]) -> list[Example]:
    """One single-turn user example per question, no rubric, no reference."""
    return [Example(({"role": "user", "content": q},), None, None, f"q{i}") for i, q in enumerate(questions)]


class OurSide:
    """A GRPOTrainer for a setting, stepped by hand (its metrics writer opened as ``train`` would)."""

    def __init__(self, config: Any, examples: list[Example]):
        policy, tokenizer = load_from_config(config.model)  # Fresh weights: the step donates its state.
        self.rope_theta = policy.config.rope_theta
        no_stop = copy.copy(tokenizer)
        no_stop.stop_ids = (NO_EOS_ID,)  # Every answer runs to max_new_tokens, as on tunix's side.
        self.trainer = GRPOTrainer(config, policy=policy, tokenizer=no_stop,
                                   reward_fn=make_reward_fn(config, None), train_examples=examples)
        self.trainer.writer = metrics_lib.MetricsWriter(config.output_dir, tensorboard=False)

    def step(self, step: int) -> dict[str, float]:
        start, cpu = time.perf_counter(), time.process_time()
        metrics = self.trainer.train_step(step)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return {
            "seconds": wall,
            "cpu_s": cpu,
            "sample_s": metrics["time/sample_s"],
            "reward_s": metrics["time/judge_s"],
            "reference_s": metrics["time/reference_s"],
            "update_s": metrics["time/train_s"] - metrics["time/reference_s"],
            "answer_tokens": metrics["answer/length_mean"] * self.trainer.rows,
            "reward_mean": metrics["reward/mean"],
        }

    def close(self) -> None:
        self.trainer.writer.close()


def tunix_job(setting: Setting, config: Any, model_dir: pathlib.Path, texts: list[str],
              prompt_ids: list[list[int]], tokenizer: Any, rope_theta: float) -> dict:
    """The worker's job line: the same prompts, shapes, loss and optimizer as ``config``."""
    optim = config.optim
    return {
        "model_dir": str(model_dir), "prompts": texts, "prompt_ids": prompt_ids,
        "num_generations": setting.generations, "max_new_tokens": setting.max_new_tokens,
        "prompt_length": PROMPT_LENGTH, "no_eos_id": NO_EOS_ID, "rope_theta": rope_theta,
        "bos_id": tokenizer.bos_id, "beta": config.rl.kl.beta, "temperature": config.sampling.temperature,
        "epsilon": config.rl.loss.epsilon_low, "learning_rate": optim.learning_rate,
        "max_grad_norm": optim.max_grad_norm,
        "adam": {"b1": optim.beta1, "b2": optim.beta2, "eps": optim.eps, "weight_decay": optim.weight_decay},
    }


def side_figures(first: dict[str, float], runs: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over the measured steps of one side; the first (compiling) step apart.

    Args:
        first: the warm-up step's figures (``seconds``, ``cpu_s``, phases ...).
        runs: the measured steps' figures, the same keys.
    """
    median_s = statistics.median(r["seconds"] for r in runs)
    phases = [k for k in runs[0] if k.endswith("_s") and k not in ("seconds", "cpu_s")]
    figures = {
        "median_step_s": median_s,
        "steps_per_s": 1.0 / median_s,
        "first_step_s": first["seconds"],
        "cpu_s_per_step": statistics.median(r["cpu_s"] for r in runs),
        "phases_median_s": {k: statistics.median(r[k] for r in runs) for k in phases},
        "answer_tokens_per_step": statistics.median(r["answer_tokens"] for r in runs),
        "step_s": [r["seconds"] for r in runs],
        "reward_mean": [r["reward_mean"] for r in runs],
    }
    figures["phases_median_s"]["other_s"] = median_s - sum(figures["phases_median_s"].values())
    return figures


def run_setting(name: str, setting: Setting, steps: int, tunix_python: pathlib.Path | None,
                model_dir: pathlib.Path, work_dir: pathlib.Path) -> dict[str, Any]:
    """Warm-up steps, then ``steps`` measured steps alternating ours and tunix's; the figures."""
    config = our_config(setting, steps, str(work_dir / f"ours_{name}"))
    questions = QUESTIONS[: setting.prompts]
    ours = OurSide(config, examples_of(questions))
    tokenizer = ours.trainer.tokenizer
    prompt_ids = [prompt_tokens(tokenizer, example) for example in examples_of(questions)]
    too_long = [len(ids) for ids in prompt_ids if len(ids) > PROMPT_LENGTH]
    if too_long:
        raise SystemExit(f"prompts of {too_long} tokens exceed PROMPT_LENGTH={PROMPT_LENGTH}")
    load_before = os.getloadavg()
    sides: dict[str, Any] = {"ours": ours.step}
    tunix = None
    if tunix_python is not None:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
        job = tunix_job(setting, config, model_dir, texts, prompt_ids, tokenizer, ours.rope_theta)
        tunix = TunixWorker(tunix_python, job, worker=TUNIX_WORKER)
        sides["tunix"] = lambda step: tunix.request({"step": step})
    first = {side: run(0) for side, run in sides.items()}
    for side in sides:
        print(f"setting {name} {side:5s} first step (compiles): {first[side]['seconds']:.2f} s", flush=True)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for step in range(1, steps + 1):  # Alternate the sides step by step.
        for side, run in sides.items():
            runs[side].append(run(step))
            shown = {k: round(v, 3) for k, v in runs[side][-1].items()}
            print(f"setting {name} {side:5s} step {step}: {json.dumps(shown)}", flush=True)
    if tunix is not None:
        tunix.close()
    ours.close()

    report: dict[str, Any] = {
        "setting": dataclasses.asdict(setting) | {"prompt_length": PROMPT_LENGTH, "beta": BETA},
        "steps": steps,
        "load_avg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    for side in sides:
        report[side] = side_figures(first[side], runs[side])
        report[f"{side}_steps_per_s"] = report[side]["steps_per_s"]
    if tunix is not None:
        report["ratio"] = report["ours_steps_per_s"] / report["tunix_steps_per_s"]
        report["tunix_load_s"] = tunix.ready["load_s"]
    for side in sides:
        fig = report[side]
        phases = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in fig["phases_median_s"].items())
        print(f"setting {name} {side:5s}: median step {fig['median_step_s']:.2f} s "
              f"({fig['steps_per_s']:.3f} steps/s), first step {fig['first_step_s']:.1f} s, "
              f"CPU {fig['cpu_s_per_step']:.1f} s/step, phases (s): {phases}", flush=True)
    if tunix is not None:
        print(f"setting {name}: ratio ours / tunix steps/s = {report['ratio']:.2f}; "
              f"load average before/after {report['load_avg_before_after']}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="A,B", help="comma-separated: " + ", ".join(
        f"{k} = {s.prompts} prompts x {s.generations} generations x {s.max_new_tokens} new tokens"
        for k, s in SETTINGS.items()))
    parser.add_argument("--steps", type=int, default=5, help="measured steps per side after a warm-up step")
    parser.add_argument("--tunix_python", default="/work/tunix-venv/bin/python",
                        help="python of a venv with google-tunix==0.1.7 (created on first use)")
    parser.add_argument("--skip_tunix", action="store_true", help="time ours only")
    parser.add_argument("--work_dir", default=None, help="HF export and run outputs (default: a temp dir)")
    args = parser.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or args.steps < 1:
        parser.error(f"--settings must name {', '.join(SETTINGS)} (got {unknown}); --steps >= 1")
    logging.basicConfig(level=logging.WARNING)

    work = tempfile.TemporaryDirectory() if args.work_dir is None else None
    work_dir = pathlib.Path(args.work_dir or work.name)
    tunix_python = None
    model_dir = work_dir / "smollm2-hf"
    if not args.skip_tunix:
        tunix_python = ensure_tunix_venv(pathlib.Path(args.tunix_python).parents[1])
        policy, tokenizer = load_from_config(our_config(SETTINGS[names[0]], 1, str(work_dir)).model)
        export_hf(policy, model_dir, tokenizer=tokenizer, dtype="float32")
        del policy
    print(f"device {jax.devices()[0]}, load average {os.getloadavg()}", flush=True)
    report = {
        f"setting_{name}": run_setting(name, SETTINGS[name], args.steps, tunix_python, model_dir, work_dir)
        for name in names
    }
    if work is not None:
        work.cleanup()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
