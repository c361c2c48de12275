"""The train steps: pure functions ``step(state, batch) -> (state, metrics)`` for GRPO
(:func:`grpo_step`) and supervised fine-tuning on reference answers (:func:`sft_step`, Table 1's
Expert-Answer-SFT baseline), sharing one update (:func:`accumulated_update`).

Token alignment used throughout: every per-token array is ``[batch, time]`` aligned with
``batch.tokens``; entry ``i`` belongs to token ``i`` (its log-prob is ``log p(tokens[i] |
tokens[:i])``), so entry 0 is never a target and ``loss_mask[:, 0]`` must be False. The sampler's
log-probs, the reference model's and the trainer's are all stored this way.

Micro-batching: the batch rows are split into ``rows / micro_batch_size`` micro-batches scanned
with ``lax.scan``; each contributes the gradient of its loss *sum* and its denominator (see
:mod:`rar_jax.rl.losses`), and the accumulated gradient is divided once by the total
denominator, so the update equals the one of the whole batch in one piece.

Non-finite steps: an update whose gradients hold a NaN or inf (their global norm is not finite)
is skipped (parameters and moments unchanged, under ``lax.cond``, so a step that is applied pays
nothing for the check) and counted in the state, in ``optax.apply_if_finite``'s state layout;
the loop reads ``consecutive_skipped`` to stop a run that keeps failing. (``optax.apply_if_finite``
itself selected between the new and old parameters and moments leaf by leaf: on CPU that doubled
the optimiser's time; benchmarks/README.md, "The GRPO update".)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from ml_collections import config_dict

from rar_jax.models.flops import train_flops
from rar_jax.parallel import batch_sharding
from rar_jax.rl import grpo, losses
from rar_jax.rl.optimizer import learning_rate_schedule, make_optimizer

class Batch(NamedTuple):
    """One GRPO batch: prompt + answer rows (left-padded prompts), all ``[batch, time]``.

    Attributes:
        tokens: int32[b, t] prompt tokens then answer tokens.
        positions: int32[b, t] RoPE positions (0 at each row's first real token).
        attention_mask: bool[b, t] True for real (non-padding) tokens.
        loss_mask: bool[b, t] True for the answer tokens the loss is taken over, all within
            the last ``rl.max_completion_length`` columns (the step takes log-probs there only;
            see :func:`accumulated_update` for a batch that breaks this).
        advantages: f32[b] one advantage per row.
        old_logprobs: f32[b, t] log-probs under the sampling policy (ignored with
            ``rl.old_logprobs == "current"``).
        ref_logprobs: f32[b, t] log-probs under the reference model (ignored when beta == 0).
    """

    tokens: jax.Array
    positions: jax.Array
    attention_mask: jax.Array
    loss_mask: jax.Array
    advantages: jax.Array
    old_logprobs: jax.Array
    ref_logprobs: jax.Array


class SFTBatch(NamedTuple):
    """One supervised batch: prompt + target answer rows (left-padded prompts), all ``[b, t]``.

    Attributes:
        tokens, positions, attention_mask: as in :class:`Batch`.
        loss_mask: bool[b, t] True for the answer tokens the model is trained to write, within
            the last ``rl.max_completion_length`` columns (as in :class:`Batch`).
    """

    tokens: jax.Array
    positions: jax.Array
    attention_mask: jax.Array
    loss_mask: jax.Array


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes: step count, parameters and optimiser state (a pytree)."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


def make_train_state(
    params: nnx.State, optim: config_dict.ConfigDict
) -> tuple[TrainState, optax.GradientTransformation]:
    """A fresh state for ``params`` and the optimiser (``optim`` section) that updates it.

    ``opt_state`` is an ``optax.ApplyIfFiniteState``: the skip counters of non-finite updates
    (see the module docstring) around the optimiser's own state (``inner_state``).
    """
    optimizer = make_optimizer(optim)
    zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731  (one buffer each: the state is donated)
    opt_state = optax.ApplyIfFiniteState(
        notfinite_count=zero(), last_finite=jnp.array(True), total_notfinite=zero(),
        inner_state=optimizer.init(params),
    )
    return TrainState(step=zero(), params=params, opt_state=opt_state), optimizer


def apply_finite_update(
    state: TrainState, grads: Any, optimizer: optax.GradientTransformation
) -> tuple[TrainState, jax.Array]:
    """``state`` after one optimiser update with ``grads``, or with only the skip counters
    changed when ``grads`` hold a NaN or inf; also the global gradient norm (f32[]).

    The update runs under ``lax.cond`` on the finiteness of the norm, so neither branch selects
    between old and new arrays. (A finite gradient whose squared norm overflows float32 counts
    as non-finite: clipping it would have divided by inf.)
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm)
    guard = state.opt_state

    def update(operand: tuple[nnx.State, optax.OptState]) -> tuple[nnx.State, optax.OptState]:
        params, inner = operand
        updates, inner = optimizer.update(grads, inner, params)
        return optax.apply_updates(params, updates), inner

    params, inner = jax.lax.cond(
        finite, update, lambda operand: operand, (state.params, guard.inner_state)
    )
    notfinite = jnp.logical_not(finite).astype(jnp.int32)
    opt_state = optax.ApplyIfFiniteState(
        notfinite_count=(guard.notfinite_count + 1) * notfinite,
        last_finite=finite,
        total_notfinite=guard.total_notfinite + notfinite,
        inner_state=inner,
    )
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), grad_norm


def consecutive_skipped(state: TrainState) -> jax.Array:
    """Updates skipped in a row because of non-finite gradients (int32[])."""
    return state.opt_state.notfinite_count


def token_logprobs(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
    *,
    logprob_fn: Callable[..., tuple[jax.Array, jax.Array]],
    micro_batch_size: int = 0,
    answer_width: int = 0,
    group_size: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Per-token log-probs and entropies of ``tokens`` under the model, aligned with ``tokens``.

    Shared prompts: when ``group_size`` > 1 and the log-prob window leaves prompt columns
    before it, the rows are taken as groups of ``g = gcd(group_size, rows)`` consecutive rows
    with identical columns before the window (a GRPO batch: each prompt's answers are
    consecutive rows, and a micro-batch of rows holds whole groups or lies in one). Each
    group's prompt runs through the model once (`Decoder.prefill`) and its rows continue from
    that cache (`Decoder.extend`): the same values up to float rounding, with the prompt's
    work (and its gradient) done once per group instead of once per row.

    Args:
        graphdef, params: the model, split by ``nnx.split``.
        tokens, positions, attention_mask: [b, t] as in :class:`Batch`.
        logprob_fn: ``(hidden, lm_head, targets) -> (logprobs, entropy)`` (see
            :func:`rar_jax.rl.grpo.logprob_fn`); chunked, so [b, t, vocab] never exists.
        micro_batch_size: rows per forward pass (``lax.map`` over micro-batches), so a pass over
            a whole GRPO batch (reference and recomputed old log-probs) holds the activations of
            that many rows only; 0 (or >= b) = all rows at once. Same values either way.
        answer_width: static; > 0: only the last ``answer_width`` tokens (the answer columns of
            a GRPO batch) get log-probs: the LM head and the log-softmax run on those positions
            alone (every position still runs through the layers, as attention needs), and the
            other entries are 0. 0 (or >= t - 1): every token.
        group_size: static; rows per prompt (``rl.num_generations``), or 1 (no sharing).

    Returns:
        (logprobs f32[b, t], entropy f32[b, t]); column 0 is 0 (no token predicts it).
    """
    rows, time = tokens.shape
    if 0 < micro_batch_size < rows:
        forward = functools.partial(token_logprobs, graphdef, params, logprob_fn=logprob_fn,
                                    answer_width=answer_width, group_size=group_size)
        micro = _micro_batches((tokens, positions, attention_mask), micro_batch_size)
        logprobs, entropy = jax.lax.map(lambda xs: forward(*xs), micro)
        return logprobs.reshape(tokens.shape), entropy.reshape(tokens.shape)
    model = nnx.merge(graphdef, params)
    inputs = (tokens[:, :-1], positions[:, :-1], attention_mask[:, :-1])
    width = logit_width(time, answer_width)
    split = time - 1 - width  # inputs before the window: run once per group when shared
    share = shared_rows(group_size, rows, split)
    if share > 1:
        first_rows = [a[::share, :split] for a in inputs]
        _, prefix = model.prefill(first_rows[0], first_rows[1], attention_mask=first_rows[2])
        prefix = prefix.take_rows(jnp.repeat(jnp.arange(rows // share), share))
        hidden = model.extend(inputs[0][:, split:], inputs[1][:, split:], prefix=prefix,
                              attention_mask=inputs[2][:, split:])
    else:
        hidden, _ = model(inputs[0], inputs[1], attention_mask=inputs[2], return_hidden=True)
        hidden = hidden[:, -width:]
    logprobs, entropy = logprob_fn(hidden, model.lm_head_weight(), tokens[:, -width:])
    pad = ((0, 0), (time - width, 0))
    return jnp.pad(logprobs, pad), jnp.pad(entropy, pad)


def prompt_group_size(rl: config_dict.ConfigDict) -> int:
    """Rows per shared prompt in the GRPO passes: ``rl.num_generations`` when
    ``rl.share_prompt_prefix``, else 1 (every row runs its own prompt)."""
    return rl.num_generations if rl.share_prompt_prefix else 1


def shared_rows(group_size: int, rows: int, split: int) -> int:
    """Consecutive rows that share their first ``split`` input columns in :func:`token_logprobs`:
    ``gcd(group_size, rows)``, or 1 when nothing precedes the log-prob window (``split`` < 1)."""
    return math.gcd(group_size, rows) if split > 0 else 1


def logprob_flop_args(
    rows: int, time: int, *, answer_width: int, group_size: int, micro_batch_size: int
) -> dict[str, int]:
    """The shape arguments (``head_time``, ``shared_prefix``, ``group``) of
    `rar_jax.models.flops.forward_flops` / ``train_flops`` over the ``time - 1`` positions that
    :func:`token_logprobs` runs for ``rows x time`` tokens with these settings."""
    width = logit_width(time, answer_width)
    micro_rows = micro_batch_size if 0 < micro_batch_size < rows else rows
    split = time - 1 - width
    return {"head_time": width, "shared_prefix": split,
            "group": shared_rows(group_size, micro_rows, split)}


def logit_width(time: int, answer_width: int) -> int:
    """How many of a ``time``-token row's last positions get log-probs (see
    :func:`token_logprobs`): ``answer_width``, or all ``time - 1`` predicted tokens when it is
    0 or larger."""
    return time - 1 if answer_width <= 0 else min(answer_width, time - 1)


def jit_logprobs(
    graphdef: nnx.GraphDef,
    rl: config_dict.ConfigDict,
    *,
    temperature: float,
    param_shardings: Any = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``(params, tokens, positions, attention_mask) -> (logprobs, entropy)`` jitted: the
    reference / old log-prob pass of the trainer, micro-batched by ``rl.micro_batch_size``,
    rows sharded like the train step's batch when ``param_shardings`` and ``mesh`` are given.
    Log-probs of the last ``rl.max_completion_length`` tokens only (the answers; 0 elsewhere)."""
    forward = functools.partial(
        token_logprobs, graphdef,
        logprob_fn=grpo.logprob_fn(rl, temperature=temperature),
        micro_batch_size=rl.micro_batch_size,
        answer_width=rl.max_completion_length,
        group_size=prompt_group_size(rl),
    )
    if param_shardings is None:
        return jax.jit(forward)
    rows = batch_sharding(mesh, 2)
    return jax.jit(forward, in_shardings=(param_shardings, rows, rows, rows),
                   out_shardings=(rows, rows))


def _micro_batches(batch: Any, micro_batch_size: int) -> Any:
    """``batch`` (a pytree of ``[rows, ...]`` arrays) as ``[count, micro_batch_size, ...]``."""
    rows = jax.tree.leaves(batch)[0].shape[0]
    if micro_batch_size <= 0 or micro_batch_size >= rows:
        return jax.tree.map(lambda x: x[None], batch)
    if rows % micro_batch_size:
        raise ValueError(
            f"batch of {rows} rows is not divisible by rl.micro_batch_size={micro_batch_size}"
        )
    count = rows // micro_batch_size
    return jax.tree.map(lambda x: x.reshape((count, micro_batch_size) + x.shape[1:]), batch)


def accumulated_update(
    state: TrainState,
    batch: Any,
    micro_loss: Callable[[nnx.State, Any], losses.LossOutput],
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    optim: config_dict.ConfigDict,
    micro_batch_size: int,
    answer_width: int = 0,
    group_size: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser update from the exact global loss of ``batch``, computed in micro-batches.

    Each micro-batch contributes the gradient of its loss *sum* and its denominator; the summed
    gradient is divided once by the total denominator (see the module docstring).

    When ``micro_loss`` takes log-probs of the last ``answer_width`` tokens only (see
    :func:`token_logprobs`), a loss token before them would be scored with a log-prob of 0: then
    the denominator is NaN, so the loss and gradients are NaN and the update is skipped and
    counted like any non-finite one, and the metric ``loss_tokens_outside_answers`` says why.

    Args:
        state: the current TrainState.
        batch: a NamedTuple of ``[rows, ...]`` arrays (:class:`Batch`, :class:`SFTBatch`).
        micro_loss: ``(params, micro_batch) -> LossOutput`` of one micro-batch.
        graphdef: the model's graph definition (for the FLOP count).
        optimizer: from :func:`make_train_state`.
        optim: the ``optim`` config section (for the learning-rate metric).
        micro_batch_size: rows per micro-batch (0 or >= rows: the whole batch at once).
        answer_width: the log-prob window of ``micro_loss`` (0: every token).
        group_size: the rows per shared prompt of ``micro_loss`` (see :func:`token_logprobs`),
            for the FLOP count.

    Returns:
        (new state, metrics): ``loss`` (global), ``loss_denominator``, ``grad_norm``,
        ``learning_rate``, the skip counters, ``loss_tokens_outside_answers``, ``update_flops``
        (the analytic FLOPs of the forward and backward passes,
        :func:`rar_jax.models.flops.train_flops` with the LM head over the log-prob window; the
        trainer divides it by the update's time) and ``loss/<name>`` for each metric of the loss.
    """
    def sum_and_output(params: nnx.State, micro: Any) -> tuple[jax.Array, losses.LossOutput]:
        out = micro_loss(params, micro)
        return out.loss_sum, out

    grad_fn = jax.grad(sum_and_output, has_aux=True)

    def accumulate(carry: Any, micro: Any) -> tuple[Any, None]:
        grads_sum, loss_sum, denominator, metric_sums = carry
        grads, out = grad_fn(state.params, micro)
        carry = (
            jax.tree.map(jnp.add, grads_sum, grads),
            loss_sum + out.loss_sum,
            denominator + out.denominator,
            jax.tree.map(jnp.add, metric_sums, out.metrics),
        )
        return carry, None

    micro_batches = _micro_batches(batch, micro_batch_size)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    metric_shapes = jax.eval_shape(lambda: micro_loss(state.params, first).metrics)
    zeros = functools.partial(jax.tree.map, lambda x: jnp.zeros(x.shape, x.dtype))
    init = (zeros(state.params), jnp.zeros(()), jnp.zeros(()), zeros(metric_shapes))
    (grads_sum, loss_sum, denominator, metric_sums), _ = jax.lax.scan(
        accumulate, init, micro_batches
    )
    time = batch.loss_mask.shape[1]
    outside = jnp.sum(batch.loss_mask[:, :time - logit_width(time, answer_width)], dtype=jnp.int32)
    safe_denominator = jnp.where(outside > 0, jnp.nan, jnp.maximum(denominator, 1.0))
    # In the parameters' dtype: a bf16 gradient divided by the f32 denominator would be f32 and
    # make the optimiser's moments f32 on one branch of apply_finite_update's cond, bf16 on the other.
    grads = jax.tree.map(lambda g: (g / safe_denominator).astype(g.dtype), grads_sum)
    new_state, grad_norm = apply_finite_update(state, grads, optimizer)
    opt_state = new_state.opt_state

    model_config = nnx.merge(graphdef, state.params).config
    metrics = {f"loss/{name}": value for name, value in losses.reduce_metrics(metric_sums).items()}
    metrics.update(
        loss=loss_sum / safe_denominator,
        loss_denominator=denominator,
        grad_norm=grad_norm,
        learning_rate=learning_rate_schedule(optim)(state.step),
        update_skipped=jnp.logical_not(opt_state.last_finite).astype(jnp.int32),
        consecutive_skipped=opt_state.notfinite_count,
        total_skipped=opt_state.total_notfinite,
        loss_tokens_outside_answers=outside,
        update_flops=jnp.float32(train_flops(
            model_config, batch.loss_mask.shape[0], time - 1,
            remat=model_config.remat_policy != "none",
            **logprob_flop_args(batch.loss_mask.shape[0], time, answer_width=answer_width,
                                group_size=group_size, micro_batch_size=micro_batch_size))),
    )
    return new_state, metrics


def grpo_step(
    state: TrainState,
    batch: Batch,
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    rl: config_dict.ConfigDict,
    optim: config_dict.ConfigDict,
    temperature: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One GRPO update from a batch of rollouts (pure; jit it with :func:`jit_train_step`).

    Args:
        state: the current TrainState.
        batch: the rollouts with advantages (and stored old / reference log-probs as needed).
        graphdef: the policy's graph definition (``nnx.split``).
        optimizer: from :func:`make_train_state`.
        rl: the ``rl`` config section (loss, KL, chunking, micro-batching, old log-probs).
        optim: the ``optim`` config section (for the learning-rate metric).
        temperature: the sampling temperature (log-probs are of the tempered distribution).

    Returns:
        (new state, metrics): scalars; ``loss`` is the exact global loss of the batch.
    """
    logprob_fn = grpo.logprob_fn(rl, temperature=temperature)
    loss_fn = grpo.policy_loss_fn(rl)
    on_policy = rl.old_logprobs == "current"
    use_reference = rl.kl.beta > 0
    group_size = prompt_group_size(rl)

    def micro_loss(params: nnx.State, micro: Batch) -> losses.LossOutput:
        logprobs, entropy = token_logprobs(
            graphdef, params, micro.tokens, micro.positions, micro.attention_mask,
            logprob_fn=logprob_fn, answer_width=rl.max_completion_length, group_size=group_size,
        )
        old = jax.lax.stop_gradient(logprobs) if on_policy else micro.old_logprobs
        return loss_fn(
            logprobs[:, 1:],
            old[:, 1:],
            micro.advantages,
            micro.loss_mask[:, 1:],
            ref_logprobs=micro.ref_logprobs[:, 1:] if use_reference else None,
            entropy=jax.lax.stop_gradient(entropy[:, 1:]),
        )

    return accumulated_update(state, batch, micro_loss, graphdef=graphdef, optimizer=optimizer,
                              optim=optim, micro_batch_size=rl.micro_batch_size,
                              answer_width=rl.max_completion_length, group_size=group_size)


def sft_loss(
    params: nnx.State, batch: SFTBatch, *, graphdef: nnx.GraphDef, rl: config_dict.ConfigDict
) -> losses.LossOutput:
    """The supervised loss of a batch as (sum, denominator) (:func:`rar_jax.rl.losses.sft_loss`):
    the NLL of its answer tokens (the last ``rl.max_completion_length`` at most), log-probs
    chunked by ``rl.logprob_chunk_size``."""
    logprobs, entropy = token_logprobs(
        graphdef, params, batch.tokens, batch.positions, batch.attention_mask,
        logprob_fn=grpo.logprob_fn(rl, temperature=1.0), answer_width=rl.max_completion_length,
    )
    return losses.sft_loss(logprobs[:, 1:], batch.loss_mask[:, 1:], entropy=entropy[:, 1:])


def sft_step(
    state: TrainState,
    batch: SFTBatch,
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    rl: config_dict.ConfigDict,
    optim: config_dict.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One supervised update (Expert-Answer-SFT): the mean NLL of the batch's answer tokens.

    Shares the GRPO step's sharding, micro-batching (``rl.micro_batch_size``), chunked log-probs
    (``rl.logprob_chunk_size``), optimiser and non-finite skipping (:func:`accumulated_update`).
    """
    micro_loss = functools.partial(sft_loss, graphdef=graphdef, rl=rl)
    return accumulated_update(state, batch, micro_loss, graphdef=graphdef, optimizer=optimizer,
                              optim=optim, micro_batch_size=rl.micro_batch_size,
                              answer_width=rl.max_completion_length)


def batch_shardings(mesh: jax.sharding.Mesh, batch_type: type = Batch) -> Any:
    """A ``batch_type`` of shardings: rows over the data-parallel axes ("data", "fsdp"), the rest
    replicated (``advantages`` is [rows], every other field [rows, time])."""
    return batch_type(*(batch_sharding(mesh, 1 if name == "advantages" else 2)
                        for name in batch_type._fields))


def jit_train_step(
    step_fn: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]],
    state_shardings: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    batch_type: type = Batch,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """Compiles a bound step once with explicit shardings; the state is donated.

    Args:
        step_fn: :func:`grpo_step` or :func:`sft_step` with its keyword arguments bound
            (``functools.partial``).
        state_shardings: a TrainState-shaped tree of NamedShardings (None: as the inputs are).
        mesh: the mesh the batch rows are split over (with ``state_shardings``).
        batch_type: the step's batch (:class:`Batch` or :class:`SFTBatch`).
    """
    if state_shardings is None:
        return jax.jit(step_fn, donate_argnums=0)
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_shardings(mesh, batch_type)),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
