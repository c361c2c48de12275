"""Sampling rules: the settings of a generation call and how one next token is picked.

Greedy takes the argmax of the logits. Otherwise a token is drawn from ``softmax(logits /
temperature)``, optionally truncated to the ``top_k`` most likely tokens and then to the nucleus of
mass ``top_p`` (the smallest set of the most likely remaining tokens whose renormalised probability
reaches ``top_p``; the most likely token is always kept).

The log-prob returned with each token is ``log_softmax(logits / temperature)[token]``, under the
tempered, UNTRUNCATED distribution (top-k / top-p are ignored for the log-prob, also under greedy
decoding). This is what ``rar_jax.rl.logprobs.token_logprobs(logits, targets, temperature=T)``
recomputes in the trainer, so the sampler's values are directly usable as GRPO's old log-probs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Why a row stopped (`rar_jax.models.sampler.SampleOutput.finish_reasons`).
FINISH_EOS = "eos"
FINISH_STOP_STRING = "stop"
FINISH_LENGTH = "length"


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        max_new_tokens: most tokens generated per row (a static shape: changing it recompiles).
        temperature: logits are divided by it before sampling and for the returned log-probs (> 0).
        top_k: keep only the k most likely tokens (0 = off). Static: each value compiles once.
        top_p: keep the smallest set of most likely tokens with this much mass (1.0 = off).
        greedy: take the argmax instead of sampling (temperature / top-k / top-p then only affect the
            returned log-probs, which use the temperature).
        num_samples: rows sampled per prompt; each prompt is prefilled once.
        stop_strings: generation of a row ends when its decoded text contains one of these.
        stop_check_interval: decode steps between host checks for stop strings.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    num_samples: int = 1
    stop_strings: tuple[str, ...] = ()
    stop_check_interval: int = 32

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise ValueError(
                f"SamplingParams.{field} = {getattr(self, field)!r}; expected {expected}"
            )

        if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            fail("max_new_tokens", "an integer >= 1")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            fail("temperature", "a finite float > 0 (use greedy=True for argmax decoding)")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            fail("top_k", "an integer >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "a float in (0, 1] (1 = off)")
        if not isinstance(self.num_samples, (int, np.integer)) or self.num_samples < 1:
            fail("num_samples", "an integer >= 1")
        if isinstance(self.stop_strings, str) or any(
            not isinstance(s, str) or not s for s in self.stop_strings
        ):
            fail("stop_strings", "a tuple of non-empty strings")
        if not isinstance(self.stop_check_interval, (int, np.integer)) or self.stop_check_interval < 1:
            fail("stop_check_interval", "an integer >= 1")


def sample_next_tokens(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array | float,
    top_p: jax.Array | float,
    *,
    top_k: int = 0,
    use_top_p: bool = False,
    greedy: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row and its tempered log-prob.

    Args:
        logits: float[b, v] next-token logits.
        key: PRNG key for the draw (unused when greedy).
        temperature: scalar > 0; the sampling distribution is ``softmax(logits / temperature)``.
        top_p: scalar in (0, 1]; nucleus mass (used only when `use_top_p`).
        top_k: static; keep the k most likely tokens (0 or >= v: off).
        use_top_p: static; apply the nucleus truncation (after top-k, on the renormalised mass).
        greedy: static; argmax instead of a draw.

    Returns:
        tokens int32[b]; logprobs float32[b] = ``log_softmax(logits / temperature)[token]`` (the
        tempered distribution before any top-k / top-p truncation).
    """
    scaled = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    log_probs = jax.nn.log_softmax(scaled, axis=-1)
    vocab = scaled.shape[-1]
    if greedy:
        tokens = jnp.argmax(scaled, axis=-1).astype(jnp.int32)
    elif (0 < top_k < vocab) or use_top_p:
        k = top_k if 0 < top_k < vocab else vocab
        values, indices = jax.lax.top_k(scaled, k)  # descending
        if use_top_p:
            probs = jax.nn.softmax(values, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs
            keep = mass_before < jnp.asarray(top_p, jnp.float32)
            keep = keep.at[:, 0].set(True)
            values = jnp.where(keep, values, -jnp.inf)
        choice = jax.random.categorical(key, values, axis=-1)
        tokens = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    else:
        tokens = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    token_log_probs = jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]
    return tokens, token_log_probs


def find_stop_string(text: str, stop_strings: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in `text`, or -1."""
    hits = [index for index in (text.find(s) for s in stop_strings) if index >= 0]
    return min(hits) if hits else -1
