"""Shared prompts in the GRPO passes (``rl.share_prompt_prefix``): each group's prompt runs once
and its answers continue that cache; values, gradients and updates equal the per-row path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from grpo_batches import TINY, grouped_batch, tiny_config, tiny_step

from rar_jax.models.decoder import Decoder
from rar_jax.rl import grpo, train_step


def test_extend_equals_the_cached_forward():
    """`Decoder.extend` after a prefill gives the hidden states of the writing cached forward."""
    model = Decoder(TINY, rngs=nnx.Rngs(3))
    batch = grouped_batch(rows=4, group=1, seed=2)
    tokens, positions, mask = batch.tokens, batch.positions, batch.attention_mask
    _, prefix = model.prefill(tokens[:, :4], positions[:, :4], attention_mask=mask[:, :4],
                              max_len=9)
    want, _ = model(tokens[:, 4:], positions[:, 4:], attention_mask=mask[:, 4:], cache=prefix,
                    return_hidden=True)
    _, unpadded = model.prefill(tokens[:, :4], positions[:, :4], attention_mask=mask[:, :4])
    got = model.extend(tokens[:, 4:], positions[:, 4:], prefix=unpadded,
                       attention_mask=mask[:, 4:])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="prefix has 2 rows but tokens have 4"):
        model.extend(tokens[:, 4:], positions[:, 4:], prefix=unpadded.take_rows(jnp.arange(2)))


@pytest.mark.parametrize("rows,group,micro_batch_size", [(4, 2, 0), (4, 4, 0), (4, 4, 2), (8, 2, 4)])
def test_shared_logprobs_equal_per_row_logprobs(rows, group, micro_batch_size):
    """Log-probs and entropies of the answer window (last 6 columns; the first two prompt columns
    are shared) with groups of `group` rows, micro-batched or not, against every row alone."""
    config = tiny_config()
    graphdef, state, _ = tiny_step(config)
    batch = grouped_batch(rows=rows, group=group, seed=1)
    args = (graphdef, state.params, batch.tokens, batch.positions, batch.attention_mask)
    logprob_fn = grpo.logprob_fn(config.rl, temperature=1.0)
    alone = train_step.token_logprobs(*args, logprob_fn=logprob_fn, answer_width=6)
    shared = train_step.token_logprobs(*args, logprob_fn=logprob_fn, answer_width=6,
                                       group_size=group, micro_batch_size=micro_batch_size)
    for got, want in zip(shared, alone):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(np.asarray(alone[0])) >= rows * 5


def test_shared_prompts_give_the_same_update():
    """One GRPO step (k3 KL against stored reference log-probs) with and without shared prompts:
    the same loss, gradient norm and parameters; the FLOP count drops the repeated prompts."""
    batch = grouped_batch(rows=4, group=2, seed=4)
    batch = batch._replace(ref_logprobs=batch.old_logprobs - 0.3)
    results = []
    for share in (True, False):
        config = tiny_config(max_completion_length=6, num_generations=2,
                             share_prompt_prefix=share, **{"kl.beta": 0.1})
        _, state, step = tiny_step(config)
        new_state, metrics = jax.jit(step)(state, batch)
        assert int(metrics["update_skipped"]) == 0
        results.append((jax.tree.leaves(new_state.params), metrics))
    (shared, shared_metrics), (alone, alone_metrics) = results
    np.testing.assert_allclose(shared_metrics["loss"], alone_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(shared_metrics["grad_norm"], alone_metrics["grad_norm"], rtol=1e-4)
    for a, b in zip(shared, alone):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # rar_jax.models.flops by hand for TINY (2 layers, d 16, 4 heads and 2 kv heads of 4, MLP 32,
    # vocab 32), 4 rows of 8 input positions, log-probs over the last 6: per row alone, 8 tokens
    # x (9216 projections + 128 x 8 attention) + 6 heads x 1024. Shared: the first 2 positions
    # of each of the 2 groups, 2 tokens x (9216 + 128 x 2), no head; then 4 rows x 6 tokens x
    # (9216 + 128 x 8 + 1024). Forward + backward = 3 forwards.
    assert float(alone_metrics["update_flops"]) == 3 * 4 * (8 * (9216 + 1024) + 6 * 1024)
    assert float(shared_metrics["update_flops"]) == 3 * (
        2 * 2 * (9216 + 256) + 4 * 6 * (9216 + 1024 + 1024))
