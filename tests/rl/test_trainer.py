"""The GRPO loop on a tiny random model with a programmatic reward: it learns, it resumes bitwise,
and it stops with a checkpoint when updates keep failing."""

import json
from typing import NamedTuple

import jax
import numpy as np
import pytest
from flax import nnx

from rar_jax import config as rar_config
from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example
from rar_jax.models.config import ModelConfig
from rar_jax.models.decoder import Decoder
from rar_jax.rl import trainer as trainer_lib
from rar_jax.rl.loop import TrainingStopped

CHARS = ["<pad>", "<eos>"] + list("abcdefgh?:")
TARGET = "a"


class CharTokenizer:
    """One token per character; the chat template is the user text followed by ':'."""

    pad_id, eos_id, stop_ids = 0, 1, (1,)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(message["content"] for message in messages) + (":" if add_generation_prompt else "")

    def encode(self, text):
        return [CHARS.index(ch) for ch in text]

    def encode_chat(self, messages, add_generation_prompt=True):
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))

    def decode(self, ids, skip_special_tokens=False):
        return "".join(CHARS[i] for i in ids if not (skip_special_tokens and i < 2))


class ProgrammaticReward(NamedTuple):
    rewards: np.ndarray
    verdicts: np.ndarray
    verdict_mask: np.ndarray
    failed: np.ndarray
    reasons: list


def target_fraction_reward(examples, answers):
    """Fraction of the answer's characters that are TARGET (0 for an empty answer)."""
    rewards = np.array([a.count(TARGET) / len(a) if a else 0.0 for a in answers], np.float32)
    n = len(answers)
    return ProgrammaticReward(rewards, np.zeros((n, 0)), np.zeros((n, 0), bool),
                              np.zeros(n, bool), [None] * n)


EXAMPLES = [
    Example(({"role": "user", "content": text},), None, None, f"p{i}")
    for i, text in enumerate(["abc?", "hgf?", "bad?", "cafe?", "dhg?", "egg?"])
]


def _config(output_dir, **overrides):
    config = rar_config.base_config()
    config.output_dir = str(output_dir)
    config.rl.prompts_per_step, config.rl.num_generations = 4, 8
    config.rl.max_prompt_length, config.rl.max_completion_length = 8, 8
    config.rl.old_logprobs = "sampler"
    config.rl.logprob_chunk_size = 8
    config.optim.num_steps, config.optim.warmup_fraction = 16, 0.0
    config.optim.learning_rate = 3e-2
    config.checkpoint.every_steps, config.checkpoint.async_save = 0, False
    config.train.eval_every, config.train.log_samples_every = 0, 4
    config.metrics.tensorboard = False
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    rar_config.validate(config, num_devices=jax.device_count())
    return config


def _trainer(config, reward_fn=target_fraction_reward):
    model = Decoder(
        ModelConfig(architecture="llama", vocab_size=len(CHARS), hidden_size=32, intermediate_size=64,
                    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=True),
        rngs=nnx.Rngs(0),
    )
    return trainer_lib.GRPOTrainer(config, policy=model, tokenizer=CharTokenizer(),
                                   reward_fn=reward_fn, train_examples=EXAMPLES,
                                   eval_examples=EXAMPLES[:2])


def _records(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grpo_learns_a_programmatic_reward(tmp_path):
    config = _config(tmp_path, **{"train.eval_every": 8})
    summary = _trainer(config).train()
    rewards = [r["reward/mean"] for r in _records(tmp_path) if "reward/mean" in r]
    assert len(rewards) == 16
    start, end = np.mean(rewards[:3]), np.mean(rewards[-3:])
    assert start < 0.25, rewards  # About 1 in 10 characters by chance.
    assert end > start + 0.3, rewards
    assert summary.reward_first == rewards[0] and summary.reward_last == rewards[-1]
    assert sorted(summary.eval_rewards) == [0, 8, 16]
    assert summary.eval_rewards[16] > summary.eval_rewards[0]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 4, 8, 12}
    assert (tmp_path / "checkpoints" / "16").is_dir()


@pytest.mark.slow
def test_resume_is_bitwise_identical(tmp_path):
    straight = _config(tmp_path / "straight", **{"optim.num_steps": 6})
    _trainer(straight).train()
    first = _config(tmp_path / "resumed", **{"optim.num_steps": 3})
    _trainer(first).train()
    resumed_trainer = _trainer(_config(tmp_path / "resumed", **{"optim.num_steps": 6}))
    resumed_trainer.train()

    straight_trainer = _trainer(straight)  # Restores the straight run's final checkpoint.
    assert straight_trainer.maybe_resume() == 6
    for a, b in zip(jax.tree.leaves(straight_trainer.state), jax.tree.leaves(resumed_trainer.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    drop_timing = lambda r: {k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))}
    assert [drop_timing(r) for r in _records(tmp_path / "straight")] == [
        drop_timing(r) for r in _records(tmp_path / "resumed")
    ]


def test_failing_updates_stop_the_run_with_a_checkpoint(tmp_path):
    def nan_reward(examples, answers):
        out = target_fraction_reward(examples, answers)
        return out._replace(rewards=np.where(np.arange(len(answers)) % 2, out.rewards, np.nan) * np.inf)

    config = _config(tmp_path, **{"rl.max_consecutive_skipped": 2, "rl.advantage.scale": "none"})
    trainer = _trainer(config)
    trainer.advantages = lambda rewards: trainer_lib.grpo.advantage_fn(config.rl)(rewards)._replace(
        advantages=jax.numpy.full(rewards.shape, jax.numpy.nan)
    )
    with pytest.raises(TrainingStopped, match="2 updates in a row had non-finite gradients"):
        trainer.train()
    assert (tmp_path / "checkpoints" / "2").is_dir()
    records = _records(tmp_path)
    assert [r["update_skipped"] for r in records] == [1, 1]


def test_unjudged_share_counts_real_criteria_only():
    import types

    from rar_jax.rl.trainer import unjudged_share

    nan = float("nan")
    result = types.SimpleNamespace(verdicts=np.array([[1.0, nan, nan], [nan, 0.0, 0.0]]),
                                   verdict_mask=np.array([[True, True, False], [True] * 3]))
    assert unjudged_share(result) == pytest.approx(2 / 5)
    assert unjudged_share(types.SimpleNamespace(verdicts=np.zeros((2, 0)),
                                                verdict_mask=np.zeros((2, 0), bool))) == 0.0


@pytest.mark.slow
def test_reference_pass_is_timed_apart_from_the_update(tmp_path):
    config = _config(tmp_path, **{"rl.kl.beta": 0.04, "optim.num_steps": 1,
                                  "rl.prompts_per_step": 2, "rl.num_generations": 2,
                                  "train.log_samples_every": 0})
    trainer = _trainer(config)
    trainer.writer = metrics_lib.MetricsWriter(tmp_path, tensorboard=False)
    record = trainer.train_step(0)
    trainer.writer.close()
    # A part of time/train_s (which also holds the update), measured by itself.
    assert 0.0 < record["time/reference_s"] < record["time/train_s"]
    # The update's analytic FLOPs over its own seconds (time/train_s less the reference pass).
    update_s = record["time/train_s"] - record["time/reference_s"]
    np.testing.assert_allclose(record["throughput/update_flops_per_s"],
                               record["update_flops"] / update_s, rtol=1e-6)
    assert record["update_flops"] > 0
