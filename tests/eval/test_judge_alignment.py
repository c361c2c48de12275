"""Judge alignment's pure parts: outcomes, accuracy, the Wilson interval, pairs, specs, store."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from rar_jax.data.examples import Example, read_examples
from rar_jax.eval import judge_alignment as alignment
from rar_jax.eval.plots import plot_accuracy_by_judge
from rar_jax.rubrics.schema import RubricError

NAN = math.nan


def test_pair_outcomes_by_tie_rule():
    ideal = [8.0, 5.0, 4.0, NAN, 7.0]
    perturbed = [3.0, 5.0, 6.0, 2.0, NAN]
    half = alignment.pair_outcomes(ideal, perturbed, ties="half")
    wrong = alignment.pair_outcomes(ideal, perturbed, ties="wrong")
    np.testing.assert_array_equal(half, [1.0, 0.5, 0.0, NAN, NAN])
    np.testing.assert_array_equal(wrong, [1.0, 0.0, 0.0, NAN, NAN])
    with pytest.raises(ValueError, match="ties: expected one of wrong, half"):
        alignment.pair_outcomes(ideal, perturbed, ties="coin")
    with pytest.raises(ValueError, match="one perturbed score per ideal score, got 5 and 2"):
        alignment.pair_outcomes(ideal, perturbed[:2])


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        # Published Wilson 95% intervals (z = 1.96): 8/10, 5/10, 0/10 and 10/10.
        (8, 10, 0.4902, 0.9433),
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got_low, got_high = alignment.wilson_interval(successes, n, 0.95)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_other_confidence_and_edge_cases():
    # 90%: z = 1.644854, z^2 = 2.705544; for 3/4 by hand: centre (0.75 + z^2/8) / (1 + z^2/4)
    # = 1.088193 / 1.676386 = 0.649131, half = z / 1.676386 * sqrt(0.1875/4 + z^2/64)
    # = 0.981193 * 0.298577 = 0.292962.
    low, high = alignment.wilson_interval(3, 4, 0.90)
    assert low == pytest.approx(0.649131 - 0.292962, abs=2e-5)
    assert high == pytest.approx(0.649131 + 0.292962, abs=2e-5)
    assert all(math.isnan(v) for v in alignment.wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        alignment.wilson_interval(5, 4)
    with pytest.raises(ValueError, match="confidence"):
        alignment.wilson_interval(1, 4, 1.0)


def test_wilson_interval_covers_at_its_nominal_rate():
    # Binomial(40, 0.7): the exact coverage of the 95% Wilson interval, summed over outcomes.
    from math import comb

    n, p = 40, 0.7
    coverage = sum(
        comb(n, k) * p**k * (1 - p) ** (n - k)
        for k in range(n + 1)
        if alignment.wilson_interval(k, n)[0] <= p <= alignment.wilson_interval(k, n)[1]
    )
    assert 0.93 < coverage < 0.97


def test_pairwise_accuracy_counts_and_ties():
    ideal = [8.0, 5.0, 4.0, NAN, 7.0, 9.0]
    perturbed = [3.0, 5.0, 6.0, 2.0, NAN, 1.0]
    half = alignment.pairwise_accuracy(ideal, perturbed, ties="half")
    assert {k: half[k] for k in ("pairs", "scored", "failed", "wins", "ties", "losses")} == {
        "pairs": 6, "scored": 4, "failed": 2, "wins": 2, "ties": 1, "losses": 1,
    }
    assert half["accuracy"] == pytest.approx(2.5 / 4)
    low, high = alignment.wilson_interval(2.5, 4)
    assert (half["ci_low"], half["ci_high"]) == (low, high)
    assert half["interval"] == "wilson" and half["tie_rule"] == "half"
    assert half["tie_rate"] == pytest.approx(1 / 4)
    wrong = alignment.pairwise_accuracy(ideal, perturbed)  # The default: the paper's rule.
    assert wrong["tie_rule"] == "wrong" and wrong["tie_rate"] == pytest.approx(1 / 4)
    assert wrong["accuracy"] == pytest.approx(2 / 4)
    assert (wrong["ci_low"], wrong["ci_high"]) == alignment.wilson_interval(2, 4)
    empty = alignment.pairwise_accuracy([NAN], [1.0])
    assert empty["scored"] == 0 and empty["failed"] == 1 and math.isnan(empty["accuracy"])
    assert math.isnan(empty["tie_rate"])


def _example(example_id: str, reference: str | None) -> Example:
    return Example(({"role": "user", "content": "q"},), None, reference, example_id)


def test_alignment_examples_keeps_ideal_answers_and_counts_the_rest():
    examples = [
        _example("a", "ideal a"),
        _example("b", None),
        _example("c", "   "),
        _example("a", "ideal a again"),
        _example("d", "ideal d"),
    ]
    kept, excluded = alignment.alignment_examples(examples)
    assert [e.example_id for e in kept] == ["a", "d"]
    assert kept[0].reference == "ideal a"
    assert excluded == {"no ideal completion": 2, "repeated prompt id": 1}


def test_alignment_examples_on_real_healthbench(shared_data):
    path = shared_data / "healthbench" / "oss_eval_first100.jsonl"
    with_ideal = sum(
        1
        for line in path.read_text().splitlines()
        if (json.loads(line).get("ideal_completions_data") or {}).get("ideal_completion")
    )
    kept, excluded = alignment.alignment_examples(read_examples(path, "healthbench"))
    assert len(kept) == with_ideal == 80
    assert excluded == {"no ideal completion": 20}
    assert all(e.rubric is not None and len(e.rubric) > 0 for e in kept)


def test_parse_model_spec():
    spec = alignment.parse_model_spec("http:gpt-4o-mini@https://api.openai.com/v1")
    assert spec == alignment.ModelSpec(
        "http", "gpt-4o-mini", model="gpt-4o-mini", base_url="https://api.openai.com/v1"
    )
    assert alignment.parse_model_spec("http:org/m@x@http://h:8000/v1").model == "org/m@x"
    assert alignment.parse_model_spec("smollm2") == alignment.ModelSpec(
        "jax", "smollm2", source="smollm2"
    )
    assert alignment.parse_model_spec("/ckpt/qwen2.5-7b/").name == "qwen2.5-7b"
    # A URL-looking path is a JAX source only if it does not start with "http:" + non-"//".
    with pytest.raises(ValueError, match="expected http:<model>@<http"):
        alignment.parse_model_spec("http:gpt-4o-mini")
    with pytest.raises(ValueError, match="expected http:<model>@<http"):
        alignment.parse_model_spec("http:m@ftp://host")
    with pytest.raises(ValueError, match="expected a model source"):
        alignment.parse_model_spec(" ")


def test_clean_perturbation():
    assert alignment.clean_perturbation("  worse\n", "ideal") == ("worse", None)
    assert alignment.clean_perturbation(" \n", "ideal") == (None, "empty perturbation")
    assert alignment.clean_perturbation("the  ideal\nanswer", "the ideal answer ") == (
        None,
        "perturbation identical to the ideal answer",
    )


def test_perturbation_store_round_trip_and_errors(tmp_path):
    record = alignment.perturbation_record("p1", "the ideal", "a worse one", "smollm2")
    assert record["ideal_sha256"] == hashlib.sha256(b"the ideal").hexdigest()[:16]
    path = tmp_path / "store.jsonl"
    newer = dict(record, perturbed="newer")
    path.write_text(json.dumps(record) + "\n" + json.dumps(newer) + "\n")
    assert alignment.read_perturbations(path) == {"p1": newer}
    bad = dict(record, perturbed="")
    path.write_text(json.dumps(record) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RubricError, match=r"store.jsonl:2: perturbed: expected a non-empty"):
        alignment.read_perturbations(path)


def test_report_markdown_cells():
    results = {
        "j": {
            "rubric": alignment.pairwise_accuracy([9, 8, 1], [1, 2, NAN]),
            "likert": alignment.pairwise_accuracy([NAN], [1]),
        }
    }
    table = alignment.report_markdown(results, ["j"], ["rubric", "likert"])
    low, high = alignment.wilson_interval(2, 2)
    assert table.splitlines()[0] == (
        "| judge | implicit judge, physician rubric | Likert, no rubric |"
    )
    assert table.splitlines()[2] == (
        f"| j | 1.000 [{low:.3f}, {high:.3f}] (n=2, 0 tied, 1 failed) | n/a (0 of 1 scored) |"
    )


def test_plot_accuracy_by_judge_writes_png(tmp_path):
    path = tmp_path / "alignment.png"
    plot_accuracy_by_judge(
        ["small", "large"],
        {
            "rubric": [(0.6, 0.4, 0.8), (0.9, 0.7, 1.0)],
            "likert": [(NAN, NAN, NAN), (0.5, 0.3, 0.7)],
        },
        path,
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="expected 2 points, got 1"):
        plot_accuracy_by_judge(["a", "b"], {"x": [(0.5, 0.4, 0.6)]}, path)
