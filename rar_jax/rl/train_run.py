"""``rar-train`` as a library call: load, train with GRPO, write the run's summary.

:func:`run_training` runs the job of a checked config in its output directory (the command,
``experiments/train.py``, validates the config and holds the directory first); :func:`summary_text`
is the end-of-run report it prints.
"""

from __future__ import annotations

import copy
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from ml_collections import config_dict

from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example
from rar_jax.data.selection import read_train_and_eval
from rar_jax.eval.plots import plot_reward_curve
from rar_jax.io import write_json
from rar_jax.judges.factory import build_judge
from rar_jax.judges.rewards import JUDGED_METHODS, make_reward_fn
from rar_jax.models.loading import export_hf, load_from_config
from rar_jax.rl.trainer import GRPOTrainer, TrainSummary

# Criteria listed in the printed summary (largest changes in satisfaction first).
SUMMARY_CRITERIA = 8


def split_devices(judge_devices: int) -> tuple[list[jax.Device], list[jax.Device]]:
    """(policy devices, judge devices): the judge takes the last ``judge_devices`` (0 = none of
    its own: it shares the policy's)."""
    devices = jax.devices()
    if judge_devices == 0:
        return devices, []
    return devices[: len(devices) - judge_devices], devices[len(devices) - judge_devices :]


def criteria_check(config: config_dict.ConfigDict, backend: Any, eval_examples: Sequence[Example]):
    """The per-criterion check of held-out answers (``train.eval_criteria``): the ``rar_explicit``
    reward with the run's judge and aggregation options, or None when it is off, there is no
    held-out example, or one lacks a rubric."""
    if not config.train.eval_criteria or not eval_examples:
        return None
    if any(example.rubric is None for example in eval_examples):
        logging.warning("train.eval_criteria: held-out examples without rubrics; not checked")
        return None
    explicit = copy.deepcopy(config)
    explicit.reward.method = "rar_explicit"
    if not all(example.rubric.has_categories for example in eval_examples):
        # Uncategorised rubrics (HealthBench points) have no category weights: use their own.
        explicit.reward.explicit_normalization = "signed_abs"
    return make_reward_fn(explicit, backend)


def _criteria_lines(title: str, changes: list[dict[str, Any]]) -> list[str]:
    changes = sorted(changes, key=lambda c: -abs(c["last"] - c["first"]))
    lines = [f"  {title} (largest changes first, {len(changes)} criteria seen twice or more):"]
    for change in changes[:SUMMARY_CRITERIA]:
        description = " ".join(change["criterion"].split())
        if len(description) > 70:
            description = description[:67] + "..."
        lines.append(
            f"    {change['first']:.2f} -> {change['last']:.2f}  [{change['category'] or '-'}] "
            f"{description} ({change['example_id']}, steps {change['first_step']}->"
            f"{change['last_step']})"
        )
    return lines


def summary_text(summary: TrainSummary, output_dir: pathlib.Path) -> str:
    """The end-of-run report: rewards and the criteria whose satisfaction changed most."""
    lines = [
        f"GRPO finished {summary.steps} steps; outputs in {output_dir}",
        f"  train reward (mean of the step's answers): first step {summary.reward_first:.4f}, "
        f"last step {summary.reward_last:.4f}",
    ]
    if summary.eval_rewards:
        evals = ", ".join(f"step {s}: {r:.4f}" for s, r in sorted(summary.eval_rewards.items()))
        lines.append(f"  held-out reward (greedy): {evals}")
    lines.append(
        f"  skipped updates (non-finite): {summary.skipped_updates}; "
        f"failed judgments: {summary.judge_failures}"
    )
    if summary.eval_criterion_changes:
        lines += _criteria_lines(
            "criterion satisfaction of the held-out greedy answers", summary.eval_criterion_changes
        )
    if summary.criterion_changes:
        lines += _criteria_lines(
            "criterion satisfaction of the training answers", summary.criterion_changes
        )
    return "\n".join(lines)


def run_training(config: config_dict.ConfigDict, output_dir: pathlib.Path) -> TrainSummary:
    """The whole GRPO job once the config is checked and ``output_dir`` is this process's
    (``cli.training_run``): policy, data, judge, reward, :class:`GRPOTrainer`, then the reward
    curve, ``summary.json`` and, with ``train.export_hf``, the HF export."""
    policy_devices, judge_devices = split_devices(config.judge.devices)
    logging.info(
        "policy on %d devices, judge on %s", len(policy_devices),
        len(judge_devices) if judge_devices else "the same devices" if config.judge.backend == "jax"
        else config.judge.http.base_url,
    )
    policy, tokenizer = load_from_config(config.model)
    train_examples, eval_examples = read_train_and_eval(config, tokenizer)
    logging.info("%d training and %d held-out examples", len(train_examples), len(eval_examples))
    needs_judge = config.reward.method in JUDGED_METHODS or (
        config.train.eval_criteria and bool(eval_examples))
    backend = build_judge(config, devices=judge_devices or None, policy=(policy, tokenizer),
                          policy_is_trained=True) if needs_judge else None
    trainer = GRPOTrainer(
        config,
        policy=policy,
        tokenizer=tokenizer,
        reward_fn=make_reward_fn(config, backend),
        train_examples=train_examples,
        eval_examples=eval_examples,
        criteria_fn=criteria_check(config, backend, eval_examples),
        devices=policy_devices,
    )
    summary = trainer.train()

    records = metrics_lib.read_metrics(output_dir)
    plot_reward_curve(records, output_dir / "reward_curve.png",
                      title=f"GRPO, {config.reward.method} reward")
    write_json(output_dir / "summary.json", vars(summary))
    if config.train.export_hf:
        nnx.update(policy, trainer.state.params)
        export_hf(policy, output_dir / "hf_export", tokenizer=tokenizer)
    return summary
