"""Tests of the in-process JAX judge: verdict probabilities against brute-force full forwards.

A tiny random decoder (2 layers, width 32, weights scaled up so that contexts change the
next-token distribution) with the real SmolLM2 tokenizer (vocab 49152, digits split). The
reference for every option is computed here without a KV cache, padding or batching: one full
forward of ``context + continuation`` per option, log-softmax in float64 numpy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rar_jax.judges import prompts
from rar_jax.judges.jax_backend import (
    BINARY_OPTIONS,
    RATING_OPTIONS,
    GenerationResult,
    JaxJudge,
    VerdictOptions,
    digit_start_mask,
    shared_prefix_length,
    tokenize_verdict_prompt,
)
from rar_jax.judges.prompts import JudgePrompt
from rar_jax.models import Decoder, ModelConfig, Tokenizer
from rar_jax.models.batching import power_of_two_buckets

REFERENCE_LENGTH = 768  # Brute-force forwards are right-padded to this many tokens (one compile).

CONVERSATIONS = [
    "What is the first-line treatment for uncomplicated hypertension in adults?",
    [
        {"role": "user", "content": "I have had a headache for two days."},
        {"role": "assistant", "content": "Do you have a fever or a stiff neck?"},
        {"role": "user", "content": "No fever. Should I see a doctor?"},
    ],
]
ANSWERS = [
    "Thiazide diuretics, ACE inhibitors, ARBs or calcium channel blockers, chosen by profile.",
    "Drink water and rest; see a doctor if it lasts more than a week or gets worse.",
    "Antibiotics.",
]
CRITERIA = [
    "Mentions thiazide diuretics.",
    "Recommends seeing a doctor when symptoms persist.",
    "Recommends antibiotics for a viral illness.",
    "Asks about the patient's blood pressure readings and other risk factors.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.embedded_smollm2()


def make_tiny_model(seed: int = 0, digit_ids: list[int] | None = None) -> Decoder:
    """A tiny llama over SmolLM2's vocabulary with large random weights (peaked outputs).

    With ``digit_ids`` the LM head is untied and pushes those tokens up after every context
    (hidden dimension 0 is made large and positive), so that ratings get real probability mass
    and "1" is often followed by another digit.
    """
    config = ModelConfig(
        architecture="llama",
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        tie_word_embeddings=digit_ids is None,
    )
    model = Decoder(config, rngs=nnx.Rngs(seed))
    model.embed[...] = model.embed[...] * 60.0
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        param = getattr(model.layers, name)
        param[...] = param[...] * 20.0
    if digit_ids is not None:
        # Digits get P(digit) of about 0.15-0.7 after any context (measured on these weights).
        model.embed[...] = model.embed[...].at[:, 0].add(20.0)
        digits = jnp.asarray(digit_ids)
        columns = 0.3 * jax.random.normal(
            jax.random.key(seed), (config.hidden_size, len(digit_ids))
        )
        head = model.lm_head[...].at[:, digits].set(columns)
        model.lm_head[...] = head.at[0, digits].add(6.0)
    return model


@pytest.fixture(scope="module")
def model() -> Decoder:
    return make_tiny_model()


@pytest.fixture(scope="module")
def explicit_prompts() -> tuple[list[JudgePrompt], list[int]]:
    """3 answers x up to 4 criteria; group = answer."""
    judge_prompts, groups = [], []
    for answer_index, answer in enumerate(ANSWERS):
        conversation = CONVERSATIONS[answer_index % 2]
        for criterion in CRITERIA[: 4 - answer_index % 2]:
            judge_prompts.append(prompts.explicit_criterion_prompt(conversation, answer, criterion))
            groups.append(answer_index)
    return judge_prompts, groups


@pytest.fixture(scope="module")
def rating_prompts() -> list[JudgePrompt]:
    return [
        prompts.direct_likert_prompt(CONVERSATIONS[0], ANSWERS[0]),
        prompts.direct_likert_prompt(CONVERSATIONS[1], ANSWERS[1]),
        prompts.reference_likert_prompt(CONVERSATIONS[0], ANSWERS[2], ANSWERS[0]),
    ]


class BruteForce:
    """Per-option log-probabilities from one uncached, unpadded-in-effect forward per option."""

    def __init__(self, model: Decoder, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        graphdef, state = nnx.split(model)
        self.head = np.asarray(model.lm_head_weight(), np.float64)  # [d, vocab]

        @jax.jit
        def hidden(state, tokens, mask):
            decoder = nnx.merge(graphdef, state)
            positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
            out, _ = decoder(tokens, positions, attention_mask=mask, return_hidden=True)
            return out

        self._hidden = lambda tokens, mask: hidden(state, tokens, mask)
        text_of = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
        self.digit = np.array([bool(t) and t[0].isdigit() and t[0].isascii() for t in text_of])

    def log_softmax_rows(self, ids: list[int], positions: list[int]) -> np.ndarray:
        """f64[len(positions), vocab]: log p(next | ids[:i+1]) at the given positions i."""
        assert len(ids) <= REFERENCE_LENGTH
        tokens = np.zeros((1, REFERENCE_LENGTH), np.int32)
        mask = np.zeros((1, REFERENCE_LENGTH), bool)
        tokens[0, : len(ids)] = ids
        mask[0, : len(ids)] = True  # Right padding: causal attention never sees it.
        hidden = np.asarray(self._hidden(jnp.asarray(tokens), jnp.asarray(mask)), np.float64)
        logits = hidden[0, positions] @ self.head
        top = logits.max(axis=-1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))

    def option_logprobs(self, prompt: JudgePrompt, words: tuple[str, ...], terminated: bool):
        text = self.tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True)
        text += prompt.verdict_prefix
        full = [self.tokenizer.encode(text + word) for word in words]
        shared = 0
        while (
            all(len(ids) > shared + 1 for ids in full) and len({ids[shared] for ids in full}) == 1
        ):
            shared += 1
        result = []
        for ids in full:
            positions = list(range(shared - 1, len(ids)))
            rows = dict(zip(positions, self.log_softmax_rows(ids, positions)))
            total = sum(rows[position - 1][ids[position]] for position in range(shared, len(ids)))
            if terminated:
                total += np.log(np.exp(rows[len(ids) - 1][~self.digit]).sum())
            result.append(total)
        return np.array(result), shared


@pytest.fixture(scope="module")
def brute(model, tokenizer) -> BruteForce:
    return BruteForce(model, tokenizer)


def test_helpers_pad_and_share():
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5], [6]]) == 0
    assert power_of_two_buckets(12) == (1, 2, 4, 8, 12)
    assert power_of_two_buckets(1) == (1,)


def test_tokenization_of_verdicts_matches_smollm2(tokenizer):
    prompt = prompts.explicit_criterion_prompt("Q?", "A.", "Says A.")
    split = tokenize_verdict_prompt(tokenizer, prompt, BINARY_OPTIONS.words)
    # '{"criteria_met": ' ends with a space that the tokenizer merges into " true" / " false".
    assert split.continuations == (
        (tokenizer.encode(" true")[0],),
        (tokenizer.encode(" false")[0],),
    )
    assert tokenizer.decode(split.context[-1:]) == '":'
    text = tokenizer.apply_chat_template(prompt.messages) + prompt.verdict_prefix
    assert tokenizer.decode(list(split.context)) == text.rstrip(" ")

    rating = tokenize_verdict_prompt(
        tokenizer, prompts.direct_likert_prompt("Q?", "A."), RATING_OPTIONS.words
    )
    one, zero = tokenizer.encode("1")[0], tokenizer.encode("0")[0]
    assert rating.continuations[0] == (one,)
    assert rating.continuations[9] == (one, zero)  # "10" is two tokens: "1" then "0".
    assert [len(c) for c in rating.continuations[:9]] == [1] * 9
    assert tokenizer.decode(rating.context[-1:]) == " "


def test_digit_mask_of_smollm2(tokenizer):
    mask = digit_start_mask(tokenizer, 49152 + 7)
    digits = sorted(tokenizer.decode([int(i)]) for i in np.flatnonzero(mask))
    assert digits == [str(d) for d in range(10)]
    assert not mask[49152:].any()


def test_prompt_without_verdict_prefix_is_refused(model, tokenizer):
    from rar_jax.rubrics.schema import Criterion, Polarity

    criterion = Criterion("", "Says A.", None, 5.0, Polarity.POSITIVE)
    grader = prompts.healthbench_grader_prompt("Q?", "A.", criterion)
    with pytest.raises(ValueError, match="verdict_prefix"):
        JaxJudge(model, tokenizer).score_binary([grader])


def test_binary_logprobs_match_brute_force(model, tokenizer, brute, explicit_prompts):
    judge_prompts, groups = explicit_prompts
    judge = JaxJudge(model, tokenizer, batch_size=4)
    got = judge.option_logprobs(judge_prompts, BINARY_OPTIONS, groups)
    expected = np.stack(
        [brute.option_logprobs(p, BINARY_OPTIONS.words, False)[0] for p in judge_prompts]
    )
    np.testing.assert_allclose(got, expected, atol=2e-4)
    # The contexts matter: the verdict probabilities differ across prompts.
    p_true = np.exp(expected[:, 0]) / np.exp(expected).sum(axis=1)
    assert np.ptp(p_true) > 0.05

    judgments = judge.score_binary(judge_prompts, groups)
    np.testing.assert_allclose(judgments.values, p_true, atol=1e-4)
    np.testing.assert_allclose(judgments.mass, np.exp(expected).sum(axis=1), rtol=1e-3)
    assert judgments.reasons == [None] * len(judge_prompts)


@pytest.fixture(scope="module")
def digit_model(tokenizer) -> Decoder:
    return make_tiny_model(seed=2, digit_ids=[tokenizer.encode(str(d))[0] for d in range(10)])


def test_rating_distribution_matches_brute_force(digit_model, tokenizer, rating_prompts):
    brute = BruteForce(digit_model, tokenizer)
    judge = JaxJudge(digit_model, tokenizer, batch_size=2)
    got = judge.option_logprobs(rating_prompts, RATING_OPTIONS)
    expected = np.stack(
        [brute.option_logprobs(p, RATING_OPTIONS.words, True)[0] for p in rating_prompts]
    )
    np.testing.assert_allclose(got, expected, atol=2e-4)

    # "1" means "1 then a non-digit"; "10" is "1", "0", then a non-digit. By hand for prompt 0:
    text = (
        tokenizer.apply_chat_template(rating_prompts[0].messages) + rating_prompts[0].verdict_prefix
    )
    one, zero = tokenizer.encode("1")[0], tokenizer.encode("0")[0]
    context = len(tokenizer.encode(text))
    # Rows: after the context, after "1", after "10" (one uncached forward of context + "10").
    after = brute.log_softmax_rows(
        tokenizer.encode(text + "10"), [context - 1, context, context + 1]
    )
    non_digit = ~brute.digit
    log_one = after[0, one] + np.log(np.exp(after[1, non_digit]).sum())
    log_ten = after[0, one] + after[1, zero] + np.log(np.exp(after[2, non_digit]).sum())
    np.testing.assert_allclose(got[0, 0], log_one, atol=2e-4)
    np.testing.assert_allclose(got[0, 9], log_ten, atol=2e-4)
    # P("1") excludes continuing with a digit, a large share of the mass with this model.
    assert got[0, 0] < after[0, one] - 0.1
    assert np.exp(got).sum(axis=1).min() > 0.05  # The ratings have real mass here.

    judgments = judge.score_rating(rating_prompts)
    probabilities = np.exp(expected - expected.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(judgments.values, probabilities @ np.arange(1, 11), atol=1e-3)
    np.testing.assert_allclose(judgments.mass, np.exp(expected).sum(axis=1), rtol=1e-3)


def test_multi_token_words_use_the_chain_rule(model, tokenizer, brute):
    prompt = JudgePrompt(
        [{"role": "user", "content": "Name a French city."}], verdict_prefix='{"city": "'
    )
    options = VerdictOptions(("Paris", "Marseille-Provence", "Lyon"), (0.0, 1.0, 2.0), False)
    split = tokenize_verdict_prompt(tokenizer, prompt, options.words)
    assert max(len(c) for c in split.continuations) >= 3  # Exercises the second forward.
    judge = JaxJudge(model, tokenizer)
    got = judge.option_logprobs([prompt], options)
    expected, _ = brute.option_logprobs(prompt, options.words, False)
    np.testing.assert_allclose(got[0], expected, atol=2e-4)
    assert judge.last_stats.option_tokens > 0


def test_prefix_reuse_equals_no_reuse(model, tokenizer, explicit_prompts, rating_prompts):
    judge_prompts, groups = explicit_prompts
    reuse = JaxJudge(model, tokenizer, prefix_reuse=True, batch_size=8)
    plain = JaxJudge(model, tokenizer, prefix_reuse=False, batch_size=8)
    with_reuse = reuse.score_binary(judge_prompts, groups)
    reuse_stats = reuse.last_stats
    without = plain.score_binary(judge_prompts, groups)
    plain_stats = plain.last_stats
    np.testing.assert_allclose(with_reuse.values, without.values, atol=1e-4)
    np.testing.assert_allclose(with_reuse.mass, without.mass, rtol=1e-3)

    contexts = [
        tokenize_verdict_prompt(tokenizer, p, BINARY_OPTIONS.words).context for p in judge_prompts
    ]
    assert plain_stats.real_tokens == sum(len(c) for c in contexts)
    # With reuse each group's shared prefix is run once.
    shared = {
        g: shared_prefix_length([c for c, h in zip(contexts, groups) if h == g])
        for g in set(groups)
    }
    assert reuse_stats.real_tokens == sum(len(c) for c in contexts) - sum(
        shared[g] * (groups.count(g) - 1) for g in shared
    )
    assert reuse_stats.real_tokens < 0.6 * plain_stats.real_tokens

    # Rating prompts with one group per prompt go through the cache path too.
    np.testing.assert_allclose(
        reuse.score_rating(rating_prompts, [0, 1, 2]).values,
        plain.score_rating(rating_prompts).values,
        atol=1e-4,
    )


def test_batched_equals_one_at_a_time(model, tokenizer, explicit_prompts):
    judge_prompts, groups = explicit_prompts
    batched = JaxJudge(model, tokenizer, batch_size=4).option_logprobs(
        judge_prompts, BINARY_OPTIONS, groups
    )
    single = JaxJudge(model, tokenizer, batch_size=1, prefix_reuse=False)
    one_by_one = np.concatenate(
        [single.option_logprobs([p], BINARY_OPTIONS) for p in judge_prompts]
    )
    np.testing.assert_allclose(batched, one_by_one, atol=2e-4)


def test_bucket_shapes_do_not_recompile(model, tokenizer):
    judge = JaxJudge(model, tokenizer, batch_size=4, prefix_reuse=False)

    def batch(answers: list[str]) -> list[JudgePrompt]:
        return [prompts.direct_likert_prompt("Q?", answer) for answer in answers]

    judge.score_rating(batch(["yes", "no", "maybe"]))
    first = judge.compile_counts()
    # Other texts, 4 rows instead of 3 (same row bucket), lengths in the same length bucket.
    judge.score_rating(batch(["sure", "never", "perhaps so", "ok"]))
    assert judge.compile_counts() == first
    # A much longer prompt needs a new length bucket: the counter does see recompiles.
    judge.score_rating(batch(["word " * 300]))
    assert judge.compile_counts()["score"] == first["score"] + 1


def test_min_verdict_mass_and_set_params(model, tokenizer, explicit_prompts):
    judge_prompts, groups = explicit_prompts
    judge = JaxJudge(model, tokenizer, batch_size=8)
    base = judge.score_binary(judge_prompts[:3], groups[:3])
    # Halfway between the two smallest masses: no mass sits at the threshold, where float
    # noise between two runs could flip the comparison.
    smallest = np.sort(base.mass)
    threshold = float(smallest[0] + smallest[1]) / 2
    strict = JaxJudge(model, tokenizer, batch_size=8, min_verdict_mass=threshold)
    judged = strict.score_binary(judge_prompts[:3], groups[:3])
    below = base.mass < threshold
    assert below.any() and (~below).any()
    assert np.isnan(judged.values[below]).all()
    np.testing.assert_allclose(judged.values[~below], base.values[~below])
    assert all("below min_verdict_mass" in judged.reasons[i] for i in np.flatnonzero(below))
    np.testing.assert_allclose(judged.mass, base.mass)  # The mass is still recorded.

    # New weights are arguments: no recompile, different values; NaN weights -> NaN + reason.
    counts = judge.compile_counts()
    judge.set_params(make_tiny_model(seed=1))
    other = judge.score_binary(judge_prompts[:3], groups[:3])
    assert judge.compile_counts() == counts
    assert np.abs(other.values - base.values).max() > 1e-3
    graphdef, state = nnx.split(model)
    judge.set_params(jax.tree.map(lambda x: x * jnp.nan, state))
    broken = judge.score_binary(judge_prompts[:3], groups[:3])
    assert np.isnan(broken.values).all()
    assert all("non-finite" in reason for reason in broken.reasons)


class ScriptedGenerator:
    """A TextGenerator that returns scripted replies and records its calls."""

    def __init__(self, replies: list[str], finish: list[str]):
        self.replies, self.finish = replies, finish
        self.calls: list[tuple[list[list[int]], int]] = []

    def generate(self, prompt_ids, max_new_tokens, params, temperature=0.0,
                 seed=0) -> GenerationResult:
        start = sum(len(ids) for ids, _ in self.calls)
        self.calls.append(([list(p) for p in prompt_ids], max_new_tokens))
        self.sampling = getattr(self, "sampling", []) + [(temperature, seed)]
        stop = start + len(prompt_ids)
        return GenerationResult(self.replies[start:stop], self.finish[start:stop])


def test_generate_mode_parses_replies_and_records_failures(model, tokenizer, explicit_prompts):
    judge_prompts = explicit_prompts[0][:4]
    generator = ScriptedGenerator(
        [
            '{"criteria_met": true, "explanation": "It does."}',
            "I think the answer is maybe",
            '{"criteria_met": false, "explanation": "The response does n',
            "",
        ],
        ["eos", "eos", "length", "eos"],
    )
    judge = JaxJudge(
        model, tokenizer, scoring="generate", max_tokens=12, batch_size=3, generator=generator
    )
    judged = judge.score_binary(judge_prompts)
    np.testing.assert_array_equal(judged.values[[0, 2]], [1.0, 0.0])
    assert np.isnan(judged.values[[1, 3]]).all()
    assert judged.reasons[0] is None and judged.reasons[2] is None
    assert "no criteria_met verdict" in judged.reasons[1]
    assert "empty output" in judged.reasons[3]
    assert np.isnan(judged.mass).all()
    # Chunks of batch_size, chat-formatted prompt ids (no verdict prefix), max_tokens passed on.
    assert [len(ids) for ids, _ in generator.calls] == [3, 1]
    assert all(max_tokens == 12 for _, max_tokens in generator.calls)
    expected_ids = tokenizer.encode(tokenizer.apply_chat_template(judge_prompts[3].messages))
    assert generator.calls[1][0][0] == expected_ids

    ratings = ScriptedGenerator(['{"rating": 7}', '{"rating": 11}', "8/10"], ["eos"] * 3)
    judge = JaxJudge(model, tokenizer, scoring="generate", generator=ratings)
    rated = judge.score_rating([prompts.direct_likert_prompt("Q?", a) for a in "abc"])
    np.testing.assert_array_equal(rated.values[[0, 2]], [7.0, 8.0])
    assert np.isnan(rated.values[1]) and "outside" in rated.reasons[1]


def test_generate_mode_with_the_sampler(model, tokenizer, rating_prompts):
    judge = JaxJudge(model, tokenizer, scoring="generate", max_tokens=6, batch_size=2)
    rated = judge.score_rating(rating_prompts)
    for value, reason in zip(rated.values, rated.reasons):
        assert (np.isfinite(value) and 1 <= value <= 10 and reason is None) or (
            np.isnan(value) and reason
        )


def test_bad_settings_are_refused(model, tokenizer):
    with pytest.raises(ValueError, match="scoring"):
        JaxJudge(model, tokenizer, scoring="logits")
    with pytest.raises(ValueError, match="batch_size"):
        JaxJudge(model, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="min_verdict_mass"):
        JaxJudge(model, tokenizer, min_verdict_mass=2.0)
    with pytest.raises(ValueError, match="groups"):
        JaxJudge(model, tokenizer).score_binary([prompts.direct_likert_prompt("Q", "A")], [0, 1])


def test_generate_mode_re_asks_unusable_replies_sampled(model, tokenizer, rating_prompts):
    # Prompt 0 answers at once; prompt 1 is unusable, then usable when asked again; prompt 2 is
    # unusable every time (asked 1 + 2 times).
    generator = ScriptedGenerator(
        ['{"rating": 7}', "hmm", "no idea", '{"rating": 3}', "still none", "none again"],
        ["eos"] * 6)
    judge = JaxJudge(model, tokenizer, scoring="generate", generator=generator, max_resamples=2,
                     batch_size=8)
    rated = judge.score_rating(rating_prompts[:3])
    np.testing.assert_array_equal(rated.values[:2], [7.0, 3.0])
    assert np.isnan(rated.values[2]) and "(after 3 attempts)" in rated.reasons[2]
    assert [len(ids) for ids, _ in generator.calls] == [3, 2, 1]
    assert generator.sampling == [(0.0, 0), (1.0, 1), (1.0, 2)]  # Re-asks are sampled.
