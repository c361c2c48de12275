"""Judge-quality harness: metrics vs hand-computed and brute-force references, pair builders on
the real shared data, and ``rar-judge-quality`` end to end against a fake OpenAI server."""

from __future__ import annotations

import ast
import csv
import json
import pathlib
import re
import subprocess

import numpy as np
import pytest

from rar_jax.eval import judge_quality as jq
from rar_jax.judges import prompts
from rar_jax.judges.jax_backend import Judgments

from cli_runner import REPO_ROOT, run_experiment
from fake_openai_server import FakeOpenAIServer

NAN = float("nan")


# ----------------------------------------------------------------------------- metrics
def test_binary_agreement_on_a_hand_computed_table():
    # tp=3, fp=1, fn=2, tn=4 (n=10).
    predicted = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    labels = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    result = jq.binary_agreement(predicted, labels)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (3, 1, 2, 4)
    assert result["n"] == 10
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["precision"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx(0.6)
    assert result["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    # p_o = 0.7; rates 0.4 (predicted) and 0.5 (labels): p_e = 0.4*0.5 + 0.6*0.5 = 0.5.
    assert result["kappa"] == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert result["label_positive_rate"] == pytest.approx(0.5)
    assert result["predicted_positive_rate"] == pytest.approx(0.4)


def test_kappa_extremes_and_undefined_ratios():
    assert jq.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert jq.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # A constant rater that agrees half the time: p_o = p_e = 0.5 -> 0.
    assert jq.cohen_kappa([1, 1, 1, 1], [1, 0, 1, 0]) == pytest.approx(0.0)
    # Both raters constant and equal: p_e = 1, kappa undefined.
    assert np.isnan(jq.cohen_kappa([0, 0, 0], [0, 0, 0]))
    assert np.isnan(jq.cohen_kappa([], []))

    nothing_predicted = jq.binary_agreement([0, 0, 0], [1, 0, 0])
    assert np.isnan(nothing_predicted["precision"])
    assert nothing_predicted["recall"] == 0.0 and nothing_predicted["f1"] == 0.0
    all_negative = jq.binary_agreement([0, 0], [0, 0])
    assert np.isnan(all_negative["f1"]) and np.isnan(all_negative["recall"])
    assert all_negative["accuracy"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        jq.binary_agreement([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        jq.binary_agreement([2, 0], [1, 0])


def reference_kappa(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Kappa from the 2x2 table: 2 (tp tn - fn fp) / ((tp+fp)(fp+tn) + (tp+fn)(fn+tn))."""
    tp = np.sum(predicted & labels)
    tn = np.sum(~predicted & ~labels)
    fp = np.sum(predicted & ~labels)
    fn = np.sum(~predicted & labels)
    return 2.0 * (tp * tn - fn * fp) / ((tp + fp) * (fp + tn) + (tp + fn) * (fn + tn))


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over every (positive, negative) pair of 1[s+ > s-] + 0.5 * 1[s+ == s-]."""
    wins = 0.0
    positives, negatives = scores[labels], scores[~labels]
    for high in positives:
        for low in negatives:
            wins += 1.0 if high > low else 0.5 if high == low else 0.0
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(6))
def test_kappa_and_auc_match_brute_force_references(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(5, 60))
    labels = rng.random(count) < 0.4
    labels[:2] = [True, False]  # Both classes present.
    # Scores on a coarse grid: many ties, within and across classes.
    scores = np.round(0.5 * labels + rng.random(count), 1)
    predicted = rng.random(count) < 0.5
    predicted[:2] = [True, False]
    assert jq.cohen_kappa(predicted, labels) == pytest.approx(reference_kappa(predicted, labels))
    assert jq.roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_roc_auc_hand_cases():
    assert jq.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Ties count one half: (0.5 vs 0.5) x 2 = 1, (0.9 vs either 0.5) x 2 = 2 -> 3 / 4.
    assert jq.roc_auc([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1]) == pytest.approx(0.75)
    assert jq.roc_auc([0.7, 0.7, 0.7], [1, 0, 1]) == pytest.approx(0.5)
    assert jq.roc_auc([0.9, 0.1], [0, 1]) == pytest.approx(0.0)
    assert np.isnan(jq.roc_auc([0.2, 0.3], [1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        jq.roc_auc([0.2, NAN], [1, 0])


def test_agreement_report_counts_failures_and_uses_the_threshold():
    probabilities = np.array([0.9, 0.5, 0.49, NAN, 0.2, NAN, 0.7])
    labels = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    report = jq.agreement_report(probabilities, labels)
    assert (report["n"], report["scored"], report["failed"]) == (7, 5, 2)
    # Scored: P = 0.9, 0.5, 0.49, 0.2, 0.7 -> predicted 1, 1, 0, 0, 1 (0.5 counts as true).
    expected = jq.binary_agreement([1, 1, 0, 0, 1], [1, 1, 0, 0, 0])
    for key in ("tp", "fp", "fn", "tn", "accuracy", "f1", "kappa", "predicted_positive_rate"):
        assert report[key] == pytest.approx(expected[key]), key
    assert report["accuracy"] == pytest.approx(4 / 5)
    assert report["auc"] == pytest.approx(brute_force_auc(
        np.array([0.9, 0.5, 0.49, 0.2, 0.7]), np.array([1, 1, 0, 0, 0], bool)
    ))
    assert report["label_positive_rate"] == pytest.approx(2 / 5)
    assert report["label_positive_rate_all"] == pytest.approx(3 / 7)
    assert report["mean_probability"] == pytest.approx(np.mean([0.9, 0.5, 0.49, 0.2, 0.7]))
    strict = jq.agreement_report(probabilities, labels, threshold=0.8)
    assert strict["predicted_positive_rate"] == pytest.approx(1 / 5)
    nothing = jq.agreement_report([NAN, NAN], [True, False])
    assert nothing["scored"] == 0 and np.isnan(nothing["accuracy"]) and np.isnan(nothing["auc"])


def make_pair(
    index: int, label: bool, subgroups: tuple[str, ...], answer: str = "a"
) -> jq.LabeledPair:
    return jq.LabeledPair(
        dataset="test",
        pair_id=f"p{index}",
        answer_id=answer,
        conversation=({"role": "user", "content": f"question {answer}"},),
        answer=f"answer {answer}",
        criterion=f"statement {index}",
        label=label,
        subgroups=subgroups,
    )


def test_subgroup_reports_and_markdown():
    pairs = [
        make_pair(0, True, ("kind:x",)),
        make_pair(1, False, ("kind:x", "kind:y")),
        make_pair(2, True, ("kind:y",)),
        make_pair(3, False, ()),
    ]
    probabilities = np.array([0.8, 0.6, NAN, 0.1])
    reports = jq.subgroup_reports(pairs, probabilities)
    assert list(reports) == ["all", "kind:x", "kind:y"]
    assert reports["kind:x"] == jq.agreement_report([0.8, 0.6], [True, False])
    assert reports["kind:y"]["failed"] == 1 and reports["kind:y"]["scored"] == 1
    assert reports["all"]["n"] == 4
    table = jq.report_markdown(reports).splitlines()
    assert table[0].startswith("| subset | n | failed | accuracy | F1 | kappa | AUC |")
    # all: scored P 0.8, 0.6, 0.1 vs labels 1, 0, 0 -> tp 1, fp 1, tn 1: accuracy 2/3, F1 2/3,
    # kappa (2/3 - (2/3*1/3 + 1/3*2/3)) / (1 - 4/9) = 0.4, AUC 1, rates 1/3 and 2/3.
    assert table[2] == "| all | 4 | 1 | 0.667 | 0.667 | 0.400 | 1.000 | 0.333 | 0.667 |"
    # kind:y: one scored pair, P 0.6 (predicted true) vs label false: every hit is 0, p_e = 0.
    assert table[4] == "| kind:y | 2 | 1 | 0.000 | 0.000 | 0.000 | nan | 0.000 | 1.000 |"
    with pytest.raises(ValueError, match="one per pair"):
        jq.subgroup_reports(pairs, probabilities[:3])


# ----------------------------------------------------------------------------- builders
@pytest.fixture(scope="module")
def healthbench_file(shared_data) -> pathlib.Path:
    return shared_data / "healthbench_graded_m42" / "judge_responses_100.jsonl"


@pytest.fixture(scope="module")
def kqa_file(shared_data) -> pathlib.Path:
    return shared_data / "kqa" / "NLI_medical_annotator.csv"


def test_healthbench_pairs_on_the_graded_fixture(healthbench_file):
    records = [json.loads(line) for line in healthbench_file.read_text().splitlines()]
    grades = [ast.literal_eval(record["responses"]) for record in records]
    pair_set = jq.healthbench_pairs(healthbench_file)
    pairs = pair_set.pairs
    assert len(pairs) == sum(len(record["rubrics"]) for record in records) == 1157
    assert sum(pair.label for pair in pairs) == sum(
        grade["response_dict"]["criteria_met"] for row in grades for grade in row
    ) == 615
    assert len({pair.answer_id for pair in pairs}) == 100
    assert pair_set.excluded == {} and pair_set.source == str(healthbench_file)
    negative = sum(item["points"] < 0 for record in records for item in record["rubrics"])
    assert sum("points:negative" in pair.subgroups for pair in pairs) == negative == 342

    # Spot check: the last item of the third record.
    record, grade = records[2], grades[2]
    index = len(record["rubrics"]) - 1
    offset = len(records[0]["rubrics"]) + len(records[1]["rubrics"]) + index
    pair = pairs[offset]
    assert pair.pair_id == f"{record['prompt_id']}/{index}"
    assert pair.answer_id == record["prompt_id"]
    assert pair.criterion == record["rubrics"][index]["criterion"]
    assert pair.label is grade[index]["response_dict"]["criteria_met"]
    assert pair.answer == record["prompt_response"][0]["content"]
    assert [dict(m) for m in pair.conversation] == [
        {"role": m["role"], "content": m["content"]} for m in record["prompt"]
    ]
    sign = "positive" if record["rubrics"][index]["points"] > 0 else "negative"
    axes = [tag for tag in record["rubrics"][index]["tags"] if tag.startswith("axis:")]
    assert pair.subgroups == (f"points:{sign}", *axes)

    limited = jq.healthbench_pairs(healthbench_file, limit=160).pairs
    assert limited == pairs[:160]
    with pytest.raises(ValueError, match="limit"):
        jq.healthbench_pairs(healthbench_file, limit=-1)


def test_healthbench_pairs_reject_a_record_without_an_answer(healthbench_file, tmp_path):
    record = json.loads(healthbench_file.read_text().splitlines()[0])
    record["prompt_response"] = "just a string"
    path = tmp_path / "graded.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"graded\.jsonl:1: prompt_response"):
        jq.healthbench_pairs(path)


def test_kqa_pairs_on_the_physician_labels(kqa_file):
    with open(kqa_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    votes = [[row[f"label_{k}"] for k in range(3)] for row in rows]
    unanimous = [len(set(v)) == 1 for v in votes]

    pair_set = jq.kqa_pairs(kqa_file)
    pairs = pair_set.pairs
    assert len(pairs) == len(rows) == 399 and pair_set.excluded == {}
    assert [pair.label for pair in pairs] == [row["majority_label"] == "Entailment" for row in rows]
    assert sum(pair.label for pair in pairs) == 153
    assert sum("agreement:unanimous" in pair.subgroups for pair in pairs) == sum(unanimous) == 312
    assert len({pair.answer_id for pair in pairs}) == 50

    # Row 1: Neutral by two physicians, Entailment by one -> label False, a majority row.
    assert votes[1] == ["Neutral", "Neutral", "Entailment"]
    pair = pairs[1]
    assert pair.pair_id == "kqa/1" and pair.label is False
    assert pair.criterion == rows[1]["claim"].strip()
    assert pair.answer == rows[1]["answer"]
    assert pair.conversation == ({"role": "user", "content": rows[1]["Question"]},)
    assert pair.subgroups == ("category:Must_have", "agreement:majority", "llm:gpt35")
    assert pairs[0].label is True and pairs[0].answer_id == pairs[1].answer_id

    strict = jq.kqa_pairs(kqa_file, min_agreement=3)
    assert len(strict.pairs) == 312
    assert strict.excluded == {"agreement below min_agreement": 87}
    contradictions = sum(row["majority_label"] == "Contradiction" for row in rows)
    no_contradiction = jq.kqa_pairs(kqa_file, contradiction="exclude")
    assert no_contradiction.excluded == {"contradiction excluded": contradictions} == {
        "contradiction excluded": 12
    }
    assert len(no_contradiction.pairs) == 399 - 12
    limited = jq.kqa_pairs(kqa_file, limit=200, contradiction="exclude").pairs
    assert limited == no_contradiction.pairs[:200]
    wrapped = jq.kqa_pairs(kqa_file, limit=1, criterion_format="The response says: {claim}")
    assert wrapped.pairs[0].criterion == "The response says: " + rows[0]["claim"].strip()
    for bad in ({"min_agreement": 1}, {"contradiction": "maybe"}, {"criterion_format": "x"}):
        with pytest.raises(ValueError):
            jq.kqa_pairs(kqa_file, **bad)


KQA_HEADER = ",Question,llm_x,answer,claim,category_x,majority_label,label_0,label_1,label_2\n"


def test_kqa_pairs_errors_and_no_majority(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text(
        KQA_HEADER
        + "0,Q?,gpt4,An answer.,A claim,Must_have,Entailment,Entailment,Neutral,Entailment\n"
        + "1,Q?,gpt4,An answer.,Another,Must_have,Neutral,Entailment,Neutral,Contradiction\n"
    )
    # Row 1 has no majority (three different labels): left out and counted.
    pair_set = jq.kqa_pairs(path)
    assert [pair.pair_id for pair in pair_set.pairs] == ["kqa/0"]
    assert pair_set.excluded == {"no majority": 1}

    path.write_text(
        KQA_HEADER + "0,Q?,gpt4,An answer.,A claim,Must_have,Entailed,Entailment,Neutral,Neutral\n"
    )
    with pytest.raises(ValueError, match=r"nli\.csv:2: column 'majority_label': expected one of"):
        jq.kqa_pairs(path)
    path.write_text(
        KQA_HEADER
        + "0,Q?,gpt4,An answer.,A claim,Must_have,Entailment,Neutral,Neutral,Entailment\n"
    )
    with pytest.raises(ValueError, match=r"nli\.csv:2: column 'majority_label'.*not the majority"):
        jq.kqa_pairs(path)
    path.write_text(KQA_HEADER + "0,Q?,gpt4,,A claim,Must_have,Neutral,Neutral,Neutral,Neutral\n")
    with pytest.raises(ValueError, match=r"nli\.csv:2: column 'answer': expected a non-empty"):
        jq.kqa_pairs(path)
    path.write_text(",Question,answer\n0,Q?,A\n")
    with pytest.raises(ValueError, match=r"nli\.csv:1: missing columns"):
        jq.kqa_pairs(path)


# ----------------------------------------------------------------------------- scoring
def statement_of(prompt_text: str) -> str:
    """The criterion inside an explicit judge prompt's user message."""
    match = re.search(r"<statement>\n(.*?)\n</statement>", prompt_text, re.DOTALL)
    assert match, "not an explicit criterion prompt"
    return match.group(1)


class RecordingBackend:
    """score_binary answers from a table keyed by statement; records every call."""

    def __init__(self, outcomes: dict[str, float | str]):
        self.outcomes = outcomes
        self.calls: list[tuple[list, list]] = []

    def score_binary(self, judge_prompts, groups=None) -> Judgments:
        self.calls.append((list(judge_prompts), list(groups)))
        values, reasons = [], []
        for prompt in judge_prompts:
            outcome = self.outcomes[statement_of(prompt.messages[-1]["content"])]
            values.append(np.nan if isinstance(outcome, str) else outcome)
            reasons.append(outcome if isinstance(outcome, str) else None)
        count = len(judge_prompts)
        return Judgments(np.asarray(values, np.float32), reasons, np.full(count, 0.75, np.float32))


def test_score_pairs_keeps_answers_together_and_reports_failures():
    answers = ["a", "a", "a", "b", "b", "c", "d", "d"]
    pairs = [make_pair(i, i % 2 == 0, (), answer) for i, answer in enumerate(answers)]
    outcomes: dict[str, float | str] = {f"statement {i}": 0.1 * i for i in range(8)}
    outcomes["statement 2"] = "judge request failed: HTTP 500"
    outcomes["statement 5"] = 1.5  # Not a probability: a failure too.
    backend = RecordingBackend(outcomes)
    scores = jq.score_pairs(pairs, backend, chunk_size=2)

    expected = np.array([0.0, 0.1, NAN, 0.3, 0.4, NAN, 0.6, 0.7], np.float32)
    np.testing.assert_allclose(scores.probabilities, expected, rtol=1e-6)
    assert scores.reasons[2] == "judge request failed: HTTP 500"
    assert scores.reasons[5] == "verdict 1.5 is not a probability in [0, 1]"
    assert [r for i, r in enumerate(scores.reasons) if i not in (2, 5)] == [None] * 6
    np.testing.assert_allclose(scores.mass, 0.75)
    # Chunks of >= 2 prompts that never split an answer: [a a a] [b b] [c d d].
    sent = [[statement_of(p.messages[-1]["content"]) for p in call[0]] for call in backend.calls]
    assert sent == [
        ["statement 0", "statement 1", "statement 2"],
        ["statement 3", "statement 4"],
        ["statement 5", "statement 6", "statement 7"],
    ]
    assert [call[1] for call in backend.calls] == [[0, 0, 0], [1, 1], [2, 3, 3]]
    # The prompt is the explicit per-criterion check of the pair.
    first = backend.calls[0][0][0]
    reference = prompts.explicit_criterion_prompt(pairs[0].conversation, "answer a", "statement 0")
    assert first == reference
    with pytest.raises(ValueError, match="chunk_size"):
        jq.score_pairs(pairs, backend, chunk_size=0)


def test_score_pairs_sends_the_longest_answers_first_and_restores_the_order():
    answers = ["s", "s", "loooong", "mid", "loooong", "mid"]
    pairs = [make_pair(i, True, (), answer) for i, answer in enumerate(answers)]
    backend = RecordingBackend({f"statement {i}": 0.1 * (i + 1) for i in range(6)})
    scores = jq.score_pairs(pairs, backend, chunk_size=1)
    np.testing.assert_allclose(scores.probabilities, 0.1 * np.arange(1, 7), rtol=1e-6)
    sent = [[statement_of(p.messages[-1]["content"]) for p in call[0]] for call in backend.calls]
    assert sent == [
        ["statement 2", "statement 4"],
        ["statement 3", "statement 5"],
        ["statement 0", "statement 1"],
    ]
    # Group ids stay those of first appearance in the input (s=0, loooong=1, mid=2).
    assert [call[1] for call in backend.calls] == [[1, 1], [2, 2], [0, 0]]


# ----------------------------------------------------------------------------- CLI
class StatementServer(FakeOpenAIServer):
    """Replies to explicit-criterion prompts with a verdict that is a function of the statement:
    true when the statement has an even number of characters; "I cannot decide." (unparseable)
    for statements listed in ``undecided``."""

    def __init__(self, undecided: set[str]):
        super().__init__()
        self.undecided = undecided

    @staticmethod
    def verdict(statement: str) -> bool:
        return len(statement) % 2 == 0

    def _reply(self, body, key):
        reply = super()._reply(body, key)
        statement = statement_of(key)
        text = (
            "I cannot decide."
            if statement in self.undecided
            else f'{{"criteria_met": {str(self.verdict(statement)).lower()}, "explanation": "x"}}'
        )
        reply["choices"][0]["message"]["content"] = text
        return reply


def run_cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return run_experiment(
        "judge_quality.py", f"--config={REPO_ROOT / 'configs' / 'base.py'}", *args,
        cwd=cwd, timeout=300,
    )


def http_judge_flags(server: FakeOpenAIServer) -> list[str]:
    return [
        "--config.judge.backend=http",
        f"--config.judge.http.base_url={server.base_url}",
        "--config.judge.http.max_attempts=1",
        "--config.judge.http.timeout_s=20",
    ]


def test_cli_end_to_end_with_a_fake_http_judge(healthbench_file, kqa_file, tmp_path):
    healthbench = jq.healthbench_pairs(healthbench_file, limit=22).pairs
    kqa = jq.kqa_pairs(kqa_file, limit=16).pairs
    # Both subsets cross an answer boundary.
    assert len({pair.answer_id for pair in healthbench}) == 2
    assert len({pair.answer_id for pair in kqa}) == 2
    undecided = {healthbench[3].criterion, kqa[5].criterion}
    server = StatementServer(undecided)
    server.start()
    try:
        output_dir = tmp_path / "report"
        result = run_cli(
            f"--healthbench_path={healthbench_file}",
            f"--kqa_path={kqa_file}",
            "--limit_healthbench=22",
            "--limit_kqa=16",
            f"--output_dir={output_dir}",
            *http_judge_flags(server),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # Every pair once, and the two undecided ones again judge.max_resamples (2) times each.
        assert server.count() == 22 + 16 + 2 * 2
    finally:
        server.stop()

    report = json.loads((output_dir / "judge_quality.json").read_text())
    records = [
        json.loads(line)
        for line in (output_dir / "judge_quality_pairs.jsonl").read_text().splitlines()
    ]
    assert report["judge"]["backend"] == "http" and report["threshold"] == 0.5
    assert [r["pair_id"] for r in records] == [p.pair_id for p in healthbench + kqa]
    for record, pair in zip(records, healthbench + kqa):
        assert record["label"] is pair.label and record["criterion"] == pair.criterion
        if pair.criterion in undecided:
            assert record["p_true"] is None and record["predicted"] is None
            assert "invalid judge reply" in record["reason"]
        else:
            assert record["p_true"] == float(StatementServer.verdict(pair.criterion))
            assert record["predicted"] is StatementServer.verdict(pair.criterion)
            assert record["reason"] is None

    for name, pairs in (("healthbench", healthbench), ("kqa", kqa)):
        section = report["datasets"][name]
        assert section["pairs"] == len(pairs)
        assert sum(section["failure_reasons"].values()) == 1
        mine = [r for r in records if r["dataset"] == name]
        probabilities = np.array([NAN if r["p_true"] is None else r["p_true"] for r in mine])
        expected = jq.subgroup_reports(pairs, probabilities)
        assert list(section["reports"]) == list(expected)
        for subset, values in expected.items():
            for key, value in values.items():
                got = section["reports"][subset][key]
                if isinstance(value, float) and np.isnan(value):
                    assert got is None, (name, subset, key)
                else:
                    assert got == pytest.approx(value), (name, subset, key)
        overall = section["reports"]["all"]
        assert (overall["n"], overall["failed"]) == (len(pairs), 1)

    markdown = (output_dir / "judge_quality.md").read_text()
    assert markdown.count("| subset | n | failed |") == 2
    all_rows = [line for line in markdown.splitlines() if line.startswith("| all |")]
    assert all_rows == [
        jq.report_markdown({"all": report_from_json(report, name)}).splitlines()[2]
        for name in ("healthbench", "kqa")
    ]
    assert "1 x invalid judge reply" in markdown
    assert all_rows[0] in result.stdout


def report_from_json(report: dict, name: str) -> dict:
    """The JSON 'all' report with nulls turned back into NaN."""
    values = report["datasets"][name]["reports"]["all"]
    return {key: NAN if value is None else value for key, value in values.items()}


def test_cli_defaults_and_usage_errors(healthbench_file, tmp_path):
    server = StatementServer(set())
    server.start()
    try:
        # HealthBench path from config.healthbench.graded_path, output to config.output_dir.
        result = run_cli(
            f"--config.healthbench.graded_path={healthbench_file}",
            f"--config.output_dir={tmp_path / 'from_config'}",
            "--limit_healthbench=3",
            *http_judge_flags(server),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.stop()
    report = json.loads((tmp_path / "from_config" / "judge_quality.json").read_text())
    assert list(report["datasets"]) == ["healthbench"]
    assert report["datasets"]["healthbench"]["reports"]["all"]["n"] == 3

    nothing = run_cli(f"--output_dir={tmp_path / 'none'}", cwd=tmp_path)
    assert nothing.returncode != 0 and "nothing to score" in nothing.stderr
    negative = run_cli(f"--healthbench_path={healthbench_file}", "--limit_kqa=-2", cwd=tmp_path)
    assert negative.returncode != 0 and "--limit_kqa must be >= 0" in negative.stderr
