"""Tests of the reward functions: every method, both backends, rewards computed by hand.

A scripted backend (verdicts chosen per criterion text) checks the aggregation of each method;
the HTTP path runs against the local fake OpenAI server replying scripted JSON; the JAX path
runs a tiny random judge and, marked slow, the real SmolLM2 on RaR records.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer
from ml_collections import config_dict

from rar_jax.config import base_config
from rar_jax.data.examples import read_examples
from rar_jax.judges import prompts
from rar_jax.judges.factory import build_judge
from rar_jax.judges.jax_backend import BINARY_OPTIONS, RATING_OPTIONS, JaxJudge, Judgments
from rar_jax.judges.rewards import (
    JUDGED_METHODS,
    REWARD_METHODS,
    HttpJudgeBackend,
    JudgeExample,
    RewardSettings,
    compute_rewards,
    make_reward_fn,
)
from rar_jax.rubrics.readers import rubric_from_healthbench_record
from rar_jax.rubrics.schema import Category, Polarity

PAPER_WEIGHTS = {"essential": 1.0, "important": 0.7, "optional": 0.3, "pitfall": 0.9}
WRONG_ANSWER = "I am not sure. It might be something else entirely; please ask someone."


def make_config(method: str = "rar_explicit", **judge: object) -> config_dict.ConfigDict:
    """The base config plus the judge section and reward.method this module proposes."""
    config = base_config()
    config.reward.method = method
    config.judge = config_dict.ConfigDict(
        {
            "backend": "jax",
            "model_source": "smollm2",
            "scoring": "verdict_probs",
            "prefix_reuse": True,
            "batch_size": 8,
            "max_tokens": 64,
            "max_resamples": 0,
            "min_verdict_mass": 0.0,
            "show_categories": True,
            "show_weights": True,
            "templates_dir": "",
            "http": {
                "base_url": "http://127.0.0.1:9/v1",
                "model": "judge-model",
                "api_key_env": "OPENAI_API_KEY",
                "max_concurrency": 4,
                "requests_per_minute": 0.0,
                "tokens_per_minute": 0.0,
                "timeout_s": 10.0,
                "max_attempts": 1,
                "backoff_initial_s": 0.01,
                "backoff_max_s": 0.01,
                "cache_dir": "",
                "progress_min_requests": 0,
            },
        }
    )
    for key, value in judge.items():
        config.judge[key] = value
    return config


def statement_of(prompt_text: str) -> str:
    """The criterion inside an explicit judge prompt's user message."""
    match = re.search(r"<statement>\n(.*?)\n</statement>", prompt_text, re.DOTALL)
    assert match, "not an explicit criterion prompt"
    return match.group(1)


class ScriptedBackend:
    """A JudgeBackend whose answers are functions of the user message; records its calls."""

    def __init__(self, binary=None, rating=None):
        self.binary, self.rating = binary, rating
        self.calls: list[tuple[str, list, list | None]] = []

    def _judge(self, kind, function, judge_prompts, groups) -> Judgments:
        self.calls.append((kind, list(judge_prompts), None if groups is None else list(groups)))
        values, reasons = [], []
        for prompt in judge_prompts:
            outcome = function(prompt.messages[-1]["content"])
            if isinstance(outcome, str):
                values.append(np.nan)
                reasons.append(outcome)
            else:
                values.append(outcome)
                reasons.append(None)
        count = len(judge_prompts)
        return Judgments(np.asarray(values, np.float32), reasons, np.full(count, 0.9, np.float32))

    def score_binary(self, judge_prompts, groups=None) -> Judgments:
        return self._judge("binary", self.binary, judge_prompts, groups)

    def score_rating(self, judge_prompts, groups=None) -> Judgments:
        return self._judge("rating", self.rating, judge_prompts, groups)


@pytest.fixture(scope="module")
def medicine(shared_data):
    """Three RaR-Medicine examples (pitfalls describe failures: polarity negative)."""
    rubric = config_dict.ConfigDict({"pitfall_polarity": "negative", "ablation": "all"})
    return read_examples(
        shared_data / "rar_samples" / "rar_medicine_sample3.jsonl", "rar", rubric=rubric
    )


@pytest.fixture(scope="module")
def science(shared_data):
    """Three RaR-Science examples (pitfalls say what to avoid: polarity positive)."""
    rubric = config_dict.ConfigDict({"pitfall_polarity": "positive", "ablation": "all"})
    return read_examples(
        shared_data / "rar_samples" / "rar_science_sample3.jsonl", "rar", rubric=rubric
    )


def verdict_by_index(rubric, statement: str) -> float:
    """Deterministic scripted verdict: 1, 0, 0.5, 1, 0, 0.5, ... by criterion position."""
    index = [c.description.strip() for c in rubric.criteria].index(statement)
    return [1.0, 0.0, 0.5][index % 3]


def test_rar_explicit_both_normalisations_by_hand(medicine):
    examples = medicine[:2]
    rubric_of = {e.rubric.criteria[0].description: e.rubric for e in examples}

    def binary(text):
        statement = statement_of(text)
        rubric = next(
            r for r in rubric_of.values() if statement in [c.description for c in r.criteria]
        )
        return verdict_by_index(rubric, statement)

    backend = ScriptedBackend(binary=binary)
    answers = ["answer one", "answer two"]
    for normalization in ("category_weights", "signed_abs"):
        settings = RewardSettings(
            explicit_normalization=normalization, category_weights=PAPER_WEIGHTS
        )
        output = compute_rewards("rar_explicit", examples, answers, backend, settings)
        for row, example in enumerate(examples):
            criteria = example.rubric.criteria
            verdicts = [[1.0, 0.0, 0.5][j % 3] for j in range(len(criteria))]
            if normalization == "category_weights":
                weights = [PAPER_WEIGHTS[c.category.value] for c in criteria]
                credit = [
                    v if c.polarity is Polarity.POSITIVE else 1.0 - v
                    for v, c in zip(verdicts, criteria)
                ]
                expected = sum(w * x for w, x in zip(weights, credit)) / sum(weights)
            else:
                signed = sum(
                    c.polarity.sign * abs(c.weight) * v for v, c in zip(verdicts, criteria)
                )
                expected = min(1.0, max(0.0, signed / sum(abs(c.weight) for c in criteria)))
            assert output.rewards[row] == pytest.approx(expected, abs=1e-6)
            np.testing.assert_allclose(output.verdicts[row, : len(criteria)], verdicts)
        width = max(len(e.rubric) for e in examples)
        assert output.verdicts.shape == output.verdict_mask.shape == (2, width)
        assert output.verdict_mask.sum(axis=1).tolist() == [len(e.rubric) for e in examples]
        assert np.isnan(output.verdicts[~output.verdict_mask]).all()
        assert not output.failed.any() and output.reasons == [None, None]
        assert output.ratings is None
        np.testing.assert_allclose(output.verdict_mass[output.verdict_mask], 0.9)
    # The medicine rubrics hold pitfalls, so the two normalisations differ.
    assert any(c.category is Category.PITFALL for c in examples[0].rubric.criteria)
    # One backend call per batch; the group of every criterion prompt is its answer's row.
    kind, sent, groups = backend.calls[0]
    assert kind == "binary"
    assert groups == [row for row, e in enumerate(examples) for _ in e.rubric.criteria]
    assert answers[1] in sent[-1].messages[-1]["content"]


def test_a_failed_criterion_fails_its_row_with_the_reason(medicine):
    example = medicine[0]
    failing = example.rubric.criteria[2].description

    def binary(text):
        return "judge exploded" if statement_of(text) == failing else 1.0

    output = compute_rewards(
        "rar_explicit", [example, medicine[1]], ["a", "b"], ScriptedBackend(binary=binary)
    )
    assert np.isnan(output.rewards[0]) and output.failed.tolist() == [True, False]
    assert output.reasons[0] == ("8 of 9 criteria judged, fewer than "
                                 "reward.min_judged_fraction=1: criterion 3: judge exploded")
    assert output.reasons[1] is None
    assert np.isnan(output.verdicts[0, 2]) and output.verdict_mask[0, 2]
    assert output.verdicts[0, 0] == 1.0

    # With 8 of 9 judged >= 0.8 the answer is scored over the judged criteria, their category
    # weights renormalised: every judged verdict is "true", so positive criteria earn their
    # weight and negative-polarity pitfalls none.
    lenient = RewardSettings(min_judged_fraction=0.8)
    output = compute_rewards("rar_explicit", [example], ["a"], ScriptedBackend(binary=binary),
                             lenient)
    judged = [c for c in example.rubric.criteria if c.description != failing]
    earned = sum(PAPER_WEIGHTS[c.category.value] for c in judged if c.polarity is Polarity.POSITIVE)
    assert output.rewards[0] == pytest.approx(
        earned / sum(PAPER_WEIGHTS[c.category.value] for c in judged), abs=1e-6)
    assert not output.failed[0] and np.isnan(output.verdicts[0, 2])


def test_rar_predefined_uses_the_fixed_rubric(medicine):
    predefined = prompts.predefined_rubric()
    statements = [c.description for c in predefined.criteria]
    scripted = dict(zip(statements, [1.0, 0.0, 1.0, 1.0]))
    backend = ScriptedBackend(binary=lambda text: scripted[statement_of(text)])
    example = JudgeExample(({"role": "user", "content": "Hi?"},), None, None, "no-rubric")
    for normalization in ("category_weights", "signed_abs"):
        output = compute_rewards(
            "rar_predefined",
            [example, medicine[0]],
            ["x", "y"],
            backend,
            RewardSettings(explicit_normalization=normalization),
        )
        np.testing.assert_allclose(output.rewards, [0.75, 0.75])
        assert output.verdicts.shape == (2, 4)
        np.testing.assert_array_equal(output.verdicts[1], [1.0, 0.0, 1.0, 1.0])


def test_healthbench_points_equals_the_hand_computed_score(shared_data):
    path = shared_data / "healthbench" / "oss_eval_first100.jsonl"
    examples = read_examples(path, "healthbench", limit=2)
    records = [json.loads(line) for line in path.open(encoding="utf-8").readlines()[:2]]
    # Record 0: criteria met at even positions. Record 1: only the negative-point criteria met.
    met_of = {}
    for index, item in enumerate(records[0]["rubrics"]):
        met_of[(0, item["criterion"].strip())] = 1.0 if index % 2 == 0 else 0.0
    for item in records[1]["rubrics"]:
        met_of[(1, item["criterion"].strip())] = 1.0 if item["points"] < 0 else 0.0

    def binary(text):
        statement = statement_of(text)
        row = 0 if (0, statement) in met_of else 1
        return met_of[(row, statement)]

    output = compute_rewards(
        "healthbench_points", examples, ["answer", "answer"], ScriptedBackend(binary=binary)
    )
    for row, record in enumerate(records):
        points = [item["points"] for item in record["rubrics"]]
        met = [met_of[(row, item["criterion"].strip())] for item in record["rubrics"]]
        achieved = sum(p for p, m in zip(points, met) if m)
        possible = sum(p for p in points if p > 0)
        assert output.rewards[row] == pytest.approx(achieved / possible, abs=1e-6)
    assert output.rewards[1] < 0  # Unclipped, as HealthBench defines the per-example score.
    assert rubric_from_healthbench_record(records[0]).criteria[3].weight == -10


def test_rating_methods_and_normalisations(medicine):
    ratings = {"good": 7.0, "perfect": 10.0, "broken": "invalid judge reply: no rating"}

    def rating(text):
        return next(v for k, v in ratings.items() if f"<response>\n{k}\n</response>" in text)

    backend = ScriptedBackend(rating=rating)
    examples = medicine[:3]
    answers = ["good", "perfect", "broken"]
    for method in ("direct_likert", "reference_likert", "rar_implicit"):
        output = compute_rewards(method, examples, answers, backend)
        np.testing.assert_allclose(output.rewards[:2], [6 / 9, 1.0], rtol=1e-6)
        assert np.isnan(output.rewards[2]) and output.failed.tolist() == [False, False, True]
        assert output.reasons == [None, None, "invalid judge reply: no rating"]
        np.testing.assert_allclose(output.ratings[:2], [7.0, 10.0])
        assert output.verdicts.shape == (3, 0) and output.verdict_mask.shape == (3, 0)
        assert backend.calls[-1][0] == "rating"
        assert backend.calls[-1][2] == [0, 1, 2]  # One group per example id.
    repeated = compute_rewards(
        "direct_likert", [examples[0], examples[0], examples[1]], answers, backend
    )
    assert backend.calls[-1][2] == [0, 0, 2]  # GRPO's answers to one example share a prefix.
    np.testing.assert_allclose(repeated.rewards[:2], [6 / 9, 1.0], rtol=1e-6)
    over_max = compute_rewards(
        "direct_likert", examples, answers, backend, RewardSettings(rating_normalization="over_max")
    )
    np.testing.assert_allclose(over_max.rewards[:2], [0.7, 1.0], rtol=1e-6)
    # A reference-Likert prompt shows the reference; a Direct-Likert prompt does not.
    reference_text = backend.calls[1][1][0].messages[-1]["content"]
    direct_text = backend.calls[0][1][0].messages[-1]["content"]
    assert examples[0].reference.strip()[:60] in reference_text
    assert examples[0].reference.strip()[:60] not in direct_text

    # A rating outside 1..10 from a backend is a failure with a reason, not a clipped reward.
    odd = ScriptedBackend(rating=lambda text: 11.0)
    output = compute_rewards("direct_likert", examples[:1], ["x"], odd)
    assert np.isnan(output.rewards[0]) and "11" in output.reasons[0]


def test_implicit_prompt_options_are_read_from_the_config(medicine):
    backend = ScriptedBackend(rating=lambda text: 5.0)
    shown = {}
    for categories, weights in ((True, True), (False, True), (True, False)):
        config = make_config("rar_implicit", show_categories=categories, show_weights=weights)
        reward_fn = make_reward_fn(config, backend)
        reward_fn(medicine[:1], ["answer"])
        shown[(categories, weights)] = backend.calls[-1][1][0].messages[-1]["content"]
    assert "[Essential, weight 5]" in shown[(True, True)]
    assert "Essential" not in shown[(False, True)] and "[weight 5]" in shown[(False, True)]
    assert "weight" not in shown[(True, False)] and "[Essential]" in shown[(True, False)]


def test_config_picks_method_normalisation_and_templates(medicine, tmp_path):
    backend = ScriptedBackend(
        binary=lambda text: 1.0 if "Essential" in text else 0.0, rating=lambda t: 4.0
    )
    assert make_reward_fn(make_config("direct_likert"), backend)(medicine[:1], ["a"]).rewards[
        0
    ] == (pytest.approx(3 / 9))
    explicit = make_reward_fn(make_config("rar_explicit"), backend)(medicine[:1], ["a"])
    assert explicit.ratings is None and explicit.verdicts.shape[1] == len(medicine[0].rubric)

    config = make_config("rar_explicit")
    config.reward.explicit_normalization = "signed_abs"
    scripted = ScriptedBackend(binary=lambda text: 1.0)
    signed = make_reward_fn(config, scripted)(medicine[:1], ["a"]).rewards[0]
    paper = make_reward_fn(make_config("rar_explicit"), scripted)(medicine[:1], ["a"]).rewards[0]
    criteria = medicine[0].rubric.criteria
    assert signed == pytest.approx(
        max(
            0.0,
            sum(c.polarity.sign * abs(c.weight) for c in criteria)
            / sum(abs(c.weight) for c in criteria),
        )
    )
    weights = [PAPER_WEIGHTS[c.category.value] for c in criteria]
    credits = [1.0 if c.polarity is Polarity.POSITIVE else 0.0 for c in criteria]
    assert paper == pytest.approx(sum(w * x for w, x in zip(weights, credits)) / sum(weights))
    config = make_config("rar_explicit")
    config.reward.category_weights.pitfall = 0.1
    lighter = make_reward_fn(config, scripted)(medicine[:1], ["a"]).rewards[0]
    weights = [0.1 if c.category is Category.PITFALL else w for c, w in zip(criteria, weights)]
    assert lighter == pytest.approx(sum(w * x for w, x in zip(weights, credits)) / sum(weights))

    (tmp_path / "explicit_criterion.user.txt").write_text(
        "CUSTOM ${conversation} | ${response} | ${criterion}", encoding="utf-8"
    )
    make_reward_fn(make_config("rar_explicit", templates_dir=str(tmp_path)), scripted)(
        medicine[:1], ["a"]
    )
    assert scripted.calls[-1][1][0].messages[-1]["content"].startswith("CUSTOM ")

    with pytest.raises(ValueError, match="reward.method"):
        make_reward_fn(make_config("rar_magic"), backend)
    config = make_config("direct_likert")
    config.reward.rating_normalization = "sigmoid"
    with pytest.raises(ValueError, match="rating_normalization"):
        make_reward_fn(config, backend)


def test_bad_inputs_raise_clear_errors(medicine):
    backend = ScriptedBackend(binary=lambda t: 1.0, rating=lambda t: 5.0)
    no_reference = JudgeExample(
        ({"role": "user", "content": "Q?"},), medicine[0].rubric, None, "ex-7"
    )
    with pytest.raises(ValueError, match=r"ex-7.*reference"):
        compute_rewards("reference_likert", [no_reference], ["a"], backend)
    no_rubric = JudgeExample(({"role": "user", "content": "Q?"},), None, "ref", "ex-8")
    for method in ("rar_explicit", "rar_implicit", "healthbench_points"):
        with pytest.raises(ValueError, match=r"ex-8.*rubric"):
            compute_rewards(method, [no_rubric], ["a"], backend)
    with pytest.raises(ValueError, match="one answer per example"):
        compute_rewards("direct_likert", [no_rubric], ["a", "b"], backend)
    with pytest.raises(ValueError, match="unknown reward method"):
        compute_rewards("likert", [no_rubric], ["a"], backend)
    empty = compute_rewards("rar_explicit", [], [], backend)
    assert empty.rewards.shape == (0,) and backend.calls == []
    assert set(REWARD_METHODS) == {
        "direct_likert",
        "reference_likert",
        "rar_predefined",
        "rar_explicit",
        "rar_implicit",
        "healthbench_points",
        "programmatic",
    }


class ScriptedReplyServer(FakeOpenAIServer):
    """The fake OpenAI server, replying ``replies(last user message)`` instead of an echo."""

    def __init__(self, replies):
        super().__init__()
        self.replies = replies

    def _reply(self, body, key):
        reply = super()._reply(body, key)
        reply["choices"][0]["message"]["content"] = self.replies(key)
        return reply


@pytest.fixture
def no_api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_http_backend_rewards_and_failures(medicine, no_api_key):
    example = medicine[0]
    criteria = [c.description.strip() for c in example.rubric.criteria]

    def replies(text):
        if "<statement>" in text:
            index = criteria.index(statement_of(text))
            if index == 4:
                return "I cannot decide."
            verdict = "true" if index % 2 == 0 else "false"
            return f'```json\n{{"criteria_met": {verdict}, "explanation": "Because."}}\n```'
        return '{"rating": 8}' if "<response>\nfine\n</response>" in text else '{"rating": 12}'

    server = ScriptedReplyServer(replies)
    server.start()
    try:
        config = make_config("rar_explicit", backend="http")
        config.reward.min_judged_fraction = 1.0  # One failed criterion fails its answer.
        config.judge.http.base_url = server.base_url
        config.judge.max_tokens = 32
        backend = build_judge(config)
        assert isinstance(backend, HttpJudgeBackend) and backend.max_tokens == 32
        assert backend.client.config.cache_dir is None
        assert backend.client.config.base_url == server.base_url

        # One criterion prompt fails at the HTTP level (400 is not retried).
        failing_text = prompts.explicit_criterion_prompt(
            example.conversation, "answer two", example.rubric.criteria[1]
        ).messages[-1]["content"]
        server.script[failing_text] = ["400"]
        output = make_reward_fn(config, backend)([example, example], ["answer one", "answer two"])
        assert output.failed.tolist() == [True, True]
        assert output.reasons[0].endswith(
            "criterion 5: invalid judge reply: no criteria_met verdict found in output "
            "'I cannot decide.'"
        )
        assert "criterion 2: judge request failed: HTTP 400 (not retried)" in output.reasons[1]
        expected = [1.0 if j % 2 == 0 else 0.0 for j in range(len(criteria))]
        expected_row0 = np.array(expected, np.float32)
        expected_row0[4] = np.nan
        np.testing.assert_array_equal(output.verdicts[0], expected_row0)
        assert np.isnan(output.verdict_mass).all()
        assert all(
            r.body["temperature"] == 0.0 and r.body["max_tokens"] == 32 for r in server.requests
        )

        # Without the failing criteria the reward is the hand-computed explicit score.
        server.replies = lambda text: (
            '{"criteria_met": true}'
            if criteria.index(statement_of(text)) % 2 == 0
            else '{"criteria_met": false}'
        )
        output = make_reward_fn(config, backend)([example], ["answer three"])
        weights = [PAPER_WEIGHTS[c.category.value] for c in example.rubric.criteria]
        credit = [
            v if c.polarity is Polarity.POSITIVE else 1.0 - v
            for v, c in zip(expected, example.rubric.criteria)
        ]
        assert output.rewards[0] == pytest.approx(
            sum(w * x for w, x in zip(weights, credit)) / sum(weights), abs=1e-6
        )

        server.replies = replies
        rated = make_reward_fn(make_config("direct_likert"), backend)(
            [example, example], ["fine", "meh"]
        )
        assert rated.rewards[0] == pytest.approx(7 / 9)
        assert np.isnan(rated.rewards[1])
        assert rated.reasons[1] == "invalid judge reply: rating 12 outside [1, 10] (JSON 'rating')"
    finally:
        server.stop()


def test_build_judge_reads_the_jax_options(no_api_key):
    from test_jax_backend import make_tiny_model

    from rar_jax.models import Tokenizer

    tokenizer = Tokenizer.embedded_smollm2()
    model = make_tiny_model()
    config = make_config(
        scoring="generate", prefix_reuse=False, batch_size=3, max_tokens=9, min_verdict_mass=0.25
    )
    judge = build_judge(config, policy=(model, tokenizer))
    assert isinstance(judge, JaxJudge)
    assert (judge.scoring, judge.prefix_reuse, judge.batch_size, judge.max_tokens) == (
        "generate",
        False,
        3,
        9,
    )
    assert judge.min_verdict_mass == 0.25
    with pytest.raises(ValueError, match="judge.backend"):
        build_judge(make_config(backend="grpc"), policy=(model, tokenizer))
    with pytest.raises(ValueError, match="judge.scoring"):
        build_judge(make_config(scoring="logits"), policy=(model, tokenizer))
    with pytest.raises(FileNotFoundError, match="no-such-judge"):
        build_judge(make_config(model_source="/tmp/no-such-judge"))

    # The JAX path end to end: rewards are the aggregation of the judge's own P(true) / ratings.
    judge = build_judge(make_config(batch_size=8), policy=(model, tokenizer))
    example = JudgeExample(
        ({"role": "user", "content": "Is a fever of 38.5 C in an adult dangerous?"},),
        prompts.predefined_rubric(),
        "Usually not; rest and fluids, see a doctor if it lasts over three days.",
        "fever",
    )
    answers = ["Usually not dangerous; rest, fluids, and see a doctor if it persists.", "No idea."]
    output = compute_rewards("rar_predefined", [example, example], answers, judge)
    judge_prompts = [
        prompts.explicit_criterion_prompt(example.conversation, answer, criterion)
        for answer in answers
        for criterion in example.rubric.criteria
    ]
    logprobs = judge.option_logprobs(judge_prompts, BINARY_OPTIONS).reshape(2, 4, 2)
    p_true = np.exp(logprobs[..., 0]) / np.exp(logprobs).sum(axis=-1)
    np.testing.assert_allclose(output.verdicts, p_true, atol=1e-5)
    np.testing.assert_allclose(output.rewards, p_true.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(output.verdict_mass, np.exp(logprobs).sum(axis=-1), rtol=1e-3)

    rated = compute_rewards("reference_likert", [example], answers[:1], judge)
    logprobs = judge.option_logprobs(
        [prompts.reference_likert_prompt(example.conversation, answers[0], example.reference)],
        RATING_OPTIONS,
    )[0]
    probabilities = np.exp(logprobs - logprobs.max()) / np.exp(logprobs - logprobs.max()).sum()
    expected = float(probabilities @ np.arange(1, 11))
    assert rated.ratings[0] == pytest.approx(expected, abs=1e-4)
    assert rated.rewards[0] == pytest.approx((expected - 1) / 9, abs=1e-4)


# ----------------------------------------------------------------------------- real SmolLM2
@pytest.fixture(scope="module")
def smollm2_judges():
    from rar_jax.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2")
    verdicts = JaxJudge(model, tokenizer, batch_size=16)
    generated = JaxJudge(model, tokenizer, scoring="generate", max_tokens=10, batch_size=8)
    return verdicts, generated


def check_output(output, examples, method):
    count = len(examples)
    assert output.rewards.shape == (count,) and output.failed.shape == (count,)
    assert len(output.reasons) == count
    for row in range(count):
        value, reason = output.rewards[row], output.reasons[row]
        assert (np.isfinite(value) and reason is None) or (np.isnan(value) and reason), (
            row,
            reason,
        )
    finite = output.rewards[np.isfinite(output.rewards)]
    if method == "healthbench_points":
        assert (finite <= 1.0).all()
    else:
        assert ((finite >= 0.0) & (finite <= 1.0)).all()
    if output.ratings is not None:
        rated = output.ratings[np.isfinite(output.ratings)]
        assert ((rated >= 1.0) & (rated <= 10.0)).all()
    else:
        real = output.verdict_mask
        assert (
            (output.verdicts[real] >= 0) & (output.verdicts[real] <= 1)
            | np.isnan(output.verdicts[real])
        ).all()


class MemoBackend:
    """Wraps a judge; prompts it has judged before are answered from memory (test speed-up:
    rar_explicit and healthbench_points ask the same per-criterion questions)."""

    def __init__(self, judge):
        self.judge = judge
        self.memory: dict[tuple[str, str], tuple[float, str | None, float]] = {}

    def _run(self, kind, judge_prompts, groups):
        keys = [(kind, json.dumps(p.messages)) for p in judge_prompts]
        todo = [i for i, key in enumerate(keys) if key not in self.memory]
        if todo:
            score = self.judge.score_binary if kind == "binary" else self.judge.score_rating
            fresh = score([judge_prompts[i] for i in todo], [groups[i] for i in todo])
            for j, i in enumerate(todo):
                self.memory[keys[i]] = (fresh.values[j], fresh.reasons[j], fresh.mass[j])
        values, reasons, mass = zip(*(self.memory[key] for key in keys))
        return Judgments(
            np.asarray(values, np.float32), list(reasons), np.asarray(mass, np.float32)
        )

    def score_binary(self, judge_prompts, groups=None):
        return self._run("binary", judge_prompts, groups)

    def score_rating(self, judge_prompts, groups=None):
        return self._run("rating", judge_prompts, groups)


@pytest.mark.slow
@pytest.mark.parametrize(
    "methods",
    [
        ("direct_likert", "reference_likert"),
        ("rar_implicit",),
        ("rar_explicit", "healthbench_points", "rar_predefined"),
    ],
)
def test_smollm2_verdict_scoring(smollm2_judges, science, methods):
    judge, _ = smollm2_judges
    backend = MemoBackend(judge)
    examples = [science[1], science[2]]
    answers = [science[1].reference, WRONG_ANSWER]
    for method in methods:
        output = compute_rewards(method, examples, answers, backend)
        check_output(output, examples, method)
        # Verdict scoring always gives a value here (no mass threshold): all finite.
        assert not output.failed.any(), (method, output.reasons)
        if output.ratings is None:
            assert output.verdict_mask.sum(axis=1).tolist() == [
                4 if method == "rar_predefined" else len(e.rubric) for e in examples
            ]
            masses = output.verdict_mass[output.verdict_mask]
        else:
            masses = output.verdict_mass
        assert ((masses > 0) & (masses <= 1.0 + 1e-5)).all()


def test_judged_methods_are_all_covered_by_the_smollm2_test():
    covered = {
        "direct_likert",
        "reference_likert",
        "rar_implicit",
        "rar_explicit",
        "healthbench_points",
        "rar_predefined",
    }
    assert covered == set(JUDGED_METHODS)  # programmatic: tests/judges/test_programmatic.py


@pytest.mark.slow
def test_smollm2_generate_and_parse(smollm2_judges, science):
    _, judge = smollm2_judges
    examples = [science[1], science[2]]
    answers = [science[1].reference, WRONG_ANSWER]
    for method in ("direct_likert", "rar_predefined"):
        output = compute_rewards(method, examples, answers, judge)
        check_output(output, examples, method)
        assert np.isnan(output.verdict_mass).all()


class RecordingJudge:
    """A judge backend that records what it is asked and rates everything 7."""

    def __init__(self):
        self.prompts = []

    def score_rating(self, prompts, groups=None):
        from rar_jax.judges.jax_backend import Judgments

        self.prompts += prompts
        return Judgments(np.full(len(prompts), 7.0, np.float32), [None] * len(prompts),
                         np.full(len(prompts), np.nan, np.float32))


def test_an_empty_answer_is_not_judged_and_scores_the_lowest_reward():
    config = base_config()
    config.reward.method = "direct_likert"
    judge = RecordingJudge()
    output = make_reward_fn(config, judge)([JudgeExample(({"role": "user", "content": "Hi?"},), None, "a", "q1")] * 3, ["An answer.", "  \n", ""])
    assert len(judge.prompts) == 1  # Only the real answer was sent.
    np.testing.assert_allclose(output.rewards, [6 / 9, 0.0, 0.0])  # (7 - 1) / 9, then 0.
    assert output.failed.tolist() == [False, False, False] and output.reasons == [None] * 3
    np.testing.assert_array_equal(output.ratings[1:], [np.nan, np.nan])
