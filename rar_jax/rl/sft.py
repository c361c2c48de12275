"""Expert-Answer-SFT, Table 1's baseline: supervised fine-tuning of the policy on reference answers.

Each example's prompt is rendered by the chat template as the policy sees it when sampling, and
its reference answer (HealthBench's ideal completion, RaR's reference answer) becomes the
assistant's turn, end-of-turn tokens included, so the model also learns to stop. The loss is the
mean negative log-likelihood over every answer token of the batch
(:func:`rar_jax.rl.losses.sft_loss`), computed by the same sharded, micro-batched, chunked update
as GRPO (:func:`rar_jax.rl.train_step.sft_step`), and the loop, checkpoints, resume and metrics
files are GRPO's (:class:`~rar_jax.rl.loop.TrainingLoop`).

Examples without a reference answer are left out (counted in the log) before they reach the
trainer (:func:`rar_jax.data.selection.read_train_and_eval` with ``require_reference``); an
answer longer than ``rl.max_completion_length`` tokens is cut there and counted
(``sft/truncated_answers``). Every ``train.eval_every`` steps the loss on the held-out examples
is written as ``eval/loss``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from ml_collections import config_dict

from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example, ExampleStream
from rar_jax.errors import UserError
from rar_jax.models.batching import bucket_size
from rar_jax.models.sampler import DEFAULT_PROMPT_BUCKETS
from rar_jax.rl import train_step
from rar_jax.rl.loop import TrainingLoop, fault_point
from rar_jax.rl.trainer import assemble_batch


@dataclasses.dataclass
class SFTSummary:
    """What a finished SFT run reports (losses are mean NLL per answer token)."""

    steps: int
    loss_first: float
    loss_last: float
    eval_losses: dict[int, float]
    truncated_answers: int
    skipped_updates: int


def sft_tokens(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of an example with a reference answer.

    The prompt is the chat template's rendering of the conversation with the generation prompt
    (what the sampler feeds the policy); the answer is the rest of the rendering with the
    reference as the assistant's turn (its end-of-turn tokens included).

    Raises:
        UserError: the example has no reference, or the template does not render the assistant's
            turn after its generation prompt.
    """
    if not example.reference:
        raise UserError(f"{example.example_id}: no reference answer to fine-tune on")
    messages = list(example.conversation)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": example.reference}],
        add_generation_prompt=False,
    )
    if not full.startswith(prompt):
        raise UserError(
            f"{example.example_id}: the chat template does not render the assistant's turn "
            "after its generation prompt, so the reference answer cannot be appended to the "
            "prompt the policy sees"
        )
    return tokenizer.encode(prompt), tokenizer.encode(full[len(prompt):])


def sft_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    rows: int,
    prompt_length: int,
    answer_length: int,
    pad_id: int,
) -> train_step.SFTBatch:
    """Rows of [left-padded prompt | answer], padded to ``rows`` with rows that train nothing.

    Args:
        pairs: (prompt ids, answer ids) per example; answers longer than ``answer_length`` are
            cut there.
        rows: the batch's rows (>= len(pairs)); the extra rows repeat the first prompt with an
            empty answer (no loss token).
        prompt_length, answer_length: the padded widths.
        pad_id: the padding token.
    """
    answers = np.full((rows, answer_length), pad_id, np.int32)
    lengths = np.zeros(rows, np.int32)
    for row, (_, answer) in enumerate(pairs):
        kept = list(answer)[:answer_length]
        answers[row, :len(kept)] = kept
        lengths[row] = len(kept)
    prompts = [prompt for prompt, _ in pairs] + [pairs[0][0]] * (rows - len(pairs))
    batch = assemble_batch(
        prompts, answers, lengths, np.zeros((rows, answer_length), np.float32),
        np.zeros(rows, np.float32), prompt_length=prompt_length, pad_id=pad_id,
    )
    return train_step.SFTBatch(batch.tokens, batch.positions, batch.attention_mask,
                               batch.loss_mask)


class SFTTrainer(TrainingLoop):
    """Supervised fine-tuning on reference answers; see the module docstring.

    Args:
        config: a validated config (sections sft, rl, optim, train, checkpoint, metrics, mesh).
        policy: the policy Decoder (its current weights are the start).
        tokenizer: the policy's tokenizer.
        train_examples: examples with a reference answer whose prompts fit.
        eval_examples: held-out examples (their loss is ``eval/loss``).
        devices: the devices of the mesh (default all).
    """

    progress_name = "SFT"

    def __init__(
        self,
        config: config_dict.ConfigDict,
        *,
        policy: nnx.Module,
        tokenizer: Any,
        train_examples: Sequence[Example],
        eval_examples: Sequence[Example] = (),
        devices: Sequence[jax.Device] | None = None,
    ):
        self.config = config
        self.tokenizer = tokenizer
        rl = config.rl
        self.rows = config.sft.batch_size
        optimizer = self.place(policy, devices, self.rows, "sft.batch_size")
        self.examples = list(train_examples)
        self.eval_examples = list(eval_examples)
        self.stream = ExampleStream(self.examples, seed=config.seed)
        self._tokens: dict[str, tuple[list[int], list[int]]] = {}
        self.pad_id = tokenizer.pad_id
        self.prompt_buckets = ((rl.max_prompt_length,) if rl.pad_prompts_to_max_length
                               else DEFAULT_PROMPT_BUCKETS)

        step = functools.partial(train_step.sft_step, graphdef=self.graphdef,
                                 optimizer=optimizer, rl=rl, optim=config.optim)
        self._step = train_step.jit_train_step(step, self.state_shardings, self.mesh,
                                               train_step.SFTBatch)
        self._loss = jax.jit(
            lambda params, batch: train_step.sft_loss(params, batch, graphdef=self.graphdef,
                                                      rl=rl)[:2],
            in_shardings=(self.state_shardings.params,
                          train_step.batch_shardings(self.mesh, train_step.SFTBatch)),
        )

    # ------------------------------------------------------------------ data
    def tokens(self, example: Example) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) of ``example`` (:func:`sft_tokens`), computed once."""
        if example.example_id not in self._tokens:
            self._tokens[example.example_id] = sft_tokens(self.tokenizer, example)
        return self._tokens[example.example_id]

    def batch(self, examples: Sequence[Example]) -> tuple[train_step.SFTBatch, int]:
        """The sharded batch of ``examples`` (``sft.batch_size`` rows) and how many answers were
        cut at ``rl.max_completion_length``. Widths are bucketed, so few shapes compile."""
        pairs = [self.tokens(example) for example in examples]
        limit = self.config.rl.max_completion_length
        longest = max(len(answer) for _, answer in pairs)
        batch = sft_batch(
            pairs,
            rows=self.rows,
            prompt_length=bucket_size(max(len(prompt) for prompt, _ in pairs),
                                      self.prompt_buckets),
            answer_length=min(bucket_size(max(longest, 1), DEFAULT_PROMPT_BUCKETS), limit),
            pad_id=self.pad_id,
        )
        truncated = sum(len(answer) > limit for _, answer in pairs)
        sharded = jax.device_put(batch, train_step.batch_shardings(self.mesh, train_step.SFTBatch))
        return sharded, truncated

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, float]:
        """Runs step ``step`` (0-based) and returns its metrics."""
        start = time.perf_counter()
        batch, truncated = self.batch(self.stream.next_batch(self.rows))
        fault_point("mid_step", step)
        self.state, step_metrics = self._step(self.state, batch)
        step_metrics = jax.device_get(step_metrics)
        elapsed = time.perf_counter() - start
        tokens = int(np.asarray(batch.attention_mask).sum())
        return {
            "sft/answer_tokens": float(step_metrics["loss_denominator"]),
            "sft/truncated_answers": truncated,
            "time/train_s": elapsed,
            "throughput/tokens_per_s": tokens / max(elapsed, 1e-9),
            **{name: float(value) for name, value in step_metrics.items()},
        }

    def evaluate(self, step: int) -> float:
        """The mean NLL per answer token of the held-out examples (``eval/loss``)."""
        loss_sum, tokens = 0.0, 0.0
        for start in range(0, len(self.eval_examples), self.rows):
            batch, _ = self.batch(self.eval_examples[start:start + self.rows])
            chunk_sum, chunk_tokens = jax.device_get(self._loss(self.state.params, batch))
            loss_sum, tokens = loss_sum + float(chunk_sum), tokens + float(chunk_tokens)
        loss = loss_sum / tokens if tokens else math.nan
        self.writer.write(step, {"eval/loss": loss, "eval/answer_tokens": tokens})
        return loss

    def summary(self) -> SFTSummary:
        """The run's summary from ``metrics.jsonl``."""
        records = metrics_lib.read_metrics(self.config.output_dir)
        steps = [r for r in records if "sft/answer_tokens" in r]
        return SFTSummary(
            steps=self.config.optim.num_steps,
            loss_first=steps[0]["loss"] if steps else math.nan,
            loss_last=steps[-1]["loss"] if steps else math.nan,
            eval_losses={int(r["step"]): r["eval/loss"] for r in records if "eval/loss" in r},
            truncated_answers=int(sum(r["sft/truncated_answers"] for r in steps)),
            skipped_updates=int(sum(r["update_skipped"] for r in steps)),
        )
