"""The embedded SmolLM2-135M-Instruct end to end: logits against transformers' GGUF loader and a
greedy answer to the Paris prompt through the KV cache."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return dict(np.load(fixtures_dir / "smollm2_reference.npz"))


def test_config_of_the_embedded_model(smollm2_model):
    config = smollm2_model.config
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (30, 576, 9, 3)
    assert config.tie_word_embeddings and config.rope_theta == 100000.0


def test_prompt_logits_match_transformers(smollm2_model, smollm2_tokenizer, reference):
    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    ids = smollm2_tokenizer.encode(prompt)
    np.testing.assert_array_equal(ids, reference["prompt_ids"])
    positions = jnp.arange(len(ids), dtype=jnp.int32)[None]
    logits = nnx.jit(lambda m, t, p: m(t, p)[0])(smollm2_model, jnp.asarray([ids], jnp.int32), positions)
    logits = np.asarray(logits[0])
    ours = np.take_along_axis(logits, reference["top_ids"], axis=1)
    np.testing.assert_allclose(ours, reference["top_logits"], atol=1e-3, rtol=0)
    np.testing.assert_array_equal(logits.argmax(-1), reference["top_ids"][:, 0])


@nnx.jit
def _greedy_step(model, tokens, positions, cache):
    logits, cache = model(tokens, positions, cache=cache)
    return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache


def test_greedy_answer_names_paris(smollm2_model, smollm2_tokenizer, reference):
    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    ids = smollm2_tokenizer.encode(prompt)
    cache = smollm2_model.init_cache(batch=1, max_len=len(ids) + 16)
    token, cache = _greedy_step(
        smollm2_model, jnp.asarray([ids], jnp.int32), jnp.arange(len(ids), dtype=jnp.int32)[None], cache
    )
    generated = [int(token[0])]
    while generated[-1] not in smollm2_tokenizer.stop_ids and len(generated) < 12:
        position = jnp.asarray([[len(ids) + len(generated) - 1]], jnp.int32)
        token, cache = _greedy_step(smollm2_model, token[:, None], position, cache)
        generated.append(int(token[0]))
    answer = smollm2_tokenizer.decode(generated, skip_special_tokens=True)
    assert "Paris" in answer
    assert generated == reference["greedy_ids"].tolist()  # transformers' greedy decode, token for token
