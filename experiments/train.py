"""GRPO with rubric rewards (``rar-train``): the project's main job.

    rar-train --config=configs/quickstart.py
    rar-train --config=configs/quickstart.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://judge-host:8000/v1 --config.judge.http.model=my-judge

One run: validate the config (before anything compiles) -> optionally join a multi-host job
(``distributed.initialize``) -> read the training and held-out examples (``data.*``) -> load the
policy (``model.*``) and the judge (``judge.*``; on the policy's devices, on the last
``judge.devices`` devices of their own, or behind an OpenAI-compatible server) -> build the reward
function (``reward.method``) -> :class:`rar_jax.rl.trainer.GRPOTrainer` (which resumes from the
latest checkpoint in ``output_dir``) -> ``reward_curve.png``, ``summary.json`` and, with
``train.export_hf``, the final policy as an HF directory. A summary is printed at the end: reward
at the start and the end, held-out rewards, and the rubric criteria whose satisfaction moved most.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import app
from absl import logging as absl_logging
from flax import nnx
from ml_collections import config_dict

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example
from rar_jax.data.sources import load_examples
from rar_jax.eval.plots import plot_reward_curve
from rar_jax.io import write_json
from rar_jax.judges.factory import build_judge
from rar_jax.judges.rewards import JUDGED_METHODS, make_reward_fn
from rar_jax.models.loading import export_hf, load_from_config
from rar_jax.rl.trainer import GRPOTrainer, TrainSummary, prompt_tokens
from rar_jax.run_lock import hold_output_dir

_CONFIG = rar_config.define_config_flag()

# Criteria listed in the printed summary (largest changes in satisfaction first).
SUMMARY_CRITERIA = 8


def initialize_distributed(config: config_dict.ConfigDict) -> None:
    """``jax.distributed.initialize`` when ``distributed.initialize`` is set (empty / 0 / -1
    fields are left to JAX's auto-detection on TPU pods and SLURM / Open MPI clusters)."""
    dist = config.distributed
    if not dist.initialize:
        return
    kwargs: dict[str, Any] = {}
    if dist.coordinator_address:
        kwargs["coordinator_address"] = dist.coordinator_address
    if dist.num_processes:
        kwargs["num_processes"] = dist.num_processes
    if dist.process_id >= 0:
        kwargs["process_id"] = dist.process_id
    jax.distributed.initialize(**kwargs)
    logging.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )


def split_devices(judge_devices: int) -> tuple[list[jax.Device], list[jax.Device]]:
    """(policy devices, judge devices): the judge takes the last ``judge_devices`` (0 = none of
    its own: it shares the policy's)."""
    devices = jax.devices()
    if judge_devices == 0:
        return devices, []
    return devices[: len(devices) - judge_devices], devices[len(devices) - judge_devices :]


def rubric_chars(example: Example) -> int:
    """Characters of the example's criteria texts (0 without a rubric)."""
    if example.rubric is None:
        return 0
    return sum(len(criterion.description) for criterion in example.rubric.criteria)


def usable_examples(examples: list[Example], config: config_dict.ConfigDict, tokenizer: Any,
                    source: str) -> list[Example]:
    """The examples whose chat-formatted prompt fits ``rl.max_prompt_length`` tokens and whose
    rubric text fits ``data.max_rubric_chars`` (0 = no limit); for ``reference_likert`` (or with
    ``data.require_reference``) only those with a reference answer. How many were left out and
    why is logged; having none left is an error naming the source."""
    prompt_limit, rubric_limit = config.rl.max_prompt_length, config.data.max_rubric_chars
    if config.reward.method == "reference_likert" or config.data.require_reference:
        # Reference-Likert needs a reference answer (HealthBench: ~16 % lack an ideal completion;
        # RaR-Science: 9.5 % are empty); data.require_reference gives every method that pool.
        missing = sum(example.reference is None for example in examples)
        if missing:
            logging.warning("%s: %d of %d examples have no reference answer, which "
                            "reference_likert / data.require_reference need; they are left out",
                            source, missing, len(examples))
            examples = [example for example in examples if example.reference is not None]
    kept, long_prompts, long_rubrics = [], 0, 0
    for example in examples:
        if len(prompt_tokens(tokenizer, example)) > prompt_limit:
            long_prompts += 1
        elif rubric_limit and rubric_chars(example) > rubric_limit:
            long_rubrics += 1
        else:
            kept.append(example)
    if long_prompts or long_rubrics:
        logging.warning(
            "%s: of %d examples, %d have prompts longer than rl.max_prompt_length=%d tokens and "
            "%d rubrics longer than data.max_rubric_chars=%d characters; they are left out",
            source, len(examples), long_prompts, prompt_limit, long_rubrics, rubric_limit,
        )
    if not kept:
        raise ValueError(
            f"{source}: no example fits rl.max_prompt_length={prompt_limit} and "
            f"data.max_rubric_chars={rubric_limit}"
        )
    return kept


def read_train_and_eval(
    config: config_dict.ConfigDict, tokenizer: Any
) -> tuple[list[Example], list[Example]]:
    """The usable (:func:`usable_examples`) training examples and held-out ones: those of
    ``data.eval_path``, or ``data.eval_size`` examples drawn with ``seed`` from the training data
    and removed from it. Each path is a JSONL file or a built TFDS data set,
    ``tfds:<name>[/<config>]:<split>``."""
    data = config.data
    if not data.train_path:
        raise app.UsageError("set --config.data.train_path to a JSONL of training prompts")
    data_dir = data.tfds_data_dir or None

    def read(path: str, limit: int) -> list[Example]:
        examples = load_examples(path, data.format, rubric=config.rubric, limit=limit,
                                 data_dir=data_dir)
        return usable_examples(examples, config, tokenizer, path)

    train = read(data.train_path, data.train_limit)
    if data.eval_path:
        return train, read(data.eval_path, 0)
    if data.eval_size == 0:
        return train, []
    if data.eval_size >= len(train):
        raise ValueError(
            f"config key 'data.eval_size' is {data.eval_size} but {data.train_path} gives only "
            f"{len(train)} usable examples; some must remain for training"
        )
    held_out = set(np.random.default_rng(config.seed).permutation(len(train))[: data.eval_size])
    return (
        [e for i, e in enumerate(train) if i not in held_out],
        [e for i, e in enumerate(train) if i in held_out],
    )


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


def train(config: config_dict.ConfigDict) -> TrainSummary:
    """Runs the whole job for a config (see the module docstring) and returns its summary."""
    initialize_distributed(config)
    rar_config.validate(config, num_devices=jax.device_count())
    cli.check_inputs(config, ("data.train_path", "data.eval_path") + cli.model_input_keys(config))
    output_dir = pathlib.Path(config.output_dir)
    # One run per output directory (the lock is process 0's in a multi-host job).
    with hold_output_dir(output_dir) if jax.process_index() == 0 else contextlib.nullcontext():
        return _train(config, output_dir)


def _train(config: config_dict.ConfigDict, output_dir: pathlib.Path) -> TrainSummary:
    """`train` once the config is checked and the output directory is this process's."""
    (output_dir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
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


def _quiet_orbax(record: logging.LogRecord) -> bool:
    """Drops orbax's INFO chatter (one line per checkpoint operation); keeps its warnings."""
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.get_absl_handler().addFilter(_quiet_orbax)
    config = _CONFIG.value
    summary = train(config)
    print(summary_text(summary, pathlib.Path(config.output_dir)))


def run() -> None:
    """Console-script entry point (``rar-train``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
