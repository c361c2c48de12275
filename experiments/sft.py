"""Expert-Answer-SFT (``rar-sft``): supervised fine-tuning on reference answers, Table 1's baseline.

    rar-sft --config=configs/paper/table1_expert_sft.py
    rar-sft --config=configs/paper/table1_expert_sft.py:small

Reads the same config as ``rar-train``: the policy (``model.*``), the training and held-out
examples (``data.*``; only those with a reference answer, the rest are counted and left out),
the optimiser (``optim.*``), mesh, checkpoints and metrics; ``sft.batch_size`` examples per step.
Writes ``metrics.jsonl`` (``loss``, ``eval/loss`` ...), checkpoints (a second run in the same
``output_dir`` resumes), ``summary.json`` and, with ``train.export_hf``, the fine-tuned policy as
an HF directory that ``rar-eval`` reads. See ``rar_jax.rl.sft``.
"""

from __future__ import annotations

import logging
import pathlib

from absl import app
from flax import nnx

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.data.selection import read_train_and_eval
from rar_jax.io import write_json
from rar_jax.models.loading import export_hf, load_from_config
from rar_jax.rl.sft import SFTSummary, SFTTrainer

_CONFIG = rar_config.define_config_flag()


def sft(config) -> SFTSummary:
    """Runs supervised fine-tuning for a config and returns its summary."""
    inputs = ("data.train_path", "data.eval_path", "model.source")
    with cli.training_run(config, inputs) as output_dir:
        policy, tokenizer = load_from_config(config.model)
        train_examples, eval_examples = read_train_and_eval(config, tokenizer,
                                                            require_reference=True)
        logging.info("%d training and %d held-out examples with a reference answer",
                     len(train_examples), len(eval_examples))
        trainer = SFTTrainer(config, policy=policy, tokenizer=tokenizer,
                             train_examples=train_examples, eval_examples=eval_examples)
        summary = trainer.train()
        write_json(output_dir / "summary.json", vars(summary))
        if config.train.export_hf:
            nnx.update(policy, trainer.state.params)
            export_hf(policy, output_dir / "hf_export", tokenizer=tokenizer)
    return summary


def summary_text(summary: SFTSummary, output_dir: pathlib.Path) -> str:
    """The end-of-run report: training and held-out loss (mean NLL per answer token)."""
    lines = [f"SFT finished {summary.steps} steps; outputs in {output_dir}",
             f"  training loss: first step {summary.loss_first:.4f}, "
             f"last step {summary.loss_last:.4f}"]
    if summary.eval_losses:
        lines.append("  held-out loss: " + ", ".join(
            f"step {step}: {loss:.4f}" for step, loss in sorted(summary.eval_losses.items())))
    lines.append(f"  answers cut at rl.max_completion_length: {summary.truncated_answers}; "
                 f"skipped updates (non-finite): {summary.skipped_updates}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    print(summary_text(sft(config), pathlib.Path(config.output_dir)))


def run() -> None:
    """Console-script entry point (``rar-sft``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
