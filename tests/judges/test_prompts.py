"""Tests of the judge prompt builders and template files (overrides, placeholders, contracts)."""

from __future__ import annotations

import json

import pytest

from rar_jax.judges import prompts
from rar_jax.judges.parsing import parse_criteria_met, parse_rating
from rar_jax.io import iter_jsonl
from rar_jax.rubrics.readers import read_rubrics, rubric_from_healthbench_record
from rar_jax.rubrics.schema import Category, Criterion, Polarity, Rubric, RubricError

PACKAGED = prompts.PACKAGED_TEMPLATES_DIR


def small_rubric() -> Rubric:
    return Rubric(
        (
            Criterion(
                "Dx", "States the diagnosis is gout.", Category.ESSENTIAL, 5, Polarity.POSITIVE
            ),
            Criterion(
                "Dose", "Gives the colchicine dose.", Category.OPTIONAL, 1.5, Polarity.POSITIVE
            ),
            Criterion("Bad", "Recommends aspirin.", Category.PITFALL, -2, Polarity.NEGATIVE),
            Criterion("Avoid", "Avoids jargon.", Category.PITFALL, -1, Polarity.POSITIVE),
        ),
        source="test",
    )


def test_render_rubric_signs_weights_by_polarity():
    rubric = small_rubric()
    assert prompts.render_rubric(rubric) == (
        "1. [Essential, weight 5] States the diagnosis is gout.\n"
        "2. [Optional, weight 1.5] Gives the colchicine dose.\n"
        "3. [Pitfall, weight -2] Recommends aspirin.\n"
        "4. [Pitfall, weight 1] Avoids jargon."
    )
    assert prompts.render_rubric(rubric, show_categories=False) == (
        "1. [weight 5] States the diagnosis is gout.\n"
        "2. [weight 1.5] Gives the colchicine dose.\n"
        "3. [weight -2] Recommends aspirin.\n"
        "4. [weight 1] Avoids jargon."
    )
    assert prompts.render_rubric(rubric, show_weights=False) == (
        "1. [Essential] States the diagnosis is gout.\n"
        "2. [Optional] Gives the colchicine dose.\n"
        "3. [Pitfall, undesirable] Recommends aspirin.\n"
        "4. [Pitfall] Avoids jargon."
    )
    assert prompts.render_rubric(rubric, show_categories=False, show_weights=False) == (
        "1. States the diagnosis is gout.\n"
        "2. Gives the colchicine dose.\n"
        "3. [undesirable] Recommends aspirin.\n"
        "4. Avoids jargon."
    )


def test_implicit_prompt_layout_and_ablation_flags():
    system_text = (PACKAGED / "implicit_judge.system.txt").read_text().rstrip("\n")
    prompt = prompts.implicit_judge_prompt("Big toe hurts?", "  It is gout. ", small_rubric())
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[0]["content"] == system_text
    user = prompt.messages[1]["content"]
    assert user.startswith(
        "<conversation>\n<user>\nBig toe hurts?\n</user>\n</conversation>\n\n"
        "<rubric>\n1. [Essential, weight 5] States"
    )
    # The rubric comes before the response: G answers to one prompt share that prefix.
    assert user.split("</rubric>\n\n")[1].startswith("<response>\nIt is gout.\n</response>")
    assert prompt.verdict_prefix == '{"rating": '
    hidden = prompts.implicit_judge_prompt(
        "q", "a", small_rubric(), show_categories=False, show_weights=False
    ).messages[1]["content"]
    assert "Essential" not in hidden and "weight" not in hidden
    assert "3. [undesirable] Recommends aspirin." in hidden


def test_implicit_prompt_on_real_rar_records(shared_data):
    path = shared_data / "rar_samples" / "rar_science_sample3.jsonl"
    records = [record for _, record in iter_jsonl(path)]
    rubrics = read_rubrics(path, "rar", pitfall_polarity="positive")
    for record, rubric in zip(records, rubrics):
        user = prompts.implicit_judge_prompt(record["question"], "answer", rubric).messages[1][
            "content"
        ]
        lines = user.split("<rubric>\n")[1].split("\n</rubric>")[0].splitlines()
        assert len(lines) == len(record["rubric"])
        for number, (line, item) in enumerate(zip(lines, record["rubric"]), start=1):
            category, _, text = item["description"].partition(" Criteria: ")
            # Science pitfalls read as positive: shown with |weight|.
            assert line == f"{number}. [{category}, weight {abs(item['weight']):g}] {text.strip()}"


def test_multi_turn_healthbench_conversation_is_a_tagged_transcript(shared_data):
    path = shared_data / "healthbench" / "oss_eval_first100.jsonl"
    record = next(r for _, r in iter_jsonl(path) if len(r["prompt"]) >= 5)
    rubric = rubric_from_healthbench_record(record)
    negative = next(c for c in rubric.criteria if c.weight < 0)
    prompt = prompts.healthbench_grader_prompt(record["prompt"], "final answer", negative)
    user = prompt.messages[1]["content"]
    expected_turns = "\n".join(
        f"<{m['role']}>\n{m['content'].strip()}\n</{m['role']}>" for m in record["prompt"]
    )
    assert f"<conversation>\n{expected_turns}\n</conversation>" in user
    assert f'<rubric_item points="{negative.weight:g}">\n{negative.description.strip()}\n' in user
    assert 'points="-' in user
    assert prompt.verdict_prefix is None  # HealthBench key order: explanation first.


def test_explicit_criterion_prompt_is_polarity_neutral():
    pitfall = small_rubric().criteria[2]
    prompt = prompts.explicit_criterion_prompt("q", "Take aspirin.", pitfall)
    user = prompt.messages[1]["content"]
    assert "<statement>\nRecommends aspirin.\n</statement>" in user
    assert "Pitfall" not in user and "-2" not in user and "weight" not in user
    same = prompts.explicit_criterion_prompt("q", "Take aspirin.", "Recommends aspirin.")
    assert same == prompt  # A plain statement gives the same prompt.
    assert prompt.verdict_prefix == '{"criteria_met": '
    with pytest.raises(ValueError, match="criterion: expected a non-empty statement"):
        prompts.explicit_criterion_prompt("q", "a", "  ")


@pytest.mark.parametrize(
    "build",
    [
        lambda: prompts.implicit_judge_prompt("q", "a", small_rubric()),
        lambda: prompts.direct_likert_prompt("q", "a"),
        lambda: prompts.reference_likert_prompt("q", "a", "ref"),
    ],
)
def test_rating_prefix_contract(build):
    prompt = build()
    system = prompt.messages[0]["content"]
    assert '{"rating": 7}' in system  # The template's example starts with the prefix.
    assert prompt.verdict_prefix == prompts.RATING_PREFIX
    assert parse_rating(prompt.verdict_prefix + "10}").value == 10.0


def test_criteria_prefix_contract():
    prompt = prompts.explicit_criterion_prompt("q", "a", "statement")
    system = prompt.messages[0]["content"]
    example = system[system.index(prompt.verdict_prefix) :]
    assert example.index('"criteria_met"') < example.index('"explanation"')  # Verdict first.
    completed = prompt.verdict_prefix + 'false, "explanation": "no'
    assert parse_criteria_met(completed).value is False  # Cut off mid-explanation: still read.


def test_likert_prompts_with_and_without_reference():
    direct = prompts.direct_likert_prompt("q", "a").messages[1]["content"]
    assert "<reference_answer>" not in direct and "<rubric>" not in direct
    reference = prompts.reference_likert_prompt("q", "a", " The answer is 42. ").messages[1][
        "content"
    ]
    assert "<reference_answer>\nThe answer is 42.\n</reference_answer>" in reference
    with pytest.raises(ValueError, match="reference: expected a non-empty reference"):
        prompts.reference_likert_prompt("q", "a", "")


def test_rubric_generation_variants():
    medical = prompts.rubric_generation_prompt("Q?", "Ref.", domain="medical")
    science = prompts.rubric_generation_prompt("Q?", "Ref.", domain="science")
    assert medical.messages[0]["content"] != science.messages[0]["content"]
    assert "physician" in medical.messages[0]["content"]
    assert "scientist" in science.messages[0]["content"]
    assert medical.messages[1] == science.messages[1]
    assert "<reference_answer>\nRef.\n</reference_answer>" in medical.messages[1]["content"]
    for reference in (None, "   "):
        no_ref = prompts.rubric_generation_prompt("Q?", reference, domain="medical")
        assert "<reference_answer>" not in no_ref.messages[1]["content"]
        assert "No reference answer is available" in no_ref.messages[1]["content"]
    assert medical.verdict_prefix is None
    for prefix in (
        "Essential Criteria: ",
        "Important Criteria: ",
        "Optional Criteria: ",
        "Pitfall Criteria: ",
    ):
        assert prefix in medical.messages[0]["content"]
    with pytest.raises(ValueError, match="domain: expected one of medical, science"):
        prompts.rubric_generation_prompt("Q?", None, domain="law")


def test_gpqa_and_perturbation_prompts():
    gpqa = prompts.gpqa_verifier_prompt("Q (A) 1 (B) 2", "B", "2", "I think B.")
    assert gpqa.verdict_prefix == ""
    assert "<correct_answer>\n(B) 2\n</correct_answer>" in gpqa.messages[1]["content"]
    perturb = prompts.perturbation_prompt([{"role": "user", "content": "q"}], "Ideal answer text.")
    assert (
        "<ideal_response>\nIdeal answer text.\n</ideal_response>" in perturb.messages[1]["content"]
    )
    assert "subtle factual inaccuracy" in perturb.messages[0]["content"]
    assert perturb.verdict_prefix is None


def test_every_packaged_template_renders_without_leftover_placeholders():
    built = [
        prompts.implicit_judge_prompt("q", "a", small_rubric()),
        prompts.direct_likert_prompt("q", "a"),
        prompts.reference_likert_prompt("q", "a", "r"),
        prompts.explicit_criterion_prompt("q", "a", "s"),
        prompts.healthbench_grader_prompt("q", "a", small_rubric().criteria[0]),
        prompts.healthbench_grader_verdict_prompt("q", "a", small_rubric().criteria[0]),
        prompts.rubric_generation_prompt("q", "r", domain="medical"),
        prompts.rubric_generation_prompt("q", None, domain="science"),
        prompts.gpqa_verifier_prompt("q", "c", "t", "a"),
        prompts.perturbation_prompt("q", "a"),
    ]
    for message in (m for prompt in built for m in prompt.messages):
        assert "${" not in message["content"] and message["content"].strip()
    pairs = (
        "implicit_judge",
        "direct_likert",
        "reference_likert",
        "explicit_criterion",
        "healthbench_grader",
        "healthbench_grader_verdict",
        "gpqa_verifier",
        "perturbation",
    )
    expected = {f"{name}.{part}.txt" for name in pairs for part in ("system", "user")} | {
        "rubric_generation_medical.system.txt",
        "rubric_generation_science.system.txt",
        "rubric_generation_with_reference.user.txt",
        "rubric_generation_without_reference.user.txt",
    }
    assert {p.name for p in PACKAGED.glob("*.txt")} == expected


def test_render_conversation_errors_name_the_message():
    with pytest.raises(ValueError, match=r"conversation\[1\].role: expected one of"):
        prompts.render_conversation(
            [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]
        )
    with pytest.raises(ValueError, match=r"conversation\[0\].content: expected a string"):
        prompts.render_conversation([{"role": "user", "content": None}])
    with pytest.raises(ValueError, match="non-empty list"):
        prompts.render_conversation([])


def test_templates_dir_overrides_file_by_file(tmp_path):
    (tmp_path / "direct_likert.system.txt").write_text("Custom judge. Costs $$5.\n")
    prompt = prompts.direct_likert_prompt("q", "a", templates_dir=tmp_path)
    assert prompt.messages[0]["content"] == "Custom judge. Costs $5."
    packaged_user = prompts.direct_likert_prompt("q", "a").messages[1]["content"]
    assert prompt.messages[1]["content"] == packaged_user  # Not overridden: packaged file.


def test_override_must_use_exactly_the_placeholders(tmp_path):
    (tmp_path / "implicit_judge.user.txt").write_text("${conversation}\n${response}\n")
    with pytest.raises(ValueError, match=r"implicit_judge.user.txt.*does not use \$\{rubric\}"):
        prompts.implicit_judge_prompt("q", "a", small_rubric(), templates_dir=tmp_path)
    (tmp_path / "implicit_judge.user.txt").write_text("${conversation} ${response} ${rubric} ${x}")
    with pytest.raises(ValueError, match=r"uses unknown \$\{x\}"):
        prompts.implicit_judge_prompt("q", "a", small_rubric(), templates_dir=tmp_path)
    (tmp_path / "implicit_judge.system.txt").write_text("Pay $5 now")
    with pytest.raises(ValueError, match="invalid placeholder"):
        prompts.implicit_judge_prompt("q", "a", small_rubric(), templates_dir=tmp_path)
    with pytest.raises(ValueError, match="expected an existing folder"):
        prompts.direct_likert_prompt("q", "a", templates_dir=tmp_path / "missing")


def test_predefined_rubric_is_four_equal_items():
    rubric = prompts.predefined_rubric()
    assert len(rubric) == 4
    assert {c.weight for c in rubric.criteria} == {1.0}
    assert {c.polarity for c in rubric.criteria} == {Polarity.POSITIVE}
    assert {c.category for c in rubric.criteria} == {Category.ESSENTIAL}
    descriptions = " ".join(c.description for c in rubric.criteria)
    for word in ("factual errors", "essential parts", "concise", "practical"):
        assert word in descriptions


def test_predefined_rubric_override_and_validation(tmp_path):
    items = [{"title": "T", "description": "Is short.", "category": "Optional", "weight": 2}]
    (tmp_path / "predefined_rubric.json").write_text(json.dumps(items))
    rubric = prompts.predefined_rubric(tmp_path)
    assert [(c.description, c.category, c.weight) for c in rubric.criteria] == [
        ("Is short.", Category.OPTIONAL, 2.0)
    ]
    items[0]["weight"] = -2
    (tmp_path / "predefined_rubric.json").write_text(json.dumps(items))
    with pytest.raises(RubricError, match=r"predefined_rubric.json: rubric\[0\].weight"):
        prompts.predefined_rubric(tmp_path)
