"""HealthBench evaluation on real HealthBench prompts with a fake policy and a fake grader whose
verdicts are known: reply parsing, failed gradings left out and counted, and the official score
(met points / positive points per example, clipped mean, per axis and theme) computed by hand.

Verdict grading (``grader_scoring="verdict_probs"``): a fake backend with scripted P(true), and
the tiny fixture judge (tests/tiny_checkpoint.py) whose P(true) is recomputed here from full
uncached forwards, thresholded and scored by hand."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from rar_jax.data.builders import build
from rar_jax.eval import healthbench_eval
from rar_jax.eval.answering import PolicyAnswers, length_sorted_batches
from rar_jax.judges import prompts
from rar_jax.judges.jax_backend import GenerationResult, Judgments

OSS = "healthbench/oss_eval_first100.jsonl"
ITEM_RE = re.compile(r'<rubric_item points="([^"]*)">\n(.*?)\n</rubric_item>', re.DOTALL)


def _records(shared_data, indices):
    lines = (shared_data / OSS).read_text().splitlines()
    return [json.loads(lines[index]) for index in indices]


def _verdict(met):
    return json.dumps({"explanation": "scripted", "criteria_met": met})


class CriterionJudge:
    """Grader replies chosen per rubric item text; records the prompts it saw."""

    def __init__(self, replies):
        self.replies = replies
        self.seen = []
        self.calls = 0

    def generate_texts(self, list_of_messages, *, max_tokens, temperature=0.0, seed=0):
        self.calls += 1
        texts, errors = [], []
        for messages in list_of_messages:
            user = messages[-1]["content"]
            points, criterion = ITEM_RE.search(user).groups()
            self.seen.append((points, criterion, user, max_tokens, temperature))
            reply = self.replies[criterion]
            texts.append(reply or "")
            errors.append(None if reply is not None else "HTTP 503 after 4 attempts")
        return GenerationResult(texts, ["stop"] * len(texts), errors)


class FixedPolicy:
    def answer(self, conversations):
        return PolicyAnswers([f"answer {i}" for i in range(len(conversations))],
                             ["eos"] * len(conversations))


def test_reply_parsing_keeps_failures_as_nan_with_reasons():
    texts = [_verdict(True), '{"explanation": "no", "criteria_met": false}', "I am unsure",
             '{"explanation": "The answer', ""]
    values, explanations, reasons = healthbench_eval.verdicts_from_replies(
        texts, ["stop", "stop", "stop", "length", "stop"], [None, None, None, None, "timeout"]
    )
    np.testing.assert_array_equal(values, [1.0, 0.0, np.nan, np.nan, np.nan])
    assert explanations[:2] == ["scripted", "no"]
    assert reasons[:2] == [None, None]
    assert reasons[2].startswith("invalid grader reply: ")
    assert reasons[3].startswith("invalid grader reply (cut at max_tokens): ")
    assert reasons[4] == "judge request failed: timeout"


def test_read_items_keeps_tags_and_limit(shared_data):
    items = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=3)
    records = _records(shared_data, [0, 1, 2])
    assert [item.example_id for item in items] == [r["prompt_id"] for r in records]
    assert [list(item.example_tags) for item in items] == [r["example_tags"] for r in records]
    points = [item["points"] for item in records[1]["rubrics"]]
    assert [c.weight for c in items[1].rubric.criteria] == points
    assert items[0].conversation[-1]["content"] == records[0]["prompt"][-1]["content"]


def test_read_items_from_a_built_data_set(shared_data, tmp_path):
    build("healthbench", manual_dir=shared_data / "healthbench", data_dir=tmp_path)
    built = healthbench_eval.read_healthbench_items("tfds:healthbench:hard", limit=4,
                                                    data_dir=tmp_path)
    direct = healthbench_eval.read_healthbench_items(
        shared_data / "healthbench" / "hard_sample50_seed42.jsonl", limit=4
    )
    assert [(i.example_id, i.example_tags, i.rubric.criteria, i.conversation) for i in built] == [
        (i.example_id, i.example_tags, i.rubric.criteria, i.conversation) for i in direct
    ]
    with pytest.raises(ValueError, match="not a data set in HealthBench format"):
        healthbench_eval.read_healthbench_items("tfds:kqa:test", data_dir=tmp_path)


def test_example_without_graded_positive_points_is_excluded(shared_data):
    item = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=3)[2]
    examples, reasons = healthbench_eval.graded_examples([item, item],
                                                         [np.array([np.nan, np.nan]),
                                                          np.array([np.nan, 1.0])])
    assert examples[0] is None and "2 of 2 gradings failed" in reasons[0]
    assert reasons[1] is None and len(examples[1].rubric) == 1
    assert examples[1].rubric.criteria == item.rubric.criteria[1:]
    assert examples[1].example_tags == item.example_tags


def test_end_to_end_score_equals_the_official_formula_by_hand(shared_data):
    first, second = _records(shared_data, [8, 9])
    # Record 8 (points 8, 7, 6, 6, 5, -6): met, not, met, FAILED, not, met.
    # Record 9 (8, 9, 9, -8, 8, 7, -7, 10, 10, 6, -10): met, met, not, met, not, met, not, met,
    # not, met, not.
    plan = {0: [True, False, True, None, False, True],
            1: [True, True, False, True, False, True, False, True, False, True, False]}
    replies = {}
    for row, record in enumerate((first, second)):
        for criterion, met in zip(record["rubrics"], plan[row], strict=True):
            replies[criterion["criterion"]] = "no verdict here" if met is None else _verdict(met)
    path = shared_data / OSS
    items = [i for i in healthbench_eval.read_healthbench_items(path, limit=10)
             if i.example_id in (first["prompt_id"], second["prompt_id"])]
    judge = CriterionJudge(replies)
    result = healthbench_eval.evaluate_healthbench(
        items, FixedPolicy(), judge, grader_prompt="rar_jax", grader_max_tokens=99, seed=0, bootstrap_samples=50,
        chunk_size=5,
    )
    assert len(judge.seen) == 17 and {s[3:] for s in judge.seen} == {(99, 0.0)}
    assert judge.calls == 4  # 17 criteria in chunks of 5.
    assert judge.seen[5][0] == "-6" and "answer 0" in judge.seen[5][2]
    assert "answer 1" in judge.seen[6][2]

    first_score = (8 + 6 - 6) / (8 + 7 + 6 + 5)  # The failed 6-point item is left out.
    second_score = (8 + 9 - 8 + 7 + 10 + 6) / (8 + 9 + 9 + 8 + 7 + 10 + 10 + 6)
    np.testing.assert_allclose(result.example_scores, [first_score, second_score])
    metrics = result.metrics
    assert metrics["overall_score"] == pytest.approx((first_score + second_score) / 2)
    assert metrics["overall_score:n_samples"] == 2
    # axis:completeness: all of record 8; record 9's (9, 9, -8, 8, -7, 10, 6, -10).
    completeness = (9 - 8 + 6) / (9 + 9 + 8 + 10 + 6)
    assert metrics["axis:completeness"] == pytest.approx((first_score + completeness) / 2)
    assert metrics["axis:accuracy"] == 1.0 and metrics["axis:accuracy:n_samples"] == 1
    assert metrics["axis:instruction_following"] == 1.0
    assert metrics["theme:communication"] == pytest.approx(first_score)
    assert metrics["theme:global_health"] == pytest.approx(second_score)
    assert metrics["overall_score:bootstrap_std"] > 0
    assert result.failed_criteria == 1 and result.total_criteria == 17
    assert result.excluded == [None, None]
    (reason, count), = result.failure_reasons().items()
    assert count == 1 and reason.startswith("invalid grader reply")
    assert result.grades.reasons[0][3] == reason
    assert math.isnan(result.grades.verdicts[0][3])
    assert result.grades.explanations[1][0] == "scripted"


def test_nothing_scorable_gives_empty_metrics_and_every_reason(shared_data):
    items = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=3)[1:3]
    judge = CriterionJudge({c.description: None for i in items for c in i.rubric.criteria})
    result = healthbench_eval.evaluate_healthbench(items, FixedPolicy(), judge,
                                                   grader_prompt="rar_jax", grader_max_tokens=8, seed=0)
    assert result.metrics == {} and np.isnan(result.example_scores).all()
    assert result.failed_criteria == result.total_criteria == 12
    assert all("gradings failed" in reason for reason in result.excluded)
    assert result.failure_reasons() == {"judge request failed: HTTP 503 after 4 attempts": 12}


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([5, 1, 9, 1, 3], 2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


# ------------------------------------------------------------------------------ verdict grading
# Records 85 (points 8, 6, 5, -4) and 91 (10, -10, 10, 10) of oss_eval_first100: short prompts
# (about 1,600 byte tokens with the grader prompt) with negative items.
VERDICT_RECORDS = (85, 91)
REFERENCE_LENGTH = 2048  # Reference forwards are right-padded to this many tokens (one compile).


class ProbabilityJudge:
    """A verdict-scoring backend with scripted P(true) per rubric item text (None: failed)."""

    def __init__(self, p_true):
        self.p_true = p_true
        self.groups = []

    def score_binary(self, judge_prompts, groups=None):
        self.groups.append(list(groups))
        values, reasons = [], []
        for prompt in judge_prompts:
            assert prompt.verdict_prefix == '{"criteria_met": '
            value = self.p_true[ITEM_RE.search(prompt.messages[-1]["content"]).group(2)]
            values.append(np.nan if value is None else value)
            reasons.append("verdict mass 0.001 below min_verdict_mass 0.01" if value is None
                           else None)
        count = len(values)
        return Judgments(np.array(values, np.float32), reasons, np.full(count, 0.5, np.float32))


def _hand_score(points_and_met):
    """simple-evals' example score: points of met items / positive points."""
    points_and_met = list(points_and_met)
    achieved = sum(points for points, met in points_and_met if met)
    return achieved / sum(points for points, _ in points_and_met if points > 0)


def test_verdict_grading_thresholds_probabilities_and_keeps_failures(shared_data):
    items = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=3)[1:3]
    # Record 1 (10, 9, 8, 8, 7, 6, 6, 5, -6, -4): a failed judgment (NaN with its reason) and a
    # value outside [0, 1] are failures, 0.5 is met at threshold 0.5. Record 2 (5, 5).
    plan = [[0.9, None, 0.5, 0.2, 0.7, 1.5, 0.49, 0.51, 0.6, 0.1], [0.0, 1.0]]
    assert [c.weight for c in items[0].rubric.criteria] == [10, 9, 8, 8, 7, 6, 6, 5, -6, -4]
    p_true = {}
    for item, values in zip(items, plan, strict=True):
        for criterion, value in zip(item.rubric.criteria, values, strict=True):
            p_true[criterion.description] = value
    judge = ProbabilityJudge(p_true)
    result = healthbench_eval.evaluate_healthbench(
        items, FixedPolicy(), judge, grader_prompt="rar_jax", grader_max_tokens=1, seed=0, bootstrap_samples=10,
        chunk_size=3, grader_scoring="verdict_probs", grader_threshold=0.5,
    )
    # Chunks of whole examples; each example's items are one group.
    assert judge.groups == [[0] * len(items[0].rubric), [1] * len(items[1].rubric)]
    scores, failed = [], 0
    for row, (item, values) in enumerate(zip(items, plan)):
        kept = []
        for column, (criterion, value) in enumerate(zip(item.rubric.criteria, values)):
            if value is None or not 0 <= value <= 1:
                failed += 1
                assert math.isnan(result.grades.verdicts[row][column])
                assert math.isnan(result.grades.p_true[row][column])
                assert result.grades.reasons[row][column].startswith("verdict scoring failed: ")
                continue
            kept.append((criterion.weight, value >= 0.5))
            assert result.grades.verdicts[row][column] == float(value >= 0.5)
            assert result.grades.p_true[row][column] == pytest.approx(value)
        scores.append(_hand_score(kept))
    assert failed == 2 and result.failed_criteria == 2
    # By hand: record 1 keeps 10, 8, 8, 7, 6, 5, -6, -4 (9 and 6 failed); met 10, 8, 7, 5, -6.
    assert scores == [(10 + 8 + 7 + 5 - 6) / (10 + 8 + 8 + 7 + 6 + 5), 0.5]
    np.testing.assert_allclose(result.example_scores, scores, rtol=1e-6)
    assert result.metrics["overall_score"] == pytest.approx(np.clip(np.mean(scores), 0, 1))
    assert result.grader_scoring == "verdict_probs" and result.grader_threshold == 0.5
    assert result.met_criteria() == sum(
        v is not None and 0.5 <= v <= 1 for values in plan for v in values
    )
    reasons = result.failure_reasons()
    assert reasons == {
        "verdict scoring failed: verdict mass 0.001 below min_verdict_mass 0.01": 1,
        "verdict scoring failed: verdict probability 1.5 is not in [0, 1]": 1,
    }


def test_generate_mode_keeps_no_probabilities(shared_data):
    items = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=2)[1:]
    judge = CriterionJudge({c.description: _verdict(True) for c in items[0].rubric.criteria})
    result = healthbench_eval.evaluate_healthbench(items, FixedPolicy(), judge,
                                                   grader_prompt="rar_jax", grader_max_tokens=8, seed=0,
                                                   bootstrap_samples=5)
    assert result.grader_scoring == "generate" and result.grader_threshold is None
    assert np.isnan(result.grades.p_true[0]).all() and np.isnan(result.grades.verdict_mass[0]).all()
    assert result.met_criteria() == len(items[0].rubric)


def test_verdict_mode_refuses_backends_that_cannot_read_probabilities(shared_data):
    items = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=1)
    writer = CriterionJudge({})
    with pytest.raises(ValueError, match="needs a judge with score_binary"):
        healthbench_eval.evaluate_healthbench(items, FixedPolicy(), writer, grader_prompt="rar_jax", grader_max_tokens=8,
                                              seed=0, grader_scoring="verdict_probs")

    class GeneratingJudge(ProbabilityJudge):
        scoring = "generate"

    with pytest.raises(ValueError, match=r"GeneratingJudge.scoring is 'generate'"):
        healthbench_eval.evaluate_healthbench(items, FixedPolicy(), GeneratingJudge({}),
                                              grader_prompt="rar_jax", grader_max_tokens=8, seed=0,
                                              grader_scoring="verdict_probs")
    with pytest.raises(ValueError, match="grader_threshold: expected a finite number"):
        healthbench_eval.evaluate_healthbench(items, FixedPolicy(), ProbabilityJudge({}),
                                              grader_prompt="rar_jax", grader_max_tokens=8, seed=0,
                                              grader_scoring="verdict_probs",
                                              grader_threshold=float("nan"))
    with pytest.raises(ValueError, match="grader_scoring 'verdict': expected one of"):
        healthbench_eval.evaluate_healthbench(items, FixedPolicy(), writer, grader_prompt="rar_jax", grader_max_tokens=8,
                                              seed=0, grader_scoring="verdict")
    assert writer.calls == 0  # Refused before anything ran.


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_checkpoint import write_tiny_checkpoint

    from rar_jax.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "c"))


def _reference_p_true(model, tokenizer, messages):
    """P(true) from full uncached forwards of context + "true" and context + "false".

    The context is the chat template + '{"criteria_met": ' (written out here); each word's
    log-probability is the sum of its bytes' log-softmax (float64 numpy) over the logits.
    """
    import jax.numpy as jnp

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text += '{"criteria_met": '
    context = tokenizer.encode(text)
    rows = [tokenizer.encode(text + word) for word in ("true", "false")]
    tokens = np.zeros((2, REFERENCE_LENGTH), np.int32)
    mask = np.zeros((2, REFERENCE_LENGTH), bool)
    for row, ids in enumerate(rows):
        assert ids[: len(context)] == context and len(ids) <= REFERENCE_LENGTH
        tokens[row, : len(ids)] = ids
        mask[row, : len(ids)] = True  # Right padding: causal attention never sees it.
    positions = np.broadcast_to(np.arange(REFERENCE_LENGTH, dtype=np.int32), tokens.shape)
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(positions),
                      attention_mask=jnp.asarray(mask))
    logits = np.asarray(logits, np.float64)
    log_p = []
    for row, ids in enumerate(rows):
        steps = logits[row, len(context) - 1 : len(ids) - 1]
        top = steps.max(axis=-1, keepdims=True)
        log_softmax = steps - top - np.log(np.exp(steps - top).sum(axis=-1, keepdims=True))
        log_p.append(sum(log_softmax[j, ids[len(context) + j]] for j in range(len(steps))))
    return 1.0 / (1.0 + np.exp(log_p[1] - log_p[0]))


@pytest.mark.slow
def test_verdict_grading_with_the_tiny_judge_matches_a_hand_score(shared_data, tiny_model):
    from rar_jax.judges.jax_backend import BINARY_OPTIONS, JaxJudge

    model, tokenizer = tiny_model
    records = _records(shared_data, VERDICT_RECORDS)
    wanted = [r["prompt_id"] for r in records]
    items = [i for i in healthbench_eval.read_healthbench_items(shared_data / OSS, limit=100)
             if i.example_id in wanted]
    assert [i.example_id for i in items] == wanted
    answers = FixedPolicy().answer([item.conversation for item in items]).texts

    # The verdict-first grader prompt of every item, built here; P(true) from the judge's
    # option log-probabilities (one call with the grouping evaluate_healthbench uses: one group
    # per answer), normalised over true / false in float64 numpy.
    judge_prompts, groups = [], []
    for row, (item, answer) in enumerate(zip(items, answers)):
        for criterion in item.rubric.criteria:
            prompt = prompts.healthbench_grader_verdict_prompt(
                list(item.conversation), answer, criterion
            )
            user = prompt.messages[1]["content"]
            assert f'<rubric_item points="{criterion.weight:g}">' in user and answer in user
            judge_prompts.append(prompt)
            groups.append(row)
    judge = JaxJudge(model, tokenizer, batch_size=8)
    logprobs = judge.option_logprobs(judge_prompts, BINARY_OPTIONS, groups).astype(np.float64)
    p_flat = 1.0 / (1.0 + np.exp(logprobs[:, 1] - logprobs[:, 0]))
    # Independently of the judge's tokenisation and batching: the first item's P(true) from two
    # full forwards (the context written out by hand).
    first = _reference_p_true(model, tokenizer, judge_prompts[0].messages)
    assert p_flat[0] == pytest.approx(first, abs=2e-6)

    def run(threshold):
        return healthbench_eval.evaluate_healthbench(
            items, FixedPolicy(), judge, grader_prompt="rar_jax", grader_max_tokens=1, seed=0, bootstrap_samples=10,
            grader_scoring="verdict_probs", grader_threshold=threshold,
        )

    everything = run(0.0)
    assert everything.failed_criteria == 0
    stored = everything.grades.p_true  # What a user re-thresholds.
    # float32 log-probabilities near -20 nats: P(true) agrees to about 1e-6.
    np.testing.assert_allclose(np.concatenate(stored), p_flat, rtol=0, atol=2e-6)
    # The tiny random judge puts P(true) near 0.9997 for every item ("false" is one byte longer
    # than "true"); a threshold in the middle of the widest gap of the stored values splits them.
    flat = np.sort(np.concatenate(stored))
    gap = int(np.argmax(np.diff(flat)))
    threshold = float((flat[gap] + flat[gap + 1]) / 2)
    assert flat[gap + 1] - flat[gap] > 1e-7

    by_threshold = {0.0: everything, threshold: run(threshold), 1.01: run(1.01)}
    for value, outcome in by_threshold.items():
        for got, expected in zip(outcome.grades.p_true, stored, strict=True):
            np.testing.assert_array_equal(got, expected)  # Same prompts, same P(true).
        verdicts = [p >= value for p in stored]
        for got, expected in zip(outcome.grades.verdicts, verdicts, strict=True):
            np.testing.assert_array_equal(got, expected.astype(float))
        scores = [_hand_score(zip([c.weight for c in item.rubric.criteria], met))
                  for item, met in zip(items, verdicts)]
        np.testing.assert_allclose(outcome.example_scores, scores, rtol=1e-9)
        assert outcome.metrics["overall_score"] == pytest.approx(np.clip(np.mean(scores), 0, 1))
        assert outcome.grader_threshold == value
    # The split threshold met some items and not others; 0.0 meets all, 1.01 none.
    assert 0 < by_threshold[threshold].met_criteria() < 8
    assert by_threshold[0.0].met_criteria() == 8 and by_threshold[1.01].met_criteria() == 0
    all_met = [(8 + 6 + 5 - 4) / (8 + 6 + 5), (10 - 10 + 10 + 10) / 30]
    np.testing.assert_allclose(by_threshold[0.0].example_scores, all_met)
    assert by_threshold[0.0].metrics["overall_score"] == pytest.approx(np.mean(all_met))
    assert by_threshold[1.01].metrics["overall_score"] == 0.0


SIMPLE_EVALS_ITEM = re.compile(r"# Rubric item\n\[(-?\d+)\] (.*?)\n\n# Instructions", re.DOTALL)


class FlakyOfficialGrader:
    """Reads simple-evals' filled template; the first reply for one criterion has no verdict."""

    def __init__(self, replies, flaky):
        self.replies, self.flaky, self.asked = replies, flaky, []

    def generate_texts(self, list_of_messages, *, max_tokens, temperature=0.0, seed=0):
        texts = []
        for messages in list_of_messages:
            (message,) = messages  # One user message, no system message.
            points, criterion = SIMPLE_EVALS_ITEM.search(message["content"]).groups()
            self.asked.append((criterion, temperature, seed, message["content"]))
            first = sum(asked[0] == criterion for asked in self.asked) == 1
            texts.append("Let me think." if criterion == self.flaky and first
                         else self.replies[criterion])
        return GenerationResult(texts, ["stop"] * len(texts), [None] * len(texts))


def test_the_official_grader_template_and_a_resampled_grading(shared_data):
    (item,) = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=1)
    criteria = [c.description for c in item.rubric.criteria]
    replies = {c: _verdict(i % 2 == 0) for i, c in enumerate(criteria)}
    judge = FlakyOfficialGrader(replies, flaky=criteria[1])
    result = healthbench_eval.evaluate_healthbench(
        [item], FixedPolicy(), judge, grader_max_tokens=64, seed=0, bootstrap_samples=10,
        grader_max_resamples=2,
    )
    # simple-evals' filling: role: content turns, the answer as the last assistant turn,
    # "[points] criterion" as the rubric item.
    template = (shared_data / "healthbench" / "grader_template.txt").read_text()
    conversation = "\n\n".join(f"{t['role']}: {t['content']}" for t in item.conversation)
    first = item.rubric.criteria[0]
    expected = template.replace("<<conversation>>", f"{conversation}\n\nassistant: answer 0") \
        .replace("<<rubric_item>>", f"[{int(first.weight)}] {first.description}")
    assert judge.asked[0][3] == expected
    # The failed grading was asked once more, sampled (temperature 1, seed 1), and then counted.
    again = [asked for asked in judge.asked if asked[0] == criteria[1]]
    assert [(t, s) for _, t, s, _ in again] == [(0.0, 0), (1.0, 1)]
    assert result.failed_criteria == 0 and result.resampled_criteria() == 1
    assert result.grades.attempts[0].tolist() == [1, 2] + [1] * (len(criteria) - 2)
    np.testing.assert_array_equal(result.grades.verdicts[0],
                                  [1.0 if i % 2 == 0 else 0.0 for i in range(len(criteria))])


def test_a_grading_still_unusable_after_the_resamples_is_counted(shared_data):
    (item,) = healthbench_eval.read_healthbench_items(shared_data / OSS, limit=1)
    criteria = [c.description for c in item.rubric.criteria]
    replies = {c: _verdict(True) for c in criteria}
    replies[criteria[0]] = "never a verdict"
    judge = FlakyOfficialGrader(replies, flaky=None)
    result = healthbench_eval.evaluate_healthbench(
        [item], FixedPolicy(), judge, grader_max_tokens=64, seed=0, bootstrap_samples=10,
        grader_max_resamples=3,
    )
    assert result.grades.attempts[0][0] == 4 and result.failed_criteria == 1
    assert result.grades.reasons[0][0].startswith("invalid grader reply")
