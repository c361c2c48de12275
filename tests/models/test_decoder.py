"""The decoder: parity with transformers, padding, KV cache, dtypes, remat and stacked layers."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rar_jax.models.config import ModelConfig
from rar_jax.models.cache import init_cache
from rar_jax.models.decoder import Decoder, count_parameters
from rar_jax.models.loading import load_hf_checkpoint

TINY_MODELS = ("llama_tiny", "llama3_scaled", "qwen2_tiny", "qwen3_tiny")
# Padding and cache tests run on two models that differ in every feature that could interact with
# positions and masks (tied vs untied head, llama3 RoPE scaling, q/k/v biases).
CACHE_MODELS = ("llama3_scaled", "qwen2_tiny")


def _positions(batch: int, time: int) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))


@nnx.jit
def _forward(model, tokens, positions, attention_mask=None):
    return model(tokens, positions, attention_mask=attention_mask)[0]


@nnx.jit
def _cached(model, tokens, positions, cache, attention_mask=None):
    return model(tokens, positions, attention_mask=attention_mask, cache=cache)


def _load_fixture(fixtures_dir, name):
    directory = fixtures_dir / name
    model = load_hf_checkpoint(directory)
    ids = np.load(directory / "input_ids.npy").astype(np.int32)
    logits = np.load(directory / "logits.npy")
    return name, model, ids, logits


@pytest.fixture(scope="module", params=TINY_MODELS)
def tiny(request, fixtures_dir):
    """(name, model, input_ids, reference float32 logits) of one fixture model."""
    return _load_fixture(fixtures_dir, request.param)


@pytest.fixture(scope="module", params=CACHE_MODELS)
def tiny_for_cache(request, fixtures_dir):
    """Like `tiny`, for the padding and cache tests."""
    return _load_fixture(fixtures_dir, request.param)


def test_logits_match_transformers(tiny):
    _, model, ids, reference = tiny
    logits, cache = model(jnp.asarray(ids), _positions(*ids.shape))  # eager, not jitted
    assert cache is None
    assert logits.dtype == jnp.float32 and logits.shape == reference.shape
    np.testing.assert_allclose(np.asarray(logits), reference, atol=1e-4, rtol=0)


def test_attention_in_query_blocks_matches_transformers(fixtures_dir):
    # Blocks of 5 queries: the fixture's sequence is not a multiple of 3, so the last block is
    # padded; with a cache the blocks also attend over slots past the prompt.
    directory = fixtures_dir / "qwen2_tiny"
    model = load_hf_checkpoint(directory, attention_chunk=5)
    assert model.config.attention_chunk == 5
    ids = np.load(directory / "input_ids.npy").astype(np.int32)
    reference = np.load(directory / "logits.npy")
    batch, time = ids.shape
    assert time % 5
    logits = _forward(model, jnp.asarray(ids), _positions(batch, time))
    np.testing.assert_allclose(np.asarray(logits), reference, atol=1e-4, rtol=0)
    cached, _ = _cached(model, jnp.asarray(ids), _positions(batch, time), model.init_cache(batch, 16))
    np.testing.assert_allclose(np.asarray(cached), reference, atol=1e-4, rtol=0)


def test_left_padded_batch_equals_each_row_alone(tiny_for_cache):
    _, model, ids, reference = tiny_for_cache
    lengths = [ids.shape[1], 7]
    width = max(lengths)
    tokens = np.zeros((2, width), np.int32)
    positions = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), bool)
    for row, length in enumerate(lengths):
        tokens[row, width - length:] = ids[row, :length]
        positions[row, width - length:] = np.arange(length)
        mask[row, width - length:] = True
    padded = _forward(model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    for row, length in enumerate(lengths):
        alone = _forward(model, jnp.asarray(ids[row:row + 1, :length]), _positions(1, length))
        np.testing.assert_allclose(padded[row, width - length:], alone[0], atol=1e-5, rtol=0)
        # and the unpadded row also matches the independent reference
        np.testing.assert_allclose(alone[0], reference[row, :length], atol=1e-4, rtol=0)


def test_prefill_then_decode_equals_full_forward(tiny_for_cache):
    _, model, ids, reference = tiny_for_cache
    batch, time = ids.shape
    prefill = 5
    cache = model.init_cache(batch, max_len=16)
    logits, cache = _cached(model, jnp.asarray(ids[:, :prefill]), _positions(batch, prefill), cache)
    pieces = [logits]
    for index in range(prefill, time):
        positions = jnp.full((batch, 1), index, jnp.int32)
        logits, cache = _cached(model, jnp.asarray(ids[:, index:index + 1]), positions, cache)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), reference, atol=1e-4, rtol=0)
    assert int(cache.end_index) == time  # every row writes at the same slot
    assert cache.key_mask[:, :time].all() and not cache.key_mask[:, time:].any()


def test_cache_with_left_padded_prompts(tiny_for_cache):
    # Row 1's prompt is 3 tokens shorter and left-padded; decoding continues both rows.
    _, model, ids, reference = tiny_for_cache
    short = 3
    prompt = 6
    tokens = ids[:, :prompt].copy()
    tokens[1] = np.concatenate([np.zeros(short, np.int32), ids[1, : prompt - short]])
    positions = np.stack([np.arange(prompt), np.concatenate([np.zeros(short), np.arange(prompt - short)])])
    mask = np.ones((2, prompt), bool)
    mask[1, :short] = False
    cache = init_cache(model.config, 2, 12)
    logits, cache = _cached(
        model, jnp.asarray(tokens), jnp.asarray(positions, jnp.int32), cache, jnp.asarray(mask)
    )
    np.testing.assert_allclose(logits[0], reference[0, :prompt], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[1, short:], reference[1, : prompt - short], atol=1e-4, rtol=0)
    next_tokens = np.stack([ids[0, prompt], ids[1, prompt - short]])[:, None]
    next_positions = np.array([[prompt], [prompt - short]], np.int32)
    logits, cache = _cached(model, jnp.asarray(next_tokens), jnp.asarray(next_positions), cache)
    np.testing.assert_allclose(logits[0, 0], reference[0, prompt], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[1, 0], reference[1, prompt - short], atol=1e-4, rtol=0)


def test_cache_with_right_padded_prompts_and_per_row_write_index(tiny_for_cache):
    # Right padding: each row's decode writes at its own end_index, overwriting its padding slot.
    _, model, ids, reference = tiny_for_cache
    lengths = np.array([6, 4])
    tokens = ids[:, :6].copy()
    tokens[1, 4:] = 0
    mask = np.arange(6)[None, :] < lengths[:, None]
    cache = model.init_cache(2, 12)
    _, cache = _cached(model, jnp.asarray(tokens), _positions(2, 6), cache, jnp.asarray(mask))
    cache = cache._replace(end_index=jnp.asarray(lengths, jnp.int32))
    next_tokens = ids[np.arange(2), lengths][:, None]
    logits, cache = _cached(model, jnp.asarray(next_tokens), jnp.asarray(lengths[:, None], jnp.int32), cache)
    np.testing.assert_allclose(logits[0, 0], reference[0, 6], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[1, 0], reference[1, 4], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(cache.end_index, lengths + 1)


def test_return_hidden_times_lm_head_gives_logits(tiny):
    _, model, ids, _ = tiny
    logits = _forward(model, jnp.asarray(ids), _positions(*ids.shape))
    hidden, _ = nnx.jit(lambda m, t, p: m(t, p, return_hidden=True))(model, jnp.asarray(ids), _positions(*ids.shape))
    assert hidden.shape == ids.shape + (model.config.hidden_size,)
    np.testing.assert_allclose(hidden @ model.lm_head_weight(), logits, atol=1e-5)
    if model.config.tie_word_embeddings:
        assert model.lm_head is None
        np.testing.assert_array_equal(model.lm_head_weight(), model.embed[...].T)


def _random_config(**kw):
    base = dict(
        architecture="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3,
        num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False,
    )
    base.update(kw)
    return ModelConfig(**base)


def test_parameters_carry_logical_axes_and_are_stacked():
    config = _random_config(qk_norm=True)
    model = Decoder(config, rngs=nnx.Rngs(0))
    allowed = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers"}
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for path, variable in flat.items():
        axes = variable.get_metadata()["out_sharding"]
        assert len(axes) == variable.ndim and set(axes) <= allowed, path
        if path[0] == "layers":
            assert axes[0] == "layers" and variable.shape[0] == config.num_layers
    assert flat[("layers", "q_proj")].get_metadata()["out_sharding"] == ("layers", "embed", "heads", "head_dim")
    assert count_parameters(model) == config.num_parameters()


def _scan_lengths(jaxpr) -> list[int]:
    lengths = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            lengths.append(eqn.params["length"])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            lengths.extend(_scan_lengths(sub))
    return lengths


@pytest.mark.parametrize("num_layers", [2, 5])
def test_layers_run_under_one_scan(num_layers):
    model = Decoder(_random_config(num_layers=num_layers), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    def forward(state, tokens):
        return nnx.merge(graphdef, state)(tokens, _positions(*tokens.shape))[0]

    jaxpr = jax.make_jaxpr(forward)(state, jnp.zeros((1, 4), jnp.int32))
    assert _scan_lengths(jaxpr.jaxpr) == [num_layers]


def _loss_and_grad(config):
    model = Decoder(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, config.vocab_size)

    def loss(params):
        logits, _ = nnx.merge(graphdef, params)(tokens, _positions(2, 6))
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    return loss, params


def _remat_policies(jaxpr) -> list:
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
            found.append(eqn.params.get("policy"))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(_remat_policies(sub))
    return found


def test_remat_policy_is_applied_and_keeps_gradients():
    grads = {}
    for policy in ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"):
        loss, params = _loss_and_grad(_random_config(remat_policy=policy))
        jaxpr = jax.make_jaxpr(loss)(params).jaxpr
        policies = _remat_policies(jaxpr)
        if policy == "none":
            assert policies == []
        elif policy == "full":
            assert policies and all(p is None for p in policies)
        else:
            expected = getattr(jax.checkpoint_policies, policy)
            assert policies and all(p is expected for p in policies)
        if policy in ("none", "full", "dots_saveable"):
            grads[policy] = jax.jit(jax.grad(loss))(params)
    for policy, grad in grads.items():
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grad, grads["none"])


def test_bfloat16_compute_and_params():
    config = _random_config()
    tokens = jax.random.randint(jax.random.key(2), (2, 5), 0, config.vocab_size)
    reference = _forward(Decoder(config, rngs=nnx.Rngs(0)), tokens, _positions(2, 5))
    bf16 = Decoder(config.replace(dtype="bfloat16", param_dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert bf16.layers.q_proj[...].dtype == jnp.bfloat16 and bf16.embed[...].dtype == jnp.bfloat16
    hidden, _ = bf16(tokens, _positions(2, 5), return_hidden=True)
    assert hidden.dtype == jnp.bfloat16
    logits = _forward(bf16, tokens, _positions(2, 5))
    assert logits.dtype == jnp.float32
    difference = np.abs(np.asarray(logits) - np.asarray(reference)).max()
    assert 0 < difference < 0.05 * np.abs(np.asarray(reference)).max()
    # float32 params with bfloat16 compute: activations are bfloat16, params stay float32
    mixed = Decoder(config.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert mixed.layers.q_proj[...].dtype == jnp.float32
    assert mixed(tokens, _positions(2, 5), return_hidden=True)[0].dtype == jnp.bfloat16
    cache = mixed.init_cache(2, 8)
    assert len(cache.keys) == 3  # one buffer per layer, [batch, kv_heads, slots, head_dim]
    assert all(k.dtype == jnp.bfloat16 and k.shape == (2, 2, 8, 8) for k in cache.keys)


def test_shape_errors_are_clear():
    model = Decoder(_random_config(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="positions"):
        model(jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="attention_mask"):
        model(jnp.zeros((1, 3), jnp.int32), _positions(1, 3), attention_mask=jnp.ones((1, 4), bool))
    with pytest.raises(ValueError, match="rows"):
        model(jnp.zeros((1, 3), jnp.int32), _positions(1, 3), cache=model.init_cache(2, 8))


def test_prefill_equals_a_forward_into_an_empty_cache_and_decoding_continues(tiny_for_cache):
    _, model, ids, reference = tiny_for_cache
    batch, time = ids.shape
    prompt = 5
    mask = jnp.ones((batch, prompt), bool).at[1, :2].set(False)  # row 1 left-padded by 2
    tokens, positions = jnp.asarray(ids[:, :prompt]), _positions(batch, prompt)
    hidden, cache = nnx.jit(lambda m: m.prefill(tokens, positions, attention_mask=mask, max_len=9))(model)
    expected, expected_cache = nnx.jit(lambda m: m(
        tokens, positions, attention_mask=mask, cache=m.init_cache(batch, 9), return_hidden=True))(model)
    real = np.asarray(mask)  # outputs at padding queries are meaningless
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(expected)[real], atol=1e-5, rtol=0)
    assert int(cache.end_index) == prompt and cache.max_len == 9
    np.testing.assert_array_equal(cache.key_mask, expected_cache.key_mask)
    filled = np.asarray(cache.key_mask)  # [b, s]; padding slots are never attended to
    for ours, theirs in zip(cache.keys + cache.values, expected_cache.keys + expected_cache.values):
        ours, theirs = np.asarray(ours).transpose(0, 2, 1, 3), np.asarray(theirs).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(ours[filled], theirs[filled], atol=1e-5, rtol=0)
    # row 0 continues as the full forward does
    logits, _ = _cached(model, jnp.asarray(ids[:, prompt:prompt + 1]), jnp.full((batch, 1), prompt, jnp.int32), cache)
    np.testing.assert_allclose(logits[0, 0], reference[0, prompt], atol=1e-4, rtol=0)
