"""GPQA evaluation: letter extraction by hand, the t interval against numpy, reading a synthetic
official-format CSV (and the same questions built as a TFDS data set), and grading with a fake
policy and a fake judge whose answers are known."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from rar_jax.data.builders import MalformedRowError, build, gpqa_config
from rar_jax.data.builders.gpqa_diamond import choice_order
from rar_jax.eval import gpqa_eval
from rar_jax.eval.answering import PolicyAnswers
from rar_jax.judges.jax_backend import GenerationResult

CHOICES = ("4.2 eV", "1.5 eV", "$3 \\times 10^8$ m/s", "none of these")


@pytest.mark.parametrize(
    ("text", "letter", "method"),
    [
        ("Reasoning... so the answer is \\boxed{C}.", "C", "boxed"),
        ("\\boxed{(b)}", "B", "boxed"),
        ("$\\boxed{\\text{D}}$", "D", "boxed"),
        ("\\boxed{A) 4.2 eV}", "A", "boxed"),
        ("first \\boxed{A}, on reflection \\boxed{B}", "B", "boxed"),
        ("\\fbox{C}", "C", "boxed"),
        ("The final answer is boxed{D}", "D", "boxed"),
        ("\\boxed{1.5 eV}", "B", "boxed_text"),
        ("\\boxed{3 \\times 10^8 m/s}", "C", "boxed_text"),
        ("The answer is (C).", "C", "answer_phrase"),
        ("**Answer:** B", "B", "answer_phrase"),
        ("Final answer: D\nbecause ...", "D", "answer_phrase"),
        ("Answer: A) 4.2 eV", "A", "answer_phrase"),
        ("The correct option is B, since ...", "B", "answer_phrase"),
        ("A) 4.2 eV\n\nThe correct answer is B) 1.5 eV.", "B", "answer_phrase"),
        ("A) Helium", "A", "leading_letter"),
        ("**(C)** because ...", "C", "leading_letter"),
        ("D. none of these", "D", "leading_letter"),
        ("B:", "B", "leading_letter"),
        ("E) something", None, "unparseable"),
        ("Apples are red.", None, "unparseable"),
        ("Answer: A patient would know.", None, "unparseable"),
        ("\\boxed{2.0 eV}", None, "unparseable"),
        ("\\boxed{E}", None, "unparseable"),
        ("I believe it is the second one.", None, "unparseable"),
        ("   ", None, "unparseable"),
    ],
)
def test_letter_extraction(text, letter, method):
    extraction = gpqa_eval.extract_choice_letter(text, CHOICES)
    assert (extraction.letter, extraction.method) == (letter, method)
    assert (extraction.reason is None) == (letter is not None)


def test_extraction_reasons_say_what_was_wrong():
    assert "not one of A, B, C, D" in gpqa_eval.extract_choice_letter("\\boxed{E}").reason
    assert gpqa_eval.extract_choice_letter("").reason == "empty answer"


def test_interval_matches_a_numpy_t_reference():
    values = np.array([0.30, 0.35, 0.40, 0.25, 0.50])
    t_975_4 = 2.7764451051977987  # Student-t 0.975 quantile, 4 degrees of freedom (tables).
    half = t_975_4 * values.std(ddof=1) / np.sqrt(values.size)
    mean, low, high = gpqa_eval.mean_confidence_interval(values)
    assert mean == pytest.approx(0.36)
    assert (low, high) == pytest.approx((0.36 - half, 0.36 + half), rel=1e-12)
    ten = np.linspace(0.2, 0.4, 10)
    t_975_9 = 2.2621571627409915
    _, low, high = gpqa_eval.mean_confidence_interval(ten)
    assert high - low == pytest.approx(2 * t_975_9 * ten.std(ddof=1) / np.sqrt(10), rel=1e-9)
    mean, low, high = gpqa_eval.mean_confidence_interval([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="NaN"):
        gpqa_eval.mean_confidence_interval([0.1, np.nan])


HEADER = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1",
          "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Record ID",
          "High-level domain"]


def _rows(count):
    return [
        {
            "Pre-Revision Question": "old", "Question": f"Question {i}: which value?",
            "Correct Answer": f" right {i} ", "Incorrect Answer 1": f"wrong {i}a",
            "Incorrect Answer 2": f"wrong {i}b", "Incorrect Answer 3": f"wrong {i}c",
            "Explanation": "because", "Record ID": f"rec{i:03d}",
            "High-level domain": "Chemistry" if i % 2 else "Physics",
        }
        for i in range(count)
    ]


def _write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_questions_are_permuted_per_run_with_the_seed(tmp_path):
    path = _write_csv(tmp_path / "gpqa.csv", _rows(6))
    items = gpqa_eval.read_gpqa_items(path, num_runs=3, seed=5, limit=4)
    assert len(items) == 12 and [item.run for item in items] == [0] * 4 + [1] * 4 + [2] * 4
    for item in items:
        index = int(item.question_id[3:])
        canonical = [f"right {index}", f"wrong {index}a", f"wrong {index}b", f"wrong {index}c"]
        order = choice_order(item.question_id, 5, item.run)
        assert item.choices == tuple(canonical[i] for i in order)
        assert item.choices[item.answer_index] == f"right {index}"
        assert item.source == f"{path}:{index + 2}"
        assert f"{item.answer_letter}) right {index}" in item.prompt()
        assert item.prompt().endswith("for example \\boxed{A}.")
    letters = {(item.question_id, item.answer_letter) for item in items}
    assert len(letters) > 4  # Some question's correct letter moves between runs.


def test_malformed_csv_row_names_file_line_and_column(tmp_path):
    rows = _rows(3)
    rows[1]["Incorrect Answer 2"] = "  "
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(MalformedRowError, match=r"bad.csv:3: Incorrect Answer 2: expected a non-e"):
        gpqa_eval.read_gpqa_items(path, num_runs=1, seed=0)
    rows = _rows(3)
    rows[2]["Record ID"] = "rec000"
    path = _write_csv(tmp_path / "dup.csv", rows)
    with pytest.raises(MalformedRowError, match=r"dup.csv:4: Record ID: 'rec000' repeats"):
        gpqa_eval.read_gpqa_items(path, num_runs=1, seed=0)


def test_built_data_set_gives_the_same_items_as_the_csv(tmp_path):
    rows = _rows(4)
    _write_csv(tmp_path / "manual" / "gpqa_diamond.csv", rows)
    config = gpqa_config(seed=2, num_runs=3)
    build("gpqa_diamond", manual_dir=tmp_path / "manual", data_dir=tmp_path / "tfds", config=config)
    built = gpqa_eval.read_gpqa_items(f"tfds:gpqa_diamond/{config.name}:test", num_runs=3, seed=99,
                                      data_dir=tmp_path / "tfds")
    direct = gpqa_eval.read_gpqa_items(tmp_path / "manual" / "gpqa_diamond.csv", num_runs=3, seed=2)
    key = lambda item: (item.run, item.question_id)  # noqa: E731
    assert sorted((key(i), i.choices, i.answer_index) for i in built) == sorted(
        (key(i), i.choices, i.answer_index) for i in direct
    )
    with pytest.raises(ValueError, match="num_runs=3"):
        gpqa_eval.read_gpqa_items(f"tfds:gpqa_diamond/{config.name}:test", num_runs=4, seed=0,
                                  data_dir=tmp_path / "tfds")


class ScriptedPolicy:
    """Answers each prompt by a function of its text; records what it was asked."""

    def __init__(self, answer_of):
        self.answer_of = answer_of
        self.asked = []

    def answer(self, conversations):
        texts = [self.answer_of(conversation[-1]["content"]) for conversation in conversations]
        self.asked += conversations
        return PolicyAnswers(texts, ["eos"] * len(texts))


class ScriptedJudge:
    """``generate_texts`` with replies chosen by a function of the user message."""

    def __init__(self, reply_of):
        self.reply_of = reply_of
        self.calls = []

    def generate_texts(self, list_of_messages, *, max_tokens, temperature=0.0, seed=0):
        self.calls.append((list_of_messages, max_tokens, temperature))
        texts = [self.reply_of(messages[-1]["content"]) for messages in list_of_messages]
        errors = [None if text is not None else "HTTP 500" for text in texts]
        return GenerationResult([t or "" for t in texts], ["stop"] * len(texts), errors)


def _letter_of(prompt, text):
    for line in prompt.splitlines():
        if line.endswith(f") {text}"):
            return line[0]
    raise AssertionError(f"{text!r} not among the choices of {prompt!r}")


def test_grading_with_known_answers_and_verifier(tmp_path):
    path = _write_csv(tmp_path / "gpqa.csv", _rows(5))
    items = gpqa_eval.read_gpqa_items(path, num_runs=2, seed=0)

    # q0: boxed right letter; q1: boxed wrong letter; q2: "Answer: X" right; q3: no letter,
    # verifier says Yes (first ask, run 0) / No (run 1); q4: no letter, verifier reply
    # unparseable (run 0) / request fails (run 1).
    def answer_of(prompt):
        index = int(prompt.split(":")[0].split()[1])
        right = _letter_of(prompt, f"right {index}")
        wrong = _letter_of(prompt, f"wrong {index}a")
        return {0: f"\\boxed{{{right}}}", 1: f"so \\boxed{{{wrong}}}", 2: f"Answer: {right}",
                3: "It is the right one.", 4: "Hmm."}[index]

    runs_seen = []

    def reply_by_run(user):
        runs_seen.append(user)
        if "Question 3" in user:
            return "Yes" if len([u for u in runs_seen if "Question 3" in u]) == 1 else "No"
        if "Question 4" in user:
            return "maybe?" if len([u for u in runs_seen if "Question 4" in u]) == 1 else None
        raise AssertionError("only unparseable answers go to the verifier")

    policy, judge = ScriptedPolicy(answer_of), ScriptedJudge(reply_by_run)
    result = gpqa_eval.evaluate_gpqa(items, policy, judge, num_runs=2, use_verifier=True,
                                     verifier_max_tokens=8, chunk_size=3)
    assert len(policy.asked) == 10
    assert [len(call[0]) for call in judge.calls] == [3, 1]  # 4 prompts in chunks of 3.
    assert {call[1:] for call in judge.calls} == {(8, 0.0)}
    messages = judge.calls[0][0] + judge.calls[1][0]
    question3 = next(i for i in items if i.question_id == "rec003" and i.run == 0)
    assert f"{question3.answer_letter}) right 3" in messages[0][-1]["content"]
    by_key = {(i.question_id, i.run): k for k, i in enumerate(result.items)}
    expected = {
        ("rec000", 0): (1.0, "boxed"), ("rec000", 1): (1.0, "boxed"),
        ("rec001", 0): (0.0, "boxed"), ("rec001", 1): (0.0, "boxed"),
        ("rec002", 0): (1.0, "answer_phrase"), ("rec002", 1): (1.0, "answer_phrase"),
        ("rec003", 0): (1.0, "verifier"), ("rec003", 1): (0.0, "verifier"),
        ("rec004", 0): (np.nan, "verifier_failed"), ("rec004", 1): (np.nan, "verifier_failed"),
    }
    for key, (correct, method) in expected.items():
        index = by_key[key]
        np.testing.assert_equal(result.grades.correct[index], correct)
        assert result.grades.methods[index] == method
    assert "invalid verifier reply" in result.grades.reasons[by_key[("rec004", 0)]]
    assert result.grades.reasons[by_key[("rec004", 1)]] == "verifier request failed: HTTP 500"
    summary = result.summary
    # Run 0: 3 of 4 graded correct; run 1: 2 of 4.
    assert summary["run_accuracy"] == [0.75, 0.5] and summary["run_graded"] == [4, 4]
    half = 12.706204736174698 * np.std([0.75, 0.5], ddof=1) / np.sqrt(2)  # t_{0.975, 1}
    assert half > 0.625 + 0.375  # So the interval is clipped to [0, 1] on both sides.
    assert summary["accuracy"] == pytest.approx(0.625)
    assert (summary["ci95_low"], summary["ci95_high"]) == (0.0, 1.0)
    assert summary["ungraded"] == 2 and summary["answers"] == 10
    assert summary["methods"] == {"boxed": 4, "boxed_text": 0, "answer_phrase": 2,
                                  "leading_letter": 0, "verifier": 2, "verifier_failed": 2,
                                  "unparseable": 0}


def test_without_verifier_an_answer_without_letter_is_wrong(tmp_path):
    path = _write_csv(tmp_path / "gpqa.csv", _rows(2))
    items = gpqa_eval.read_gpqa_items(path, num_runs=1, seed=0)
    policy = ScriptedPolicy(lambda prompt: "\\boxed{" + _letter_of(prompt, "right 0") + "}"
                            if "Question 0" in prompt else "no idea")
    result = gpqa_eval.evaluate_gpqa(items, policy, None, num_runs=1, use_verifier=False,
                                     verifier_max_tokens=8)
    assert result.grades.correct.tolist() == [1.0, 0.0]
    assert result.grades.methods == ["boxed", "unparseable"]
    assert result.summary["accuracy"] == 0.5 and math.isnan(result.summary["ci95_low"])
