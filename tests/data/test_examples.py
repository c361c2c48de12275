"""Examples from real records, and the resumable seeded stream."""

import json

import pytest

from rar_jax import config as rar_config
from rar_jax.data.examples import ExampleStream, read_examples
from rar_jax.rubrics.schema import Polarity, RubricError


def test_healthbench_examples(shared_data):
    examples = read_examples(shared_data / "healthbench" / "oss_eval_first100.jsonl", "healthbench")
    assert len(examples) == 100
    first = examples[0]
    assert first.example_id == "1f548d5b-cd00-49a0-b327-283a2e00debd"
    assert first.conversation[-1]["role"] == "user"
    assert first.conversation[0]["content"].startswith("Make a 3 months plan")
    assert len(first.rubric) == 19
    with_reference = [e for e in examples if e.reference is not None]
    records = [json.loads(l) for l in open(shared_data / "healthbench" / "oss_eval_first100.jsonl")]
    assert len(with_reference) == sum(bool(r["ideal_completions_data"]) for r in records)
    multi_turn = [e for e in examples if len(e.conversation) > 1]
    assert multi_turn and all(e.conversation[-1]["role"] == "user" for e in multi_turn)


def test_rar_examples_with_config(shared_data):
    rubric = rar_config.base_config().rubric
    rubric.pitfall_polarity, rubric.ablation = "positive", "no_pitfalls"
    examples = read_examples(shared_data / "rar_samples" / "rar_medicine_sample3.jsonl", "rar",
                             rubric=rubric)
    assert [len(e.rubric) for e in examples] == [8, 9, 8]
    assert examples[0].reference.startswith("The condition described is consistent with vernal")
    assert examples[0].conversation == ({"role": "user", "content": examples[0].conversation[0]["content"]},)
    science = read_examples(shared_data / "rar_samples" / "rar_science_sample3.jsonl", "rar",
                            rubric=rar_config.base_config().rubric, limit=2)
    assert len(science) == 2
    pitfalls = [c for c in science[1].rubric.criteria if c.category.value == "pitfall"]
    assert pitfalls and all(c.polarity is Polarity.NEGATIVE for c in pitfalls)  # Config default.


def test_kqa_examples(shared_data):
    examples = read_examples(shared_data / "kqa" / "questions_w_answers.jsonl", "kqa")
    assert len(examples) == 201
    assert examples[0].reference.startswith("Escitalopram, sold under the brand names")


def test_bad_records_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "assistant", "content": "hi"}], "rubrics": []}) + "\n")
    with pytest.raises(RubricError, match=r"bad.jsonl:1: prompt: the last message must be a user turn"):
        read_examples(path, "healthbench")
    with pytest.raises(ValueError, match="unknown data format 'csv'"):
        read_examples(path, "csv")


def test_stream_is_seeded_reshuffles_and_resumes(shared_data):
    examples = read_examples(shared_data / "healthbench" / "hard_sample50_seed42.jsonl", "healthbench",
                             limit=5)
    stream = ExampleStream(examples, seed=3)
    served = [e.example_id for e in stream.next_batch(4) + stream.next_batch(4)]
    epoch0, epoch1 = served[:5], served[5:] + [e.example_id for e in stream.next_batch(2)]
    assert sorted(epoch0) == sorted(e.example_id for e in examples)
    assert sorted(epoch1) == sorted(epoch0) and epoch1 != epoch0
    resumed = ExampleStream(examples, seed=3, position=4)
    assert [e.example_id for e in resumed.next_batch(4)] == served[4:]
    other_seed = ExampleStream(examples, seed=4)
    assert [e.example_id for e in other_seed.next_batch(5)] != epoch0


def test_an_ablation_that_empties_a_rubric_skips_that_example(shared_data, tmp_path, caplog):
    # Table 2's essential_only on a record whose rubric has no Essential item: that example is
    # left out (and counted), not a crash of the run.
    records = [json.loads(line) for line in
               (shared_data / "rar_samples" / "rar_medicine_sample3.jsonl").read_text().splitlines()]
    no_essential = dict(records[0])
    no_essential["rubric"] = [item for item in records[0]["rubric"]
                              if not item["description"].startswith("Essential Criteria")]
    no_essential["rubric_list"] = [item["description"] for item in no_essential["rubric"]]
    no_essential["rubric_count"] = len(no_essential["rubric"])
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [no_essential] + records[1:]))
    config = rar_config.base_config().rubric
    config.ablation = "essential_only"
    with caplog.at_level("WARNING"):
        examples = read_examples(path, "rar", rubric=config)
    assert [e.example_id for e in examples] == [f"{path}:2", f"{path}:3"]
    assert all(c.category.value == "essential" for e in examples for c in e.rubric.criteria)
    assert "leaves no criteria in 1 of 3 examples" in caplog.text
    only_that_one = tmp_path / "none.jsonl"
    only_that_one.write_text(json.dumps(no_essential) + "\n")
    with pytest.raises(RubricError, match="leaves no criteria in any of its 1 examples"):
        read_examples(only_that_one, "rar", rubric=config)
