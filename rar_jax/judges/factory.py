"""The one place a judge is built from a config: :func:`build_judge`.

Every command (``rar-train``, ``rar-eval``, ``rar-judge``, ``rar-rubrics``, ``rar-judge-quality``,
``rar-judge-alignment``) and the trainer get their judge here. From ``judge.*`` (and ``model.*``
for the in-process judge's dtype and attention settings) it decides:

- ``judge.backend = "http"``: an :class:`~rar_jax.judges.rewards.HttpJudgeBackend` over an
  OpenAI-compatible server (``judge.http.*``).
- ``judge.backend = "jax"`` and the policy's own checkpoint (``judge.model_source ==
  model.source``) with the policy given: the policy's loaded weights are shared when they will not
  change (evaluation), or copied in device memory when they will (training: the policy is
  updated, the judge must not be). Either way nothing is read from disk again.
- ``judge.backend = "jax"`` otherwise: ``judge.model_source`` loaded in ``model.dtype`` /
  ``model.param_dtype`` with ``model.attention_chunk``, onto a mesh over ``devices`` (its own
  devices, tensor-parallel) or, without devices, sharded like the policy over all devices. A
  loaded judge model is kept for the rest of the process, so asking for the same judge again (the
  judge-alignment harness builds one judge per condition) does not read the file again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from ml_collections import config_dict

from rar_jax.judges.backend import JudgeBackend
from rar_jax.judges.http_backend import HttpJudgeClient, HttpJudgeConfig
from rar_jax.judges.jax_backend import SCORING_MODES, JaxJudge
from rar_jax.judges.rewards import HttpJudgeBackend
from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.parallel import make_mesh, param_shardings

logger = logging.getLogger(__name__)

JUDGE_BACKENDS = ("jax", "http")

# (source, dtype, param_dtype, attention_chunk, device ids) -> (model, tokenizer).
_LOADED: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def build_judge(
    config: config_dict.ConfigDict,
    *,
    devices: Sequence[jax.Device] | None = None,
    policy: tuple[Any, Any] | None = None,
    policy_is_trained: bool = False,
) -> JudgeBackend:
    """The judge of ``config`` (see the module docstring for the decisions).

    Args:
        config: a validated run config (``judge.*``, ``model.*``, ``mesh.*``).
        devices: the in-process judge's own devices (a tensor-parallel mesh over them); None
            places it like the policy, over ``mesh.*`` on all devices.
        policy: the run's loaded ``(model, tokenizer)``, reused when the judge is the policy's
            checkpoint.
        policy_is_trained: the policy's weights will change (training), so a reused policy is
            copied rather than shared.

    Raises:
        ValueError: for an unknown ``judge.backend`` or ``judge.scoring`` or a non-finite
            ``judge.min_verdict_mass``.
    """
    judge = config.judge
    if judge.backend not in JUDGE_BACKENDS:
        raise ValueError(f"config key 'judge.backend' is {judge.backend!r}; expected one of "
                         f"{', '.join(JUDGE_BACKENDS)}")
    if judge.backend == "http":
        return HttpJudgeBackend(HttpJudgeClient(http_config(judge.http)),
                                max_tokens=int(judge.max_tokens),
                                max_resamples=int(judge.max_resamples))
    if judge.scoring not in SCORING_MODES:
        raise ValueError(f"config key 'judge.scoring' is {judge.scoring!r}; expected one of "
                         f"{', '.join(SCORING_MODES)}")
    if not math.isfinite(judge.min_verdict_mass):
        raise ValueError("config key 'judge.min_verdict_mass' must be a finite number in [0, 1]")
    model, tokenizer = _judge_model(config, devices, policy, policy_is_trained)
    return JaxJudge(
        model,
        tokenizer,
        scoring=judge.scoring,
        prefix_reuse=bool(judge.prefix_reuse),
        batch_size=int(judge.batch_size),
        max_tokens=int(judge.max_tokens),
        max_resamples=int(judge.max_resamples),
        min_verdict_mass=float(judge.min_verdict_mass),
    )


def http_config(section: config_dict.ConfigDict) -> HttpJudgeConfig:
    """The ``judge.http`` section as an :class:`HttpJudgeConfig` (``cache_dir = ""`` -> None)."""
    values = dict(section)
    if "cache_dir" in values and not values["cache_dir"]:
        values["cache_dir"] = None
    fields = {field.name for field in dataclasses.fields(HttpJudgeConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"config section 'judge.http': unknown keys {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(fields))}")
    return HttpJudgeConfig(**values)


def _judge_mesh(config: config_dict.ConfigDict, devices: Sequence[jax.Device] | None):
    if devices:
        return make_mesh(1, 1, len(devices), devices=list(devices))
    return make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)


def _judge_model(
    config: config_dict.ConfigDict,
    devices: Sequence[jax.Device] | None,
    policy: tuple[Any, Any] | None,
    policy_is_trained: bool,
) -> tuple[Any, Any]:
    """(model, tokenizer) of the in-process judge: the policy's (shared or copied) or loaded."""
    source = config.judge.model_source
    if policy is not None and source == config.model.source:
        model, tokenizer = policy
        if not policy_is_trained and not devices:
            logger.info("judge: sharing the policy's weights (%s)", source)
            return model, tokenizer
        logger.info("judge: a device copy of the policy's weights (%s)", source)
        return copy_model(model, _judge_mesh(config, devices)), tokenizer
    key = (source, config.model.dtype, config.model.param_dtype, config.model.attention_chunk,
           tuple(device.id for device in devices or ()))
    if key not in _LOADED:
        logger.info("judge: loading %s", source)
        _LOADED[key] = load_model_and_tokenizer(
            source, mesh=_judge_mesh(config, devices), dtype=config.model.dtype,
            param_dtype=config.model.param_dtype, attention_chunk=config.model.attention_chunk,
        )
    return _LOADED[key]


def copy_model(model: Any, mesh: jax.sharding.Mesh) -> Any:
    """A copy of an NNX model whose parameters are new device arrays sharded over ``mesh``."""
    graphdef, state = nnx.split(model)
    shardings = param_shardings(state, mesh)
    copied = jax.tree.map(lambda value, sharding: jax.device_put(value.copy(), sharding),
                          state, shardings)
    return nnx.merge(graphdef, copied)
