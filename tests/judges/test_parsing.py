"""Tests of judge-output parsing: many real-looking replies, good and bad, never an exception."""

from __future__ import annotations

import ast
import json

import pytest

from rar_jax.judges.parsing import (
    ParseResult,
    extract_json,
    parse_boxed_letter,
    parse_criteria_met,
    parse_rating,
    parse_rubric,
    parse_yes_no,
)
from rar_jax.io import iter_jsonl
from rar_jax.rubrics.readers import rubric_from_rar_record


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"rating": 7}', 7.0),
        ('{"rating":10}', 10.0),
        ('```json\n{\n  "rating": 8\n}\n```', 8.0),
        ('Here is my evaluation.\n{"rating": 6}\nThanks!', 6.0),
        ('{"rating": 9,}', 9.0),
        ("{'rating': 3}", 3.0),
        ('{"rating": "4"}', 4.0),
        ('{"Rating": 5}', 5.0),
        ('{"rating": "8/10"}', 8.0),
        ('{"rating": 7.5}', 7.5),
        ("7", 7.0),
        ("  **9**  ", 9.0),
        ("10/10", 10.0),
        ("I would give this 6 / 10.", 6.0),
        ("Rating: 2", 2.0),
        ('The response is thorough. "rating": 8', 8.0),
        ('{"rating": 8', 8.0),  # Cut off before the closing brace.
        ('{"explanation": "covers 3/5 items", "rating": 4}', 4.0),
        ("1", 1.0),
    ],
)
def test_parse_rating_accepts(text, expected):
    result = parse_rating(text)
    assert result == ParseResult(expected, None)
    assert result.ok


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ('{"rating": 11}', "rating 11 outside [1, 10]"),
        ('{"rating": 0}', "rating 0 outside [1, 10]"),
        ("11/10", "rating 11 outside [1, 10]"),
        ("4/5", "rating 4/5 is on a different scale than 1-10"),
        ('{"rating": true}', "'rating' is true, expected a number"),
        ('{"rating": null}', "'rating' is null, expected a number"),
        ('{"rating": "good"}', "'rating' is 'good', expected a number"),
        ('{"score": 7}', "JSON object has no 'rating' key (keys: score)"),
        ("The answer is pretty good.", "no rating found in output"),
        ("Rating: 7. On reflection, rating: 8.", "several different ratings in output: 7, 8"),
        ('{"rating": NaN}', "is not a finite number"),
        ("-3", "rating -3 outside [1, 10]"),
    ],
)
def test_parse_rating_refuses_with_reason(text, reason):
    result = parse_rating(text)
    assert result.value is None and not result.ok
    assert reason in result.reason


def test_parse_rating_custom_scale():
    assert parse_rating('{"rating": 0}', low=0, high=5).value == 0.0
    assert parse_rating("5/5", low=0, high=5).value == 5.0
    assert "outside [0, 5]" in parse_rating('{"rating": 7}', low=0, high=5).reason
    assert "different scale" in parse_rating("7/10", low=0, high=5).reason


def test_parse_never_raises_on_non_text():
    for parser in (
        parse_rating,
        parse_criteria_met,
        parse_rubric,
        parse_boxed_letter,
        parse_yes_no,
    ):
        assert parser(None).reason == "expected text, got NoneType"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"criteria_met": true, "explanation": "It does."}', True),
        ('{"criteria_met": false, "explanation": "It does not."}', False),
        ('{"explanation": "The assistant said to call 911.", "criteria_met": true}', True),
        ('```json\n{"explanation": "no", "criteria_met": false}\n```', False),
        ("{'explanation': 'The patient\\'s age is given', 'criteria_met': True}", True),
        ('{"criteria_met": "false"}', False),
        ('{"criteria_met": "Yes"}', True),
        ('{"criteria_met": true, "explanation": "The response mentions the dose of', True),
        ('Sure. {"criteria_met": false, "explanation": "missing",}', False),
        ("true", True),
        ("False.", False),
        ('{"Criteria_Met": true}', True),
        ('{"explanation": "uses {curly} braces", "criteria_met": false}', False),
    ],
)
def test_parse_criteria_met_accepts(text, expected):
    assert parse_criteria_met(text) == ParseResult(expected, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty output"),
        ('{"criteria_met": null}', "'criteria_met' is null, expected true or false"),
        ('{"criteria_met": "partially"}', "'criteria_met' is 'partially', expected true or false"),
        ('{"criteria_met": 1}', "'criteria_met' is '1', expected true or false"),
        ('{"explanation": "ok"}', "JSON object has no 'criteria_met' key (keys: explanation)"),
        ("I think the response meets the criterion.", "no criteria_met verdict found"),
        ('"criteria_met": true ... wait, "criteria_met": false', "contradictory"),
    ],
)
def test_parse_criteria_met_refuses_with_reason(text, reason):
    result = parse_criteria_met(text)
    assert result.value is None
    assert reason in result.reason


def test_parse_criteria_met_on_real_grader_replies(shared_data):
    """The m42 file's grader verdicts, re-serialised the way graders write them, parse back."""
    path = shared_data / "healthbench_graded_m42" / "judge_responses_100.jsonl"
    checked = 0
    for _, record in iter_jsonl(path):
        # "responses" is a Python repr of a list of dicts (single quotes, True/False).
        for response in ast.literal_eval(record["responses"]):
            verdict = response["response_dict"]
            as_json = json.dumps(verdict)
            fenced = f"```json\n{json.dumps(verdict, indent=2)}\n```"
            as_python = repr(verdict)
            for text in (as_json, fenced, as_python):
                assert parse_criteria_met(text).value is verdict["criteria_met"]
            checked += 1
        if checked > 300:
            break
    assert checked > 300


def generated_items():
    return [
        {
            "title": "Names Diagnosis",
            "description": "Essential Criteria: States it is gout.",
            "weight": 5,
        },
        {"title": "Gives Dose", "description": "Important Criteria: Gives the dose.", "weight": 3},
        {"title": "Style", "description": "Optional Criteria: Is concise.", "weight": 1},
        {
            "title": "Wrong Drug",
            "description": "Pitfall Criteria: Recommends aspirin.",
            "weight": -2,
        },
    ]


def test_parse_rubric_accepts_plain_fenced_wrapped_and_messy():
    items = generated_items()
    plain = json.dumps(items)
    for text in (
        plain,
        f"Here is the rubric:\n```json\n{json.dumps(items, indent=2)}\n```\nDone.",
        json.dumps({"rubric": items}),
        plain[:-1] + ",]",  # Trailing comma.
    ):
        result = parse_rubric(text)
        assert result == ParseResult(items, None)
    extra = [dict(item, note="x") for item in items]
    assert parse_rubric(json.dumps(extra)).value == items  # Extra keys dropped.


def test_parsed_rubric_builds_a_rubric_with_pitfall_polarity():
    items = parse_rubric(json.dumps(generated_items())).value
    rubric = rubric_from_rar_record({"rubric": items}, pitfall_polarity="negative")
    assert [c.weight for c in rubric.criteria] == [5.0, 3.0, 1.0, -2.0]
    assert rubric.criteria[3].description == "Recommends aspirin."


@pytest.mark.parametrize(
    "change, reason",
    [
        ((0, "weight", 7), "rubric[0].weight: expected 1 to 5 for a non-Pitfall item, got 7"),
        ((3, "weight", -3), "rubric[3].weight: expected -1 or -2 for a Pitfall item, got -3"),
        ((3, "weight", 2), "rubric[3].weight: expected -1 or -2 for a Pitfall item, got 2"),
        ((1, "weight", 3.5), "rubric[1].weight: expected an integer, got 3.5"),
        ((1, "weight", "3"), "rubric[1].weight: expected a number, got str '3'"),
        ((2, "description", "Is concise."), "rubric[2].description: expected a category prefix"),
        ((2, "description", 5), "rubric[2].description: expected a string"),
        ((1, "title", None), "rubric[1].title: expected a string"),
        (
            (0, "description", "Essential Criteria:   "),
            "rubric[0].description: expected a non-empty",
        ),
    ],
)
def test_parse_rubric_reason_names_item_and_field(change, reason):
    items = generated_items()
    index, key, value = change
    items[index][key] = value
    result = parse_rubric(json.dumps(items))
    assert result.value is None
    assert reason in result.reason, result.reason


def test_parse_rubric_structure_and_count_limits():
    items = generated_items()
    del items[1]["weight"]
    assert parse_rubric(json.dumps(items)).reason == "rubric[1].weight: missing required field"
    assert "rubric[0]: expected an object" in parse_rubric('["just text"]').reason
    assert parse_rubric("").reason == "empty output"
    assert "no complete JSON array" in parse_rubric("I cannot help with that.").reason
    assert "expected a JSON array of rubric items" in parse_rubric('{"items": []}').reason
    text = json.dumps(generated_items())
    assert parse_rubric(text, min_items=5).reason == "rubric: expected at least 5 items, got 4"
    assert parse_rubric(text, max_items=3).reason == "rubric: expected at most 3 items, got 4"
    assert parse_rubric(text, min_items=4, max_items=4).ok
    assert parse_rubric("[]").reason == "rubric: expected at least 1 items, got 0"


def test_parse_rubric_round_trips_real_rar_records(shared_data):
    for name in ("rar_medicine_sample3.jsonl", "rar_science_sample3.jsonl"):
        for _, record in iter_jsonl(shared_data / "rar_samples" / name):
            items = [
                {"title": i["title"], "description": i["description"], "weight": i["weight"]}
                for i in record["rubric"]
            ]
            result = parse_rubric(json.dumps(items, ensure_ascii=False))
            assert result.value == items, result.reason


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"The answer is \boxed{C}.", "C"),
        (r"\boxed{c}", "C"),
        (r"$\boxed{\text{(B)}}$", "B"),
        (r"\boxed{\textbf{D}}", "D"),
        (r"\boxed{(A)}", "A"),
        (r"\boxed{B) 4.2 eV}", "B"),
        (r"\boxed{C: the second option}", "C"),
        (r"First \boxed{12.5} then the choice is \boxed{A}", "A"),
        (r"\boxed { D }", "D"),
    ],
)
def test_parse_boxed_letter_accepts(text, expected):
    assert parse_boxed_letter(text) == ParseResult(expected, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty output"),
        ("The answer is C.", "no \\boxed{...} answer"),
        (r"\boxed{E}", "boxed letter 'E' is not one of A, B, C, D"),
        (r"\boxed{4.2 eV}", "is not a choice letter"),
        (r"\boxed{C", "no \\boxed{...} answer"),
        (r"\boxed{AB}", "is not a choice letter"),
    ],
)
def test_parse_boxed_letter_refuses(text, reason):
    result = parse_boxed_letter(text)
    assert result.value is None and reason in result.reason


def test_parse_boxed_letter_custom_choices():
    assert parse_boxed_letter(r"\boxed{E}", choices="ABCDE").value == "E"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", True),
        ("no", False),
        ("Yes.", True),
        ("**No**", False),
        ("Yes, the student chose (B).", True),
        ("The student picked B, which matches.\nYes", True),
        ("The student chose A.\n\nFinal answer: No", False),
        ("Verdict - yes", True),
    ],
)
def test_parse_yes_no_accepts(text, expected):
    assert parse_yes_no(text) == ParseResult(expected, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty output"),
        ("The student is probably right.", "no Yes/No verdict"),
        ("Answer: yes. Actually, answer: no. Hmm.", "both Yes and No"),
        ("Nope, wrong.", "no Yes/No verdict"),
    ],
)
def test_parse_yes_no_refuses(text, reason):
    result = parse_yes_no(text)
    assert result.value is None and reason in result.reason


def test_extract_json_finds_object_or_array():
    assert extract_json('x {"a": [1, 2]} y').value == {"a": [1, 2]}
    assert extract_json('x [1, {"a": 2}] y', kind=list).value == [1, {"a": 2}]
    assert extract_json('{broken} then {"ok": 1}').value == {"ok": 1}
    assert extract_json("{'a': None, 'b': True}").value == {"a": None, "b": True}
    assert "no complete JSON object" in extract_json("no json").reason


def test_parse_result_requires_exactly_one_of_value_and_reason():
    with pytest.raises(ValueError):
        ParseResult(None, None)
    with pytest.raises(ValueError):
        ParseResult(1.0, "both")


# Every way a judge reply can state its verdict; two of them in one reply must agree.
RATING_FORMS = {
    "json": lambda v: f'{{"rating": {v}}}',
    "fenced_json": lambda v: f'```json\n{{"rating": {v}, "explanation": "x"}}\n```',
    "json_string": lambda v: f'{{"rating": "{v}/10"}}',
    "keyed_text": lambda v: f"Rating: {v}.",
    "fraction": lambda v: f"I give it {v}/10.",
}
CRITERIA_FORMS = {
    "json": lambda v: f'{{"criteria_met": {v}}}',
    "fenced_json": lambda v: f'```json\n{{"explanation": "x", "criteria_met": {v}}}\n```',
    "json_string": lambda v: f'{{"criteria_met": "{v}"}}',
    "keyed_text": lambda v: f"criteria_met: {v}",
}


# (parser, forms, a verdict, another verdict, the reason a contradictory reply gets)
VERDICT_KINDS = {
    "rating": (parse_rating, RATING_FORMS, 7, 3, "several different ratings in output: 3, 7"),
    "criteria_met": (parse_criteria_met, CRITERIA_FORMS, "false", "true",
                     "contradictory 'criteria_met' values in output: false, true"),
}
FORM_PAIRS = [(kind, first, second) for kind, (_, forms, *_) in VERDICT_KINDS.items()
              for first in forms for second in forms]


@pytest.mark.parametrize("kind, first, second", FORM_PAIRS)
def test_two_verdicts_in_one_reply_must_agree(kind, first, second):
    parse, forms, one, other, reason = VERDICT_KINDS[kind]
    refused = parse(f"{forms[first](one)} On reflection: {forms[second](other)}")
    assert refused.value is None and reason in refused.reason
    agreeing = parse(f"{forms[first](one)} On reflection: {forms[second](one)}")
    assert agreeing.ok and agreeing.value == parse(forms[first](one)).value


def test_numbers_that_are_not_ratings_do_not_contradict():
    # A fraction on another scale in the explanation is not a second rating.
    assert parse_rating('{"rating": 7, "explanation": "covers 3/4 of the points"}').value == 7.0
