"""Tiny GRPO models and batches shared by the train-step tests (single- and multi-device)."""

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax import config as rar_config
from rar_jax.models.config import ModelConfig
from rar_jax.models.decoder import Decoder
from rar_jax.rl import train_step

TINY = ModelConfig(
    architecture="llama", vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=2,
    num_heads=4, num_kv_heads=2, head_dim=4, tie_word_embeddings=True,
)
PROMPT, TIME = 3, 9
# (prompt length, answer length) per row: left-padded prompts, right-padded answers.
ROW_SHAPES = [(3, 6), (2, 4), (3, 1), (1, 6), (2, 2), (3, 5), (1, 3), (2, 6)]
ADVANTAGES = [1.0, -0.5, 2.0, -1.5, 0.3, -0.8, 1.1, -0.2]


def tiny_config(**rl_overrides):
    """The base config with a small learning-rate schedule and ``rl`` keys overridden by path.

    ``rl.share_prompt_prefix`` is off by default here: `tiny_batch`'s rows have different
    prompts (`grouped_batch` makes rows that share them, as a GRPO batch's answers do)."""
    config = rar_config.base_config()
    config.rl.logprob_chunk_size = 3
    config.rl.share_prompt_prefix = False
    config.optim.num_steps, config.optim.warmup_fraction = 10, 0.2
    config.optim.learning_rate = 1e-2
    for key, value in rl_overrides.items():
        node = config.rl
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def tiny_batch(rows=4, seed=0):
    """A Batch of ``rows`` random rows shaped by ROW_SHAPES (loss over the answer tokens)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, TINY.vocab_size, (rows, TIME)).astype(np.int32)
    attention = np.zeros((rows, TIME), bool)
    loss_mask = np.zeros((rows, TIME), bool)
    positions = np.zeros((rows, TIME), np.int32)
    for row, (prompt_length, answer_length) in enumerate(ROW_SHAPES[:rows]):
        start = PROMPT - prompt_length
        attention[row, start:PROMPT + answer_length] = True
        loss_mask[row, PROMPT:PROMPT + answer_length] = True
        positions[row, start:] = np.arange(TIME - start)
    return train_step.Batch(
        tokens=jnp.asarray(tokens), positions=jnp.asarray(positions),
        attention_mask=jnp.asarray(attention), loss_mask=jnp.asarray(loss_mask),
        advantages=jnp.asarray(ADVANTAGES[:rows]),
        old_logprobs=jnp.zeros((rows, TIME)), ref_logprobs=jnp.zeros((rows, TIME)),
    )


def grouped_batch(rows=4, group=2, seed=0):
    """`tiny_batch` whose rows come in groups of ``group`` consecutive rows that share the first
    row's prompt (tokens, mask and positions of the prompt columns), answers kept per row."""
    batch = tiny_batch(rows, seed)
    firsts = np.repeat(np.arange(0, rows, group), group)
    tokens, attention, positions = (np.array(a) for a in (
        batch.tokens, batch.attention_mask, batch.positions))
    for field in (tokens, attention, positions):
        field[:, :PROMPT] = field[firsts, :PROMPT]
    positions[:, PROMPT:] = positions[:, PROMPT - 1:PROMPT] + np.arange(1, TIME - PROMPT + 1)
    return batch._replace(tokens=jnp.asarray(tokens), attention_mask=jnp.asarray(attention),
                          positions=jnp.asarray(positions))


def tiny_step(config, seed=0):
    """(graphdef, fresh TrainState, the bound but un-jitted step) for the tiny model."""
    graphdef, params = nnx.split(Decoder(TINY, rngs=nnx.Rngs(seed)))
    state, optimizer = train_step.make_train_state(params, config.optim)
    step = functools.partial(
        train_step.grpo_step, graphdef=graphdef, optimizer=optimizer, rl=config.rl,
        optim=config.optim, temperature=1.0,
    )
    return graphdef, state, step
