"""The paper's own prompts (``judge.templates_dir = "paper"``: ``../shared/data/paper_prompts``).

Every prompt of the paper's appendix renders with realistic inputs (no placeholder left, the
inputs inside), the judges' reply prefix is the fenced JSON the paper asks for, and the embedded
SmolLM2 scores a verdict with each judge prompt.
"""

from __future__ import annotations

import numpy as np
import pytest

from rar_jax.io import iter_jsonl
from rar_jax.judges import prompts
from rar_jax.judges.jax_backend import JaxJudge
from rar_jax.rubrics.readers import rubric_from_rar_record

PAPER = prompts.PAPER_PROMPTS
FENCED_RATING = '```json\n{\n"rating": '


@pytest.fixture(scope="module")
def record(shared_data):
    return next(r for _, r in iter_jsonl(shared_data / "rar_samples" / "rar_medicine_sample3.jsonl"))


@pytest.fixture(scope="module")
def judge_prompts(record):
    rubric = rubric_from_rar_record(record, pitfall_polarity="negative", source="rar sample")
    question, reference = record["question"], record["reference_answer"]
    answer = "This is vernal keratoconjunctivitis (D); it flares in hot weather in young boys."
    return [
        prompts.implicit_judge_prompt(question, answer, rubric, templates_dir=PAPER),
        prompts.direct_likert_prompt(question, answer, templates_dir=PAPER),
        prompts.reference_likert_prompt(question, answer, reference, templates_dir=PAPER),
    ]


def _text(prompt: prompts.JudgePrompt) -> str:
    return "\n".join(message["content"] for message in prompt.messages)


def test_the_paper_judges_render_and_ask_for_a_fenced_json_rating(judge_prompts, record):
    for prompt in judge_prompts:
        text = _text(prompt)
        assert "${" not in text and record["question"][:60] in text
        assert "vernal keratoconjunctivitis (D)" in text
        assert prompt.verdict_prefix == FENCED_RATING
        assert prompt.messages[0]["content"].startswith("You are an expert evaluator.")
    implicit, _, reference_likert = judge_prompts
    assert "<rubrics>" in implicit.messages[1]["content"]
    assert record["reference_answer"][:60] in reference_likert.messages[1]["content"]


def test_the_other_paper_prompts_render(record):
    for domain in ("medical", "science"):
        generation = prompts.rubric_generation_prompt(
            record["question"], record["reference_answer"], domain=domain, templates_dir=PAPER)
        assert "use it only as guidance" in generation.messages[0]["content"]
        assert record["reference_answer"][:60] in _text(generation) and "${" not in _text(generation)
    verifier = prompts.gpqa_verifier_prompt("Which is it? (A) 1 (B) 2 (C) 4.2 eV", "C", "4.2 eV",
                                            "It must be 4.2 eV.", templates_dir=PAPER)
    assert "## Ground truth answer##: Option C or 4.2 eV" in verifier.messages[1]["content"]
    assert "Which is it?" not in verifier.messages[1]["content"]  # The paper shows no question.
    perturbation = prompts.perturbation_prompt(record["question"], record["reference_answer"],
                                               templates_dir=PAPER)
    assert "Health Context Sensitivity" in perturbation.messages[0]["content"]
    predefined = prompts.predefined_rubric(PAPER)
    assert len(predefined) == 4 and {c.weight for c in predefined.criteria} == {1.0}


def test_a_missing_shared_folder_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RAR_SHARED_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="RAR_SHARED_DATA"):
        prompts.direct_likert_prompt("q", "a", templates_dir=PAPER)


@pytest.mark.slow
def test_smollm2_scores_a_verdict_with_each_paper_judge_prompt(judge_prompts):
    from rar_jax.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2")
    judge = JaxJudge(model, tokenizer, scoring="verdict_probs", batch_size=4)
    judgments = judge.score_rating(judge_prompts)
    assert judgments.reasons == [None, None, None]
    ratings = np.asarray(judgments.values)
    assert np.all((ratings >= 1) & (ratings <= 10))  # An expected rating read after the fence.
    assert np.all(np.asarray(judgments.mass) > 0)
