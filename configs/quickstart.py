"""Quickstart: GRPO with RaR-Implicit rewards on a few HealthBench prompts, on 2 CPU cores.

SmolLM2-135M-Instruct (embedded) is both the policy and the judge. Each step samples 4 answers to
each of 2 HealthBench prompts (physician-written rubrics, short prompts only), the judge rates each
answer against the prompt's rubric (expected 1-10 rating read off its next-token distribution,
mapped to [0, 1]), and one GRPO update follows. Held-out prompts are answered greedily and judged
at the start and the end. Outputs go to ``runs/quickstart``: ``metrics.jsonl``, TensorBoard
events, ``samples.jsonl``, a checkpoint, ``reward_curve.png`` and ``summary.json``.

This shows the mechanics (sampling, judging, advantages, the update, checkpoints), not medical
quality: a 135M judge cannot tell good medical answers from bad ones (see README.md). To use a real
judge, point ``judge`` at an OpenAI-compatible server or a local HF checkpoint:

    rar-train --config=configs/quickstart.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://127.0.0.1:8000/v1 --config.judge.http.model=NAME
    rar-train --config=configs/quickstart.py --config.judge.model_source=/path/to/hf_checkpoint
"""

from rar_jax.config import base_config
from rar_jax.data.shared import shared_data_dir


def get_config():
    config = base_config()
    config.output_dir = "runs/quickstart"
    config.data.format = "healthbench"
    # $RAR_SHARED_DATA, else ../shared/data beside the checkout this file is in.
    config.data.train_path = str(shared_data_dir(__file__) / "healthbench/oss_eval_first100.jsonl")
    config.data.eval_size = 2
    config.data.max_rubric_chars = 1200  # Short rubrics: the judge reads one per answer.

    config.rl.prompts_per_step = 2
    config.rl.num_generations = 4
    config.rl.max_prompt_length = 96  # Keeps the short, single-turn prompts.
    config.rl.pad_prompts_to_max_length = True  # 8 steps: compile once rather than per bucket.
    config.rl.max_completion_length = 48
    config.optim.num_steps = 8
    config.optim.learning_rate = 1e-5
    config.optim.warmup_fraction = 0.0

    config.reward.method = "rar_implicit"
    config.judge.backend = "jax"
    config.judge.model_source = "smollm2"
    config.judge.batch_size = 8

    config.checkpoint.every_steps = 0  # Only at the end.
    config.train.eval_every = 8  # At the start and the end.
    config.train.log_samples_every = 2
    return config
