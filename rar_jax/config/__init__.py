"""Configuration: the schema, the command-line flag and the validation every entry point runs first.

Configs are ``ml_collections.ConfigDict`` objects. The schema, every option with a one-line
comment, is :mod:`rar_jax.config.base` (inside the package, so an installed rar-jax has it);
experiment files in ``configs/`` start from :func:`base_config` and override what they change.
Entry points declare the flag with :func:`define_config_flag` and call :func:`validate` before
building anything, so a typo or a contradictory setting fails in a second with the key named,
not minutes later inside a compiled step. The allowed values of a choice option are the keys of
the registry that the code reading the option dispatches on (:data:`CHOICES`).
"""

from __future__ import annotations

import difflib
import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

from absl import flags
from ml_collections import config_dict, config_flags

from rar_jax.parallel.sharding import mesh_shape

# The schema's file: also a config file for --config (the default of the commands that need no
# experiment file).
BASE_CONFIG_PATH = pathlib.Path(__file__).resolve().with_name("base.py")



def _choices() -> dict[str, tuple[str, ...]]:
    """Option -> its allowed values: the names of the registry that the reading code dispatches
    on, so adding a registry entry (a reward method, a loss aggregation) makes it a valid choice."""
    from rar_jax.data import examples
    from rar_jax.eval import healthbench_eval, judge_alignment
    from rar_jax.judges import aggregation, factory, jax_backend, programmatic, prompts, rewards
    from rar_jax.judges import rubric_generation
    from rar_jax.models import config as model_config
    from rar_jax.rl import advantages, losses, trainer
    from rar_jax.rubrics import ablations, schema

    registries: dict[str, Any] = {
        "model.dtype": model_config.SUPPORTED_DTYPES,
        "model.param_dtype": model_config.SUPPORTED_DTYPES,
        "model.remat_policy": model_config.REMAT_POLICIES,
        "rl.old_logprobs": trainer.OLD_LOGPROB_SOURCES,
        "rl.advantage.scale": advantages.ADVANTAGE_SCALES,
        "rl.loss.aggregation": losses.LOSS_AGGREGATIONS,
        "rl.loss.importance_ratio": losses.IMPORTANCE_RATIOS,
        "rl.kl.estimator": losses.KL_ESTIMATORS,
        "rubric.pitfall_polarity": [polarity.value for polarity in schema.Polarity],
        "rubric.ablation": ablations.RUBRIC_ABLATIONS,
        "reward.explicit_normalization": aggregation.EXPLICIT_NORMALIZATIONS,
        "reward.rating_normalization": aggregation.RATING_NORMALIZATIONS,
        "reward.method": rewards.REWARD_METHODS,
        "reward.programmatic_fn": programmatic.PROGRAMMATIC_REWARDS,
        "data.format": examples.EXAMPLE_READERS,
        "judge.backend": factory.JUDGE_BACKENDS,
        "judge.scoring": jax_backend.SCORING_MODES,
        "eval.grader_scoring": healthbench_eval.GRADER_SCORING_MODES,
        "eval.grader_prompt": healthbench_eval.GRADER_PROMPTS,
        "rubric_generation.input_format": rubric_generation.INPUT_FORMATS,
        "rubric_generation.domain": prompts.RUBRIC_GENERATION_DOMAINS,
        "alignment.ties": judge_alignment.TIE_RULES,
    }
    return {key: tuple(registry) for key, registry in registries.items()}


CHOICES: dict[str, tuple[str, ...]] = _choices()


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending key."""


def base_config() -> config_dict.ConfigDict:
    """The schema every config is checked against, with its defaults (:mod:`rar_jax.config.base`)."""
    from rar_jax.config import base

    return base.get_config()


def compilation_cache_dir(config: config_dict.ConfigDict) -> str:
    """The folder of the persistent compilation cache of ``config.compilation_cache_dir``
    ("auto": ``$XDG_CACHE_HOME/rar_jax/xla``, else ``~/.cache/rar_jax/xla``; "" = off)."""
    setting = config.compilation_cache_dir
    if setting != "auto":
        return os.path.expanduser(setting)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache_home, "rar_jax", "xla")


def enable_compilation_cache(config: config_dict.ConfigDict) -> None:
    """Turns JAX's persistent compilation cache on (or off) as ``compilation_cache_dir`` says:
    every program that took over a second to compile is stored there, keyed by its HLO, the
    compiler options and the devices, so a later run with the same shapes loads it instead of
    compiling (shapes are bucketed so that runs repeat them)."""
    import jax

    directory = compilation_cache_dir(config)
    jax.config.update("jax_compilation_cache_dir", directory or None)


def define_config_flag(default: str | None = None) -> flags.FlagHolder:
    """Declares ``--config=<file>`` with ``--config.<key>=<value>`` overrides (absl)."""
    return config_flags.DEFINE_config_file(
        "config", default, "Path to a config file in configs/.", lock_config=True
    )


def _leaves(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, (config_dict.ConfigDict, dict)):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_schema(config: config_dict.ConfigDict, schema: config_dict.ConfigDict) -> list[str]:
    errors = []
    expected = dict(_leaves(schema))
    given = dict(_leaves(config))
    for key, value in given.items():
        if key not in expected:
            close = difflib.get_close_matches(key, expected, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            errors.append(f"unknown config key '{key}'{hint}")
            continue
        want = expected[key]
        ok = isinstance(value, type(want)) and not (
            isinstance(value, bool) and not isinstance(want, bool)
        )
        if isinstance(want, float) and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            errors.append(
                f"config key '{key}' must be {_type_name(want)}, got {_type_name(value)} {value!r}"
            )
    for key in expected:
        if key not in given:
            errors.append(f"config key '{key}' is missing (declared in rar_jax/config/base.py)")
    return errors


def _check_choices(config: config_dict.ConfigDict) -> list[str]:
    errors = []
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            errors.append(f"config key '{key}' is {value!r}; expected one of {', '.join(allowed)}")
    return errors


def _get(config: config_dict.ConfigDict, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value[part]
    return value


def _check_values(config: config_dict.ConfigDict, num_devices: int | None) -> list[str]:
    errors = []
    rl, loss, optim = config.rl, config.rl.loss, config.optim

    def need(condition: bool, key: str, message: str) -> None:
        if not condition:
            errors.append(f"config key '{key}' {message}")

    need(rl.num_generations >= 2, "rl.num_generations", "must be >= 2 (a group needs two answers)")
    need(rl.num_iterations >= 1, "rl.num_iterations", "must be >= 1")
    need(rl.prompts_per_step >= 1, "rl.prompts_per_step", "must be >= 1")
    need(rl.max_prompt_length >= 1, "rl.max_prompt_length", "must be >= 1")
    need(rl.max_consecutive_skipped >= 1, "rl.max_consecutive_skipped", "must be >= 1")
    need(config.sampling.temperature > 0, "sampling.temperature", "must be > 0")
    need(config.sampling.top_k >= 0, "sampling.top_k", "must be >= 0 (0 disables)")
    need(0 < config.sampling.top_p <= 1, "sampling.top_p", "must be in (0, 1]")
    need(config.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    need(config.train.eval_every >= 0, "train.eval_every", "must be >= 0")
    need(config.train.log_samples_every >= 0, "train.log_samples_every", "must be >= 0")
    need(config.metrics.peak_flops_per_device >= 0 or config.metrics.peak_flops_per_device == -1,
         "metrics.peak_flops_per_device", "must be >= 0, or -1 (the chip's peak)")
    need(
        rl.num_iterations == 1 or rl.old_logprobs != "current",
        "rl.old_logprobs",
        f"is 'current' but rl.num_iterations={rl.num_iterations}: updates after the first are "
        "off-policy and need stored old log-probs ('sampler' or 'recompute')",
    )
    need(rl.micro_batch_size >= 0, "rl.micro_batch_size", "must be >= 0 (0 = the whole batch)")
    need(config.sft.batch_size >= 1, "sft.batch_size", "must be >= 1")
    need(rl.rollout_chunk_prompts >= 0, "rl.rollout_chunk_prompts",
         "must be >= 0 (0 = all of a step's prompts in one sampler call)")
    need(rl.logprob_chunk_size >= 1, "rl.logprob_chunk_size", "must be >= 1")
    need(rl.max_completion_length >= 1, "rl.max_completion_length", "must be >= 1")
    need(config.judge.max_resamples >= 0, "judge.max_resamples", "must be >= 0")
    need(0 <= config.reward.min_judged_fraction <= 1, "reward.min_judged_fraction",
         "must be in [0, 1]")
    need(rl.max_sequence_length >= 0, "rl.max_sequence_length", "must be >= 0 (0 = no limit)")
    need(
        not rl.max_sequence_length
        or rl.max_prompt_length + rl.max_completion_length <= rl.max_sequence_length,
        "rl.max_sequence_length",
        f"is {rl.max_sequence_length}, but rl.max_prompt_length + rl.max_completion_length = "
        f"{rl.max_prompt_length} + {rl.max_completion_length} does not fit in it",
    )
    need(rl.advantage.std_ddof >= 0, "rl.advantage.std_ddof", "must be >= 0")
    need(rl.advantage.epsilon >= 0, "rl.advantage.epsilon", "must be >= 0")
    need(0 <= loss.epsilon_low < 1, "rl.loss.epsilon_low", "must be in [0, 1)")
    need(loss.epsilon_high >= 0, "rl.loss.epsilon_high", "must be >= 0")
    need(
        loss.dual_clip == 0 or loss.dual_clip > 1,
        "rl.loss.dual_clip",
        f"is {loss.dual_clip}; it must be 0 (off) or a constant > 1",
    )
    need(rl.kl.beta >= 0, "rl.kl.beta", "must be >= 0")
    need(rl.kl.clamp >= 0, "rl.kl.clamp", "must be >= 0 (0 disables)")

    need(optim.learning_rate > 0, "optim.learning_rate", "must be > 0")
    need(0 <= optim.warmup_fraction < 1, "optim.warmup_fraction", "must be in [0, 1)")
    need(optim.num_steps >= 1, "optim.num_steps", "must be >= 1")
    need(optim.max_grad_norm >= 0, "optim.max_grad_norm", "must be >= 0 (0 disables)")
    need(0 <= optim.beta1 < 1, "optim.beta1", "must be in [0, 1)")
    need(0 <= optim.beta2 < 1, "optim.beta2", "must be in [0, 1)")

    need(config.checkpoint.max_to_keep >= 1, "checkpoint.max_to_keep", "must be >= 1")
    need(config.model.attention_chunk >= 0, "model.attention_chunk", "must be >= 0 (0 = off)")
    for name, weight in config.reward.category_weights.items():
        need(weight > 0, f"reward.category_weights.{name}", "must be > 0")
    need(
        config.healthbench.bootstrap_samples >= 1, "healthbench.bootstrap_samples", "must be >= 1"
    )

    evaluation = config.eval
    need(evaluation.limit >= 0, "eval.limit", "must be >= 0 (0 = all)")
    need(evaluation.gpqa_runs >= 1, "eval.gpqa_runs", "must be >= 1")
    need(evaluation.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
    need(evaluation.batch_size >= 1, "eval.batch_size", "must be >= 1")
    need(evaluation.grader_max_tokens >= 1, "eval.grader_max_tokens", "must be >= 1")
    need(
        math.isfinite(evaluation.grader_threshold) and 0 <= evaluation.grader_threshold <= 1,
        "eval.grader_threshold",
        f"is {evaluation.grader_threshold!r}; it must be a probability in [0, 1] (criteria_met = "
        "P(true) >= threshold)",
    )
    if evaluation.grader_scoring == "verdict_probs":
        judge_setting = f"judge.backend={config.judge.backend!r}"
        if config.judge.backend == "jax":
            judge_setting = f"judge.scoring={config.judge.scoring!r}"
        need(
            config.judge.backend == "jax" and config.judge.scoring == "verdict_probs",
            "eval.grader_scoring",
            f"is 'verdict_probs' but {judge_setting}: reading P(true) needs the in-process judge "
            "with judge.backend='jax' and judge.scoring='verdict_probs' (the http judge only "
            "writes replies; use eval.grader_scoring='generate' with it)",
        )
        need(
            evaluation.grader_prompt != "simple_evals",
            "eval.grader_scoring",
            "is 'verdict_probs' but eval.grader_prompt is 'simple_evals', whose reply puts the "
            "explanation before the verdict; use eval.grader_prompt='rar_jax' (verdict first)",
        )
    need(evaluation.grader_max_resamples >= 0, "eval.grader_max_resamples", "must be >= 0")
    need(
        not evaluation.gpqa_verifier_model or config.judge.backend == "http",
        "eval.gpqa_verifier_model",
        f"is {evaluation.gpqa_verifier_model!r} but judge.backend is "
        f"{config.judge.backend!r}; a verifier model is an HTTP model name (judge.backend=http)",
    )

    data = config.data
    need(data.train_limit >= 0, "data.train_limit", "must be >= 0 (0 = all)")
    need(data.eval_size >= 0, "data.eval_size", "must be >= 0")
    need(data.max_rubric_chars >= 0, "data.max_rubric_chars", "must be >= 0 (0 = no limit)")
    need(
        not (data.eval_path and data.eval_size),
        "data.eval_size",
        f"is {data.eval_size} but data.eval_path is set; hold out from the train file or use a "
        "separate eval file, not both",
    )
    dist = config.distributed
    need(dist.num_processes >= 0, "distributed.num_processes", "must be >= 0 (0 = auto-detect)")
    need(dist.process_id >= -1, "distributed.process_id", "must be >= -1 (-1 = auto-detect)")

    judge = config.judge
    need(judge.devices >= 0, "judge.devices", "must be >= 0 (0 = share the policy's devices)")
    need(
        judge.devices == 0 or judge.backend == "jax",
        "judge.devices",
        f"is {judge.devices} but judge.backend is {judge.backend!r}; only the jax judge runs on devices",
    )
    if num_devices is not None and judge.devices:
        need(
            judge.devices < num_devices,
            "judge.devices",
            f"is {judge.devices}, but only {num_devices} devices exist; the policy needs at least one",
        )
        num_devices = max(num_devices - judge.devices, 1)
    need(judge.batch_size >= 1, "judge.batch_size", "must be >= 1")
    need(judge.max_tokens >= 1, "judge.max_tokens", "must be >= 1")
    need(0 <= judge.min_verdict_mass <= 1, "judge.min_verdict_mass", "must be in [0, 1]")
    need(judge.http.max_concurrency >= 1, "judge.http.max_concurrency", "must be >= 1")
    need(judge.http.max_attempts >= 1, "judge.http.max_attempts", "must be >= 1")
    need(judge.http.timeout_s > 0, "judge.http.timeout_s", "must be > 0")
    need(
        judge.backend != "http" or judge.http.base_url.startswith(("http://", "https://")),
        "judge.http.base_url",
        f"is {judge.http.base_url!r}; the http judge needs an http(s) URL",
    )

    errors.extend(_check_rubric_generation(config.rubric_generation))
    errors.extend(_check_alignment(config.alignment))
    errors.extend(_check_mesh(config.mesh, num_devices))
    return errors


def _check_positive(section: str, values: Mapping[str, Any], keys: tuple[str, ...],
                    minimum: float) -> list[str]:
    """An error for each ``section.key`` of ``keys`` below ``minimum``."""
    return [f"config key '{section}.{key}' must be >= {minimum}, got {values[key]!r}"
            for key in keys if values[key] < minimum]


def _check_rubric_generation(settings: config_dict.ConfigDict) -> list[str]:
    """``rubric_generation.*`` (rar-rubrics, and the generated rubrics of rar-judge-alignment)."""
    errors = _check_positive("rubric_generation", settings, (
        "max_attempts", "max_tokens", "min_items", "batch_size"), 1)
    errors += _check_positive("rubric_generation", settings, (
        "temperature", "retry_temperature", "limit"), 0)
    if settings.max_items < settings.min_items:
        errors.append(f"config key 'rubric_generation.max_items' is {settings.max_items}, below "
                      f"rubric_generation.min_items={settings.min_items}")
    return errors


def _check_alignment(settings: config_dict.ConfigDict) -> list[str]:
    """``alignment.*`` (rar-judge-alignment): list items, model specs and ranges."""
    from rar_jax.eval import judge_alignment
    from rar_jax.eval.judge_alignment_run import split_list

    errors = _check_positive("alignment", settings, ("perturb_max_tokens", "batch_size"), 1)
    errors += _check_positive("alignment", settings, ("limit", "perturb_temperature"), 0)
    conditions = split_list(settings.conditions)
    unknown = [c for c in conditions if c not in judge_alignment.CONDITIONS]
    if unknown or not conditions:
        errors.append(f"config key 'alignment.conditions' is {settings.conditions!r}; expected "
                      f"comma-separated names of {', '.join(judge_alignment.CONDITIONS)}")
    if not split_list(settings.judges):
        errors.append("config key 'alignment.judges' is empty; give at least one judge")
    for key in ("judges", "generator", "rubric_generator"):
        for spec in split_list(settings[key]):
            try:
                judge_alignment.parse_model_spec(spec)
            except ValueError as error:
                errors.append(f"config key 'alignment.{key}': {error}")
    if not 0 < settings.confidence < 1:
        errors.append(f"config key 'alignment.confidence' is {settings.confidence}; it must be "
                      "in (0, 1)")
    return errors


def _check_mesh(mesh: config_dict.ConfigDict, num_devices: int | None) -> list[str]:
    """The mesh's sizes; with ``num_devices`` unknown only their form (positive, one -1)."""
    sizes = (mesh.data, mesh.fsdp, mesh.tensor)
    if num_devices is None:
        num_devices = math.prod(size for size in sizes if size > 0)
    try:
        mesh_shape(*sizes, num_devices)
    except ValueError as error:
        return [f"config key 'mesh': {error}"]
    return []


def validate(config: config_dict.ConfigDict, *, num_devices: int | None = None) -> None:
    """Raises ConfigError listing every problem of ``config``, each naming its key.

    Args:
      config: a finished config (an experiment file's result with overrides applied).
      num_devices: when given, the mesh must fit this many devices (``jax.device_count()``).
    """
    errors = _check_schema(config, base_config())
    if not errors:
        errors = _check_choices(config) + _check_values(config, num_devices)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
