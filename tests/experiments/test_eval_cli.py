"""rar-eval end to end: a tiny fixture policy (tests/tiny_checkpoint.py) answers, the fake OpenAI
server (tests/judges/fake_openai_server.py) grades with scripted verdicts, and the reports must
hold the official HealthBench score and the GPQA accuracy computed here by hand. With
``eval.grader_scoring=verdict_probs`` the tiny checkpoint is also the judge: every criterion's
stored P(true), its thresholded verdict and the score must agree.

The CLI runs in a subprocess (absl flags are process-global)."""

from __future__ import annotations

import csv
import json
import re

import pytest
from cli_runner import run_experiment
from tiny_checkpoint import write_tiny_checkpoint

ITEM_RE = re.compile(r'<rubric_item points="([^"]*)">\n(.*?)\n</rubric_item>', re.DOTALL)
RESPONSE_RE = re.compile(r"<final_message>\n(.*?)\n</final_message>", re.DOTALL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def run_eval(tmp_path, benchmark, *overrides):
    return run_experiment(
        "eval.py", benchmark, f"--config.output_dir={tmp_path / 'out'}",
        "--config.judge.http.max_attempts=1", "--config.eval.batch_size=4", *overrides,
        cwd=tmp_path, timeout=300,
    )


def _verdict(met):
    return json.dumps({"explanation": "scripted", "criteria_met": met})


@pytest.mark.slow
def test_healthbench_end_to_end(server, tiny, shared_data, tmp_path):
    lines = (shared_data / "healthbench" / "oss_eval_first100.jsonl").read_text().splitlines()
    records = [json.loads(lines[index]) for index in (2, 8, 9)]
    (tmp_path / "hb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # Record 2 (5, 5): met, not. Record 8 (8, 7, 6, 6, 5, -6): met, not, met, FAILED, not, met.
    # Record 9 (8, 9, 9, -8, 8, 7, -7, 10, 10, 6, -10): met, met, not, met, not, met, not, met,
    # not, met, not.
    plans = [[True, False], [True, False, True, None, False, True],
             [True, True, False, True, False, True, False, True, False, True, False]]
    replies = {}
    for record, plan in zip(records, plans, strict=True):
        for item, met in zip(record["rubrics"], plan, strict=True):
            replies[item["criterion"]] = "I cannot tell." if met is None else _verdict(met)
    server.replies = lambda user: replies[ITEM_RE.search(user).group(2)]

    process = run_eval(
        tmp_path, "healthbench", f"--config.model.source={tiny}",
        "--config.judge.backend=http", f"--config.judge.http.base_url={server.base_url}",
        f"--config.eval.healthbench_path={tmp_path / 'hb.jsonl'}", "--config.eval.grader_prompt=rar_jax",
        "--config.eval.max_new_tokens=6", "--config.eval.grader_max_tokens=32",
        "--config.healthbench.bootstrap_samples=20",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "healthbench_eval.json").read_text())
    scores = [5 / 10, (8 + 6 - 6) / (8 + 7 + 6 + 5),
              (8 + 9 - 8 + 7 + 10 + 6) / (8 + 9 + 9 + 8 + 7 + 10 + 10 + 6)]
    metrics = report["metrics"]
    assert metrics["overall_score"] == pytest.approx(sum(scores) / 3)
    assert metrics["overall_score:n_samples"] == 3
    # Record 2's items are the only axis:accuracy / context_awareness ones besides record 9's
    # 7-point accuracy item (met) and 8-point context item (met).
    assert metrics["axis:accuracy"] == pytest.approx((1.0 + 1.0) / 2)
    assert metrics["axis:context_awareness"] == pytest.approx((0.0 + 1.0) / 2)
    assert metrics["theme:emergency_referrals"] == pytest.approx(0.5)
    assert report["counts"] == {"examples": 3, "scored_examples": 3, "excluded_examples": 0,
                                "criteria": 19, "failed_criteria": 1, "resampled_criteria": 1,
                                "answers_cut": report["counts"]["answers_cut"]}
    (reason, count), = report["failure_reasons"].items()
    assert count == 1 and reason.startswith("invalid grader reply")
    assert server.count() == 19 + 5  # The unusable grading re-asked eval.grader_max_resamples times.

    answers = [json.loads(line) for line in (out / "healthbench_answers.jsonl").read_text()
               .splitlines()]
    assert [a["prompt_id"] for a in answers] == [r["prompt_id"] for r in records]
    assert [a["overall_score"] for a in answers] == pytest.approx(scores)
    assert [c["criteria_met"] for c in answers[1]["criteria"]] == plans[1]
    assert answers[1]["criteria"][3]["reason"] == reason
    # The grader saw the policy's own answers.
    graded = {RESPONSE_RE.search(r.body["messages"][-1]["content"]).group(1).strip()
              for r in server.requests}
    assert graded == {a["answer"].strip() for a in answers}
    markdown = (out / "healthbench_eval.md").read_text()
    assert "| overall_score | " in markdown and "1 failed gradings" in markdown
    assert report["grading"] == {"scoring": "generate", "threshold": None, "criteria_met": 10,
                                 "met_fraction": pytest.approx(10 / 18), "mean_p_true": None,
                                 "mean_verdict_mass": None}
    assert report["setup"]["grader_scoring"] == "generate"
    assert "Grading: generate (HealthBench's grader writes" in markdown
    assert all(c["p_true"] is None for a in answers for c in a["criteria"])
    assert f"| overall_score | {sum(scores) / 3:.4f} |" in process.stdout


@pytest.mark.slow
def test_gpqa_end_to_end_with_verifier(server, tiny, tmp_path):
    header = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
              "Incorrect Answer 3", "Record ID"]
    with (tmp_path / "gpqa.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for index in range(4):
            writer.writerow([f"Question {index}?", f"right {index}", f"wrong {index}a",
                             f"wrong {index}b", f"wrong {index}c", f"rec{index}"])
    verdicts = {"Question 0?": "Yes", "Question 1?": "Yes.", "Question 2?": "No",
                "Question 3?": "Perhaps"}
    server.replies = lambda user: verdicts[re.search(r"(Question \d\?)", user).group(1)]

    process = run_eval(
        tmp_path, "gpqa", f"--config.model.source={tiny}",
        "--config.judge.backend=http", f"--config.judge.http.base_url={server.base_url}",
        f"--config.eval.gpqa_path={tmp_path / 'gpqa.csv'}", "--config.eval.gpqa_runs=2",
        "--config.eval.max_new_tokens=6", "--config.eval.grader_max_tokens=4",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = tmp_path / "out"
    summary = json.loads((out / "gpqa_eval.json").read_text())["summary"]
    answers = [json.loads(line) for line in (out / "gpqa_answers.jsonl").read_text().splitlines()]
    # The tiny random policy states no letter, so every answer goes to the verifier.
    assert {a["method"] for a in answers} == {"verifier", "verifier_failed"}
    assert server.count() == 8
    assert summary["run_accuracy"] == [pytest.approx(2 / 3)] * 2
    assert summary["run_graded"] == [3, 3] and summary["ungraded"] == 2
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["ci95_low"] == pytest.approx(2 / 3) == summary["ci95_high"]
    assert summary["methods"]["verifier_failed"] == 2
    assert [a["correct"] for a in answers if a["question_id"] == "rec3"] == [None, None]
    # The verifier is told the correct letter of that run's order.
    for record in server.requests:
        user = record.body["messages"][-1]["content"]
        letter = re.search(r"<correct_answer>\n\(([A-D])\) right", user).group(1)
        assert re.search(rf"\n{letter}\) right \d", user)
    assert "**Accuracy: 66.7%**" in process.stdout


def test_unknown_benchmark_is_a_usage_error(tmp_path):
    process = run_eval(tmp_path, "mmlu")
    assert process.returncode != 0
    assert "usage: rar-eval {healthbench|gpqa}" in process.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("limit", -1, "'eval.limit' must be >= 0"), ("gpqa_runs", 0, "'eval.gpqa_runs' must be >= 1"),
     ("max_new_tokens", 0, "'eval.max_new_tokens' must be >= 1"),
     ("batch_size", 0, "'eval.batch_size' must be >= 1"),
     ("grader_max_tokens", 0, "'eval.grader_max_tokens' must be >= 1")],
)
def test_eval_config_ranges_are_validated(key, value, message):
    from rar_jax import config as rar_config

    config = rar_config.base_config()
    rar_config.validate(config)
    config.eval[key] = value
    with pytest.raises(rar_config.ConfigError, match=message):
        rar_config.validate(config)


@pytest.mark.slow
def test_healthbench_verdict_grading_end_to_end(tiny, shared_data, tmp_path):
    """The tiny checkpoint answers and grades by verdict probability (no server, no JSON)."""
    lines = (shared_data / "healthbench" / "oss_eval_first100.jsonl").read_text().splitlines()
    # Records 85 (points 8, 6, 5, -4) and 91 (10, -10, 10, 10): short prompts.
    records = [json.loads(lines[index]) for index in (85, 91)]
    (tmp_path / "hb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    process = run_eval(
        tmp_path, "healthbench", f"--config.model.source={tiny}",
        f"--config.judge.model_source={tiny}", "--config.judge.batch_size=4",
        f"--config.eval.healthbench_path={tmp_path / 'hb.jsonl'}",
        "--config.eval.max_new_tokens=4", "--config.eval.grader_scoring=verdict_probs",
        "--config.eval.grader_prompt=rar_jax",
        "--config.eval.grader_threshold=0.9997", "--config.healthbench.bootstrap_samples=20",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "healthbench_eval.json").read_text())
    answers = [json.loads(line) for line in (out / "healthbench_answers.jsonl").read_text()
               .splitlines()]
    # Every criterion graded, its P(true) stored, met exactly when P(true) >= 0.9997.
    met_by_row, p_values = [], []
    for answer, record in zip(answers, records, strict=True):
        criteria = answer["criteria"]
        assert [c["points"] for c in criteria] == [r["points"] for r in record["rubrics"]]
        for criterion in criteria:
            assert 0 < criterion["p_true"] < 1 and criterion["reason"] is None
            assert 0 < criterion["verdict_mass"] <= 1 and criterion["explanation"] is None
            assert criterion["criteria_met"] == (criterion["p_true"] >= 0.9997)
            p_values.append(criterion["p_true"])
        met_by_row.append([(c["points"], c["criteria_met"]) for c in criteria])
    scores = [sum(p for p, met in row if met) / sum(p for p, _ in row if p > 0)
              for row in met_by_row]
    assert [a["overall_score"] for a in answers] == pytest.approx(scores)
    assert report["metrics"]["overall_score"] == pytest.approx(min(max(sum(scores) / 2, 0), 1))
    met = sum(met for row in met_by_row for _, met in row)
    assert report["counts"]["criteria"] == 8 and report["counts"]["failed_criteria"] == 0
    assert report["grading"] == {
        "scoring": "verdict_probs", "threshold": 0.9997, "criteria_met": met,
        "met_fraction": pytest.approx(met / 8), "mean_p_true": pytest.approx(sum(p_values) / 8),
        "mean_verdict_mass": report["grading"]["mean_verdict_mass"],
    }
    assert report["setup"]["grader_scoring"] == "verdict_probs"
    assert report["setup"]["grader_threshold"] == 0.9997
    assert "grader_max_tokens" not in report["setup"]  # Nothing is written in verdict mode.
    markdown = (out / "healthbench_eval.md").read_text()
    assert "Grading: verdict_probs (criteria_met = P(true) >= 0.9997" in markdown
    assert f"- graded criteria judged met: {met} of 8 (" in markdown
    assert "grader_scoring=verdict_probs, grader_threshold=0.9997" in markdown


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"eval.grader_scoring": "verdict_probs", "judge.backend": "http"},
      "'eval.grader_scoring' is 'verdict_probs' but judge.backend='http': reading P(true) needs "
      "the in-process judge with judge.backend='jax' and judge.scoring='verdict_probs'"),
     ({"eval.grader_scoring": "verdict_probs", "judge.scoring": "generate"},
      "'eval.grader_scoring' is 'verdict_probs' but judge.scoring='generate'"),
     ({"eval.grader_threshold": -0.1}, "'eval.grader_threshold' is -0.1; it must be a probability"),
     ({"eval.grader_threshold": 1.5}, "'eval.grader_threshold' is 1.5; it must be a probability"),
     ({"eval.grader_threshold": float("nan")}, "'eval.grader_threshold' is nan"),
     ({"eval.grader_scoring": "verdict"},
      "'eval.grader_scoring' is 'verdict'; expected one of generate, verdict_probs")],
)
def test_verdict_grading_needs_a_judge_that_reads_probabilities(overrides, message):
    from rar_jax import config as rar_config

    config = rar_config.base_config()
    config.eval.grader_prompt = "rar_jax"  # The verdict-first grader, so only this problem.
    for key, value in overrides.items():
        section, leaf = key.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[leaf] = value
    with pytest.raises(rar_config.ConfigError) as error:
        rar_config.validate(config)
    assert message in str(error.value)
    assert str(error.value).count("\n") == 1  # Only this problem.


def test_verdict_grading_config_that_can_run_is_accepted():
    from rar_jax import config as rar_config
    from rar_jax.eval.healthbench_eval import GRADER_SCORING_MODES

    config = rar_config.base_config()
    assert (config.eval.grader_scoring, config.eval.grader_threshold) == ("generate", 0.5)
    config.judge.backend = "http"  # Generate grading works with any backend.
    rar_config.validate(config)
    config.judge.backend = "jax"
    config.eval.grader_scoring = "verdict_probs"
    with pytest.raises(rar_config.ConfigError, match="grader_prompt is 'simple_evals'"):
        rar_config.validate(config)  # The official grader explains before its verdict.
    config.eval.grader_prompt = "rar_jax"
    for threshold in (0.0, 0.5, 1.0):
        config.eval.grader_threshold = threshold
        rar_config.validate(config)
    assert set(rar_config.CHOICES["eval.grader_scoring"]) == set(GRADER_SCORING_MODES)


@pytest.mark.slow
def test_healthbench_with_the_official_grader_resamples_a_failed_grading(
        server, tiny, shared_data, tmp_path):
    record = json.loads((shared_data / "healthbench" / "oss_eval_first100.jsonl")
                        .read_text().splitlines()[2])
    (tmp_path / "hb.jsonl").write_text(json.dumps(record) + "\n")
    first, second = (item["criterion"] for item in record["rubrics"])
    asked = []

    def replies(user):  # simple-evals' filled template: "[points] criterion" as the rubric item.
        criterion = re.search(r"# Rubric item\n\[-?\d+\] (.*?)\n\n# Instructions", user,
                              re.DOTALL).group(1)
        asked.append(criterion)
        if criterion == second and asked.count(second) == 1:
            return "Let me think about it."  # No verdict: re-sampled.
        return _verdict(criterion == first)

    server.replies = replies
    process = run_eval(
        tmp_path, "healthbench", f"--config.model.source={tiny}",
        "--config.judge.backend=http", f"--config.judge.http.base_url={server.base_url}",
        f"--config.eval.healthbench_path={tmp_path / 'hb.jsonl'}",
        "--config.eval.max_new_tokens=6", "--config.eval.grader_max_tokens=32",
        "--config.healthbench.bootstrap_samples=20",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "healthbench_eval.json").read_text())
    assert report["setup"]["grader_prompt"] == "simple_evals"
    assert report["counts"]["resampled_criteria"] == 1 and report["counts"]["failed_criteria"] == 0
    assert asked.count(second) == 2 and len(server.requests) == 3
    assert server.requests[-1].body["temperature"] == 1.0  # The re-ask is sampled.
    assert all(len(r.body["messages"]) == 1 for r in server.requests)  # One user message.
    assert report["metrics"]["overall_score"] == pytest.approx(0.5)  # 5 of 10 points met.
