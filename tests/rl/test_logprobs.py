"""Tests for rar_jax.rl.logprobs: numpy log-softmax reference, chunked == unchunked, no full logits."""

import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax.rl.logprobs import chunked_token_logprobs, token_logprobs

BATCH, TIME, D_MODEL, VOCAB = 2, 7, 5, 11


def numpy_logprobs_and_entropy(logits, targets, temperature):
    """Reference in float64: log-softmax picked at the targets, and -sum p log p."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.asarray(targets)[..., None], axis=-1)[..., 0]
    entropy = -(np.exp(log_probs) * log_probs).sum(axis=-1)
    return picked, entropy


def random_inputs(seed=0, time=TIME):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(BATCH, time, D_MODEL)).astype(np.float32)
    lm_head = rng.normal(size=(D_MODEL, VOCAB)).astype(np.float32)
    targets = rng.integers(0, VOCAB, size=(BATCH, time)).astype(np.int32)
    return hidden, lm_head, targets


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_numpy(temperature):
    hidden, lm_head, targets = random_inputs()
    logits = hidden @ lm_head
    logprobs, entropy = token_logprobs(logits, targets, temperature=temperature)
    expected_logprobs, expected_entropy = numpy_logprobs_and_entropy(logits, targets, temperature)
    assert logprobs.dtype == jnp.float32 and entropy.dtype == jnp.float32
    np.testing.assert_allclose(logprobs, expected_logprobs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-5, atol=1e-5)


def test_token_logprobs_hand_computed():
    logits = np.log(np.array([[[1.0, 1.0, 2.0]]], np.float32))  # probabilities 1/4, 1/4, 1/2
    logprobs, entropy = token_logprobs(logits, np.array([[2]], np.int32))
    np.testing.assert_allclose(logprobs, [[np.log(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(entropy, [[1.5 * np.log(2.0)]], rtol=1e-6)
    # temperature 2 halves log-logits: probabilities proportional to 1, 1, sqrt(2)
    logprobs_t2, _ = token_logprobs(logits, np.array([[2]], np.int32), temperature=2.0)
    np.testing.assert_allclose(logprobs_t2, [[np.log(np.sqrt(2) / (2 + np.sqrt(2)))]], rtol=1e-6)


def test_bfloat16_logits_give_float32_outputs():
    hidden, lm_head, targets = random_inputs()
    logits = jnp.asarray(hidden @ lm_head, jnp.bfloat16)
    logprobs, entropy = token_logprobs(logits, targets)
    assert logprobs.dtype == jnp.float32 and entropy.dtype == jnp.float32
    expected_logprobs, _ = numpy_logprobs_and_entropy(np.asarray(logits.astype(jnp.float32)), targets, 1.0)
    np.testing.assert_allclose(logprobs, expected_logprobs, rtol=1e-5, atol=1e-5)


def test_masked_vocabulary_entries_keep_entropy_finite():
    logits = np.array([[[0.0, 0.0, -np.inf]]], np.float32)
    logprobs, entropy = token_logprobs(logits, np.array([[0]], np.int32))
    np.testing.assert_allclose(logprobs, [[np.log(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(entropy, [[np.log(2.0)]], rtol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(token_logprobs(x, jnp.array([[0]]))[1]))(jnp.asarray(logits))
    assert np.all(np.isfinite(grad))


def _unchunked(hidden, lm_head, targets, temperature):
    return token_logprobs(jnp.einsum("btd,dv->btv", hidden, lm_head), targets, temperature=temperature)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 16])
def test_chunked_equals_unchunked_values_and_gradients(chunk_size):
    hidden, lm_head, targets = random_inputs(seed=chunk_size)
    temperature = 0.9
    chunked = functools.partial(chunked_token_logprobs, chunk_size=chunk_size, temperature=temperature)
    logprobs, entropy = jax.jit(chunked)(hidden, lm_head, targets)
    ref_logprobs, ref_entropy = _unchunked(hidden, lm_head, targets, temperature)
    np.testing.assert_allclose(logprobs, ref_logprobs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, ref_entropy, rtol=1e-5, atol=1e-5)
    expected_logprobs, expected_entropy = numpy_logprobs_and_entropy(hidden @ lm_head, targets, temperature)
    np.testing.assert_allclose(logprobs, expected_logprobs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-5, atol=1e-5)

    # A scalar mixing both outputs with position-dependent weights, so every gradient path is used.
    weights = np.random.default_rng(1).normal(size=(2, BATCH, TIME)).astype(np.float32)

    def objective(fn, h, w):
        lp, ent = fn(h, w)
        return jnp.sum(weights[0] * lp + weights[1] * ent)

    grads = jax.jit(
        jax.grad(lambda h, w: objective(lambda a, b: chunked(a, b, targets), h, w), argnums=(0, 1))
    )(hidden, lm_head)
    ref_grads = jax.grad(
        lambda h, w: objective(lambda a, b: _unchunked(a, b, targets, temperature), h, w), argnums=(0, 1)
    )(hidden, lm_head)
    for grad, ref_grad in zip(grads, ref_grads):
        assert np.abs(ref_grad).max() > 1e-3  # the gradient is not trivially 0
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


def _all_avals(jaxpr):
    """Every abstract value (inputs, outputs, intermediates) in a closed jaxpr and its sub-jaxprs."""
    for var in list(jaxpr.invars) + list(jaxpr.constvars) + list(jaxpr.outvars):
        if hasattr(var, "aval"):
            yield var.aval
    for eqn in jaxpr.eqns:
        for var in list(eqn.invars) + list(eqn.outvars):
            if hasattr(var, "aval"):
                yield var.aval
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _all_avals(sub)


def _largest_array_size(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return max(int(np.prod(aval.shape)) for aval in _all_avals(jaxpr) if hasattr(aval, "shape"))


def test_chunked_never_builds_full_logits_forward_or_backward():
    time, vocab, chunk_size = 32, 512, 4
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(BATCH, time, D_MODEL)).astype(np.float32)
    lm_head = rng.normal(size=(D_MODEL, vocab)).astype(np.float32)
    targets = rng.integers(0, vocab, size=(BATCH, time)).astype(np.int32)

    def loss(h, w, fn):
        logprobs, entropy = fn(h, w)
        return jnp.sum(logprobs) + jnp.sum(entropy)

    chunked = lambda h, w: chunked_token_logprobs(h, w, targets, chunk_size=chunk_size)  # noqa: E731
    unchunked = lambda h, w: _unchunked(h, w, targets, 1.0)  # noqa: E731
    full_logits_size = BATCH * time * vocab
    grad_chunked = jax.grad(functools.partial(loss, fn=chunked), argnums=(0, 1))
    grad_unchunked = jax.grad(functools.partial(loss, fn=unchunked), argnums=(0, 1))
    # the probe itself sees the full logits in the unchunked version
    assert _largest_array_size(grad_unchunked, hidden, lm_head) >= full_logits_size
    assert _largest_array_size(grad_chunked, hidden, lm_head) <= BATCH * chunk_size * vocab


def test_tied_embedding_transpose_is_accepted():
    hidden, _, targets = random_inputs()
    embedding = np.random.default_rng(3).normal(size=(VOCAB, D_MODEL)).astype(np.float32)
    logprobs, _ = chunked_token_logprobs(hidden, embedding.T, targets, chunk_size=3)
    expected, _ = numpy_logprobs_and_entropy(hidden @ embedding.T, targets, 1.0)
    np.testing.assert_allclose(logprobs, expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise():
    hidden, lm_head, targets = random_inputs()
    with pytest.raises(ValueError, match="logprob_chunk_size"):
        chunked_token_logprobs(hidden, lm_head, targets, chunk_size=0)
    with pytest.raises(ValueError, match="lm_head"):
        chunked_token_logprobs(hidden, lm_head.T, targets, chunk_size=2)
    with pytest.raises(ValueError, match="targets"):
        chunked_token_logprobs(hidden, lm_head, targets[:, :-1], chunk_size=2)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden @ lm_head, targets, temperature=0.0)
