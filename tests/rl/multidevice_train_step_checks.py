"""The GRPO step sharded over 8 devices equals the single-device step (with shared prompts too).

Run by test_train_step_multidevice.py in a subprocess with 8 forced CPU devices (not collected
on its own); by hand: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest
tests/rl/multidevice_train_step_checks.py``.
"""

import jax
import numpy as np
import pytest
from grpo_batches import grouped_batch, tiny_batch, tiny_config, tiny_step
from jax.sharding import PartitionSpec as P

from rar_jax.parallel import make_mesh, param_shardings
from rar_jax.rl import train_step

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs 8 (forced host) devices")

ROWS = 8


@pytest.fixture(scope="module")
def single_device_result():
    config = tiny_config(micro_batch_size=4)
    _, state, step = tiny_step(config)
    with jax.default_device(jax.devices()[0]):
        new_state, metrics = jax.jit(step)(state, tiny_batch(rows=ROWS))
    return jax.tree.map(np.asarray, (new_state.params, metrics))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_step_equals_single_device(shape, single_device_result):
    want_params, want_metrics = single_device_result
    mesh = make_mesh(*shape)
    config = tiny_config(micro_batch_size=4)
    _, state, step = tiny_step(config)
    params = jax.device_put(state.params, param_shardings(state.params, mesh))
    state, _ = train_step.make_train_state(params, config.optim)
    shardings = param_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    batch = jax.device_put(tiny_batch(rows=ROWS), train_step.batch_shardings(mesh))
    sharded_step = train_step.jit_train_step(step, shardings, mesh)
    new_state, metrics = sharded_step(state, batch)

    for name in ("loss", "grad_norm", "loss_denominator", "loss/entropy", "loss/ratio_mean"):
        np.testing.assert_allclose(metrics[name], want_metrics[name], rtol=2e-5, err_msg=name)
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-5)

    # The parameters really are sharded as the rules say, before and after the step.
    q_proj = new_state.params["layers"]["q_proj"][...]
    fsdp, tensor = shape[1], shape[2]
    want_spec = P(None, "fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None, None)
    assert q_proj.sharding.spec == want_spec
    local = q_proj.addressable_shards[0].data.shape
    assert local == (2, 16 // fsdp, 4 // tensor, 4)
    tokens_spec = train_step.batch_shardings(mesh).tokens.spec
    assert tokens_spec == P(("data", "fsdp") if fsdp > 1 else "data", None)


def test_sharded_step_with_shared_prompts_equals_the_per_row_step():
    """Shared prompts (groups of 4 rows, micro-batches of 4: one prompt row per micro-batch,
    fewer rows than the 2 x 2 data-parallel devices) on a (2, 2, 2) mesh against the per-row step
    on one device."""
    batch = grouped_batch(rows=ROWS, group=4, seed=5)
    results = []
    for share, shape in ((False, None), (True, (2, 2, 2))):
        config = tiny_config(micro_batch_size=4, num_generations=4, max_completion_length=6,
                             share_prompt_prefix=share)
        _, state, step = tiny_step(config)
        if shape is None:
            with jax.default_device(jax.devices()[0]):
                new_state, metrics = jax.jit(step)(state, batch)
        else:
            mesh = make_mesh(*shape)
            params = jax.device_put(state.params, param_shardings(state.params, mesh))
            state, _ = train_step.make_train_state(params, config.optim)
            shardings = param_shardings(state, mesh)
            step = train_step.jit_train_step(step, shardings, mesh)
            new_state, metrics = step(jax.device_put(state, shardings),
                                      jax.device_put(batch, train_step.batch_shardings(mesh)))
        results.append(jax.tree.map(np.asarray, (new_state.params, metrics)))
    (want_params, want_metrics), (got_params, got_metrics) = results
    for name in ("loss", "grad_norm", "loss_denominator"):
        np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=2e-5, err_msg=name)
    for got, want in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
