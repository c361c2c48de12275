"""rar-judge end to end against the fake OpenAI server: exact rewards, verdicts and failures.

The CLI runs in a subprocess (absl flags are process-global) and judges through the HTTP backend
against a real loopback server whose replies are chosen per criterion statement. Expected rewards
are computed here by hand from the paper's formulas (category weights 1.0 / 0.7 / 0.3 / 0.9,
pitfalls credited as 1 - verdict; HealthBench points met / positive points; rating (s - 1) / 9
or s / 10), not with the aggregation code.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from cli_runner import run_experiment

PAPER_WEIGHTS = {"essential": 1.0, "important": 0.7, "optional": 0.3, "pitfall": 0.9}

SMALL_RUBRIC = [
    {"title": "Names aspirin", "description": "Essential Criteria: Mentions aspirin.", "weight": 5},
    {"title": "Gives dose", "description": "Important Criteria: Gives the dose.", "weight": 3},
    {
        "title": "Antibiotics",
        "description": "Pitfall Criteria: Recommends antibiotics.",
        "weight": -1,
    },
]
# Verdicts the fake judge gives to the small rubric's statements.
SMALL_VERDICTS = {
    "Mentions aspirin.": True,
    "Gives the dose.": False,
    "Recommends antibiotics.": False,
}


def statement_of(text: str) -> str | None:
    """The criterion of an explicit judge prompt's user message, or None."""
    match = re.search(r"<statement>\n(.*?)\n</statement>", text, re.DOTALL)
    return match.group(1) if match else None


def run_judge(tmp_path: pathlib.Path, records: list[dict], *overrides: str):
    """Writes ``records`` and runs rar-judge on them; returns (process, output lines)."""
    records_path = tmp_path / "records.jsonl"
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    output = tmp_path / "scores.jsonl"
    process = run_experiment(
        "judge.py",
        f"--input={records_path}",
        f"--output={output}",
        "--batch_size=2",
        "--config.judge.backend=http",
        "--config.judge.http.max_concurrency=4",
        "--config.judge.http.max_attempts=3",
        "--config.judge.http.backoff_initial_s=0.01",
        "--config.judge.http.progress_min_requests=0",
        *overrides,
        cwd=tmp_path,
        timeout=300,
    )
    lines = []
    if output.exists():
        lines = [json.loads(line) for line in output.read_text().splitlines()]
    return process, lines


def test_rar_explicit_rewards_verdicts_and_failures(server, shared_data, tmp_path):
    real = json.loads(
        (shared_data / "rar_samples" / "rar_medicine_sample3.jsonl").read_text().splitlines()[0]
    )
    real_statements = [
        item["description"].split(":", 1)[1].strip() for item in real["rubric"]
    ]

    def replies(text: str) -> str:
        statement = statement_of(text)
        if statement in SMALL_VERDICTS:
            if "<response>\nundecided\n</response>" in text and statement == "Gives the dose.":
                return "I cannot decide."
            verdict = "true" if SMALL_VERDICTS[statement] else "false"
            return f'{{"criteria_met": {verdict}, "explanation": "scripted"}}'
        index = real_statements.index(statement)
        return '```json\n{"criteria_met": %s}\n```' % ("true" if index % 2 == 0 else "false")

    server.replies = replies
    records = [
        {
            "id": "small",
            "prompt": "What helps a headache?",
            "answer": "aspirin",
            "rubric": SMALL_RUBRIC,
        },
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What helps a headache?"},
            ],
            "answer": "undecided",
            "rubric": SMALL_RUBRIC,
        },
        {**real, "id": 7, "answer": "Vernal keratoconjunctivitis (D)."},
    ]
    process, lines = run_judge(
        tmp_path,
        records,
        f"--config.judge.http.base_url={server.base_url}",
        "--config.reward.method=rar_explicit", "--config.judge.max_resamples=0",
    )
    assert process.returncode == 0, process.stderr

    small, undecided, real_line = lines
    # Small rubric: Essential met (1.0 * 1), Important not (0.7 * 0), pitfall avoided (0.9 * 1).
    assert small["id"] == "small" and small["failed"] is False and small["reason"] is None
    assert small["reward"] == pytest.approx((1.0 + 0.9) / (1.0 + 0.7 + 0.9), abs=1e-6)
    assert small["verdicts"] == [1.0, 0.0, 0.0]
    assert small["rating"] is None

    assert undecided["id"] == f"{tmp_path / 'records.jsonl'}:2"
    assert undecided["failed"] is True and undecided["reward"] is None
    assert undecided["reason"] == (
        "2 of 3 criteria judged, fewer than reward.min_judged_fraction=0.8: criterion 2: invalid "
        "judge reply: no criteria_met verdict found in output 'I cannot decide.'"
    )
    assert undecided["unjudged_criteria"] == [{"criterion": 1, "reason": (
        "invalid judge reply: no criteria_met verdict found in output 'I cannot decide.'")}]
    assert undecided["verdicts"] == [1.0, None, 0.0]

    categories = [item["description"].split(" ", 1)[0].lower() for item in real["rubric"]]
    verdicts = [1.0 if j % 2 == 0 else 0.0 for j in range(len(categories))]
    weights = [PAPER_WEIGHTS[c] for c in categories]
    credit = [1.0 - v if c == "pitfall" else v for v, c in zip(verdicts, categories)]
    assert "pitfall" in categories
    assert real_line["id"] == "7"
    assert real_line["verdicts"] == verdicts
    assert real_line["reward"] == pytest.approx(
        sum(w * x for w, x in zip(weights, credit)) / sum(weights), abs=1e-6
    )

    assert "judged 3 records: mean reward" in process.stdout
    mean = (small["reward"] + real_line["reward"]) / 2
    assert f"mean reward {mean:.4f} over 2 scored" in process.stdout
    assert "failed: 1" in process.stdout
    assert "failed: 1 records; unjudged criteria: 1" in process.stdout
    assert "1 x invalid judge reply: no criteria_met verdict" in process.stdout  # Per criterion.
    assert all(r.body["temperature"] == 0.0 for r in server.requests)


def test_ablation_and_signed_abs_keep_verdicts_aligned(server, tmp_path):
    server.replies = lambda text: (
        '{"criteria_met": %s}' % ("true" if SMALL_VERDICTS[statement_of(text)] else "false")
    )
    records = [{"question": "What helps a headache?", "answer": "aspirin", "rubric": SMALL_RUBRIC}]
    process, [line] = run_judge(
        tmp_path,
        records,
        f"--config.judge.http.base_url={server.base_url}",
        "--config.reward.method=rar_explicit",
        "--config.rubric.ablation=no_pitfalls",
        "--config.reward.explicit_normalization=signed_abs",
    )
    assert process.returncode == 0, process.stderr
    # The pitfall is not judged (null); signed_abs: (5 * 1 + 3 * 0) / (5 + 3).
    assert line["verdicts"] == [1.0, 0.0, None]
    assert line["reward"] == pytest.approx(5 / 8)
    assert server.count() == 2


def test_healthbench_points_on_a_real_record(server, shared_data, tmp_path):
    record = json.loads(
        (shared_data / "healthbench" / "oss_eval_first100.jsonl").read_text().splitlines()[0]
    )
    criteria = [item["criterion"].strip() for item in record["rubrics"]]
    met = [j % 3 != 1 for j in range(len(criteria))]
    server.replies = lambda text: (
        '{"criteria_met": true}' if met[criteria.index(statement_of(text))] else
        '{"criteria_met": false}'
    )
    process, [line] = run_judge(
        tmp_path,
        [{**record, "answer": "Find a therapist and keep your appointments."}],
        f"--config.judge.http.base_url={server.base_url}",
        "--config.reward.method=healthbench_points",
    )
    assert process.returncode == 0, process.stderr
    points = [item["points"] for item in record["rubrics"]]
    achieved = sum(p for p, m in zip(points, met) if m)
    possible = sum(p for p in points if p > 0)
    assert any(p < 0 for p, m in zip(points, met) if m)  # A met negative criterion subtracts.
    assert line["id"] == record["prompt_id"], line
    assert line["reward"] == pytest.approx(achieved / possible, abs=1e-6), line
    assert line["verdicts"] == [1.0 if m else 0.0 for m in met]


def test_implicit_rating_normalisation(server, tmp_path):
    server.replies = lambda text: (
        '{"rating": 8}' if "<response>\naspirin\n</response>" in text else "Rating: eleven"
    )
    records = [
        {"prompt": "What helps a headache?", "answer": "aspirin", "rubric": SMALL_RUBRIC},
        {"prompt": "What helps a headache?", "answer": "nothing", "rubric": SMALL_RUBRIC[:1]},
    ]
    process, lines = run_judge(
        tmp_path,
        records,
        f"--config.judge.http.base_url={server.base_url}",
        "--config.reward.method=rar_implicit",
        "--config.reward.rating_normalization=over_max", "--config.judge.max_resamples=0",
    )
    assert process.returncode == 0, process.stderr
    assert (lines[0]["reward"], lines[0]["rating"], lines[0]["verdicts"]) == (0.8, 8.0, None)
    assert lines[1]["failed"] is True and lines[1]["reward"] is None
    assert lines[1]["reason"].startswith("invalid judge reply: no rating found in output")
    # The implicit judge saw the rubric with its category labels and weights.
    user_text = server.requests[0].body["messages"][-1]["content"]
    assert "[Essential, weight 5] Mentions aspirin." in user_text


def test_bad_records_name_file_line_and_field(tmp_path):
    records = [
        {"prompt": "q", "answer": "a", "rubric": SMALL_RUBRIC},
        {"prompt": "q", "rubric": SMALL_RUBRIC},
        {"prompt": "q", "answer": "a"},
        {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
         "answer": "a", "rubric": SMALL_RUBRIC},
    ]
    process, lines = run_judge(tmp_path, records, "--config.reward.method=rar_explicit")
    assert process.returncode != 0
    path = tmp_path / "records.jsonl"
    assert f"{path}:2: answer: missing required field" in process.stderr
    assert (
        f"{path}:3: rubric: reward.method rar_explicit needs a 'rubric' (RaR) or 'rubrics' "
        "(HealthBench) list" in process.stderr
    )
    assert f"{path}:4: prompt: the last message must be a user turn" in process.stderr
    assert f"{path}:1" not in process.stderr
    assert lines == []


def test_rar_predefined_verdicts_follow_the_fixed_rubric(server, tmp_path):
    # The four generic statements of the packaged predefined rubric; only "concise" is false.
    server.replies = lambda text: (
        '{"criteria_met": %s}' % ("false" if "concise" in statement_of(text) else "true")
    )
    records = [{"prompt": "What helps a headache?", "answer": "aspirin", "rubric": SMALL_RUBRIC}]
    process, [line] = run_judge(
        tmp_path,
        records,
        f"--config.judge.http.base_url={server.base_url}",
        "--config.reward.method=rar_predefined",
    )
    assert process.returncode == 0, process.stderr
    assert line["verdicts"] == [1.0, 1.0, 0.0, 1.0]  # Not the record's 3-item rubric.
    assert line["reward"] == pytest.approx(3 / 4)
    statements = sorted(statement_of(r.body["messages"][-1]["content"]) for r in server.requests)
    assert len(statements) == 4 and not any("aspirin" in s for s in statements)
