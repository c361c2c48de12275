"""Tests of HealthBench scoring against m42's graded first-100 examples and by hand."""

import ast
import json

import numpy as np
import pytest

from rar_jax.eval.healthbench_scoring import (
    GradedExample,
    aggregate_metrics,
    example_metrics,
    healthbench_metrics,
    read_graded_examples,
)
from rar_jax.rubrics.schema import Criterion, Polarity, Rubric, RubricError


@pytest.fixture(scope="module")
def graded(shared_data):
    folder = shared_data / "healthbench_graded_m42"
    path = folder / "judge_responses_100.jsonl"
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    with open(folder / "final_metrics.json", encoding="utf-8") as handle:
        final = json.load(handle)
    return read_graded_examples(path), records, final


def test_recomputes_all_100_example_scores(graded):
    examples, records, _ = graded
    assert len(examples) == len(records) == 100
    negative = 0
    for example, record in zip(examples, records, strict=True):
        metrics = example_metrics(example)
        upstream = ast.literal_eval(record["metrics"])
        # The record's `score` is stored rounded to 10 decimals; `metrics` holds full precision.
        assert round(metrics["overall_score"], 10) == record["score"]
        assert abs(metrics["overall_score"] - upstream["overall_score"]) <= 1e-12
        assert list(metrics) == list(upstream)  # Same tags, same order.
        for name, value in upstream.items():
            assert abs(metrics[name] - value) <= 1e-12, name
        negative += metrics["overall_score"] < 0
    assert negative == 1  # SOURCE.md: one example scores below zero; it is not clipped.


def test_verdicts_are_read_from_the_python_literal_responses(graded):
    examples, records, _ = graded
    for example, record in zip(examples, records, strict=True):
        responses = ast.literal_eval(record["responses"])
        expected = [float(r["response_dict"]["criteria_met"]) for r in responses]
        np.testing.assert_array_equal(example.criteria_met, expected)
        assert [c.weight for c in example.rubric.criteria] == [r["points"] for r in responses]
        assert example.example_tags == tuple(record["example_tags"])


def test_recomputes_final_metrics(graded):
    examples, _, final = graded
    ours = healthbench_metrics(examples, seed=0)
    assert list(ours) == list(final)  # Exactly the same keys in the same order.
    for key, value in final.items():
        if key.endswith(":bootstrap_std"):
            # Random upstream: agree within 15 % (exactly 0 where every value is the same).
            assert ours[key] == pytest.approx(value, rel=0.15, abs=1e-12), key
        else:
            assert ours[key] == value, key
            assert type(ours[key]) is type(value), key
    assert ours["score"] == ours["overall_score"] == 0.48529782446506947


def test_bootstrap_is_seeded_and_uses_its_sample_count(graded):
    examples, _, _ = graded
    per_example = [example_metrics(example) for example in examples]
    first = aggregate_metrics(per_example, seed=3)
    assert aggregate_metrics(per_example, seed=3) == first
    other = aggregate_metrics(per_example, seed=4)
    assert other["overall_score:bootstrap_std"] != first["overall_score:bootstrap_std"]
    assert other["overall_score"] == first["overall_score"]
    single = aggregate_metrics(per_example, seed=3, bootstrap_samples=1)
    assert all(single[key] == 0.0 for key in single if key.endswith(":bootstrap_std"))
    with pytest.raises(ValueError, match="bootstrap_samples must be >= 1"):
        aggregate_metrics(per_example, seed=3, bootstrap_samples=0)


def _criterion(points, *tags):
    polarity = Polarity.NEGATIVE if points < 0 else Polarity.POSITIVE
    return Criterion("", f"item worth {points}", None, points, polarity, tuple(tags))


def test_hand_computed_example_and_aggregate():
    rubric = Rubric(
        (
            _criterion(6, "axis:accuracy", "level:example"),
            _criterion(4, "axis:completeness", "level:example"),
            _criterion(-5, "axis:safety", "level:example"),
            _criterion(2, "axis:accuracy", "level:cluster"),
        ),
        "hand:1",
    )
    example = GradedExample(rubric, np.array([1.0, 0.0, 1.0, 1.0]), ("theme:hedging",))
    metrics = example_metrics(example)
    # Overall (6 - 5 + 2) / 12. accuracy 8 / 8. completeness 0 / 4. level:example (6 - 5) / 10.
    # axis:safety has no positive points: skipped. level:cluster 2 / 2.
    assert metrics == {
        "overall_score": 3 / 12,
        "theme:hedging": 3 / 12,
        "axis:accuracy": 1.0,
        "level:example": 1 / 10,
        "axis:completeness": 0.0,
        "level:cluster": 1.0,
    }
    assert list(metrics)[:2] == ["overall_score", "theme:hedging"]

    bad = GradedExample(rubric, np.array([0.0, 0.0, 1.0, 0.0]), ("theme:other",))
    bad_metrics = example_metrics(bad)
    assert bad_metrics["overall_score"] == -5 / 12  # Unclipped per example.
    final = aggregate_metrics([metrics, bad_metrics], seed=0, bootstrap_samples=200)
    assert final["overall_score"] == 0.0  # mean(3/12, -5/12) < 0, clipped.
    assert final["overall_score:n_samples"] == 2
    assert final["theme:hedging"] == 0.25 and final["theme:hedging:n_samples"] == 1
    assert final["theme:hedging:bootstrap_std"] == 0.0
    assert final["axis:accuracy"] == pytest.approx(0.5) and final["axis:accuracy:n_samples"] == 2
    assert final["score"] == final["overall_score"]
    # "score" follows the first example's names; names first seen later come after it.
    names = [key for key in final if not key.endswith((":n_samples", ":bootstrap_std"))]
    assert names == [
        "overall_score",
        "theme:hedging",
        "axis:accuracy",
        "level:example",
        "axis:completeness",
        "level:cluster",
        "score",
        "theme:other",
    ]
    # The first name's bootstrap takes the Generator's first draws: 200 resamples with replacement,
    # each mean clipped to [0, 1], then the population std.
    values = np.array([3 / 12, -5 / 12])
    rng = np.random.default_rng(0)
    expected = np.std(np.clip(rng.choice(values, size=(200, 2)).mean(1), 0, 1))
    assert final["overall_score:bootstrap_std"] == expected


def test_missing_verdict_and_bad_rubric_raise():
    rubric = Rubric((_criterion(5), _criterion(-2)), "hand:2")
    with pytest.raises(ValueError, match=r"hand:2: criteria \[1\] have no verdict"):
        example_metrics(GradedExample(rubric, np.array([1.0, np.nan])))
    with pytest.raises(ValueError, match="hand:2: expected 2 verdicts"):
        example_metrics(GradedExample(rubric, np.array([1.0])))
    negative_only = Rubric((_criterion(-5),), "hand:3")
    with pytest.raises(ValueError, match="hand:3: the rubric has no positive points"):
        example_metrics(GradedExample(negative_only, np.array([0.0])))
    with pytest.raises(ValueError, match="example_tags has duplicates"):
        example_metrics(GradedExample(rubric, np.array([1.0, 0.0]), ("theme:a", "theme:a")))
    with pytest.raises(ValueError, match="at least one example"):
        aggregate_metrics([], seed=0)


def test_graded_file_errors_name_line_and_field(tmp_path):
    record = {
        "rubrics": [
            {"criterion": "A.", "points": 5, "tags": []},
            {"criterion": "B.", "points": -2, "tags": []},
        ],
        "example_tags": ["theme:x"],
        "responses": [
            {"response_dict": {"criteria_met": True}, "points": 5},
            {"response_dict": {"criteria_met": None}, "points": -2},
        ],
    }
    path = tmp_path / "graded.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(
        RubricError,
        match=r"graded\.jsonl:1: responses\[1\]\.response_dict\.criteria_met: "
        r"expected true or false, got None",
    ):
        read_graded_examples(path)
    record["responses"][1]["response_dict"]["criteria_met"] = False
    record["responses"][1]["points"] = 3
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(RubricError, match=r"graded\.jsonl:1: responses\[1\]\.points: expected -2"):
        read_graded_examples(path)
    record["responses"] = str(record["responses"][:1])
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(
        RubricError, match=r"graded\.jsonl:1: responses: expected a list of 2 grades"
    ):
        read_graded_examples(path)
