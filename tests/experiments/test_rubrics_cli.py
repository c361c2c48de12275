"""rar-rubrics end to end against the fake OpenAI server, and the JAX backend's text generation.

The CLI runs in a subprocess (absl flags are process-global) against a loopback server whose
replies are scripted per question: invalid then valid (retried and written), always invalid (in
the failures file with the reason of each attempt), valid at once. The JAX path is checked
in-process with the tiny fixture checkpoint: greedy replies equal plain greedy decoding by full
forwards, and another seed at a temperature > 0 gives another reply, so a retry can differ.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rar_jax.data.examples import read_examples
from rar_jax.judges import prompts
from rar_jax.judges.jax_backend import JaxJudge
from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.rubrics.schema import Category, Polarity

from cli_runner import run_experiment
from fake_openai_server import FakeOpenAIServer
from tiny_checkpoint import write_tiny_checkpoint



def rubric_items(topic: str) -> list[dict]:
    """A valid 7-item generated rubric (5 positive items, 2 pitfalls describing the mistake)."""
    items = [
        ("Core Fact", "Essential", f"States the cause of {topic}.", 5),
        ("Mechanism", "Important", f"Explains how {topic} arises.", 4),
        ("Symptoms", "Important", f"Lists signs of {topic}.", 3),
        ("Prevention", "Optional", f"Mentions prevention of {topic}.", 2),
        ("Clarity", "Optional", "Is clear and concise.", 1),
        ("Wrong Cause", "Pitfall", f"Blames {topic} on bacteria.", -2),
        ("Overclaiming", "Pitfall", "Claims certainty without evidence.", -1),
    ]
    return [
        {"title": title, "description": f"{category} Criteria: {text}", "weight": weight}
        for title, category, text, weight in items
    ]


QUESTIONS = [
    {"id": "q1", "question": "What causes scurvy?", "reference": "Vitamin C deficiency.",
     "question_source": "test"},
    {"prompt": "Why is the sky blue?", "reference_answer": "Rayleigh scattering."},
    {"id": 3, "question": "What causes rickets?"},
]


def run_rubrics(tmp_path: pathlib.Path, questions: list[dict], *args: str):
    """Writes the questions and runs rar-rubrics; returns (process, output path, failures path)."""
    questions_path = tmp_path / "questions.jsonl"
    questions_path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    output = tmp_path / "rubrics.jsonl"
    process = run_experiment(
        "rubrics.py",
        f"--input={questions_path}",
        f"--output={output}",
        "--config.judge.backend=http",
        "--config.judge.http.max_concurrency=4",
        "--config.judge.http.max_attempts=1",
        "--config.judge.http.progress_min_requests=0",
        *args,
        cwd=tmp_path,
        timeout=300,
    )
    return process, output, tmp_path / "rubrics.failures.jsonl"


@pytest.fixture
def server():
    fake = FakeOpenAIServer()
    fake.start()
    yield fake
    fake.stop()


def test_retries_invalid_output_and_reports_what_still_fails(server, tmp_path):
    calls = {"scurvy": 0}

    def replies(text: str) -> str:
        if "scurvy" in text:
            calls["scurvy"] += 1
            if calls["scurvy"] == 1:
                return 'Here is the rubric: [{"title": "Oops", "description": '
            return "```json\n" + json.dumps(rubric_items("scurvy")) + "\n```"
        if "sky" in text:
            return json.dumps(rubric_items("blue skies")[:3])  # Too few items, every time.
        return json.dumps(rubric_items("rickets"))

    server.replies = replies
    process, output, failures = run_rubrics(
        tmp_path,
        QUESTIONS,
        f"--config.judge.http.base_url={server.base_url}",
        "--domain=science",
        "--max_attempts=2",
        "--seed=5",
        "--retry_temperature=0.7",
    )
    assert process.returncode == 0, process.stderr
    assert (
        "rubrics for 3 questions: 2 valid (1 on the first attempt, 1 after retries), 1 failed "
        "after 2 attempts" in process.stdout
    )

    scurvy, rickets = [json.loads(line) for line in output.read_text().splitlines()]
    assert scurvy["id"] == "q1" and scurvy["question_source"] == "test"
    assert scurvy["question"] == "What causes scurvy?"
    assert scurvy["reference_answer"] == "Vitamin C deficiency."
    assert scurvy["rubric_attempts"] == 2 and scurvy["rubric_with_reference"] is True
    expected = rubric_items("scurvy")
    kept = [{k: item[k] for k in ("title", "description", "weight")} for item in scurvy["rubric"]]
    assert kept == expected
    assert [item["polarity"] for item in scurvy["rubric"]] == ["positive"] * 5 + ["negative"] * 2
    assert scurvy["rubric_list"] == [item["description"] for item in expected]
    assert scurvy["rubric_count"] == 7
    assert rickets["id"] == 3 and rickets["rubric_attempts"] == 1
    assert rickets["reference_answer"] == "" and rickets["rubric_with_reference"] is False

    # The output reads back as RaR data; pitfalls carry their own (negative) polarity.
    examples = read_examples(output, "rar")
    assert [e.conversation[-1]["content"] for e in examples] == [
        "What causes scurvy?",
        "What causes rickets?",
    ]
    pitfalls = [c for c in examples[0].rubric.criteria if c.category is Category.PITFALL]
    assert [c.polarity for c in pitfalls] == [Polarity.NEGATIVE] * 2

    [sky] = [json.loads(line) for line in failures.read_text().splitlines()]
    assert sky["source"] == f"{tmp_path / 'questions.jsonl'}:2"
    assert sky["question"] == "Why is the sky blue?"
    assert sky["attempts"] == [
        {"attempt": 1, "reason": "invalid rubric: rubric: expected at least 7 items, got 3"},
        {"attempt": 2, "reason": "invalid rubric: rubric: expected at least 7 items, got 3"},
    ]
    assert json.loads(sky["last_output"]) == rubric_items("blue skies")[:3]

    # Attempt 1 is greedy with --seed; the retry samples with the retry temperature and seed + 1.
    bodies = [r.body for r in server.requests]
    by_question = {
        key: [b for b in bodies if key in b["messages"][-1]["content"]]
        for key in ("scurvy", "sky", "rickets")
    }
    assert [(b["temperature"], b["seed"]) for b in by_question["scurvy"]] == [(0.0, 5), (0.7, 6)]
    assert [(b["temperature"], b["seed"]) for b in by_question["sky"]] == [(0.0, 5), (0.7, 6)]
    assert len(by_question["rickets"]) == 1
    assert by_question["scurvy"][0]["max_tokens"] == 2048
    expected_prompt = prompts.rubric_generation_prompt(
        "What causes scurvy?", "Vitamin C deficiency.", domain="science"
    )
    assert by_question["scurvy"][0]["messages"] == expected_prompt.messages
    assert "<reference_answer>\nRayleigh scattering.\n</reference_answer>" in (
        by_question["sky"][0]["messages"][-1]["content"]
    )
    assert "<reference_answer>" not in by_question["rickets"][0]["messages"][-1]["content"]


def test_without_reference_and_request_failures(server, tmp_path):
    server.replies = lambda text: "I would rather not."
    # The second question's request fails at the HTTP level (400 is not retried).
    sky_key = prompts.rubric_generation_prompt("Why is the sky blue?", None, domain="medical")
    server.script[sky_key.messages[-1]["content"]] = ["400"]
    process, output, failures = run_rubrics(
        tmp_path,
        QUESTIONS[:2],
        f"--config.judge.http.base_url={server.base_url}",
        "--nouse_reference",
        "--max_attempts=1",
    )
    assert process.returncode == 0, process.stderr
    assert output.read_text() == ""
    records = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [r.get("id") for r in records] == ["q1", None]
    assert records[0]["attempts"] == [
        {
            "attempt": 1,
            "reason": "invalid rubric: no complete JSON array in output 'I would rather not.'",
        }
    ]
    [failed_request] = records[1]["attempts"]
    assert failed_request["reason"].startswith("request failed: HTTP 400 (not retried)")
    assert records[1]["last_output"] == ""
    # --nouse_reference: the reference answers are not shown; medical is the default domain.
    for request in server.requests:
        assert "<reference_answer>" not in request.body["messages"][-1]["content"]
        assert request.body["messages"][0]["content"].startswith("You are a senior physician")


def test_bad_question_record_names_file_line_and_field(tmp_path):
    process, output, _ = run_rubrics(
        tmp_path, [QUESTIONS[0], {"id": "x", "answer": "no question"}], "--max_attempts=1"
    )
    assert process.returncode != 0
    assert "questions.jsonl:2: question: expected a 'question' or 'prompt' field" in process.stderr
    assert not output.exists()


def greedy_reference(model, tokenizer, conversations, max_tokens: int) -> list[str]:
    """Greedy decoding by full forwards over the whole sequence (no KV cache, no Sampler)."""
    graphdef, state = nnx.split(model)
    length = 64  # Right-padded: causal attention keeps earlier positions exact.
    forward = jax.jit(lambda st, t, p: nnx.merge(graphdef, st)(t, p)[0])
    positions = jnp.arange(length, dtype=jnp.int32)[None]
    texts = []
    for messages in conversations:
        ids = tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        reply: list[int] = []
        for _ in range(max_tokens):
            sequence = ids + reply
            tokens = np.zeros((1, length), np.int32)
            tokens[0, : len(sequence)] = sequence
            logits = forward(state, jnp.asarray(tokens), positions)
            reply.append(int(np.argmax(np.asarray(logits[0, len(sequence) - 1]))))
            if reply[-1] in tokenizer.stop_ids:
                reply.pop()
                break
        texts.append(tokenizer.decode(reply, skip_special_tokens=True))
    return texts


@pytest.mark.slow
def test_jax_judge_generate_texts_greedy_and_seeded_sampling(tmp_path):
    model, tokenizer = load_model_and_tokenizer(write_tiny_checkpoint(tmp_path / "tiny"))
    judge = JaxJudge(model, tokenizer, batch_size=2)
    conversations = [
        [{"role": "user", "content": "Write a rubric."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}],
        [{"role": "user", "content": "A third question, in a second batch."}],
        [{"role": "user", "content": "And a fourth."}],
    ]
    greedy = judge.generate_texts(conversations, max_tokens=5)
    assert greedy.errors is None
    assert greedy.texts == greedy_reference(model, tokenizer, conversations, 5)

    first = judge.generate_texts(conversations, max_tokens=5, temperature=1.0, seed=1)
    again = judge.generate_texts(conversations, max_tokens=5, temperature=1.0, seed=1)
    other = judge.generate_texts(conversations, max_tokens=5, temperature=1.0, seed=2)
    assert first.texts == again.texts
    assert first.texts != other.texts
    assert first.texts != greedy.texts
