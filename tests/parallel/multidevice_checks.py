"""Multi-device checks, run by test_multidevice.py in a subprocess with 8 forced CPU devices.

Not collected on its own (the name does not start with ``test_``); run by hand with
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest tests/parallel/multidevice_checks.py``.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from rar_jax.models.config import ModelConfig
from rar_jax.models.decoder import Decoder
from rar_jax.models.loading import load_hf_checkpoint
from rar_jax.parallel import (
    batch_sharding,
    cache_shardings,
    make_mesh,
    param_shardings,
)

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama_tiny"

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs 8 (forced host) devices")

# What LOGICAL_AXIS_RULES must give for each parameter (embed->fsdp, heads/kv_heads/mlp/vocab->tensor).
EXPECTED_SPECS = {
    ("embed",): P("tensor", "fsdp"),
    ("lm_head",): P("fsdp", "tensor"),
    ("final_norm",): P("fsdp"),
    ("layers", "attn_norm"): P(None, "fsdp"),
    ("layers", "mlp_norm"): P(None, "fsdp"),
    ("layers", "q_proj"): P(None, "fsdp", "tensor", None),
    ("layers", "k_proj"): P(None, "fsdp", "tensor", None),
    ("layers", "v_proj"): P(None, "fsdp", "tensor", None),
    ("layers", "o_proj"): P(None, "tensor", None, "fsdp"),
    ("layers", "gate_proj"): P(None, "fsdp", "tensor"),
    ("layers", "up_proj"): P(None, "fsdp", "tensor"),
    ("layers", "down_proj"): P(None, "tensor", "fsdp"),
}


def test_make_mesh_sizes_and_errors():
    mesh = make_mesh(2, 2, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh(-1, 2, 1).shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert dict(make_mesh(1, -1, 4).shape) == {"data": 1, "fsdp": 2, "tensor": 4}
    with pytest.raises(ValueError, match="'data'"):
        make_mesh(3, 1, 1)
    with pytest.raises(ValueError, match="'fsdp'"):
        make_mesh(1, -1, 3)
    with pytest.raises(ValueError, match="only one"):
        make_mesh(-1, -1, 2)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(2, 2, 2)


@pytest.fixture(scope="module")
def sharded_model(mesh):
    return load_hf_checkpoint(FIXTURE, mesh=mesh)


@pytest.fixture(scope="module")
def single_model():
    return load_hf_checkpoint(FIXTURE)


def test_loaded_parameters_are_sharded_by_the_rules(sharded_model, mesh):
    flat = dict(nnx.to_flat_state(nnx.state(sharded_model, nnx.Param)))
    assert set(flat) == set(EXPECTED_SPECS)
    for path, variable in flat.items():
        array = variable.get_value()
        assert array.sharding.mesh.shape == mesh.shape
        assert array.sharding.spec == EXPECTED_SPECS[path], path
    q_proj = flat[("layers", "q_proj")].get_value()  # [layers 2, embed 64, heads 4, head_dim 16]
    assert len(q_proj.addressable_shards) == 8
    assert {shard.data.shape for shard in q_proj.addressable_shards} == {(2, 32, 2, 16)}
    embed = flat[("embed",)].get_value()  # [vocab 256, embed 64]
    assert {shard.data.shape for shard in embed.addressable_shards} == {(128, 32)}


def test_sharded_forward_equals_single_device(sharded_model, single_model, mesh):
    ids = np.load(FIXTURE / "input_ids.npy").astype(np.int32)
    reference = np.load(FIXTURE / "logits.npy")
    tokens = np.concatenate([ids, ids[::-1]])  # batch 4 = data x fsdp
    positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
    graphdef, state = nnx.split(sharded_model)
    data_sharding = batch_sharding(mesh, 2)

    @functools.partial(
        jax.jit,
        in_shardings=(param_shardings(state, mesh), data_sharding, data_sharding),
        out_shardings=batch_sharding(mesh, 3),
    )
    def forward(state, tokens, positions):
        return nnx.merge(graphdef, state)(tokens, positions)[0]

    sharded = forward(state, jnp.asarray(tokens), jnp.asarray(positions))
    assert sharded.sharding.spec == P(("data", "fsdp"), None, None)
    single = nnx.jit(lambda m, t, p: m(t, p)[0])(single_model, jnp.asarray(tokens), jnp.asarray(positions))
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(sharded)[:2], reference, atol=1e-4, rtol=0)


def test_sharded_cached_decode_equals_full_forward(sharded_model, mesh):
    ids = np.load(FIXTURE / "input_ids.npy").astype(np.int32)
    reference = np.load(FIXTURE / "logits.npy")
    tokens = np.concatenate([ids, ids])
    graphdef, state = nnx.split(sharded_model)
    cache = sharded_model.init_cache(4, 16)
    cache_sharding = cache_shardings(cache, mesh)
    assert cache_sharding.keys[0].spec == P(("data", "fsdp"), "tensor", None, None)
    assert cache_sharding.end_index.spec == P()
    cache = jax.device_put(cache, cache_sharding)

    @functools.partial(jax.jit, out_shardings=(batch_sharding(mesh, 3), cache_sharding))
    def step(state, tokens, positions, cache):
        return nnx.merge(graphdef, state)(tokens, positions, cache=cache)

    prefill = 8
    positions = np.broadcast_to(np.arange(prefill, dtype=np.int32), (4, prefill))
    logits, cache = step(state, jnp.asarray(tokens[:, :prefill]), jnp.asarray(positions), cache)
    pieces = [np.asarray(logits)]
    for index in range(prefill, tokens.shape[1]):
        logits, cache = step(
            state, jnp.asarray(tokens[:, index:index + 1]), jnp.full((4, 1), index, jnp.int32), cache
        )
        pieces.append(np.asarray(logits))
    full = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(full[:2], reference, atol=1e-4, rtol=0)
    np.testing.assert_allclose(full[2:], reference, atol=1e-4, rtol=0)


def test_indivisible_dimensions_are_replicated(mesh):
    # SmolLM2-like heads: 3 query heads and 1 kv head cannot split over tensor=2.
    config = ModelConfig("llama", 256, 64, 96, 2, 3, 1, 16, tie_word_embeddings=True)
    _, abstract_state = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
    shardings = dict(nnx.to_flat_state(param_shardings(abstract_state, mesh)))
    assert shardings[("layers", "q_proj")].get_value().spec == P(None, "fsdp", None, None)
    assert shardings[("layers", "k_proj")].get_value().spec == P(None, "fsdp", None, None)
    assert shardings[("layers", "gate_proj")].get_value().spec == P(None, "fsdp", "tensor")
