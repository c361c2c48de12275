"""Expert-Answer-SFT: the loss by hand, exact micro-batching against an independent full-logits
gradient, the batch layout, chat-template tokens, and the loss falling on RaR samples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from grpo_batches import TINY, tiny_batch, tiny_config

from rar_jax.data.examples import Example
from rar_jax.data.sources import load_examples
from rar_jax.errors import UserError
from rar_jax.metrics import read_metrics
from rar_jax.models.decoder import Decoder
from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.rl import losses, sft, train_step
from tiny_checkpoint import write_tiny_checkpoint


def test_sft_loss_by_hand():
    logprobs = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -4.0, np.nan]])
    mask = jnp.array([[True, True, False], [True, False, False]])
    entropy = jnp.array([[1.0, 3.0, 9.0], [2.0, 9.0, 9.0]])
    out = losses.sft_loss(logprobs, mask, entropy=entropy)
    # -(-1 - 2 - 0.5) over 3 tokens; the NaN is masked out.
    assert float(out.loss_sum) == pytest.approx(3.5)
    assert float(out.denominator) == 3.0
    assert [float(x) for x in out.metrics["entropy"]] == [6.0, 3.0]
    grad = jax.grad(lambda lp: losses.sft_loss(lp, mask).loss_sum)(jnp.zeros((2, 3)))
    np.testing.assert_array_equal(np.asarray(grad), -np.asarray(mask, np.float32))
    with pytest.raises(ValueError, match="mask: expected shape"):
        losses.sft_loss(logprobs, mask[:, :2])


def _sft_batch(rows=4, seed=0):
    batch = tiny_batch(rows=rows, seed=seed)
    return train_step.SFTBatch(batch.tokens, batch.positions, batch.attention_mask,
                               batch.loss_mask)


def _sft_state(config):
    graphdef, params = nnx.split(Decoder(TINY, rngs=nnx.Rngs(0)))
    state, optimizer = train_step.make_train_state(params, config.optim)
    step = functools.partial(train_step.sft_step, graphdef=graphdef, optimizer=optimizer,
                             rl=config.rl, optim=config.optim)
    return graphdef, state, jax.jit(step)


@pytest.mark.slow
def test_micro_batches_give_the_full_batch_gradient_and_update():
    batch = _sft_batch()
    graphdef, state, _ = _sft_state(tiny_config())
    params = jax.tree.map(jnp.copy, state.params)

    def reference_loss(params):
        """Independent path: full [b, t, vocab] logits, token-mean NLL of the answer tokens."""
        model = nnx.merge(graphdef, params)
        logits, _ = model(batch.tokens, batch.positions, attention_mask=batch.attention_mask)
        logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        picked = jnp.take_along_axis(logp, batch.tokens[:, 1:, None], axis=-1)[..., 0]
        mask = batch.loss_mask[:, 1:].astype(jnp.float32)
        return -jnp.sum(picked * mask) / jnp.sum(mask)

    want_loss, want_grads = jax.value_and_grad(reference_loss)(params)
    results = []
    for micro_batch_size in (0, 1, 2):
        _, state, step = _sft_state(tiny_config(micro_batch_size=micro_batch_size))
        new_state, metrics = step(state, batch)
        np.testing.assert_allclose(float(metrics["loss"]), float(want_loss), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["grad_norm"]),
                                   float(optax.tree.norm(want_grads)), rtol=1e-4)
        assert float(metrics["loss_denominator"]) == float(batch.loss_mask[:, 1:].sum())
        results.append(jax.tree.leaves(new_state.params))
    for leaves in results[1:]:
        for got, want in zip(leaves, results[0]):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_the_batch_left_pads_prompts_and_pads_rows_with_nothing_to_learn():
    pairs = [([5, 6], [7, 8, 9]), ([4], [3, 2, 1, 0, 11])]
    batch = sft.sft_batch(pairs, rows=3, prompt_length=3, answer_length=4, pad_id=99)
    np.testing.assert_array_equal(np.asarray(batch.tokens), [
        [99, 5, 6, 7, 8, 9, 99],
        [99, 99, 4, 3, 2, 1, 0],  # The answer is cut at answer_length.
        [99, 5, 6, 99, 99, 99, 99],  # Padding row: the first prompt, no answer.
    ])
    np.testing.assert_array_equal(np.asarray(batch.loss_mask), [
        [0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(batch.positions)[0], [0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(batch.attention_mask)[2], [0, 1, 1, 0, 0, 0, 0])


def test_the_answer_is_the_assistant_turn_of_the_chat_template():
    _, tokenizer = load_model_and_tokenizer("smollm2")
    turn = ({"role": "user", "content": "What lowers fever?"},)
    example = Example(turn, None, "Paracetamol.", "x")
    prompt, answer = sft.sft_tokens(tokenizer, example)
    assert prompt == tokenizer.encode_chat(list(turn))
    assert tokenizer.decode(answer) == "Paracetamol.<|im_end|>\n"
    assert tokenizer.decode(prompt + answer) == tokenizer.apply_chat_template(
        [*turn, {"role": "assistant", "content": "Paracetamol."}], add_generation_prompt=False)
    with pytest.raises(UserError, match="x: no reference answer"):
        sft.sft_tokens(tokenizer, Example(turn, None, None, "x"))


@pytest.mark.slow
def test_sft_lowers_the_loss_on_rar_samples(shared_data, tmp_path):
    """A few steps on three RaR-Medicine samples (the tiny checkpoint, byte tokenizer) lower the
    held-out loss on them, written to metrics.jsonl; a second trainer resumes after the first."""
    policy, tokenizer = load_model_and_tokenizer(str(write_tiny_checkpoint(tmp_path / "tiny")))
    config = tiny_config()
    config.output_dir = str(tmp_path / "run")
    config.sft.batch_size = 2
    config.rl.max_prompt_length, config.rl.max_completion_length = 1024, 64
    config.optim.learning_rate, config.optim.warmup_fraction = 3e-3, 0.0
    config.optim.num_steps = 6
    config.train.eval_every = 3
    config.checkpoint.every_steps, config.checkpoint.async_save = 3, False
    config.metrics.tensorboard = False
    examples = load_examples(str(shared_data / "rar_samples" / "rar_medicine_sample3.jsonl"),
                             "rar", rubric=config.rubric)
    assert len(examples) == 3 and all(example.reference for example in examples)
    trainer = sft.SFTTrainer(config, policy=policy, tokenizer=tokenizer,
                             train_examples=examples, eval_examples=examples)
    summary = trainer.train()

    evals = {r["step"]: r["eval/loss"] for r in read_metrics(config.output_dir)
             if "eval/loss" in r}
    assert sorted(evals) == [0, 3, 6] and summary.eval_losses == evals
    assert evals[6] < evals[3] < evals[0] and evals[6] < 0.9 * evals[0]
    steps = [r for r in read_metrics(config.output_dir) if "sft/answer_tokens" in r]
    assert [r["step"] for r in steps] == list(range(6))
    # Every answer is longer than 64 tokens: cut there, so 2 x 64 answer tokens per step.
    assert all(r["sft/answer_tokens"] == 128 and r["sft/truncated_answers"] == 2 for r in steps)
    assert summary.truncated_answers == 12 and summary.skipped_updates == 0

    config.optim.num_steps = 7
    policy, _ = load_model_and_tokenizer(str(tmp_path / "tiny"))  # The first one's was donated.
    again = sft.SFTTrainer(config, policy=policy, tokenizer=tokenizer,
                           train_examples=examples, eval_examples=examples)
    assert again.maybe_resume() == 6 and again.stream.position == 12
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(again.state.params)[0]),
        np.asarray(jax.tree.leaves(trainer.state.params)[0]))

