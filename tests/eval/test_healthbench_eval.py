"""HealthBench evaluation on real HealthBench prompts with a fake policy and a fake grader whose
verdicts are known: reply parsing, failed gradings left out and counted, and the official score
(met points / positive points per example, clipped mean, per axis and theme) computed by hand."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from rar_jax.data.builders import build
from rar_jax.eval import healthbench_eval
from rar_jax.eval.answering import PolicyAnswers, length_sorted_batches
from rar_jax.judges.jax_backend import GenerationResult

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
        items, FixedPolicy(), judge, grader_max_tokens=99, seed=0, bootstrap_samples=50,
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
                                                   grader_max_tokens=8, seed=0)
    assert result.metrics == {} and np.isnan(result.example_scores).all()
    assert result.failed_criteria == result.total_criteria == 12
    assert all("gradings failed" in reason for reason in result.excluded)
    assert result.failure_reasons() == {"judge request failed: HTTP 503 after 4 attempts": 12}


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([5, 1, 9, 1, 3], 2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)
