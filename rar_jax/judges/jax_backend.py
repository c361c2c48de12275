"""In-process JAX judge: verdicts read off the judge's next-token distribution, or generated.

:class:`JaxJudge` holds a judge :class:`~rar_jax.models.Decoder` and its tokenizer. Its scoring is
two jitted functions of ``(params, token arrays)``; the parameters are arguments (``nnx.split``
state), so they can live on a mesh beside the policy and be swapped without recompiling.

**Verdict scoring** (``scoring="verdict_probs"``, the default; no decoding). For a
:class:`~rar_jax.judges.prompts.JudgePrompt` the judge sees
``apply_chat_template(messages, add_generation_prompt=True) + verdict_prefix`` and we read the
probability of each verdict *option* (a word such as ``true`` or ``7``) continuing it:

- Tokenization is exact: every option's full text ``context + prefix + word`` is tokenized, the
  longest common token prefix of those sequences is the context and the rest of each sequence is
  that option's continuation (:func:`tokenize_verdict_prompt`). So the ids are the ones the
  tokenizer produces right after the prefix: for SmolLM2 and ``{"criteria_met": `` (which ends
  with a space) the context ends at ``":`` and the options are the single tokens `` true`` and
  `` false``; for ``{"rating": `` the options are ``1`` .. ``9`` and ``1`` ``0`` (SmolLM2 splits
  digits).
- ``log P(option) = sum_j log p(c_j | context, c_<j)`` (chain rule over its continuation tokens;
  the tokens after the first are scored by a second forward through the KV cache). For ratings
  (``RATING_OPTIONS``) the option must also *end* there: ``log P`` adds the log-mass of the next
  token not starting with a digit, so ``"1"`` means "1 followed by a non-digit" and excludes the
  mass of ``"10"``..``"19"``, and ``"10"`` excludes ``"100"``.
- Binary (:meth:`JaxJudge.score_binary`): ``P(true) = P(true) / (P(true) + P(false))``; the
  *mass* ``P(true) + P(false)`` is recorded as a diagnostic (a low mass means the judge wanted to
  write something else). Ratings (:meth:`JaxJudge.score_rating`): the expected rating under the
  distribution renormalised over 1..10 (:func:`rar_jax.judges.aggregation.expected_rating`), mass
  ``sum_r P(r)``.

**Batching.** Rows are sorted by length and cut into chunks of at most ``batch_size`` rows; a
chunk is LEFT-padded to a length bucket (``LENGTH_BUCKETS``; beyond the largest, multiples of it)
and to a row bucket (powers of two up to ``batch_size``), with per-row positions starting at 0 at
the row's first real token and an explicit attention mask. Shapes inside a bucket are static:
nothing recompiles (:meth:`JaxJudge.compile_counts`).

**Prefix reuse** (``prefix_reuse=True``, config ``judge.prefix_reuse``). Prompts carry a group id
(the reward functions use the answer's row): the k criterion prompts of one answer share a long
token prefix (system text, conversation, answer). Per group, the longest common token prefix of
its contexts (leaving every row at least one token) is prefilled ONCE into a KV cache, the cache
rows are replicated for the group's prompts, and only the k suffixes (criterion, instruction,
verdict prefix) and the options are run. The result equals the no-reuse path up to float
rounding; :attr:`JaxJudge.last_stats` counts the tokens processed either way.

**Generate-and-parse** (``scoring="generate"``): the judge writes the JSON its prompt asks for
(greedy, at most ``max_tokens`` tokens) through a :class:`TextGenerator`
(:class:`SamplerGenerator` adapts :class:`rar_jax.models.sampler.Sampler`), parsed by
:mod:`rar_jax.judges.parsing`; an unparseable reply gives NaN and the parser's reason.

Failures are NaN plus a reason, never 0: non-finite log-probabilities, options with zero
probability, a mass below ``min_verdict_mass``, or an unparseable reply.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.judges import parsing
from rar_jax.judges.aggregation import expected_rating
from rar_jax.judges.prompts import JudgePrompt
from rar_jax.models.batching import bucket_size, left_pad, power_of_two_buckets
from rar_jax.models.cache import KVCache
from rar_jax.models.decoder import Decoder
from rar_jax.models.prefix_decoding import shared_prefix_length

__all__ = [
    "BINARY_OPTIONS",
    "LENGTH_BUCKETS",
    "RATING_OPTIONS",
    "SCORING_MODES",
    "GenerationResult",
    "JaxJudge",
    "Judgments",
    "SamplerGenerator",
    "ScoringStats",
    "TextGenerator",
    "TokenizedVerdictPrompt",
    "VerdictOptions",
    "digit_start_mask",
    "shared_prefix_length",
    "tokenize_verdict_prompt",
]

logger = logging.getLogger(__name__)

SCORING_MODES = ("verdict_probs", "generate")
# Context lengths are padded up to one of these (steps of 1.5x / 1.33x: at most a third is padding).
LENGTH_BUCKETS = (
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    1024,
    1536,
    2048,
    3072,
    4096,
    6144,
    8192,
)


@dataclasses.dataclass(frozen=True)
class VerdictOptions:
    """The verdict words read after a prompt's ``verdict_prefix``.

    Attributes:
        words: the option texts written right after the prefix, e.g. ``("true", "false")``.
        values: the value of each option (1.0 / 0.0 for true / false, the rating for ratings).
        non_digit_terminated: an option counts only when the token after it does not start with
            a digit (ratings: "1" must not be the start of "10").
    """

    words: tuple[str, ...]
    values: tuple[float, ...]
    non_digit_terminated: bool

    def __post_init__(self) -> None:
        if len(self.words) < 2 or len(self.words) != len(self.values):
            raise ValueError("VerdictOptions: expected >= 2 words and one value per word")
        if len(set(self.words)) != len(self.words) or not all(self.words):
            raise ValueError(f"VerdictOptions: words must be distinct and non-empty: {self.words}")


BINARY_OPTIONS = VerdictOptions(("true", "false"), (1.0, 0.0), non_digit_terminated=False)
RATING_OPTIONS = VerdictOptions(
    tuple(str(rating) for rating in range(1, 11)),
    tuple(float(rating) for rating in range(1, 11)),
    non_digit_terminated=True,
)


@dataclasses.dataclass(frozen=True)
class Judgments:
    """What a judge backend returns for m prompts.

    Attributes:
        values: f32[m], P(true) (binary) or the (expected) rating; NaN where the judgment failed.
        reasons: why each failed judgment failed (None where it succeeded).
        mass: f32[m], probability mass the verdict options got (verdict scoring); NaN where not
            measured (generate-and-parse, HTTP) or failed.
    """

    values: np.ndarray
    reasons: list[str | None]
    mass: np.ndarray


@dataclasses.dataclass
class ScoringStats:
    """Work done by the last verdict-scoring call (tokens are summed over all forwards).

    Attributes:
        prompts: prompts scored.
        real_tokens: real (non-padding) context tokens run through the model (shared prefixes
            counted once per group when prefix reuse is on).
        padded_tokens: context token slots run, padding included.
        option_tokens: option continuation token slots run in the second forward (0 when every
            option is one token and needs no terminator).
        forwards: jitted calls made.
    """

    prompts: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    option_tokens: int = 0
    forwards: int = 0


@dataclasses.dataclass(frozen=True)
class TokenizedVerdictPrompt:
    """A prompt split into context ids and one continuation per verdict option.

    Attributes:
        context: the token ids every option continues (chat template + prefix, up to the first
            token where the options differ).
        continuations: per option, its continuation ids (>= 1 token each).
    """

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def tokenize_verdict_prompt(
    tokenizer: Any, prompt: JudgePrompt, words: Sequence[str]
) -> TokenizedVerdictPrompt:
    """Splits ``template(messages) + verdict_prefix + word`` into context and continuations.

    Args:
        tokenizer: a :class:`rar_jax.models.tokenizer.Tokenizer`.
        prompt: a judge prompt with a ``verdict_prefix`` (not None).
        words: the option words.

    Returns:
        The context (the longest common token prefix of the options' full tokenizations, leaving
        each option at least one token) and each option's continuation.
    """
    if prompt.verdict_prefix is None:
        raise ValueError(
            "verdict scoring needs a prompt with a verdict_prefix; this prompt has none "
            "(use judge.scoring = 'generate')"
        )
    text = tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True)
    text += prompt.verdict_prefix
    full = [tokenizer.encode(text + word) for word in words]
    context_length = min(shared_prefix_length(full), min(len(ids) for ids in full) - 1)
    if context_length < 1:
        raise ValueError("verdict scoring: the prompt tokenizes to no context before the verdict")
    continuations = tuple(tuple(ids[context_length:]) for ids in full)
    if len(set(continuations)) != len(continuations):
        raise ValueError(f"verdict options {tuple(words)} tokenize to identical continuations")
    return TokenizedVerdictPrompt(tuple(full[0][:context_length]), continuations)


def digit_start_mask(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """bool[vocab_size]: True for ids whose decoded text starts with a decimal digit 0-9.

    Ids the tokenizer does not know (padded embedding rows) are False.
    """
    mask = np.zeros(vocab_size, bool)
    known = min(vocab_size, int(tokenizer.vocab_size))
    for token_id in range(known):
        text = tokenizer.decode([token_id])
        mask[token_id] = bool(text) and text[0] in "0123456789"
    return mask


def _project_log_softmax(model: Decoder, hidden: jax.Array) -> jax.Array:
    """Log-softmax of the LM head applied to hidden states ``[..., d]`` -> f32[..., vocab]."""
    return jax.nn.log_softmax(model.logits(hidden), axis=-1)


def _prefill_prefixes(
    graphdef: Any,
    params: Any,
    tokens: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
) -> KVCache:
    """Runs shared prefixes into a KV cache.

    Args:
        graphdef: the judge's ``nnx`` graph definition (static).
        params: its state.
        tokens, positions: int32[g, p], left-padded prefixes.
        mask: bool[g, p], True on real tokens.

    Returns:
        KVCache of g rows and p slots, ``end_index == p``.
    """
    model = nnx.merge(graphdef, params)
    return model.prefill(tokens, positions, attention_mask=mask)[1]


def _extend_cache(cache: KVCache, row_source: jax.Array, extra_slots: int) -> KVCache:
    """Rows ``row_source`` of ``cache`` with ``extra_slots`` empty slots appended (int32[r])."""
    return cache.take_rows(row_source).grown(cache.max_len + extra_slots)


def _score_options(
    graphdef: Any,
    params: Any,
    prefix_cache: KVCache | None,
    row_source: jax.Array,
    tokens: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    option_tokens: jax.Array,
    option_mask: jax.Array,
    non_digit: jax.Array,
    *,
    terminated: bool,
) -> jax.Array:
    """Log-probabilities of the verdict options after each context.

    Args:
        graphdef: the judge's graph definition (static).
        params: its state.
        prefix_cache: KVCache of g shared prefixes, or None (contexts are complete).
        row_source: int32[r], the prefix row each context continues (ignored without a cache).
        tokens, positions: int32[r, t], left-padded contexts (or context suffixes).
        mask: bool[r, t], True on real tokens.
        option_tokens: int32[r, R, O], each option's continuation, right-padded.
        option_mask: bool[r, R, O], True on real continuation tokens (position 0 always real).
        non_digit: bool[vocab], True for ids that do not start with a digit.
        terminated: static; add ``log P(next token does not start with a digit)`` after each
            option.

    Returns:
        f32[r, R], ``log P(option | context)`` by the chain rule (plus the terminator term).
    """
    model = nnx.merge(graphdef, params)
    rows, time = tokens.shape
    option_length = option_tokens.shape[2]
    extra = time + option_length
    single_token = option_length == 1 and not terminated  # no option step follows the context
    if prefix_cache is None:  # slots for the options only when an option step reads them
        hidden, cache = model.prefill(tokens, positions, attention_mask=mask,
                                      max_len=None if single_token else extra)
    elif single_token:  # the context's keys are never read again: nothing to write
        hidden = model.extend(tokens, positions, prefix=prefix_cache.take_rows(row_source),
                              attention_mask=mask)
    else:
        hidden, cache = model(tokens, positions, attention_mask=mask, return_hidden=True,
                              cache=_extend_cache(prefix_cache, row_source, extra))
    first_log_probs = _project_log_softmax(model, hidden[:, -1])  # [r, vocab]
    scores = jnp.take_along_axis(first_log_probs, option_tokens[:, :, 0], axis=-1)  # [r, R]
    if single_token:
        return scores

    next_positions = positions[:, -1] + 1
    step_positions = next_positions[:, None] + jnp.arange(option_length, dtype=jnp.int32)[None, :]
    base_end = cache.end_index

    def one_option(
        carry: KVCache, option: tuple[jax.Array, jax.Array]
    ) -> tuple[KVCache, jax.Array]:
        option_ids, option_real = option  # [r, O] each
        # Every option is written at the same slots (after the context), overwriting the last one.
        out, carry = model(
            option_ids,
            step_positions,
            attention_mask=option_real,
            cache=carry._replace(end_index=base_end),
            return_hidden=True,
        )
        log_probs = _project_log_softmax(model, out)  # [r, O, vocab]
        later = jnp.take_along_axis(log_probs[:, :-1], option_ids[:, 1:, None], axis=-1)[..., 0]
        total = jnp.sum(jnp.where(option_real[:, 1:], later, 0.0), axis=-1)
        if terminated:
            last = jnp.sum(option_real, axis=-1) - 1
            final = jnp.take_along_axis(log_probs, last[:, None, None], axis=1)[:, 0]  # [r, V]
            total = total + jax.nn.logsumexp(jnp.where(non_digit, final, -jnp.inf), axis=-1)
        return carry, total

    _, rest = jax.lax.scan(
        one_option,
        cache,
        (jnp.swapaxes(option_tokens, 0, 1), jnp.swapaxes(option_mask, 0, 1)),
    )
    return scores + rest.T


# Shared by every JaxJudge (judges of the same architecture reuse each other's compilations)
# and compiled ahead of time by rar_jax.aot.
PREFILL_PREFIXES = jax.jit(_prefill_prefixes, static_argnames=("graphdef",))
SCORE_OPTIONS = jax.jit(_score_options, static_argnames=("graphdef", "terminated"))


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Texts generated for m prompts and why each stopped ("eos", "stop", "length").

    ``errors``: per prompt, why no text was generated (an HTTP failure; its text is ""), None
    where a text was; None for the whole list when nothing failed (the JAX paths).
    """

    texts: list[str]
    finish_reasons: list[str]
    errors: list[str | None] | None = None


class TextGenerator(Protocol):
    """Generation for generate-and-parse (a narrow adapter over a sampler)."""

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, params: Any,
        temperature: float = 0.0, seed: int = 0,
    ) -> GenerationResult:
        """Answers of at most ``max_new_tokens`` tokens to chat-formatted prompts: greedy at
        temperature 0, else sampled with ``seed``."""
        ...


class SamplerGenerator:
    """:class:`TextGenerator` over :class:`rar_jax.models.sampler.Sampler` (greedy decoding).

    Args:
        model: the judge decoder.
        tokenizer: its tokenizer (stop ids, pad id, decoding).
        seed: PRNG seed (greedy decoding does not use it; the sampler needs a key).
    """

    def __init__(self, model: Decoder, tokenizer: Any, *, seed: int = 0):
        from rar_jax.models.sampler import Sampler

        self._sampler = Sampler(model, tokenizer)
        self._key = jax.random.key(seed)

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, params: Any,
        temperature: float = 0.0, seed: int = 0,
    ) -> GenerationResult:
        """Answers through the sampler with the given judge parameters: greedy at temperature 0,
        else sampled with ``fold_in(key, seed)``."""
        from rar_jax.models.sampler import SamplingParams

        greedy = temperature == 0
        sampling = SamplingParams(max_new_tokens=int(max_new_tokens), greedy=greedy,
                                  temperature=1.0 if greedy else float(temperature))
        key = self._key if greedy else jax.random.fold_in(self._key, seed)
        output = self._sampler.generate(prompt_ids, sampling, key, params=params)
        return GenerationResult(list(output.texts), list(output.finish_reasons))


# A judge reply with no usable verdict is asked again at this temperature (attempt i with seed
# i): a greedy re-ask would write the same reply.
RESAMPLE_TEMPERATURE = 1.0

# ask(rows, attempt) -> per row (reply text or None, request error or None, finish reason).
AskFn = Callable[[list[int], int], list[tuple[str | None, str | None, str]]]


def judge_with_resamples(
    count: int, ask: AskFn, parse: Callable[[str], parsing.ParseResult[Any]], max_resamples: int
) -> Judgments:
    """Judgments of ``count`` prompts by generate-and-parse, re-asking unusable replies.

    Attempt 0 asks every prompt greedily; a reply that does not parse (no verdict, out of range,
    contradictory) is asked again, up to ``max_resamples`` times, sampled (``ask`` receives the
    attempt number and samples at :data:`RESAMPLE_TEMPERATURE` with seed = attempt when it is
    > 0). A failed request is not re-asked here (the HTTP client already retried it). What still
    fails keeps its last reason, with the number of attempts.
    """
    values = np.full(count, np.nan, np.float32)
    reasons: list[str | None] = [None] * count
    pending = list(range(count))
    for attempt in range(max_resamples + 1):
        if not pending:
            break
        if attempt:
            logger.info("re-asking %d judge prompts with unusable replies (re-sample %d of %d)",
                        len(pending), attempt, max_resamples)
        unusable = []
        for row, (text, error, finish) in zip(pending, ask(pending, attempt)):
            if error is not None or text is None:
                reasons[row] = f"judge request failed: {error}"
                continue
            parsed = parse(text)
            if parsed.ok:
                values[row], reasons[row] = float(parsed.value), None
                continue
            cut = " (cut at max_tokens)" if finish == "length" else ""
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            reasons[row] = f"invalid judge reply{cut}{tries}: {parsed.reason}"
            unusable.append(row)
        pending = unusable
    return Judgments(values, reasons, np.full(count, np.nan, np.float32))


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class JaxJudge:
    """An in-process judge (see the module docstring).

    Args:
        model: the judge decoder; its current parameters are the default weights.
        tokenizer: its :class:`rar_jax.models.tokenizer.Tokenizer`.
        scoring: "verdict_probs" (read verdict probabilities) or "generate" (generate and parse).
        prefix_reuse: prefill each group's shared prefix once (verdict scoring).
        batch_size: most rows per jitted call (also the largest row bucket).
        max_tokens: most tokens generated per reply in generate mode.
        max_resamples: generate mode: re-ask a prompt whose reply has no usable verdict up to this
            many times, sampled (:func:`judge_with_resamples`).
        min_verdict_mass: a verdict whose options got less probability mass than this is a
            failure (NaN with a reason); 0 accepts any positive mass.
        generator: the :class:`TextGenerator` for generate mode; default a
            :class:`SamplerGenerator` over ``model`` (created on first use).
        length_buckets: increasing context lengths rows are padded up to (see
            :func:`~rar_jax.models.batching.bucket_size`).
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer: Any,
        *,
        scoring: str = "verdict_probs",
        prefix_reuse: bool = True,
        batch_size: int = 16,
        max_tokens: int = 64,
        max_resamples: int = 0,
        min_verdict_mass: float = 0.0,
        generator: TextGenerator | None = None,
        length_buckets: Sequence[int] = LENGTH_BUCKETS,
    ):
        if scoring not in SCORING_MODES:
            raise ValueError(
                f"judge scoring {scoring!r}: expected one of {', '.join(SCORING_MODES)}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"judge batch_size: expected an integer >= 1, got {batch_size!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"judge max_tokens: expected an integer >= 1, got {max_tokens!r}")
        if not 0.0 <= float(min_verdict_mass) <= 1.0:
            raise ValueError(
                f"judge min_verdict_mass: expected a number in [0, 1], got {min_verdict_mass!r}"
            )
        self.model = model
        self.graphdef, self.params = nnx.split(model)
        self.tokenizer = tokenizer
        self.scoring = scoring
        self.prefix_reuse = bool(prefix_reuse)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.max_resamples = int(max_resamples)
        self.min_verdict_mass = float(min_verdict_mass)
        self._generator = generator
        self._text_sampler: Any = None  # Sampler of generate_texts, made on first use.
        if (
            not length_buckets
            or list(length_buckets) != sorted(set(length_buckets))
            or (length_buckets[0] < 1)
        ):
            raise ValueError(
                f"judge length_buckets: expected increasing positive lengths, got "
                f"{tuple(length_buckets)}"
            )
        self.length_buckets = tuple(int(length) for length in length_buckets)
        self._row_buckets = power_of_two_buckets(batch_size)
        self._non_digit: jax.Array | None = None
        self.last_stats = ScoringStats()
        self._prefill = PREFILL_PREFIXES
        self._score = SCORE_OPTIONS

    # ---------------------------------------------------------------- weights and diagnostics
    def set_params(self, params: Any) -> None:
        """Uses new judge weights (``nnx.split(model)[1]`` state, or a Decoder) from now on."""
        if isinstance(params, nnx.Module):
            params = nnx.split(params)[1]
        self.params = params

    def compile_counts(self) -> dict[str, int]:
        """Compiled variants of each jitted function (a new bucket shape adds one).

        The jitted functions are shared by all judges in the process, so are the counts.
        """
        return {"prefill": self._prefill._cache_size(), "score": self._score._cache_size()}

    def _non_digit_mask(self) -> jax.Array:
        if self._non_digit is None:
            vocab = int(self.model.config.vocab_size)
            self._non_digit = jnp.asarray(~digit_start_mask(self.tokenizer, vocab))
        return self._non_digit

    def _row_bucket(self, rows: int) -> int:
        return bucket_size(rows, self._row_buckets)

    # ---------------------------------------------------------------- verdict scoring
    def option_logprobs(
        self,
        prompts: Sequence[JudgePrompt],
        options: VerdictOptions,
        groups: Sequence[int] | None = None,
    ) -> np.ndarray:
        """``log P(option | prompt)`` for every prompt and option (see the module docstring).

        Args:
            prompts: m judge prompts with a verdict prefix.
            options: the verdict options.
            groups: m group ids; prompts of one group share their prefix (reused when
                ``prefix_reuse``). None: every prompt is its own group.

        Returns:
            f32[m, R] log-probabilities (unnormalised over the R options). Sets ``last_stats``.
        """
        count = len(prompts)
        if groups is None:
            groups = list(range(count))
        if len(groups) != count:
            raise ValueError(
                f"groups: expected {count} group ids (one per prompt), got {len(groups)}"
            )
        self.last_stats = ScoringStats(prompts=count)
        result = np.full((count, len(options.words)), np.nan, np.float32)
        if count == 0:
            return result
        tokenized = [tokenize_verdict_prompt(self.tokenizer, p, options.words) for p in prompts]
        option_length = max(len(c) for t in tokenized for c in t.continuations)
        if self.prefix_reuse:
            self._score_with_reuse(tokenized, list(groups), options, option_length, result)
        else:
            self._score_rows(
                tokenized,
                list(range(count)),
                None,
                None,
                [0] * count,
                options,
                option_length,
                result,
            )
        return result

    def _score_with_reuse(
        self,
        tokenized: list[TokenizedVerdictPrompt],
        groups: list[int],
        options: VerdictOptions,
        option_length: int,
        result: np.ndarray,
    ) -> None:
        members: dict[int, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        prefix_of: dict[int, tuple[int, ...]] = {}
        for group, indices in members.items():
            contexts = [tokenized[i].context for i in indices]
            shared = min(shared_prefix_length(contexts), min(len(c) for c in contexts) - 1)
            prefix_of[group] = contexts[0][:shared]
        # Groups with an empty shared prefix (one-token contexts) run without a cache.
        with_prefix = [g for g in members if prefix_of[g]]
        without = [i for g in members if not prefix_of[g] for i in members[g]]
        if without:
            self._score_rows(
                tokenized, without, None, None, [0] * len(without), options, option_length, result
            )
        with_prefix.sort(key=lambda g: len(prefix_of[g]), reverse=True)
        for start in range(0, len(with_prefix), self.batch_size):
            chunk = with_prefix[start : start + self.batch_size]
            prefixes = [prefix_of[g] for g in chunk]
            length = bucket_size(max(len(p) for p in prefixes), self.length_buckets)
            rows = self._row_bucket(len(chunk))
            tokens, positions, mask = left_pad(prefixes, length, rows, self.tokenizer.pad_id)
            cache = self._prefill(
                self.graphdef,
                self.params,
                jnp.asarray(tokens),
                jnp.asarray(positions),
                jnp.asarray(mask),
            )
            self.last_stats.real_tokens += sum(len(p) for p in prefixes)
            self.last_stats.padded_tokens += rows * length
            self.last_stats.forwards += 1
            indices = [i for g in chunk for i in members[g]]
            sources = [chunk.index(groups[i]) for i in indices]
            skips = [len(prefix_of[groups[i]]) for i in indices]
            self._score_rows(
                tokenized, indices, cache, sources, skips, options, option_length, result
            )

    def _score_rows(
        self,
        tokenized: list[TokenizedVerdictPrompt],
        indices: list[int],
        cache: KVCache | None,
        sources: list[int] | None,
        skips: list[int],
        options: VerdictOptions,
        option_length: int,
        result: np.ndarray,
    ) -> None:
        """Scores prompts ``indices`` whose first ``skips[j]`` context tokens are in ``cache``."""
        order = sorted(
            range(len(indices)), key=lambda j: len(tokenized[indices[j]].context) - skips[j]
        )
        pad_id = self.tokenizer.pad_id
        num_options = len(options.words)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            suffixes = [tokenized[indices[j]].context[skips[j] :] for j in chunk]
            length = bucket_size(max(len(s) for s in suffixes), self.length_buckets)
            rows = self._row_bucket(len(chunk))
            tokens, positions, mask = left_pad(
                suffixes, length, rows, pad_id, [skips[j] for j in chunk]
            )
            option_tokens = np.full((rows, num_options, option_length), pad_id, np.int32)
            option_mask = np.zeros((rows, num_options, option_length), bool)
            option_mask[:, :, 0] = True  # Filler rows: one real token, results dropped.
            for row, j in enumerate(chunk):
                for option, ids in enumerate(tokenized[indices[j]].continuations):
                    option_tokens[row, option, : len(ids)] = ids
                    option_mask[row, option, : len(ids)] = True
            row_source = np.zeros(rows, np.int32)
            if sources is not None:
                row_source[: len(chunk)] = [sources[j] for j in chunk]
            scores = self._score(
                self.graphdef,
                self.params,
                cache,
                jnp.asarray(row_source),
                jnp.asarray(tokens),
                jnp.asarray(positions),
                jnp.asarray(mask),
                jnp.asarray(option_tokens),
                jnp.asarray(option_mask),
                self._non_digit_mask(),
                terminated=options.non_digit_terminated,
            )
            scores = np.asarray(scores)
            for row, j in enumerate(chunk):
                result[indices[j]] = scores[row]
            self.last_stats.real_tokens += sum(len(s) for s in suffixes)
            self.last_stats.padded_tokens += rows * length
            if option_length > 1 or options.non_digit_terminated:
                self.last_stats.option_tokens += rows * num_options * option_length
            self.last_stats.forwards += 1

    def _judgments_from_logprobs(self, logprobs: np.ndarray, options: VerdictOptions) -> Judgments:
        """Normalises option log-probs into values (P(first option) or expected value) + mass."""
        count = logprobs.shape[0]
        values = np.full(count, np.nan, np.float32)
        mass = np.full(count, np.nan, np.float32)
        reasons: list[str | None] = [None] * count
        option_values = np.asarray(options.values, np.float32)
        finite_rows = ~np.any(np.isnan(logprobs) | (logprobs == np.inf), axis=-1)
        safe = np.where(finite_rows[:, None], logprobs, -np.inf)
        expected = np.asarray(expected_rating(jnp.asarray(safe), jnp.asarray(option_values)))
        total = np.exp(np.logaddexp.reduce(safe.astype(np.float64), axis=-1))
        for row in range(count):
            if not finite_rows[row]:
                reasons[row] = "non-finite verdict log-probabilities from the judge"
                continue
            mass[row] = total[row]
            if not total[row] > 0:
                reasons[row] = f"the verdict options {options.words} got zero probability"
            elif total[row] < self.min_verdict_mass:
                reasons[row] = (
                    f"verdict mass {total[row]:.3g} below min_verdict_mass "
                    f"{self.min_verdict_mass:g}"
                )
            elif not np.isfinite(expected[row]):
                reasons[row] = "non-finite verdict value"
            else:
                values[row] = expected[row]
        return Judgments(values, reasons, mass)

    # ---------------------------------------------------------------- generate and parse
    def _generate(
        self,
        prompts: Sequence[JudgePrompt],
        parse: Callable[[str], parsing.ParseResult[Any]],
    ) -> Judgments:
        if self._generator is None and prompts:
            self._generator = SamplerGenerator(self.model, self.tokenizer)
        prompt_ids = [self.tokenizer.encode_chat(prompt.messages) for prompt in prompts]

        def ask(rows: list[int], attempt: int) -> list[tuple[str | None, str | None, str]]:
            replies: list[tuple[str | None, str | None, str]] = []
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                output = self._generator.generate(
                    [prompt_ids[row] for row in chunk], self.max_tokens, self.params,
                    temperature=RESAMPLE_TEMPERATURE if attempt else 0.0, seed=attempt,
                )
                replies += [(text, None, finish)
                            for text, finish in zip(output.texts, output.finish_reasons)]
            return replies

        return judge_with_resamples(len(prompts), ask, parse, self.max_resamples)

    # ---------------------------------------------------------------- free text generation
    def generate_texts(
        self,
        list_of_messages: Sequence[Sequence[Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> GenerationResult:
        """Replies to chat conversations with the judge's current weights (e.g. rubric generation).

        Args:
            list_of_messages: m conversations of ``{"role", "content"}`` messages.
            max_tokens: most tokens per reply.
            temperature: 0 = greedy; > 0 samples from ``softmax(logits / temperature)``.
            seed: PRNG seed of the sampling; batch b uses ``fold_in(key(seed), b)``, so another
                seed gives other samples (greedy ignores it).

        Returns:
            GenerationResult with m texts, in input order, in chunks of ``batch_size`` prompts.
        """
        from rar_jax.models.sampler import Sampler, SamplingParams

        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens: expected an integer >= 1, got {max_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
        greedy = temperature == 0
        sampling = SamplingParams(
            max_new_tokens=max_tokens, greedy=greedy, temperature=1.0 if greedy else temperature
        )
        if self._text_sampler is None:
            self._text_sampler = Sampler(self.model, self.tokenizer)
        prompt_ids = [
            self.tokenizer.encode_chat(list(messages)) for messages in list_of_messages
        ]
        key = jax.random.key(seed)
        texts: list[str] = []
        reasons: list[str] = []
        for batch, start in enumerate(range(0, len(prompt_ids), self.batch_size)):
            output = self._text_sampler.generate(
                prompt_ids[start : start + self.batch_size],
                sampling,
                jax.random.fold_in(key, batch),
                params=self.params,
            )
            texts += output.texts
            reasons += output.finish_reasons
        return GenerationResult(texts, reasons)

    # ---------------------------------------------------------------- backend protocol
    def score_binary(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """P(true) per prompt (verdict scoring) or the parsed 1.0 / 0.0 (generate mode)."""
        if self.scoring == "generate":
            return self._generate(prompts, parsing.parse_criteria_met)
        logprobs = self.option_logprobs(prompts, BINARY_OPTIONS, groups)
        return self._judgments_from_logprobs(logprobs, BINARY_OPTIONS)

    def score_rating(
        self, prompts: Sequence[JudgePrompt], groups: Sequence[int] | None = None
    ) -> Judgments:
        """Expected 1-10 rating per prompt (verdict scoring) or the parsed rating (generate)."""
        if self.scoring == "generate":
            return self._generate(prompts, parsing.parse_rating)
        logprobs = self.option_logprobs(prompts, RATING_OPTIONS, groups)
        return self._judgments_from_logprobs(logprobs, RATING_OPTIONS)
