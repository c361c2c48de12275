"""The programs a run executes, compiled ahead of time for a device topology, and what they cost.

:func:`plan_programs` builds, from a run config and a list of (possibly abstract) devices, every
jitted program a step runs, with the config's real shapes and shardings and without any weights
(models are built with ``nnx.eval_shape``): the GRPO train step (micro-batched as configured), the
reference / old log-prob pass, the sampler's prefill and decode loop (the KV cache of one
``rl.rollout_chunk_prompts`` call), the in-process judge's verdict scoring (on its own devices
when ``judge.devices`` says so), and the SFT step for a ``rar-sft`` config. Each is lowered with
``jax.ShapeDtypeStruct`` inputs carrying ``NamedSharding`` s and compiled; the result reports
XLA's per-device memory analysis, XLA's FLOP and byte counts, and our analytic FLOP count.

Why an analytic count: XLA's ``cost_analysis`` counts the body of a ``scan`` or ``while`` loop
once, so the scanned layers, micro-batches and logit chunks of our programs are undercounted by
their trip counts. The analytic count (:mod:`rar_jax.models.flops`) is what the roofline uses; XLA's
figure is reported beside it and agrees within a factor of 2 where every loop runs once (tested).

Memory: a program's peak per device is the state that stays resident between programs (the
train state: parameters and Adam moments; the reference parameters when the KL term keeps them
on device; a judge sharing the policy's devices) plus what the program adds (its non-resident
arguments, outputs not aliased to inputs, and temporaries).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_dict

from rar_jax.models import flops as flops_lib
from rar_jax.aot.model_shapes import model_architecture
from rar_jax.errors import UserError
from rar_jax.judges.jax_backend import SCORE_OPTIONS
from rar_jax.models.batching import bucket_size
from rar_jax.models.config import ModelConfig
from rar_jax.models.decoder import Decoder
from rar_jax.models.decoding import DecodeState
from rar_jax.models.sampler import DEFAULT_PROMPT_BUCKETS, Sampler, SamplingParams
from rar_jax.parallel import make_mesh, param_shardings
from rar_jax.parallel.sharding import batch_sharding
from rar_jax.rl import train_step

# Judge prompts: the rubric and instructions around prompt + answer (tokens, a planning figure:
# the paper's implicit prompt with a 10-item rubric is ~700 tokens of Qwen's tokenizer).
JUDGE_OVERHEAD_TOKENS = 1024
# Verdict options scored per judge prompt: ratings 1..10 (the rating methods), of at most 2
# tokens each ("10"); the explicit judge's two (true / false) fit in the same shape.
RATING_OPTIONS, OPTION_TOKENS = 10, 2
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


@dataclasses.dataclass
class ProgramReport:
    """One compiled program (per-device figures).

    Attributes:
        name: train_step, reference_pass, prefill, decode, judge, sft_step.
        devices: how many devices it is sharded over.
        runs_per_step: how many times one training step runs it (decode: per token).
        argument_bytes, output_bytes, temp_bytes, alias_bytes: XLA's memory analysis.
        resident_bytes: state resident between programs (see the module docstring).
        resident_argument_bytes: the part of the arguments that is resident state.
        analytic_flops: our count of the program's FLOPs per device.
        xla_flops, xla_bytes_accessed: XLA's cost analysis (loop bodies counted once).
        collectives: count of each collective op in the compiled program.
        analytic_bytes: our count of HBM bytes one run reads and writes per device (0: use
            XLA's), for programs where XLA's count is known to be off (the decode loop).
        compile_seconds: wall time of lowering and compiling.
        note: what the shapes are.
    """

    name: str
    devices: int
    runs_per_step: float
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    resident_bytes: int
    resident_argument_bytes: int
    analytic_flops: float
    xla_flops: float
    xla_bytes_accessed: float
    collectives: dict[str, int]
    compile_seconds: float
    note: str
    analytic_bytes: float = 0.0

    @property
    def peak_bytes(self) -> int:
        """Per-device peak while this program runs: resident state + what the program adds."""
        added = (self.argument_bytes - self.resident_argument_bytes + self.output_bytes
                 - self.alias_bytes + self.temp_bytes)
        return self.resident_bytes + max(added, 0)

    def bytes_per_run(self) -> float:
        """HBM bytes one run reads and writes per device: ours where we count them, else XLA's,
        else the arguments (a program the compiler refused)."""
        for count in (self.analytic_bytes, self.xla_bytes_accessed):
            if count > 0:
                return count
        return float(self.argument_bytes)


def _sds(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of ``tree``'s leaves with ``shardings``' leaves as their shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def _bytes_of(tree: Any) -> int:
    """Bytes per device of a tree of ShapeDtypeStructs, by each leaf's sharding."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize  # (PRNG key dtypes have one too.)
    return total


def _required_bytes(message: str) -> int:
    """The memory XLA said a program needs, from its out-of-memory message ("... required for
    HLO temporaries (315.37G) exceeds available HBM ...")."""
    match = re.search(r"\((\d+(?:\.\d+)?)([KMGT]?)i?B?\)", message)
    if not match:
        return 0
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def compile_report(name: str, lowerable: Any, args: Sequence[Any], kwargs: dict[str, Any], *,
                   devices: int, runs_per_step: float, resident_bytes: int,
                   resident_argument_bytes: int, analytic_flops: float,
                   note: str) -> ProgramReport:
    """Lowers and compiles ``lowerable(*args, **kwargs)`` and reports it; a program the compiler
    refuses for lack of device memory is reported with the memory it said it needs (and no
    FLOP figures from XLA), so that the plan says by how much it does not fit."""
    start = time.perf_counter()
    try:
        compiled = lowerable.lower(*args, **kwargs).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        arguments = _bytes_of([leaf for leaf in jax.tree.leaves(args)
                               if isinstance(leaf, jax.ShapeDtypeStruct)])
        return ProgramReport(
            name=name, devices=devices, runs_per_step=runs_per_step,
            argument_bytes=arguments, output_bytes=0,
            temp_bytes=_required_bytes(str(error)), alias_bytes=0,
            resident_bytes=resident_bytes, resident_argument_bytes=resident_argument_bytes,
            analytic_flops=analytic_flops, xla_flops=0.0, xla_bytes_accessed=0.0,
            collectives={}, compile_seconds=time.perf_counter() - start,
            note=f"{note}; the compiler refused it: {str(error).splitlines()[0][:160]}")
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    cost = cost or {}
    text = compiled.as_text()
    collectives = {op: len(re.findall(rf"\b{op}(?:-start)?\(", text)) for op in COLLECTIVES}
    return ProgramReport(
        name=name, devices=devices, runs_per_step=runs_per_step,
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        resident_bytes=resident_bytes, resident_argument_bytes=resident_argument_bytes,
        analytic_flops=analytic_flops,
        xla_flops=float(cost.get("flops", 0.0)),
        xla_bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        collectives={op: count for op, count in collectives.items() if count},
        compile_seconds=seconds, note=note,
    )


def policy_architecture(config: config_dict.ConfigDict) -> ModelConfig:
    """The policy's architecture with the run's dtypes, remat policy and attention chunk."""
    model = config.model
    return model_architecture(model.source, dtype=model.dtype, param_dtype=model.param_dtype,
                              remat_policy=model.remat_policy,
                              attention_chunk=model.attention_chunk)


def abstract_model(architecture: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract parameters) of a Decoder: shapes only, no memory."""
    return nnx.split(nnx.eval_shape(lambda: Decoder(architecture, rngs=nnx.Rngs(0))))


def sequence_shapes(config: config_dict.ConfigDict) -> tuple[int, int, int]:
    """(prompt width, answer width, row width) of the train batch: the bucketed
    ``rl.max_prompt_length`` (the longest prompts) and ``rl.max_completion_length``."""
    rl = config.rl
    buckets = (rl.max_prompt_length,) if rl.pad_prompts_to_max_length else DEFAULT_PROMPT_BUCKETS
    prompt = bucket_size(rl.max_prompt_length, buckets)
    return prompt, rl.max_completion_length, prompt + rl.max_completion_length


class Planner:
    """Compiles a config's programs for ``devices``; see the module docstring.

    Args:
        config: a run config (validated for ``len(devices)`` devices).
        devices: the devices (``jax.experimental.topologies`` devices of a TPU topology, or real
            ones); the policy's mesh gets all but the judge's ``judge.devices``.
    """

    def __init__(self, config: config_dict.ConfigDict, devices: Sequence[Any]):
        self.config = config
        devices = list(devices)
        judge_devices = config.judge.devices if config.judge.backend == "jax" else 0
        self.policy_devices = devices[: len(devices) - judge_devices]
        self.judge_devices = devices[len(devices) - judge_devices:] if judge_devices else []
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              devices=self.policy_devices)
        self.architecture = policy_architecture(config)
        self.graphdef, params = abstract_model(self.architecture)
        captured: dict[str, Any] = {}

        def fresh_state(params: nnx.State) -> train_step.TrainState:
            state, captured["optimizer"] = train_step.make_train_state(params, config.optim)
            return state

        state = jax.eval_shape(fresh_state, params)
        self.optimizer = captured["optimizer"]
        self.state_shardings = param_shardings(state, self.mesh)
        self.state = _sds(state, self.state_shardings)
        self.params = self.state.params
        self.size = len(self.policy_devices)
        self.state_bytes = _bytes_of(self.state)
        self.params_bytes = _bytes_of(self.params)
        rl = config.rl
        self.reference_resident = (rl.kl.beta > 0 and not rl.kl.reference_on_host)
        self.judge_shares_policy_devices = (config.judge.backend == "jax" and not judge_devices)

    # ------------------------------------------------------------------ resident state
    def resident_bytes(self, judge_bytes: int = 0) -> int:
        """Per-device bytes resident on the policy's devices between programs."""
        total = self.state_bytes
        if self.reference_resident:
            total += self.params_bytes
        if self.judge_shares_policy_devices:
            total += judge_bytes
        return total

    # ------------------------------------------------------------------ programs
    def _rows(self) -> int:
        rl = self.config.rl
        return rl.prompts_per_step * rl.num_generations

    def _batch(self, batch_type: type, rows: int, width: int) -> Any:
        fields = {name: jax.ShapeDtypeStruct((rows, width), jnp.bool_ if "mask" in name
                                             else jnp.int32 if name in ("tokens", "positions")
                                             else jnp.float32)
                  for name in batch_type._fields}
        if "advantages" in fields:
            fields["advantages"] = jax.ShapeDtypeStruct((rows,), jnp.float32)
        shardings = train_step.batch_shardings(self.mesh, batch_type)
        return _sds(batch_type(**fields), shardings)

    def _logprob_flop_args(self, rows: int, width: int) -> dict[str, int]:
        """`train_step.logprob_flop_args` of this config's update and reference pass."""
        rl = self.config.rl
        return train_step.logprob_flop_args(
            rows, width, answer_width=rl.max_completion_length,
            group_size=train_step.prompt_group_size(rl), micro_batch_size=rl.micro_batch_size)

    def train_step(self, judge_bytes: int) -> ProgramReport:
        """The GRPO update over a whole step's rows (micro-batched by ``rl.micro_batch_size``)."""
        config, rl = self.config, self.config.rl
        _, _, width = sequence_shapes(config)
        rows = self._rows()
        step = functools.partial(train_step.grpo_step, graphdef=self.graphdef,
                                 optimizer=self.optimizer, rl=rl, optim=config.optim,
                                 temperature=config.sampling.temperature)
        jitted = train_step.jit_train_step(step, self.state_shardings, self.mesh)
        batch = self._batch(train_step.Batch, rows, width)
        flops = flops_lib.train_flops(self.architecture, rows, width - 1,
                                      remat=config.model.remat_policy != "none",
                                      **self._logprob_flop_args(rows, width))
        return compile_report("train_step", jitted, (self.state, batch), {}, devices=self.size,
                       runs_per_step=rl.num_iterations, resident_bytes=self.resident_bytes(
                           judge_bytes), resident_argument_bytes=self.state_bytes,
                       analytic_flops=flops / self.size,
                       note=f"{rows} rows x {width} tokens, micro-batches of "
                            f"{rl.micro_batch_size or rows} rows")

    def reference_pass(self, judge_bytes: int) -> ProgramReport | None:
        """The reference (and recomputed old) log-prob pass; None when neither runs."""
        config, rl = self.config, self.config.rl
        passes = (rl.kl.beta > 0) + (rl.old_logprobs == "recompute")
        if not passes:
            return None
        _, _, width = sequence_shapes(config)
        rows = self._rows()
        jitted = train_step.jit_logprobs(self.graphdef, rl,
                                         temperature=config.sampling.temperature,
                                         param_shardings=self.state_shardings.params,
                                         mesh=self.mesh)
        row = batch_sharding(self.mesh, 2)
        tokens = jax.ShapeDtypeStruct((rows, width), jnp.int32, sharding=row)
        mask = jax.ShapeDtypeStruct((rows, width), jnp.bool_, sharding=row)
        flops = flops_lib.forward_flops(self.architecture, rows, width - 1, width - 1,
                                        **self._logprob_flop_args(rows, width))
        return compile_report("reference_pass", jitted, (self.params, tokens, tokens, mask), {},
                              devices=self.size,
                       runs_per_step=passes, resident_bytes=self.resident_bytes(judge_bytes),
                       resident_argument_bytes=self.params_bytes,
                       analytic_flops=flops / self.size,
                       note=f"{rows} rows x {width} tokens, micro-batches of "
                            f"{rl.micro_batch_size or rows} rows")

    def _sampler(self) -> Sampler:
        abstract = nnx.merge(self.graphdef, jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.params))
        return Sampler(abstract, mesh=self.mesh, stop_ids=(0,), pad_id=0)

    def rollout(self, judge_bytes: int) -> tuple[ProgramReport, ProgramReport]:
        """Prefill and the decode loop of one sampler call (``rl.rollout_chunk_prompts``
        prompts, each ``rl.num_generations`` times), with the whole answer's KV cache."""
        config, rl = self.config, self.config.rl
        prompt, answer, width = sequence_shapes(config)
        chunk = rl.rollout_chunk_prompts or rl.prompts_per_step
        sampler = self._sampler()
        prompts = bucket_size(chunk, sampler.batch_buckets, sampler.data_parallel_size)
        rows = prompts * rl.num_generations
        calls = math.ceil(rl.prompts_per_step / chunk)
        rules = sampler.decode_rules(SamplingParams(
            max_new_tokens=answer, top_k=config.sampling.top_k, top_p=config.sampling.top_p,
            num_samples=rl.num_generations), rows)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        rows_sharded = batch_sharding(self.mesh, 2)
        tokens = jax.ShapeDtypeStruct((prompts, prompt), jnp.int32, sharding=rows_sharded)
        mask = jax.ShapeDtypeStruct((prompts, prompt), jnp.bool_, sharding=rows_sharded)
        active = jax.ShapeDtypeStruct((rows,), jnp.bool_, sharding=batch_sharding(self.mesh, 1))
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
        scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
        prefill_args = (self.graphdef, self.params, tokens, tokens, mask, active, key, scalar,
                        scalar)
        prefill_static = dict(num_samples=rl.num_generations, max_new_tokens=answer,
                              cache_slots=width, rules=rules)
        resident = self.resident_bytes(judge_bytes)
        prefill = compile_report(
            "prefill", sampler.prefill_program, prefill_args, prefill_static, devices=self.size,
            runs_per_step=calls,
            resident_bytes=resident, resident_argument_bytes=self.params_bytes,
            analytic_flops=flops_lib.forward_flops(self.architecture, prompts, prompt,
                                                   prompt) / self.size,
            note=f"{prompts} prompts x {prompt} tokens -> {rows} rows, cache of {width} slots; "
                 f"{calls} calls per step")
        shardings = rules.shardings
        state_shapes = jax.eval_shape(
            functools.partial(sampler.prefill_program, **prefill_static), *prefill_args)
        state = _sds(state_shapes, DecodeState(
            cache=shardings.cache, last_tokens=shardings.rows, next_positions=shardings.rows,
            tokens=shardings.rows2d, logprobs=shardings.rows2d, done=shardings.rows,
            lengths=shardings.rows, step=replicated, key=replicated))
        stop = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        # XLA's bytes for the decode loop add the once-per-call weight layout to one token's
        # work; per token a device reads the weights in the compute dtype (gathered by fsdp,
        # split by tensor parallelism) and its share of the KV cache (the loop state).
        cache_bytes = _bytes_of(state.cache)
        weight_bytes = (self.architecture.num_parameters()
                        * jnp.dtype(self.architecture.dtype).itemsize / self.mesh.shape["tensor"])
        decode = compile_report(
            "decode", sampler.decode_program,
            (self.graphdef, self.params, state, stop, scalar, scalar),
            dict(window=width, rules=rules), devices=self.size,
            runs_per_step=calls * (answer - 1),
            resident_bytes=resident,
            resident_argument_bytes=self.params_bytes,
            analytic_flops=flops_lib.decode_flops(self.architecture, rows, width) / self.size,
            note=f"one token for {rows} rows over a {width}-slot cache; {answer - 1} steps per "
                 "call")
        decode.analytic_bytes = weight_bytes + cache_bytes
        return prefill, decode

    def judge(self) -> tuple[ProgramReport | None, int]:
        """The in-process judge's verdict scoring of one batch (None over HTTP), and the judge's
        parameter bytes per device."""
        config = self.config
        if config.judge.backend != "jax":
            return None, 0
        _, _, width = sequence_shapes(config)
        architecture = model_architecture(
            config.judge.model_source, dtype=config.model.dtype,
            param_dtype=config.model.param_dtype, attention_chunk=config.model.attention_chunk)
        graphdef, params = abstract_model(architecture)
        if self.judge_devices:
            mesh = make_mesh(1, 1, len(self.judge_devices), devices=self.judge_devices)
        else:
            mesh = self.mesh
        devices = mesh.devices.size
        params = _sds(params, param_shardings(params, mesh))
        judge_bytes = _bytes_of(params)
        rows = config.judge.batch_size
        length = bucket_size(width + JUDGE_OVERHEAD_TOKENS, DEFAULT_PROMPT_BUCKETS)
        replicated = NamedSharding(mesh, PartitionSpec())

        def array(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)

        options = (rows, RATING_OPTIONS, OPTION_TOKENS)
        args = (graphdef, params, None, array((rows,), jnp.int32),
                array((rows, length), jnp.int32), array((rows, length), jnp.int32),
                array((rows, length), jnp.bool_), array(options, jnp.int32),
                array(options, jnp.bool_), array((architecture.vocab_size,), jnp.bool_))
        judged = self._rows() * (flops_lib.MEAN_CRITERIA if config.reward.method in (
            "rar_explicit", "healthbench_points") else 4 if config.reward.method ==
            "rar_predefined" else 1)
        flops = flops_lib.forward_flops(architecture, rows, length, length)
        resident = judge_bytes if self.judge_devices else self.resident_bytes(judge_bytes)
        owner = "its own" if self.judge_devices else "the policy's"
        report = compile_report(
            "judge", SCORE_OPTIONS, args, dict(terminated=True), devices=devices,
            runs_per_step=math.ceil(judged / rows), resident_bytes=resident,
            resident_argument_bytes=judge_bytes, analytic_flops=flops / devices,
            note=f"{rows} judge prompts x {length} tokens on {owner} {devices} devices")
        return report, judge_bytes

    def sft_step(self) -> ProgramReport:
        """The supervised update of a ``rar-sft`` run (``sft.batch_size`` rows)."""
        config = self.config
        _, _, width = sequence_shapes(config)
        rows = config.sft.batch_size
        step = functools.partial(train_step.sft_step, graphdef=self.graphdef,
                                 optimizer=self.optimizer, rl=config.rl, optim=config.optim)
        jitted = train_step.jit_train_step(step, self.state_shardings, self.mesh,
                                           train_step.SFTBatch)
        batch = self._batch(train_step.SFTBatch, rows, width)
        flops = flops_lib.train_flops(self.architecture, rows, width,
                                      remat=config.model.remat_policy != "none",
                                      head_time=config.rl.max_completion_length)
        return compile_report("sft_step", jitted, (self.state, batch), {}, devices=self.size,
                              runs_per_step=1,
                       resident_bytes=self.state_bytes, resident_argument_bytes=self.state_bytes,
                       analytic_flops=flops / self.size,
                       note=f"{rows} rows x {width} tokens")

    def programs(self, *, sft: bool) -> list[ProgramReport]:
        """Every program of one step of the run (``sft``: a ``rar-sft`` run)."""
        if sft:
            return [self.sft_step()]
        judge, judge_bytes = self.judge()
        reports = [self.train_step(judge_bytes), self.reference_pass(judge_bytes),
                   *self.rollout(judge_bytes), judge]
        return [report for report in reports if report is not None]


def abstract_devices(topology: str) -> list[Any]:
    """The devices of a TPU topology (``v5e:2x2``, ``v5p:2x2x1`` ...) for compiling without the
    hardware; needs libtpu (``pip install 'jax[tpu]'``, in the project's test extras).

    Raises:
        UserError: naming the topology, when libtpu is missing or the name is not one.
    """
    from jax.experimental import topologies

    # libtpu takes a machine-wide lock file unless told that other processes may load it too;
    # compiling needs no chip, so any number of planning (and CPU) processes can run at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
    except Exception as error:  # noqa: BLE001 - libtpu raises plain RuntimeErrors.
        raise UserError(f"TPU topology {topology!r}: {error} (rar-compile needs libtpu: "
                        "pip install 'jax[tpu]' at the project's jax version)") from error


def device_count(topology: str) -> int:
    """Chips of a topology name: the product of its ``AxBxC`` dimensions (``h100:8``: 8).

    Raises:
        UserError: for a name without ``:<dimensions>``.
    """
    chip, _, dims = topology.partition(":")
    if not dims or not all(part.isdigit() for part in dims.split("x")):
        raise UserError(f"topology {topology!r}: expected <chip>:<AxB[xC]> (v5p:2x2x2) or "
                         "<gpu>:<count> (h100:8)")
    return int(np.prod([int(n) for n in dims.split("x")]))
