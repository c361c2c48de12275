"""A plan for running a config on a topology: compiled programs, whether they fit, how long a step
takes at best, and the search for the smallest topology that fits.

The step time is a roofline estimate: each program's time is the larger of its FLOPs over the
chip's peak and its HBM bytes over the chip's bandwidth, times how often a step runs it. It is a
lower bound (no communication, no host work, no judge over HTTP, perfect overlap), useful to
compare settings and chips, not to promise a wall time.

Search (:func:`search`): the knobs of a config that change memory (micro-batch rows, rollout
chunk, remat policy, mesh split between fsdp and tensor parallelism) are tried on topologies of
growing size; the first setting whose every program fits is the plan. Candidates are ordered by
an analytic memory estimate so that few compiles are needed, at most ``max_compiles``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
from ml_collections import config_dict

from rar_jax.parallel.chips import GIB, Chip, chip_of_topology
from rar_jax.aot.programs import (Planner, ProgramReport, abstract_devices, abstract_model,
                                  device_count, policy_architecture, sequence_shapes)

logger = logging.getLogger(__name__)

# Topologies tried by --search, smallest first, per TPU generation (cloud TPU slice shapes).
SEARCH_TOPOLOGIES = {
    "v4": ("v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:2x4x4", "v4:4x4x4"),
    "v5e": ("v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:4x8", "v5e:8x8", "v5e:8x16"),
    "v5p": ("v5p:2x2x1", "v5p:2x2x2", "v5p:2x2x4", "v5p:2x4x4", "v5p:4x4x4"),
    "v6e": ("v6e:2x2", "v6e:2x4", "v6e:4x4", "v6e:4x8", "v6e:8x8", "v6e:8x16"),
}
# A GPU node is estimated from the TPU topology with its number of chips.
GPU_STAND_INS = {1: "v5p:1x1x1", 4: "v5p:2x2x1", 8: "v5p:2x2x2", 16: "v5p:2x2x4"}


@dataclasses.dataclass
class Plan:
    """Programs of one config compiled for one topology."""

    config_name: str
    topology: str
    chip: Chip
    devices: int
    settings: dict[str, Any]
    programs: list[ProgramReport]
    steps: int

    @property
    def estimate(self) -> bool:
        """True for a GPU: the programs were compiled for a TPU stand-in."""
        return not self.chip.tpu

    def peak_bytes(self) -> int:
        """The largest per-device peak over the programs."""
        return max(program.peak_bytes for program in self.programs)

    def fits(self) -> bool:
        """Every program's per-device peak fits the chip's HBM."""
        return self.peak_bytes() <= self.chip.hbm_bytes

    def program_seconds(self, program: ProgramReport) -> float:
        """Roofline seconds of one run of ``program`` on this chip."""
        return self.chip.roofline_seconds(program.analytic_flops, program.bytes_per_run())

    def step_seconds(self) -> float:
        """Roofline seconds of one training step (every program, as often as a step runs it)."""
        return sum(program.runs_per_step * self.program_seconds(program)
                   for program in self.programs)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON (bytes per device; seconds are roofline estimates)."""
        return {
            "config": self.config_name, "topology": self.topology, "chip": self.chip.name,
            "devices": self.devices, "estimate_from_tpu_compile": self.estimate,
            "hbm_bytes_per_device": self.chip.hbm_bytes, "fits": self.fits(),
            "peak_bytes_per_device": self.peak_bytes(), "settings": self.settings,
            "step_seconds": self.step_seconds(),
            "run_days": self.step_seconds() * self.steps / 86400, "steps": self.steps,
            "programs": [{**dataclasses.asdict(p), "peak_bytes": p.peak_bytes,
                          "roofline_seconds": self.program_seconds(p)} for p in self.programs],
        }

    def text(self) -> str:
        """A table of the programs and the verdict line."""
        chip = self.chip
        header = (f"{self.config_name} on {self.topology} ({self.devices} x {chip.name}, "
                  f"{chip.hbm_bytes / GIB:.0f} GiB HBM each"
                  + (", an ESTIMATE from the program compiled for a TPU topology" if self.estimate
                     else "") + ")")
        lines = [header, f"  settings: {json.dumps(self.settings)}",
                 "  program         devs  args GiB  out GiB  temp GiB  peak GiB  TFLOP/dev "
                 "(XLA)     GB/dev  roofline s  x/step  collectives"]
        for p in self.programs:
            collectives = ",".join(f"{op}:{n}" for op, n in p.collectives.items()) or "-"
            lines.append(
                f"  {p.name:<14} {p.devices:>5} {p.argument_bytes / GIB:>9.2f} "
                f"{p.output_bytes / GIB:>8.2f} {p.temp_bytes / GIB:>9.2f} "
                f"{p.peak_bytes / GIB:>9.2f} {p.analytic_flops / 1e12:>10.3f} "
                f"({p.xla_flops / 1e12:.3f}) {p.bytes_per_run() / 1e9:>9.2f} "
                f"{self.program_seconds(p):>11.4f} {p.runs_per_step:>7g}  {collectives}")
            lines.append(f"      {p.note}")
        margin = (self.chip.hbm_bytes - self.peak_bytes()) / GIB
        verdict = (f"FITS with {margin:.1f} GiB to spare" if self.fits()
                   else f"DOES NOT FIT: {-margin:.1f} GiB over")
        lines.append(
            f"  {verdict} per device (peak {self.peak_bytes() / GIB:.1f} of "
            f"{chip.hbm_bytes / GIB:.0f} GiB); roofline step {self.step_seconds():.1f} s, "
            f"{self.step_seconds() * self.steps / 86400:.2f} days for {self.steps} steps")
        return "\n".join(lines)


def settings_of(config: config_dict.ConfigDict) -> dict[str, Any]:
    """The knobs a plan reports and the search changes."""
    return {
        "mesh": [config.mesh.data, config.mesh.fsdp, config.mesh.tensor],
        "micro_batch_size": config.rl.micro_batch_size,
        "rollout_chunk_prompts": config.rl.rollout_chunk_prompts,
        "remat_policy": config.model.remat_policy,
        "param_dtype": config.model.param_dtype,
        "sft_batch_size": config.sft.batch_size,
    }


def program_shapes(config: config_dict.ConfigDict, *, sft: bool) -> str:
    """What decides a config's compiled programs (models, dtypes, shapes, mesh, judge placement),
    as a JSON string: configs with equal strings have the same programs and share one plan (the
    paper configs differ mostly in data, reward method and prompts, which compile nothing)."""
    rl, model = config.rl, config.model
    key: dict[str, Any] = {
        "job": "sft" if sft else "grpo", "policy": model.source,
        "model": [model.dtype, model.param_dtype, model.remat_policy, model.attention_chunk],
        "mesh": [config.mesh.data, config.mesh.fsdp, config.mesh.tensor],
        "shapes": [rl.max_prompt_length, rl.max_completion_length, rl.pad_prompts_to_max_length,
                   rl.micro_batch_size, rl.logprob_chunk_size],
        "optim": [config.optim.weight_decay > 0],
    }
    if sft:
        key["rows"] = config.sft.batch_size
    else:
        key["rows"] = [rl.prompts_per_step, rl.num_generations, rl.rollout_chunk_prompts,
                       rl.kl.beta > 0, rl.kl.reference_on_host, rl.old_logprobs]
        if config.judge.backend == "jax":
            key["judge"] = [config.judge.model_source, config.judge.devices,
                            config.judge.batch_size, config.reward.method in (
                                "rar_explicit", "healthbench_points", "rar_predefined")]
    return json.dumps(key, sort_keys=True)


def compile_plan(config: config_dict.ConfigDict, topology: str, *, name: str, sft: bool,
                 steps: int | None = None) -> Plan:
    """Compiles every program of ``config`` for ``topology`` (a TPU topology, or ``h100:<n>`` /
    ``h200:<n>`` estimated from a TPU topology of n chips); ``steps`` (default
    ``optim.num_steps``) is the run length its days are given for."""
    chip = chip_of_topology(topology)
    if chip.tpu:
        compile_for = topology
    else:
        chips = device_count(topology)
        if chips not in GPU_STAND_INS:
            raise ValueError(f"{topology}: GPU node sizes {sorted(GPU_STAND_INS)} are supported")
        compile_for = GPU_STAND_INS[chips]
    devices = abstract_devices(compile_for)
    planner = Planner(config, devices)
    programs = planner.programs(sft=sft)
    return Plan(config_name=name, topology=topology, chip=chip, devices=len(devices),
                settings=settings_of(config), programs=programs,
                steps=config.optim.num_steps if steps is None else steps)


def _candidates(config: config_dict.ConfigDict, devices: int) -> Iterator[config_dict.ConfigDict]:
    """Settings to try on ``devices`` chips, the config's own first, then ones that need less
    memory per device (smaller micro-batches and rollout chunks, full remat, bf16 parameters)."""
    rl = config.rl
    rows = rl.prompts_per_step * rl.num_generations
    micro = sorted({m for m in (rl.micro_batch_size, 32, 16, 8, 4)
                    if m and rows % m == 0 and m <= rows}, reverse=True)
    chunks = sorted({c for c in (rl.rollout_chunk_prompts or rl.prompts_per_step, 32, 16, 8, 4)
                     if c <= rl.prompts_per_step}, reverse=True)
    splits = [(devices, 1)] + [(devices // t, t) for t in (2, 4, 8) if devices % t == 0
                                and devices // t >= 1]
    for (fsdp, tensor), micro_batch, chunk, remat, param_dtype in itertools.product(
            splits, micro, chunks, ("full", config.model.remat_policy),
            (config.model.param_dtype, "bfloat16")):
        candidate = copy.deepcopy(config)
        candidate.mesh.data, candidate.mesh.fsdp, candidate.mesh.tensor = 1, fsdp, tensor
        candidate.rl.micro_batch_size = micro_batch
        candidate.rl.rollout_chunk_prompts = chunk
        candidate.model.remat_policy = remat
        candidate.model.param_dtype = param_dtype
        yield candidate


def estimated_bytes(config: config_dict.ConfigDict, devices: int, parameters: int) -> float:
    """A rough per-device peak (bytes) to order candidates: train state, the rollout's KV cache
    and one micro-batch's activations. Only the order matters; compiling decides."""
    architecture = policy_architecture(config)
    rl = config.rl
    _, _, width = sequence_shapes(config)
    param_bytes = 2 if config.model.param_dtype == "bfloat16" else 4
    state = parameters * (param_bytes + 8) / devices
    chunk = rl.rollout_chunk_prompts or rl.prompts_per_step
    cache = (chunk * rl.num_generations * width * architecture.num_layers * 2
             * architecture.num_kv_heads * architecture.head_dim * 2) / devices
    micro = rl.micro_batch_size or rl.prompts_per_step * rl.num_generations
    per_layer = 1 if config.model.remat_policy == "full" else 12
    activations = micro * width * architecture.hidden_size * 2 * architecture.num_layers \
        * per_layer / max(devices // config.mesh.tensor, 1)
    return state + max(cache, activations)


def search(config: config_dict.ConfigDict, chip_name: str, *, name: str, sft: bool,
           max_compiles: int = 8, progress: Callable[[str], None] = logger.info) -> Plan | None:
    """The smallest topology of ``chip_name`` (and a setting) on which every program fits.

    Per topology (smallest first) at most two settings are compiled: the one with the largest
    estimate under 80 % of HBM (the least memory-saving, so the fastest, that should fit) and,
    if that does not fit, the leanest. None when nothing fitted within ``max_compiles``.
    """
    parameters = sum(math.prod(x.shape) for x in
                     jax.tree.leaves(abstract_model(policy_architecture(config))[1]))
    judge = config.judge.devices if config.judge.backend == "jax" else 0
    compiles = 0
    for topology in SEARCH_TOPOLOGIES[chip_name]:
        devices = device_count(topology) - judge
        if devices < 1:
            continue
        chip = chip_of_topology(topology)
        unique = {json.dumps(settings_of(c)): c for c in _candidates(config, devices)}
        ranked = sorted(unique.values(), key=lambda c: estimated_bytes(c, devices, parameters))
        if estimated_bytes(ranked[0], devices, parameters) > 1.5 * chip.hbm_bytes:
            progress(f"{topology}: even the leanest setting is estimated far over its HBM")
            continue
        under = [c for c in ranked if estimated_bytes(c, devices, parameters)
                 <= 0.8 * chip.hbm_bytes]
        tries = [under[-1], ranked[0]] if under and under[-1] is not ranked[0] else [ranked[0]]
        for candidate in tries:
            if compiles >= max_compiles:
                progress(f"stopped after {compiles} compiles without a fit")
                return None
            compiles += 1
            progress(f"compiling {name} for {topology} with {json.dumps(settings_of(candidate))}")
            plan = compile_plan(candidate, topology, name=name, sft=sft)
            progress(plan.text())
            if plan.fits():
                return plan
    return None


def plans_table(plans: Sequence[Plan]) -> str:
    """A Markdown table of plans (one row each)."""
    lines = ["| config | topology | fits | peak GiB / chip | roofline step s | steps | roofline "
             "days | settings |", "|---|---|---|---|---|---|---|---|"]
    for plan in plans:
        lines.append(
            f"| {plan.config_name} | {plan.topology}{' (est.)' if plan.estimate else ''} | "
            f"{'yes' if plan.fits() else 'no'} | {plan.peak_bytes() / GIB:.1f} of "
            f"{plan.chip.hbm_bytes / GIB:.0f} | {plan.step_seconds():.1f} | {plan.steps} | "
            f"{plan.step_seconds() * plan.steps / 86400:.2f} | {json.dumps(plan.settings)} |")
    return "\n".join(lines)
