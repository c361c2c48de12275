"""rar-rubrics end to end against the fake OpenAI server, and the JAX backend's text generation.

The CLI runs in a subprocess (absl flags are process-global) against a loopback server whose
replies are scripted per question: invalid then valid (retried and written), always invalid (in
the failures file with the reason of each attempt), valid at once. The JAX path is checked
in-process with the tiny fixture checkpoint: greedy replies equal plain greedy decoding by full
forwards, and another seed at a temperature > 0 gives another reply, so a retry can differ.

HealthBench input (the Tables 1-3 training files): real records of the shared oss_eval subset
(one 7-turn conversation among them), from JSONL and from a built ``tfds:healthbench:train``,
come out as RaR records whose conversation, read back by ``read_examples(..., "rar")``, equals
the HealthBench one and whose rubric is the fake generator's reply; malformed HealthBench records
are named by file, line and field.
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


def generation(**options: object) -> list[str]:
    """``--config.rubric_generation.<key>=<value>`` overrides."""
    return [f"--config.rubric_generation.{key}={value}" for key, value in options.items()]


def run_rubrics(tmp_path: pathlib.Path, questions: list[dict], *args: str):
    """Writes the questions and runs rar-rubrics; returns (process, output path, failures path)."""
    questions_path = tmp_path / "questions.jsonl"
    questions_path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    output = tmp_path / "rubrics.jsonl"
    process = run_experiment(
        "rubrics.py",
        f"--config.rubric_generation.input={questions_path}",
        f"--config.rubric_generation.output={output}",
        "--config.judge.backend=http",
        "--config.judge.http.max_concurrency=4",
        "--config.judge.http.max_attempts=1",
        "--config.judge.http.progress_min_requests=0",
        *args,
        cwd=tmp_path,
        timeout=300,
    )
    return process, output, tmp_path / "rubrics.failures.jsonl"


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
        "--config.rubric_generation.domain=science",
        "--config.rubric_generation.max_attempts=2",
        "--config.seed=5",
        "--config.rubric_generation.retry_temperature=0.7",
    )
    assert process.returncode == 0, process.stderr
    assert (
        "rubrics for 3 questions: 2 valid (1 on the first attempt, 1 after retries), 1 failed "
        "after 2 attempts" in process.stdout
    )
    # The resolved config goes beside the output: the overrides and every default.
    dumped = json.loads((tmp_path / "rubrics.config.json").read_text())
    assert dumped["seed"] == 5 and dumped["judge"]["backend"] == "http"
    assert {k: dumped["rubric_generation"][k] for k in (
        "input", "domain", "max_attempts", "retry_temperature", "min_items")} == {
        "input": str(tmp_path / "questions.jsonl"), "domain": "science", "max_attempts": 2,
        "retry_temperature": 0.7, "min_items": 7}

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
        "--config.rubric_generation.use_reference=False",
        "--config.rubric_generation.max_attempts=1",
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
        tmp_path, [QUESTIONS[0], {"id": "x", "answer": "no question"}], *generation(max_attempts=1)
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


# HealthBench records -> generated rubrics for the Table 1-3 training files.

HEALTHBENCH_FILE = "healthbench/oss_eval_first100.jsonl"
HEALTHBENCH_LIMIT = 4  # Lines 1-3: one user turn (2 with an ideal completion); line 4: 7 turns.


def healthbench_records(shared_data: pathlib.Path) -> list[dict]:
    """The first HEALTHBENCH_LIMIT records of the shared oss_eval subset, read with json."""
    lines = (shared_data / HEALTHBENCH_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:HEALTHBENCH_LIMIT]]


def replies_by_last_turn(records: list[dict]):
    """A fake generator: the rubric of record k (topic ``record k``) for the prompt that contains
    record k's last user turn; a non-rubric reply when none or several match."""

    def reply(text: str) -> str:
        matches = [k for k, r in enumerate(records) if r["prompt"][-1]["content"].strip() in text]
        if len(matches) != 1:
            return f"ambiguous prompt: {matches}"
        return json.dumps(rubric_items(f"record {matches[0]}"))

    return reply


def expected_transcript(messages: list[dict]) -> str:
    """The judges' tagged transcript, written out independently of render_conversation."""
    return "\n".join(f"<{m['role']}>\n{m['content'].strip()}\n</{m['role']}>" for m in messages)


def test_healthbench_records_become_rar_training_data(server, shared_data, tmp_path):
    records = healthbench_records(shared_data)
    assert [len(r["prompt"]) for r in records] == [1, 1, 1, 7]
    assert [r["ideal_completions_data"] is not None for r in records] == [False, True, False, True]
    server.replies = replies_by_last_turn(records)
    source = shared_data / HEALTHBENCH_FILE
    output = tmp_path / "healthbench_train.fake.ref.jsonl"
    process = run_experiment(
        "rubrics.py",
        f"--config.rubric_generation.input={source}",
        f"--config.rubric_generation.output={output}",
        f"--config.rubric_generation.limit={HEALTHBENCH_LIMIT}",
        "--config.judge.backend=http",
        f"--config.judge.http.base_url={server.base_url}",
        "--config.judge.http.max_attempts=1",
        "--config.judge.http.progress_min_requests=0",
        "--config.rubric_generation.max_attempts=1",
        cwd=tmp_path,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert "rubrics for 4 questions: 4 valid (4 on the first attempt" in process.stdout

    # What the trainer reads: the HealthBench conversation, the fake reply's items, the ideal
    # completion as reference where there is one.
    examples = read_examples(output, "rar")
    for k, (example, record) in enumerate(zip(examples, records, strict=True)):
        assert example.conversation == tuple(
            {"role": m["role"], "content": m["content"]} for m in record["prompt"]
        )
        reply = rubric_items(f"record {k}")
        criteria = example.rubric.criteria
        assert [c.title for c in criteria] == [item["title"] for item in reply]
        assert [c.weight for c in criteria] == [float(item["weight"]) for item in reply]
        assert [f"{c.category.value.capitalize()} Criteria: {c.description}" for c in criteria] == [
            item["description"] for item in reply
        ]
        ideal = record["ideal_completions_data"]
        assert example.reference == (ideal["ideal_completion"] if ideal else None)
    # The same conversations as the physician-rubric reader gives the trainer.
    physician = read_examples(source, "healthbench", limit=HEALTHBENCH_LIMIT)
    assert [e.conversation for e in examples] == [e.conversation for e in physician]

    written = [json.loads(line) for line in output.read_text().splitlines()]
    for record, out in zip(records, written, strict=True):
        assert out["id"] == record["prompt_id"]
        assert out["example_tags"] == record["example_tags"]
        assert out["physician_rubric_count"] == len(record["rubrics"])
        assert out["canary"] == record["canary"]
        assert "rubrics" not in out and "ideal_completions_data" not in out
        assert "prompt" not in out
        assert out["rubric_with_reference"] is (record["ideal_completions_data"] is not None)
    # A single user turn is stored as its text, a longer conversation as its messages.
    assert written[0]["question"] == records[0]["prompt"][0]["content"]
    assert written[3]["question"] == records[3]["prompt"]

    # The generator saw the text of a single turn and the tagged transcript of the 7 turns.
    sent = {}
    for request in server.requests:
        messages = request.body["messages"]
        matches = [k for k, r in enumerate(records)
                   if r["prompt"][-1]["content"].strip() in messages[-1]["content"]]
        sent[matches[0]] = messages
    assert sorted(sent) == [0, 1, 2, 3]
    assert sent[1] == prompts.rubric_generation_prompt(
        records[1]["prompt"][0]["content"],
        records[1]["ideal_completions_data"]["ideal_completion"],
        domain="medical",
    ).messages
    transcript = expected_transcript(records[3]["prompt"])
    assert transcript.count("<assistant>") == 3 and transcript.count("<user>") == 4
    assert sent[3] == prompts.rubric_generation_prompt(
        transcript, records[3]["ideal_completions_data"]["ideal_completion"], domain="medical"
    ).messages
    assert "<reference_answer>" not in sent[0][-1]["content"]


def test_healthbench_without_reference_from_a_built_tfds_split(server, shared_data, tmp_path):
    from rar_jax.data import sources
    from rar_jax.data.builders import build

    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "oss_eval_first100.jsonl").symlink_to(shared_data / HEALTHBENCH_FILE)
    data_dir = tmp_path / "tfds"
    build("healthbench", manual_dir=manual, data_dir=data_dir)
    train = sources.read_tfds_examples("healthbench", "train", data_dir=data_dir, limit=3)
    by_id = {
        r["prompt_id"]: r
        for r in (json.loads(line) for line in (shared_data / HEALTHBENCH_FILE).open())
    }
    records = [by_id[e.example_id] for e in train]
    server.replies = replies_by_last_turn(records)
    output = tmp_path / "healthbench_train.fake.noref.jsonl"
    process = run_experiment(
        "rubrics.py",
        "--config.rubric_generation.input=tfds:healthbench:train",
        f"--config.data.tfds_data_dir={data_dir}",
        f"--config.rubric_generation.output={output}",
        "--config.rubric_generation.limit=3",
        "--config.rubric_generation.use_reference=False",
        "--config.rubric_generation.input_format=healthbench",
        "--config.judge.backend=http",
        f"--config.judge.http.base_url={server.base_url}",
        "--config.judge.http.max_attempts=1",
        "--config.rubric_generation.max_attempts=1",
        cwd=tmp_path,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    examples = read_examples(output, "rar")
    assert [e.conversation for e in examples] == [e.conversation for e in train]
    assert [e.reference for e in examples] == [None] * 3
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [w["id"] for w in written] == [e.example_id for e in train]
    assert [w["rubric_with_reference"] for w in written] == [False] * 3
    assert [w["reference_answer"] for w in written] == [""] * 3
    for k, example in enumerate(examples):
        assert [c.title for c in example.rubric.criteria] == [
            item["title"] for item in rubric_items(f"record {k}")
        ]
    assert len(server.requests) == 3
    for request in server.requests:
        assert "<reference_answer>" not in request.body["messages"][-1]["content"]


def test_malformed_healthbench_records_name_file_line_and_field(shared_data, tmp_path):
    good = healthbench_records(shared_data)[3]
    ends_with_assistant = {**good, "prompt": good["prompt"][:-1]}
    bad_tags = {**good, "example_tags": "theme:hedging"}
    bad_ideal = {**good, "ideal_completions_data": "an answer"}
    bad_rubrics = {**good, "rubrics": {"criterion": "x"}}
    no_prompt = {k: v for k, v in good.items() if k != "prompt"}
    process, output, _ = run_rubrics(
        tmp_path,
        [good, ends_with_assistant, bad_tags, bad_ideal, bad_rubrics, no_prompt],
        "--config.rubric_generation.max_attempts=1",
    )
    assert process.returncode != 0
    path = tmp_path / "questions.jsonl"
    for line, message in [
        (2, "prompt: the last message must be a user turn"),
        (3, "example_tags: expected a list of strings"),
        (4, "ideal_completions_data: expected an object or null, got str"),
        (5, "rubrics: expected a list, got dict"),
        (6, "prompt: expected a non-empty list of chat messages"),
    ]:
        assert f"{path}:{line}: {message}" in process.stderr
    assert f"{path}:1:" not in process.stderr
    assert not output.exists()


def test_record_kinds_and_question_forms():
    from rar_jax.judges.rubric_generation import (
        input_format_of,
        question_from_record,
        rubric_record,
    )

    assert input_format_of({"prompt": "Why?"}) == "questions"
    # rar-rubrics' own output keeps example_tags but has a question: read back as questions.
    assert input_format_of({"question": "Why?", "example_tags": ["theme:x"]}) == "questions"
    assert input_format_of({"prompt": [{"role": "user", "content": "Why?"}], "prompt_id": "a"}) == (
        "healthbench"
    )
    turns = [
        {"role": "user", "content": "I have a cough."},
        {"role": "assistant", "content": " Since when? "},
        {"role": "user", "content": "Two weeks."},
    ]
    # A questions record may hold a conversation too (e.g. rar-rubrics' own output).
    question = question_from_record(
        {"id": "r1", "question": turns, "reference_answer": "See a doctor."},
        "x.jsonl:1",
        use_reference=True,
    )
    assert question.question == (
        "<user>\nI have a cough.\n</user>\n<assistant>\nSince when?\n</assistant>\n"
        "<user>\nTwo weeks.\n</user>"
    )
    assert question.reference == "See a doctor."
    question.items = rubric_items("cough")
    record = rubric_record(question)
    assert record["question"] == turns and record["id"] == "r1"
    # A system turn before a single user turn keeps the message list.
    system = [{"role": "system", "content": "Be kind."}, turns[0]]
    hb = question_from_record(
        {"prompt": system, "rubrics": [], "ideal_completions_data": None}, "h.jsonl:7",
        use_reference=True,
    )
    assert hb.prompt == system and hb.reference is None
    assert hb.record == {"id": "h.jsonl:7", "example_tags": [], "physician_rubric_count": 0}
    # --input_format=questions reads a HealthBench-looking record as a question.
    forced = question_from_record(
        {"prompt": "Why?", "example_tags": ["x"]}, "q.jsonl:1", use_reference=True,
        input_format="questions",
    )
    assert forced.question == "Why?" and forced.record == {"prompt": "Why?", "example_tags": ["x"]}
    with pytest.raises(ValueError, match="input_format: expected one of auto, questions"):
        question_from_record({"prompt": "Why?"}, "q.jsonl:1", use_reference=True,
                             input_format="csv")


def test_require_reference_pool_and_rubric_statistics(server, shared_data, tmp_path):
    """rubric_generation.require_reference leaves out the records without an ideal completion
    even when the reference is not shown (one pool for the ref and noref files); the statistics
    of the written rubrics go beside them, and stats_only computes the same from the file."""
    records = healthbench_records(shared_data)
    server.replies = replies_by_last_turn(records)
    output = tmp_path / "healthbench_train.fake.noref.jsonl"
    process = run_experiment(
        "rubrics.py", *generation(input=shared_data / HEALTHBENCH_FILE, output=output,
                                  limit=HEALTHBENCH_LIMIT, max_attempts=1, use_reference=False,
                                  require_reference=True),
        "--config.judge.backend=http",
        f"--config.judge.http.base_url={server.base_url}", "--config.judge.http.max_attempts=1",
        "--config.judge.http.progress_min_requests=0", cwd=tmp_path, timeout=300,
    )
    assert process.returncode == 0, process.stderr
    written = [json.loads(line) for line in output.read_text().splitlines()]
    with_ideal = [r["prompt_id"] for r in records if r["ideal_completions_data"] is not None]
    assert [out["id"] for out in written] == with_ideal  # Records 1 and 3 of the 4.
    assert all(out["rubric_with_reference"] is False for out in written)
    assert "2 records without a reference answer are left out" in process.stderr
    assert all("<reference_answer>" not in r.body["messages"][-1]["content"]
               for r in server.requests)

    # Each reply has 7 items: 1 essential, 2 important, 2 optional, 2 pitfalls.
    stats = json.loads((tmp_path / "healthbench_train.fake.noref.stats.json").read_text())
    assert stats["rubrics"] == 2 and stats["criteria"] == 14
    assert stats["criteria_per_rubric"] == {"mean": 7.0, "std": 0.0, "min": 7, "max": 7}
    assert stats["category_shares"] == pytest.approx(
        {"essential": 1 / 7, "important": 2 / 7, "optional": 2 / 7, "pitfall": 2 / 7, "none": 0})
    assert stats["require_reference"] is True

    again = tmp_path / "again.json"
    process = run_experiment("rubrics.py", *generation(stats_only=True, input=output, output=again),
                             "--config.data.format=rar", cwd=tmp_path, timeout=300)
    assert process.returncode == 0, process.stderr
    assert json.loads((tmp_path / "again.config.json").read_text())["data"]["format"] == "rar"
    recomputed = json.loads(again.read_text())
    assert recomputed["criteria_per_rubric"] == stats["criteria_per_rubric"]
    assert recomputed["category_shares"] == pytest.approx(stats["category_shares"])
    assert recomputed["examples_without_rubric"] == 0


def test_paper_rubric_configs_write_where_the_paper_configs_read():
    """configs/paper/rubrics/healthbench_train.py: the seven generated files of Tables 1-3, each
    a valid config whose output is the file the paper configs train on."""
    import runpy

    from rar_jax.config import validate

    from cli_runner import REPO_ROOT

    common = runpy.run_path(str(REPO_ROOT / "configs" / "paper" / "common.py"))
    files = runpy.run_path(str(REPO_ROOT / "configs" / "paper" / "rubrics" /
                               "healthbench_train.py"))
    seven = ["o3_mini.ref"] + [f"{g}.noref" for g in common["RUBRIC_GENERATORS"]]
    assert len(seven) == 7
    for argument in seven:
        generator, _, reference = argument.partition(".")
        config = files["get_config"](argument)
        validate(config)
        settings = config.rubric_generation
        assert settings.output == common["rubric_file"](generator, reference == "ref")
        assert (settings.use_reference, settings.require_reference) == (reference == "ref", True)
        assert settings.input == "tfds:healthbench:train" and settings.domain == "medical"
        assert config.judge.http.model == common["RUBRIC_GENERATORS"][generator]
        assert config.judge.http.reasoning_model is (generator == "o3_mini")
        assert settings.max_tokens == (16384 if generator == "o3_mini" else 2048)
    with pytest.raises(ValueError, match="<generator>.<ref|noref>"):
        files["get_config"]("o3_mini")


def test_a_written_config_replays_as_the_same_config(tmp_path):
    """cli.write_config's JSON, read by configs/replay.py, is the config again."""
    import runpy

    from rar_jax import cli
    from rar_jax.config import base_config

    from cli_runner import REPO_ROOT

    config = base_config()
    config.seed = 7
    config.rubric_generation.domain = "science"
    config.rubric_generation.temperature = 0.3
    config.alignment.conditions = "likert"
    config.judge.http.timeout_s = 300  # An int where the schema holds a float.
    path = cli.write_config(config, tmp_path / "run" / "config.json")
    replay = runpy.run_path(str(REPO_ROOT / "configs" / "replay.py"))["get_config"]
    again = replay(str(path))
    assert again.to_dict() == config.to_dict()
    assert isinstance(again.judge.http.timeout_s, float)
    assert replay().to_dict() == base_config().to_dict()
    path.write_text(json.dumps({"rubric_generation": {"domian": "science"}}))
    with pytest.raises(ValueError, match="'rubric_generation.domian'"):
        replay(str(path))
