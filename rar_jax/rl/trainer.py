"""The GRPO loop: examples -> sampler -> reward -> group advantages -> sharded train step.

:class:`GRPOTrainer` only orchestrates; the math lives in :mod:`rar_jax.rl` (advantages, losses,
the train step) and the judges in :mod:`rar_jax.judges`. One step:

1. the next ``rl.prompts_per_step`` examples of the seeded :class:`ExampleStream`;
2. the sampler draws ``rl.num_generations`` answers per prompt with the current weights (passed as
   arguments: no recompilation, no host round trip of the parameters) and returns their
   sampling log-probs (GRPO's old log-probs with ``rl.old_logprobs = "sampler"``);
3. the reward function scores every (example, answer); an unscorable judgment is NaN and gets
   advantage 0 (counted, with its reason, never a silent 0 reward);
4. the rows become one :class:`Batch` (left-padded prompt, then answer) and the jitted step runs
   ``rl.num_iterations`` times; the reference model (only when ``rl.kl.beta > 0``) and recomputed
   old log-probs are separate jitted forward passes;
5. metrics (JSONL + TensorBoard), sample answers, evaluation on held-out examples, checkpoints.

Randomness: step ``s`` samples with ``fold_in(key(seed), s)``, so a resumed run draws exactly what
the uninterrupted run would have drawn; together with the stream position and the train state
in the checkpoint, resuming is bitwise identical on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import config_dict

from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example, ExampleStream
from rar_jax.models.batching import bucket_size
from rar_jax.models.sampler import SampleOutput, Sampler, SamplingParams
from rar_jax.parallel.chips import peak_flops_per_device
from rar_jax.rl import grpo, train_step
from rar_jax.rl.loop import TrainingLoop, fault_point
from rar_jax.rubrics.schema import CATEGORY_IDS, Category, rubric_arrays

logger = logging.getLogger(__name__)

_PITFALL_ID = CATEGORY_IDS[Category.PITFALL]

# Where pi_old comes from (rl.old_logprobs): the current policy (on-policy, one update per batch),
# the sampler's own log-probs, or a separate forward pass before the updates.
OLD_LOGPROB_SOURCES = ("current", "sampler", "recompute")


class RewardResult(Protocol):
    """What a reward function returns (see ``rar_jax.judges.rewards``)."""

    rewards: np.ndarray  # f32[n], NaN where the judgment failed.
    verdicts: np.ndarray  # f32[n, k] per-criterion verdicts, NaN where none.
    verdict_mask: np.ndarray  # bool[n, k].
    failed: np.ndarray  # bool[n].
    reasons: Sequence[str | None]  # Why each failed row failed.


RewardFn = Callable[[Sequence[Example], Sequence[str]], RewardResult]
# (example id, criterion index) -> [(step, mean credit of that step's answers)].
CriterionHistory = dict[tuple[str, int], list[tuple[int, float]]]


@dataclasses.dataclass
class TrainSummary:
    """What a finished run reports."""

    steps: int
    reward_first: float
    reward_last: float
    eval_rewards: dict[int, float]
    criterion_changes: list[dict[str, Any]]
    eval_criterion_changes: list[dict[str, Any]]
    skipped_updates: int
    judge_failures: int


def prompt_tokens(tokenizer: Any, example: Example) -> list[int]:
    """The chat-formatted prompt of ``example`` as token ids (generation prompt appended)."""
    return tokenizer.encode_chat(list(example.conversation))


def assemble_batch(
    prompts: Sequence[Sequence[int]],
    answer_tokens: np.ndarray,
    answer_lengths: np.ndarray,
    answer_logprobs: np.ndarray,
    advantages: np.ndarray,
    *,
    prompt_length: int,
    pad_id: int,
) -> train_step.Batch:
    """Rows of [left-padded prompt | answer] with masks and token-aligned sampling log-probs.

    Args:
        prompts: the prompt token ids of each row (``n`` rows, repeated per sample).
        answer_tokens: int32[n, m] generated tokens; ``answer_lengths`` int32[n] real ones.
        answer_logprobs: f32[n, m] their sampling log-probs.
        advantages: f32[n].
        prompt_length: the padded prompt width (>= every prompt's length).
        pad_id: the padding token.

    Returns:
        A Batch of width ``prompt_length + m``; ``ref_logprobs`` zeros (filled by the caller).
    """
    rows, width = answer_tokens.shape
    total = prompt_length + width
    tokens = np.full((rows, total), pad_id, np.int32)
    attention = np.zeros((rows, total), bool)
    loss_mask = np.zeros((rows, total), bool)
    positions = np.zeros((rows, total), np.int32)
    old_logprobs = np.zeros((rows, total), np.float32)
    answer_valid = np.arange(width)[None, :] < answer_lengths[:, None]
    for row, prompt in enumerate(prompts):
        start = prompt_length - len(prompt)
        if start < 0:
            raise ValueError(f"row {row}: prompt of {len(prompt)} tokens exceeds {prompt_length}")
        tokens[row, start:prompt_length] = prompt
        attention[row, start:prompt_length] = True
        positions[row, start:] = np.arange(total - start)
    tokens[:, prompt_length:] = np.where(answer_valid, answer_tokens, pad_id)
    attention[:, prompt_length:] = answer_valid
    loss_mask[:, prompt_length:] = answer_valid
    old_logprobs[:, prompt_length:] = np.where(answer_valid, answer_logprobs, 0.0)
    return train_step.Batch(
        tokens=jnp.asarray(tokens),
        positions=jnp.asarray(positions),
        attention_mask=jnp.asarray(attention),
        loss_mask=jnp.asarray(loss_mask),
        advantages=jnp.asarray(advantages, jnp.float32),
        old_logprobs=jnp.asarray(old_logprobs),
        ref_logprobs=jnp.zeros((rows, total), jnp.float32),
    )


def judged_examples(config: config_dict.ConfigDict, examples: Sequence[Example]) -> list[Example]:
    """The examples with the rubric their verdicts refer to: under ``rar_predefined`` the fixed
    generic rubric (the judge never saw the examples' own), otherwise the examples as they are."""
    if config.reward.method != "rar_predefined":
        return list(examples)
    from rar_jax.judges.prompts import predefined_rubric

    rubric = predefined_rubric(config.judge.templates_dir or None)
    return [dataclasses.replace(example, rubric=rubric) for example in examples]


def rubric_metrics(examples: Sequence[Example], result: RewardResult) -> dict[str, float]:
    """Criterion satisfaction (credit-adjusted: satisfying a bad criterion counts 0) and the
    pitfall hit rate (a pitfall's bad side observed) over the scored rows."""
    rubrics = [example.rubric for example in examples]
    if any(rubric is None for rubric in rubrics) or not np.any(result.verdict_mask):
        return {}
    arrays = rubric_arrays(rubrics, pad_to=result.verdicts.shape[1])
    verdicts = np.where(result.verdict_mask, result.verdicts, np.nan)
    credit = np.where(arrays.polarity_signs > 0, verdicts, 1.0 - verdicts)
    metrics = {"rubric/criteria_credit": float(np.nanmean(credit))}
    pitfall = arrays.mask & (arrays.category_ids == _PITFALL_ID) & result.verdict_mask
    if np.any(pitfall):
        metrics["rubric/pitfall_hit_rate"] = float(np.nanmean(np.where(pitfall, 1.0 - credit, np.nan)))
    return metrics


def unjudged_share(result: RewardResult) -> float:
    """Share of the judged answers' rubric criteria without a verdict (0 without criteria)."""
    mask = np.asarray(result.verdict_mask, bool)
    return float(np.isnan(np.asarray(result.verdicts, np.float32))[mask].mean()) if mask.any() else 0.0


def criterion_rows(examples: Sequence[Example], result: RewardResult) -> list[dict[str, Any]]:
    """Per (example, criterion) of one step: the mean credit over the step's answers."""
    verdicts = np.asarray(result.verdicts)
    if verdicts.size == 0:
        return []
    by_key: dict[tuple[str, int], list[float]] = {}
    for row, example in enumerate(examples):
        if example.rubric is None:
            continue
        for index, criterion in enumerate(example.rubric.criteria):
            if index < verdicts.shape[1] and result.verdict_mask[row, index]:
                value = verdicts[row, index]
                credit = value if criterion.polarity.sign > 0 else 1.0 - value
                if np.isfinite(credit):
                    by_key.setdefault((example.example_id, index), []).append(float(credit))
    return [{"example_id": example_id, "criterion": index, "credit": float(np.mean(values))}
            for (example_id, index), values in by_key.items()]


def criterion_history(rows: Sequence[Mapping[str, Any]], split: str) -> CriterionHistory:
    """(example id, criterion index) -> [(step, credit)] from ``criteria.jsonl`` rows of a split."""
    history: CriterionHistory = {}
    for row in rows:
        if row["split"] == split:
            key = (row["example_id"], int(row["criterion"]))
            history.setdefault(key, []).append((int(row["step"]), float(row["credit"])))
    return history


def criterion_changes(
    history: CriterionHistory, examples: Sequence[Example]
) -> list[dict[str, Any]]:
    """Per (example, criterion) seen at least twice: its credit when first and last seen."""
    changes = []
    rubrics = {example.example_id: example.rubric for example in examples}
    for (example_id, index), points in sorted(history.items()):
        if len(points) < 2:
            continue
        criterion = rubrics[example_id].criteria[index]
        changes.append({
            "example_id": example_id,
            "criterion": criterion.description,
            "category": criterion.category.value if criterion.category else None,
            "first_step": points[0][0],
            "first": points[0][1],
            "last_step": points[-1][0],
            "last": points[-1][1],
        })
    return changes


class GRPOTrainer(TrainingLoop):
    """Runs GRPO with a reward function over examples; see the module docstring (the loop,
    checkpoints and resume: :class:`~rar_jax.rl.loop.TrainingLoop`).

    Args:
        config: a validated config (sections rl, sampling, optim, train, checkpoint, metrics, mesh).
        policy: the policy Decoder (its current weights are the start).
        tokenizer: the policy's tokenizer (chat template, encode / decode, stop and pad ids).
        reward_fn: ``(examples, answers) -> RewardResult``.
        train_examples: the training prompts.
        eval_examples: held-out prompts scored greedily every ``train.eval_every`` steps.
        criteria_fn: optional per-criterion check (e.g. the ``rar_explicit`` reward) run on the
            greedy held-out answers at every evaluation, whatever the training reward: it tracks
            which rubric items the policy learns even when the reward (implicit, Likert) has no
            per-criterion verdicts.
        devices: the devices of the policy's mesh (default all; fewer when the judge has its own).
    """

    progress_name = "GRPO"

    def __init__(
        self,
        config: config_dict.ConfigDict,
        *,
        policy: nnx.Module,
        tokenizer: Any,
        reward_fn: RewardFn,
        train_examples: Sequence[Example],
        eval_examples: Sequence[Example] = (),
        criteria_fn: RewardFn | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.config = config
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        rl = config.rl
        self.rows = rl.prompts_per_step * rl.num_generations
        optimizer = self.place(policy, devices, self.rows,
                               "rl.prompts_per_step x rl.num_generations")
        self.examples = self._fitting(train_examples, "train")
        self.eval_examples = self._fitting(eval_examples, "eval") if eval_examples else []
        self.stream = ExampleStream(self.examples, seed=config.seed)
        # One prompt bucket when asked: a single compiled shape for sampling and the step.
        buckets = {"prompt_buckets": (rl.max_prompt_length,)} if rl.pad_prompts_to_max_length else {}
        self.sampler = Sampler(policy, tokenizer, mesh=self.mesh, **buckets)
        self.sampling = SamplingParams(
            max_new_tokens=rl.max_completion_length,
            temperature=config.sampling.temperature,
            top_k=config.sampling.top_k,
            top_p=config.sampling.top_p,
            num_samples=rl.num_generations,
        )
        self.eval_sampling = dataclasses.replace(self.sampling, greedy=True, num_samples=1)
        step = functools.partial(
            train_step.grpo_step,
            graphdef=self.graphdef,
            optimizer=optimizer,
            rl=rl,
            optim=config.optim,
            temperature=config.sampling.temperature,
        )
        self._step = train_step.jit_train_step(step, self.state_shardings, self.mesh)
        self._logprobs = train_step.jit_logprobs(
            self.graphdef, rl, temperature=config.sampling.temperature,
            param_shardings=self.state_shardings.params, mesh=self.mesh,
        )
        self.reference_params = None
        if rl.kl.beta > 0:
            # A copy of the starting weights; on the host between uses when asked to.
            reference = jax.tree.map(jnp.copy, self.state.params)
            self.reference_params = (
                jax.device_get(reference) if rl.kl.reference_on_host else reference
            )
        self.advantages = jax.jit(grpo.advantage_fn(rl))
        self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        # MFU's denominator: the mesh's peak FLOP/s (0: not reported; see metrics.*).
        self.peak_flops = self.mesh.size * peak_flops_per_device(
            config.metrics.peak_flops_per_device, self.mesh.devices.flat[0].device_kind)
        self.criteria_fn = criteria_fn

    # ------------------------------------------------------------------ data
    def _fitting(self, examples: Sequence[Example], split: str) -> list[Example]:
        """Examples whose prompt fits ``rl.max_prompt_length``; the rest are logged, not hidden."""
        limit = self.config.rl.max_prompt_length
        kept, dropped = [], []
        for example in examples:
            (kept if len(prompt_tokens(self.tokenizer, example)) <= limit else dropped).append(
                example
            )
        if dropped:
            logger.warning(
                "%s: %d of %d examples have prompts longer than rl.max_prompt_length=%d tokens "
                "and are left out: %s",
                split, len(dropped), len(examples), limit,
                ", ".join(e.example_id for e in dropped[:10]) + (" ..." if len(dropped) > 10 else ""),
            )
        if not kept and examples:
            raise ValueError(
                f"{split}: no example fits rl.max_prompt_length={limit}; raise it or shorten the data"
            )
        return kept

    # ------------------------------------------------------------------ one step
    def _sample_and_score(
        self, examples: Sequence[Example], sampling: SamplingParams, key: jax.Array
    ) -> tuple[list[list[int]], Any, list[Example], RewardResult, dict[str, float]]:
        """Answers (prompt-major, ``sampling.num_samples`` per example) and their rewards."""
        prompts = [prompt_tokens(self.tokenizer, example) for example in examples]
        start = time.perf_counter()
        # rl.rollout_chunk_prompts prompts per sampler call bound the KV cache; call i > 0
        # draws with fold_in(key, first prompt of the call).
        chunk = self.config.rl.rollout_chunk_prompts or len(prompts)
        offsets = range(0, len(prompts), chunk)
        output = SampleOutput.concatenate([
            self.sampler.generate(prompts[offset:offset + chunk], sampling,
                                  jax.random.fold_in(key, offset) if offset else key,
                                  params=self.state.params)
            for offset in offsets], offsets)
        sampled = time.perf_counter()
        repeated = [examples[i] for i in output.prompt_indices]
        result = self.reward_fn(repeated, output.texts)
        judged = time.perf_counter()
        timings = {"time/sample_s": sampled - start, "time/judge_s": judged - sampled}
        return prompts, output, repeated, result, timings

    def train_step(self, step: int) -> dict[str, float]:
        """Runs step ``step`` (0-based) and returns its metrics."""
        config, rl = self.config, self.config.rl
        examples = self.stream.next_batch(rl.prompts_per_step)
        key = jax.random.fold_in(jax.random.key(config.seed), step)
        prompts, output, repeated, result, timings = self._sample_and_score(
            examples, self.sampling, key
        )
        fault_point("mid_step", step)
        rewards = np.asarray(result.rewards, np.float32)
        advantages = self.advantages(jnp.asarray(rewards))
        repeated_prompts = [prompts[i] for i in output.prompt_indices]
        batch = assemble_batch(
            repeated_prompts,
            output.tokens,
            output.lengths,
            output.logprobs,
            np.asarray(advantages.advantages),
            # Bucketed like the sampler's prompts, so the step compiles once per bucket.
            prompt_length=bucket_size(max(map(len, prompts)), self.sampler.prompt_buckets),
            pad_id=self.sampler.pad_id,
        )
        start = time.perf_counter()
        batch = jax.device_put(batch, train_step.batch_shardings(self.mesh))
        if rl.old_logprobs == "recompute":
            old, _ = self._logprobs(self.state.params, batch.tokens, batch.positions, batch.attention_mask)
            batch = batch._replace(old_logprobs=old)
        reference_s = 0.0
        if self.reference_params is not None:
            referencing = time.perf_counter()
            reference = jax.device_put(self.reference_params, self.state_shardings.params)
            ref, _ = self._logprobs(reference, batch.tokens, batch.positions, batch.attention_mask)
            # Waited for, so that time/reference_s is the pass itself, apart from the update.
            batch = batch._replace(ref_logprobs=ref.block_until_ready())
            reference_s = time.perf_counter() - referencing
        for _ in range(rl.num_iterations):
            self.state, step_metrics = self._step(self.state, batch)
        step_metrics = jax.device_get(step_metrics)
        trained = time.perf_counter()

        finite = np.isfinite(rewards)
        answer_tokens = int(output.lengths.sum())
        trained_tokens = int(np.asarray(batch.attention_mask).sum())
        flops = 2 * self.num_params * answer_tokens + 6 * self.num_params * trained_tokens * rl.num_iterations
        # time/train_s: device transfer, log-prob passes and updates; time/reference_s: the
        # reference model's log-prob pass within it (0.0 without a reference model).
        timings["time/train_s"] = trained - start
        elapsed = sum(timings.values())
        timings["time/reference_s"] = reference_s
        metrics = {
            "reward/mean": float(np.mean(rewards[finite])) if finite.any() else math.nan,
            "reward/std": float(np.std(rewards[finite])) if finite.any() else math.nan,
            "reward/judge_failures": int((~finite).sum()),
            "reward/empty_answers": sum(not text.strip() for text in output.texts),
            "reward/unjudged_criteria_share": unjudged_share(result),
            "reward/frac_tied_groups": float(advantages.frac_tied_groups),
            "advantage/mean": float(advantages.mean),
            "advantage/std": float(advantages.std),
            "answer/length_mean": float(output.lengths.mean()),
            "answer/length_max": int(output.lengths.max()),
            "answer/frac_truncated": float(np.mean([r == "length" for r in output.finish_reasons])),
            "throughput/tokens_per_s": (answer_tokens + trained_tokens) / max(elapsed, 1e-9),
            "throughput/model_flops_per_s": flops / max(elapsed, 1e-9),
            # The update: its analytic FLOPs (rar_jax.models.flops) over time/train_s less the reference
            # pass (an old log-prob pass, when recomputed, is in there too).
            "throughput/update_flops_per_s": float(step_metrics["update_flops"]) * rl.num_iterations
            / max(timings["time/train_s"] - reference_s, 1e-9),
            **timings,
            **{name: float(value) for name, value in step_metrics.items()},
            **rubric_metrics(judged_examples(config, repeated), result),
        }
        if self.peak_flops > 0:
            metrics["throughput/mfu"] = metrics["throughput/model_flops_per_s"] / self.peak_flops
        failures = [reason for reason in result.reasons if reason]
        if failures:
            logger.warning("step %d: %d judgments failed, e.g. %s", step, len(failures), failures[0])
        self.writer.write_criteria(
            step, "train", criterion_rows(judged_examples(config, repeated), result))
        if config.train.log_samples_every and step % config.train.log_samples_every == 0:
            self.writer.write_samples(
                step,
                [
                    {
                        "example_id": repeated[row].example_id,
                        "answer": output.texts[row],
                        "reward": None if not finite[row] else float(rewards[row]),
                        "failure": result.reasons[row],
                    }
                    for row in range(min(len(output.texts), rl.num_generations))
                ],
            )
        return metrics

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, step: int) -> float:
        """Greedy answers to the held-out examples, scored by the same reward; the mean reward."""
        rewards = []
        batch_size = self.config.rl.prompts_per_step
        key = jax.random.key(self.config.seed)
        credits = []
        for start in range(0, len(self.eval_examples), batch_size):
            chunk = self.eval_examples[start:start + batch_size]
            _, output, repeated, result, _ = self._sample_and_score(chunk, self.eval_sampling, key)
            rewards.extend(np.asarray(result.rewards, np.float64).tolist())
            if self.criteria_fn is not None:
                checked = self.criteria_fn(repeated, output.texts)
                self.writer.write_criteria(step, "eval", criterion_rows(repeated, checked))
                credits.append(rubric_metrics(repeated, checked))
        values = np.asarray(rewards)
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        metrics = {"eval/reward_mean": mean, "eval/judge_failures": int(np.isnan(values).sum())}
        for name in sorted({name for chunk_metrics in credits for name in chunk_metrics}):
            chunk_values = [m[name] for m in credits if name in m]
            metrics[f"eval/{name}"] = float(np.mean(chunk_values))
        self.writer.write(step, metrics)
        return mean

    def progress_fields(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"reward": f"{metrics['reward/mean']:.3f}", "loss": f"{metrics['loss']:.4f}"}

    def summary(self) -> TrainSummary:
        """The run's summary from its files (``metrics.jsonl``, ``criteria.jsonl``)."""
        records = metrics_lib.read_metrics(self.config.output_dir)
        steps = [r for r in records if "reward/mean" in r]
        rewards = [r["reward/mean"] for r in steps]
        criteria = metrics_lib.read_criteria(self.config.output_dir)
        return TrainSummary(
            steps=self.config.optim.num_steps,
            reward_first=rewards[0] if rewards else math.nan,
            reward_last=rewards[-1] if rewards else math.nan,
            eval_rewards={int(r["step"]): r["eval/reward_mean"]
                          for r in records if "eval/reward_mean" in r},
            criterion_changes=criterion_changes(
                criterion_history(criteria, "train"), judged_examples(self.config, self.examples)
            ),
            eval_criterion_changes=criterion_changes(
                criterion_history(criteria, "eval"), self.eval_examples
            ),
            skipped_updates=int(sum(r["update_skipped"] for r in steps)),
            judge_failures=int(sum(r["reward/judge_failures"] for r in steps)),
        )

