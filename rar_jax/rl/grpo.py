"""GRPO functions bound to a config: the one place where ``config.rl`` reaches the pure math.

The math in :mod:`advantages`, :mod:`logprobs` and :mod:`losses` takes every option as a keyword
argument; these builders read the ``rl`` section once and return functions of arrays only, ready
for ``jax.jit`` (all options are static Python values baked in by ``functools.partial``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ml_collections import config_dict

from rar_jax.rl import advantages, logprobs, losses


def advantage_fn(rl: config_dict.ConfigDict) -> Callable[..., advantages.AdvantageOutput]:
    """``rewards f32[num_prompts * G] -> AdvantageOutput`` with ``rl.advantage`` and G bound."""
    return functools.partial(
        advantages.group_advantages,
        num_generations=rl.num_generations,
        scale=rl.advantage.scale,
        std_ddof=rl.advantage.std_ddof,
        epsilon=rl.advantage.epsilon,
    )


def logprob_fn(rl: config_dict.ConfigDict, *, temperature: float) -> Callable[..., tuple]:
    """``(hidden [b, t, d], lm_head [d, v], targets [b, t]) -> (logprobs, entropy)``, chunked.

    ``temperature`` is the sampling temperature, so the log-probs are those of the distribution
    the answers were drawn from.
    """
    return functools.partial(
        logprobs.chunked_token_logprobs, chunk_size=rl.logprob_chunk_size, temperature=temperature
    )


def policy_loss_fn(rl: config_dict.ConfigDict) -> Callable[..., losses.LossOutput]:
    """``(logprobs, old_logprobs, advantages, mask, ref_logprobs=None, entropy=None) -> LossOutput``.

    Binds ``rl.loss``, ``rl.kl`` and ``rl.max_completion_length``. With ``rl.kl.beta == 0`` the
    reference log-probs are never needed (pass None).
    """
    return functools.partial(
        losses.policy_loss,
        aggregation=rl.loss.aggregation,
        epsilon_low=rl.loss.epsilon_low,
        epsilon_high=rl.loss.epsilon_high,
        dual_clip=rl.loss.dual_clip,
        importance_ratio=rl.loss.importance_ratio,
        beta=rl.kl.beta,
        kl_estimator=rl.kl.estimator,
        kl_clamp=rl.kl.clamp,
        max_completion_length=rl.max_completion_length,
    )
