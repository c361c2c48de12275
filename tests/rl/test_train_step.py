"""The GRPO train step on a tiny random decoder: exact on-policy ratio, exact micro-batching,
gradients against an independent full-logits computation, skipped non-finite updates."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from grpo_batches import tiny_batch, tiny_config, tiny_step

from rar_jax.rl import grpo, train_step



def _setup(config, seed=0):
    graphdef, state, step = tiny_step(config, seed)
    return graphdef, state, jax.jit(step)


def _full_logprobs(graphdef, params, batch):
    """Independent path: the model's full [b, t, vocab] logits and a plain log-softmax."""
    model = nnx.merge(graphdef, params)
    logits, _ = model(batch.tokens, batch.positions, attention_mask=batch.attention_mask)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(logp, batch.tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(picked, ((0, 0), (1, 0)))


@pytest.mark.parametrize("micro_batch_size", [1, 2])
def test_micro_batched_logprobs_equal_the_whole_batch(micro_batch_size):
    config = tiny_config()
    graphdef, state, _ = _setup(config)
    batch = tiny_batch()
    logprob_fn = grpo.logprob_fn(config.rl, temperature=1.0)
    args = (graphdef, state.params, batch.tokens, batch.positions, batch.attention_mask)
    whole = train_step.token_logprobs(*args, logprob_fn=logprob_fn)
    micro = train_step.token_logprobs(*args, logprob_fn=logprob_fn,
                                      micro_batch_size=micro_batch_size)
    for got, want in zip(micro, whole):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("answer_width", [0, 6])
def test_logprobs_match_the_full_logits_path(answer_width):
    """Every real predicted token (width 0), or those of the last 6 columns (tiny_batch's answer
    columns 3-8) with zeros before them."""
    config = tiny_config()
    graphdef, state, _ = _setup(config)
    batch = tiny_batch()
    got, entropy = train_step.token_logprobs(
        graphdef, state.params, batch.tokens, batch.positions, batch.attention_mask,
        logprob_fn=grpo.logprob_fn(config.rl, temperature=1.0), answer_width=answer_width,
    )
    got, entropy = np.asarray(got), np.asarray(entropy)
    want = np.asarray(_full_logprobs(graphdef, state.params, batch))
    first = 1 if answer_width == 0 else 3
    attention = np.asarray(batch.attention_mask)
    real = np.zeros_like(attention)
    real[:, first:] = attention[:, first - 1:-1] & attention[:, first:]  # Token and predictor.
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-6)
    assert np.all(entropy[real] > 0) and real[:, :first].sum() == 0 and real.sum() >= 17
    np.testing.assert_array_equal(got[:, :first], 0.0)
    np.testing.assert_array_equal(entropy[:, :first], 0.0)


@pytest.mark.slow
def test_answer_window_gives_the_same_update():
    """Log-probs of the last 6 columns only (the answers of tiny_batch) against every column:
    the same loss, gradient norm and parameters."""
    batch = tiny_batch(seed=1)
    results = []
    for width in (6, 1024):
        config = tiny_config(max_completion_length=width, **{"kl.beta": 0.1})
        _, state, step = _setup(config)
        new_state, metrics = step(state, batch._replace(ref_logprobs=batch.old_logprobs - 0.2))
        assert int(metrics["update_skipped"]) == 0
        assert int(metrics["loss_tokens_outside_answers"]) == 0
        results.append((jax.tree.leaves(new_state.params), metrics))
    (window, window_metrics), (full, full_metrics) = results
    # rar_jax.models.flops by hand for TINY (2 layers, d 16, 4 heads and 2 kv heads of 4, MLP 32,
    # vocab 32), 4 rows x 8 positions: per token 9216 (projections) + 1024 (attention over 8
    # keys) + 1024 (head); forward + backward = 3 forwards; the window drops 2 heads per row.
    assert float(full_metrics["update_flops"]) == 3 * 4 * 8 * (9216 + 1024 + 1024)
    assert float(window_metrics["update_flops"]) == 3 * 4 * (8 * (9216 + 1024 + 1024) - 2 * 1024)
    np.testing.assert_allclose(window_metrics["loss"], full_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(window_metrics["grad_norm"], full_metrics["grad_norm"], rtol=1e-5)
    for a, b in zip(window, full):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_loss_tokens_before_the_answer_window_skip_the_update():
    """Answers longer than rl.max_completion_length = 4: rows (3, 6), (2, 4), (3, 1), (1, 6) of
    ROW_SHAPES have 2, 2, 1 and 2 answer tokens in columns 3 and 4, before the last 4."""
    config = tiny_config(max_completion_length=4)
    _, state, step = _setup(config)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = step(state, tiny_batch())
    assert int(metrics["loss_tokens_outside_answers"]) == 7
    assert int(metrics["update_skipped"]) == 1 and np.isnan(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_a_step_keeps_bf16_parameters_and_moments_in_bf16():
    """With bf16 parameters the update (skipped or not) keeps every dtype: apply_if_finite's two
    branches must agree (an f32 gradient made the moments f32 on one of them)."""
    import dataclasses

    from grpo_batches import TINY
    from rar_jax.models.decoder import Decoder

    config = tiny_config()
    model = Decoder(dataclasses.replace(TINY, param_dtype="bfloat16", dtype="bfloat16"),
                    rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    state, optimizer = train_step.make_train_state(params, config.optim)
    step = jax.jit(functools.partial(train_step.grpo_step, graphdef=graphdef,
                                     optimizer=optimizer, rl=config.rl, optim=config.optim,
                                     temperature=1.0))
    new_state, metrics = step(state, tiny_batch())
    assert np.isfinite(float(metrics["loss"])) and int(metrics["update_skipped"]) == 0
    before = jax.tree.map(lambda x: x.dtype, state)
    after = jax.tree.map(lambda x: x.dtype, new_state)
    assert before == after
    assert {leaf for leaf in jax.tree.leaves(after.params)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.slow
def test_on_policy_step_has_ratio_one_and_policy_gradient():
    config = tiny_config()
    graphdef, state, step = _setup(config)
    batch = tiny_batch()
    params_before = jax.tree.map(jnp.copy, state.params)
    new_state, metrics = step(state, batch)

    assert float(metrics["loss/ratio_mean"]) == 1.0
    assert float(metrics["loss/clip_frac_low"]) == 0.0 and float(metrics["loss/clip_frac_high"]) == 0.0
    # On-policy GRPO loss = -mean over rows of A (ratio 1 everywhere).
    np.testing.assert_allclose(float(metrics["loss"]), -np.mean([1.0, -0.5, 2.0, -1.5]), rtol=1e-6)

    def reference_loss(params):
        logp = _full_logprobs(graphdef, params, batch)
        mask = batch.loss_mask.astype(jnp.float32)
        per_row = jnp.sum(logp * mask, axis=1) / jnp.sum(mask, axis=1)
        return -jnp.mean(batch.advantages * per_row)

    grads = jax.grad(reference_loss)(params_before)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.tree.norm(grads)), rtol=1e-4)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(float(metrics["learning_rate"]), 1e-2 / 2, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean"])
def test_micro_batches_give_the_same_update(aggregation):
    batch = tiny_batch(seed=3)
    results = []
    for micro_batch_size in (0, 1, 2):
        config = tiny_config(micro_batch_size=micro_batch_size, **{"loss.aggregation": aggregation})
        _, state, step = _setup(config)
        new_state, metrics = step(state, batch)
        results.append((jax.tree.leaves(new_state.params), metrics))
    (whole, whole_metrics), *others = results
    for leaves, metrics in others:
        # Adam divides by sqrt(v): float-summation differences of near-zero gradient entries
        # show up at ~1e-6 in the parameters (the step size is 5e-3 here).
        for a, b in zip(whole, leaves):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(metrics["loss"], whole_metrics["loss"], rtol=1e-6)
        np.testing.assert_allclose(metrics["grad_norm"], whole_metrics["grad_norm"], rtol=1e-5)
        np.testing.assert_allclose(
            metrics["loss_denominator"], whole_metrics["loss_denominator"], rtol=0
        )


def test_micro_batch_size_must_divide_thetiny_batch():
    config = tiny_config(micro_batch_size=3)
    _, state, step = _setup(config)
    with pytest.raises(ValueError, match="not divisible by rl.micro_batch_size=3"):
        step(state, tiny_batch())


def test_stored_old_logprobs_change_the_ratio():
    config = tiny_config(old_logprobs="sampler")
    graphdef, state, step = _setup(config)
    batch = tiny_batch()
    current = _full_logprobs(graphdef, state.params, batch)
    batch = batch._replace(old_logprobs=current - 0.5)  # Ratio exp(0.5) on every answer token.
    _, metrics = step(state, batch)
    np.testing.assert_allclose(float(metrics["loss/ratio_mean"]), np.exp(0.5), rtol=1e-4)
    assert float(metrics["loss/clip_frac_high"]) > 0


def test_reference_model_enters_only_with_beta():
    config = tiny_config(**{"kl.beta": 0.1})
    graphdef, state, step = _setup(config)
    batch = tiny_batch()
    current = _full_logprobs(graphdef, state.params, batch)
    _, same = step(state, batch._replace(ref_logprobs=current))
    np.testing.assert_allclose(float(same["loss/kl"]), 0.0, atol=1e-6)
    _, state, step = _setup(config)
    _, shifted = step(state, batch._replace(ref_logprobs=current + 0.3))
    k3 = np.exp(0.3) - 0.3 - 1  # KL estimate at every answer token.
    np.testing.assert_allclose(float(shifted["loss/kl"]), k3, rtol=1e-4)
    np.testing.assert_allclose(
        float(shifted["loss"]) - float(same["loss"]), 0.1 * k3, rtol=1e-3
    )


def test_non_finite_update_is_skipped_and_counted():
    config = tiny_config()
    _, state, step = tiny_step(config)
    step = train_step.jit_train_step(step)  # The state donated, as the trainers run it.
    batch = tiny_batch()
    before = jax.tree.map(np.asarray, state.params)
    bad = batch._replace(advantages=batch.advantages.at[1].set(jnp.nan))
    state, metrics = step(state, bad)
    assert int(metrics["update_skipped"]) == 1 and int(metrics["consecutive_skipped"]) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    state, metrics = step(state, bad)
    assert int(train_step.consecutive_skipped(state)) == 2
    state, metrics = step(state, batch)
    assert int(metrics["update_skipped"]) == 0 and int(metrics["consecutive_skipped"]) == 0
    assert int(metrics["total_skipped"]) == 2
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params))]
    assert any(changed)
