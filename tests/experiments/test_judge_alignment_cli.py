"""rar-judge-alignment end to end on real HealthBench prompts against fake OpenAI servers.

Five real records of ``oss_eval_first100.jsonl``: one without an ideal completion (left out and
counted), three that become pairs, and one whose perturbation comes back empty (a failed
perturbation, left out and counted). One server is the generator (perturbations and
reference-free rubrics, the third prompt's rubric invalid every time); two servers are judges
whose ratings are scripted per (prompt, condition, answer), so every accuracy is known:

judge-a: physician rubric 8 vs 3 on all three pairs -> 3/3; Likert tie, loss, win -> 1.5/3 (ties
half) or 1/3 (ties wrong); generated rubric tie, win, no rubric -> 1.5/2 with 1 failed.
judge-b: physician rubric unparseable, loss, win -> 1/2 with 1 failed; Likert three ties -> 1.5/3
or 0/3; generated rubric loss, win, no rubric -> 1/2 with 1 failed.

The second run (ties wrong) reuses the stored perturbations and rubrics: the generator only gets
the failed prompt's perturbation and the failed rubric again.
"""

from __future__ import annotations

import hashlib
import re
import json
import pathlib

import pytest

from rar_jax.eval.judge_alignment import wilson_interval

from cli_runner import run_experiment
from fake_openai_server import FakeOpenAIServer

RECORDS = [17, 78, 87, 21, 82]  # 0-based lines of oss_eval_first100.jsonl; 78 has no ideal.
GENERATED_MARK = "GENMARK"
REFERENCE_MARK = "REFMARK"

# Ratings (ideal, perturbed) per judge, condition and pair index; None = unparseable reply.
RATINGS = {
    "judge-a": {
        "rubric": [(8, 3), (8, 3), (8, 3)],
        "likert": [(5, 5), (4, 6), (7, 2)],
        "generated_rubric": [(9, 9), (6, 2), None],
        "reference_rubric": [(7, 7), (9, 1), None],
    },
    "judge-b": {
        "rubric": [(None, None), (2, 7), (10, 1)],
        "likert": [(6, 6), (6, 6), (6, 6)],
        "generated_rubric": [(3, 4), (6, 2), None],
        "reference_rubric": [(8, 2), (6, 2), None],
    },
}


def generated_rubric(topic: str, mark: str = GENERATED_MARK) -> list[dict]:
    """A valid 7-item rubric in the generator's reply format, marked as generated."""
    rows = [("Essential", 5), ("Important", 4), ("Important", 3), ("Optional", 2),
            ("Optional", 1), ("Pitfall", -2), ("Pitfall", -1)]
    return [
        {"title": f"Item {i}", "weight": weight,
         "description": f"{category} Criteria: {mark} point {i} about {topic}."}
        for i, (category, weight) in enumerate(rows)
    ]


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    lines = (shared_data / "healthbench" / "oss_eval_first100.jsonl").read_text().splitlines()
    records = [json.loads(lines[i]) for i in RECORDS]
    path = tmp_path_factory.mktemp("data") / "healthbench5.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with_ideal = [r for r in records if (r.get("ideal_completions_data") or {}).get(
        "ideal_completion")]
    assert len(with_ideal) == 4
    return path, with_ideal


@pytest.fixture
def servers():
    started = [FakeOpenAIServer() for _ in range(3)]
    for server in started:
        server.start()
    yield started
    for server in started:
        server.stop()


def last_user_turn(record: dict) -> str:
    return record["prompt"][-1]["content"].strip()


def which_pair(text: str, records: list[dict]) -> int:
    matches = [k for k, r in enumerate(records) if last_user_turn(r)[:60] in text]
    assert len(matches) == 1, text[:300]
    return matches[0]


def run_cli(tmp_path: pathlib.Path, data_path: pathlib.Path, servers, *args: str):
    generator, judge_a, judge_b = servers
    return run_experiment(
        "judge_alignment.py",
        f"--config.alignment.data={data_path}",
        f"--config.alignment.generator=http:gen@{generator.base_url}",
        "--config.alignment.judges="
        f"http:judge-a@{judge_a.base_url},http:judge-b@{judge_b.base_url}",
        f"--config.output_dir={tmp_path / 'out'}",
        "--config.rubric_generation.max_attempts=2",
        "--config.alignment.batch_size=2",
        "--config.judge.http.max_attempts=1",
        "--config.judge.http.progress_min_requests=0",
        *args,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.slow  # two CLI subprocesses (jax import each): ~30-70 s on 2 busy cores
def test_end_to_end_with_fake_generator_and_judges(data, servers, tmp_path):
    data_path, records = data
    generator, judge_a, judge_b = servers
    ideals = [r["ideal_completions_data"]["ideal_completion"] for r in records]

    def generator_reply(text: str) -> str:
        k = which_pair(text, records)
        if "<ideal_response>" in text:
            assert ideals[k].strip() in text
            return "   " if k == 3 else f"Perturbed answer {k}: rest and fluids, nothing more."
        if k == 2:
            return "I am not able to write a rubric."
        with_reference = ideals[k].strip()[:80] in text
        return json.dumps(generated_rubric(f"prompt {k}",
                                           REFERENCE_MARK if with_reference else GENERATED_MARK))

    def judge_reply(judge: str):
        def reply(text: str) -> str:
            k = which_pair(text, records)
            if "<rubric>" not in text:
                condition = "likert"
            elif REFERENCE_MARK in text:
                condition = "reference_rubric"
            elif GENERATED_MARK in text:
                condition = "generated_rubric"
            else:
                condition = "rubric"
            ratings = RATINGS[judge][condition][k]
            assert ratings is not None, "a pair without a generated rubric must not be judged"
            rating = ratings[1] if "Perturbed answer" in text else ratings[0]
            return "I cannot rate this." if rating is None else json.dumps({"rating": rating})

        return reply

    generator.replies = generator_reply
    judge_a.replies = judge_reply("judge-a")
    judge_b.replies = judge_reply("judge-b")

    ours = ("--config.alignment.conditions=rubric,likert,generated_rubric",
            "--config.alignment.ties=half")
    process = run_cli(tmp_path, data_path, servers, *ours)
    assert process.returncode == 0, process.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "alignment.json").read_text())
    dumped = json.loads((out / "config.json").read_text())  # The resolved config, beside.
    assert dumped["alignment"]["ties"] == "half" and dumped["alignment"]["batch_size"] == 2
    assert dumped["alignment"]["judges"] == (
        f"http:judge-a@{judge_a.base_url},http:judge-b@{judge_b.base_url}")
    assert dumped["rubric_generation"]["max_attempts"] == 2
    assert report["pairs"] == 3 and report["excluded"] == {"no ideal completion": 1}
    assert report["perturbation"] == {
        "generator": f"http:gen@{generator.base_url}",
        "store": str(out / "perturbations.jsonl"),
        "reused": 0, "generated": 3, "failed": 1,
        "failure_reasons": {"empty perturbation": 1},
    }
    assert {k: report["generated_rubrics"][k] for k in ("reused", "generated", "failed")} == {
        "reused": 0, "generated": 2, "failed": 1,
    }
    expected = {  # (accuracy numerator, scored, failed, wins, ties, losses)
        ("judge-a", "rubric"): (3, 3, 0, 3, 0, 0),
        ("judge-a", "likert"): (1.5, 3, 0, 1, 1, 1),
        ("judge-a", "generated_rubric"): (1.5, 2, 1, 1, 1, 0),
        ("judge-b", "rubric"): (1, 2, 1, 1, 0, 1),
        ("judge-b", "likert"): (1.5, 3, 0, 0, 3, 0),
        ("judge-b", "generated_rubric"): (1, 2, 1, 1, 0, 1),
    }
    for (judge, condition), (hits, scored, failed, wins, ties, losses) in expected.items():
        result = report["results"][judge][condition]
        assert (result["scored"], result["failed"], result["wins"], result["ties"],
                result["losses"]) == (scored, failed, wins, ties, losses), (judge, condition)
        assert result["accuracy"] == pytest.approx(hits / scored), (judge, condition)
        low, high = wilson_interval(hits, scored)
        assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))
    assert report["results"]["judge-a"]["rubric"]["accuracy"] == 1.0
    assert "invalid judge reply" in next(iter(report["results"]["judge-b"]["rubric"][
        "failure_reasons"]))
    assert "no valid generated rubric after 2 attempts" in next(iter(
        report["results"]["judge-a"]["generated_rubric"]["failure_reasons"]))

    # The stored perturbations: the three good ones, with the digest of their ideal answer.
    stored = [json.loads(line) for line in (out / "perturbations.jsonl").read_text().splitlines()]
    assert [s["id"] for s in stored] == [r["prompt_id"] for r in records[:3]]
    assert [s["ideal_sha256"] for s in stored] == [
        hashlib.sha256(ideal.encode()).hexdigest()[:16] for ideal in ideals[:3]
    ]
    assert stored[1]["perturbed"] == "Perturbed answer 1: rest and fluids, nothing more."
    scores_text = (out / "alignment_scores.jsonl").read_text()
    scores = [json.loads(line) for line in scores_text.splitlines()]
    assert len(scores) == 2 * 3 * 3
    assert (out / "alignment.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "alignment.md").read_text()
    assert "| judge-a | 1.000 [" in markdown and "(n=2, 0 tied, 1 failed)" in markdown
    # Generation requests: 4 perturbations + rubrics for 3 prompts (+1 retry of the invalid one).
    assert generator.count() == 4 + 3 + 1

    # Second run, ties wrong: stored answers and rubrics are reused; only failures are retried.
    generator.reset()
    process = run_cli(tmp_path, data_path, servers, ours[0], "--config.alignment.ties=wrong")
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((out / "alignment.json").read_text())
    assert report["perturbation"]["reused"] == 3 and report["perturbation"]["generated"] == 0
    assert report["generated_rubrics"]["reused"] == 2
    assert generator.count() == 1 + 2  # prompt 3's perturbation, prompt 2's rubric twice
    wrong = {("judge-a", "likert"): 1 / 3, ("judge-b", "likert"): 0.0,
             ("judge-a", "generated_rubric"): 0.5, ("judge-a", "rubric"): 1.0}
    for (judge, condition), accuracy in wrong.items():
        assert report["results"][judge][condition]["accuracy"] == pytest.approx(accuracy)
    assert report["tie_rule"] == "wrong"


    # Third run, the defaults: Figure 3's three lines, rubrics with and without the reference,
    # ties wrong, the tie rate of every line.
    generator.reset()
    process = run_cli(tmp_path, data_path, servers)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((out / "alignment.json").read_text())
    assert report["conditions"] == ["reference_rubric", "generated_rubric", "likert"]
    assert report["tie_rule"] == "wrong"
    assert {k: report["reference_rubrics"][k] for k in ("reused", "generated", "failed")} == {
        "reused": 0, "generated": 2, "failed": 1,
    }
    lines = {  # (accuracy, tie rate)
        ("judge-a", "reference_rubric"): (0.5, 0.5), ("judge-b", "reference_rubric"): (1.0, 0.0),
        ("judge-a", "generated_rubric"): (0.5, 0.5), ("judge-b", "generated_rubric"): (0.5, 0.0),
        ("judge-a", "likert"): (1 / 3, 1 / 3), ("judge-b", "likert"): (0.0, 1.0),
    }
    for (judge, condition), (accuracy, tie_rate) in lines.items():
        result = report["results"][judge][condition]
        assert (result["accuracy"], result["tie_rate"]) == pytest.approx((accuracy, tie_rate))
    # Prompt 3's perturbation again, the no-reference rubric of prompt 2 twice, and the
    # reference rubrics of prompts 0 and 1 and twice of prompt 2.
    assert generator.count() == 1 + 2 + 2 + 2
    assert "implicit judge, rubric generated with reference" in (out / "alignment.md").read_text()


@pytest.mark.parametrize("key, value, message", [
    ("alignment.conditions", "likert,nope", "'alignment.conditions' is 'likert,nope'; expected"),
    ("alignment.conditions", " , ", "'alignment.conditions'"),
    ("alignment.judges", "", "'alignment.judges' is empty"),
    ("alignment.judges", "smollm2,http:judge", "'alignment.judges': model spec 'http:judge'"),
    ("alignment.generator", "http:gen@ftp://x", "'alignment.generator': model spec"),
    ("alignment.confidence", 1.0, "'alignment.confidence' is 1.0"),
    ("alignment.limit", -1, "'alignment.limit' must be >= 0"),
    ("alignment.batch_size", 0, "'alignment.batch_size' must be >= 1"),
    ("alignment.ties", "coin", "'alignment.ties' is 'coin'; expected one of wrong, half"),
    ("rubric_generation.max_items", 5, "'rubric_generation.max_items' is 5, below"),
    ("rubric_generation.retry_temperature", -0.5, "'rubric_generation.retry_temperature' must"),
    ("rubric_generation.max_attempts", 0, "'rubric_generation.max_attempts' must be >= 1"),
    ("rubric_generation.domain", "law", "expected one of medical, science"),
    ("rubric_generation.input_format", "csv", "expected one of auto, questions, healthbench"),
])
def test_alignment_and_rubric_generation_keys_are_validated(key, value, message):
    from rar_jax import config as rar_config

    config = rar_config.base_config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(rar_config.ConfigError, match=re.escape(message)):
        rar_config.validate(config)


def test_list_options_split_on_commas():
    from rar_jax.eval.judge_alignment_run import split_list

    assert split_list(" smollm2, http:m@http://h/v1 ,,x") == ["smollm2", "http:m@http://h/v1", "x"]
    assert split_list("") == []
