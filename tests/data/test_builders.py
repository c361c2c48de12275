"""TFDS builders: every data set built from ../shared/data (GPQA from a synthetic CSV) into a
temporary data dir, read back without TensorFlow, counts checked against the raw files."""

import csv
import hashlib
import importlib.abc
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from rar_jax import config as rar_config
from rar_jax.data import sources
from rar_jax.data.builders import MalformedRowError, build, gpqa_config
from rar_jax.data.builders.base import find_split_files
from rar_jax.data.builders.gpqa_diamond import choice_order
from rar_jax.data.builders.healthbench import healthbench_1k_ids
from rar_jax.data.examples import read_examples
from rar_jax.rubrics.schema import Category, Polarity


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def _ids(name, split, data_dir, config=None):
    source = sources.open_source(name, split, data_dir=data_dir, config=config)
    return [sources.decode_record(source[i])["example_id"] for i in range(len(source))]


def _has_ideal(record):
    ideal = record.get("ideal_completions_data") or {}
    return bool((ideal.get("ideal_completion") or "").strip())


# ---------------------------------------------------------------------------------- HealthBench
@pytest.fixture(scope="module")
def healthbench_dir(shared_data, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    build("healthbench", manual_dir=shared_data / "healthbench", data_dir=data_dir)
    return data_dir


def test_healthbench_from_shared_stand_ins(shared_data, healthbench_dir):
    folder = shared_data / "healthbench"
    full, hard, consensus = (_records(folder / name) for name in (
        "union_full_rubrics.jsonl", "hard_sample50_seed42.jsonl", "union_consensus_rubrics.jsonl"))
    metadata = sources.build_metadata("healthbench", data_dir=healthbench_dir)
    assert metadata["rows_read"] == {"oss_eval": len(full), "hard": len(hard),
                                     "consensus": len(consensus)}
    assert (len(full), len(hard), len(consensus)) == (788, 50, 225)
    assert metadata["complete"] is False and metadata["missing_splits"] == []
    assert metadata["files"]["oss_eval"] == ["union_full_rubrics.jsonl"]
    assert metadata["missing_reference"]["oss_eval"] == sum(not _has_ideal(r) for r in full)
    assert metadata["missing_reference"]["hard"] == sum(not _has_ideal(r) for r in hard)

    # HealthBench-1k: 1000 of 5000 scaled to 788 -> 158, by the documented hash rule.
    ids = [r["prompt_id"] or r["_key"] for r in full]
    expected_1k = sorted(ids, key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest())[:158]
    held_out, train = (_ids("healthbench", split, healthbench_dir)
                       for split in ("healthbench_1k", "train"))
    assert len(held_out) == 158 and len(train) == 630
    assert set(held_out) == set(expected_1k)
    assert set(held_out).isdisjoint(train) and set(held_out) | set(train) == set(ids)
    assert held_out == [i for i in ids if i in set(expected_1k)]  # File order kept.
    assert _ids("healthbench", "oss_eval", healthbench_dir) == ids

    source = sources.open_source("healthbench", "consensus", data_dir=healthbench_dir)
    first = sources.decode_record(source[0])
    assert first["example_id"] == consensus[0]["prompt_id"]
    assert first["rubric_kind"] == "consensus"
    assert first["example_tags"] == consensus[0]["example_tags"]
    assert "theme:" + first["theme"] in consensus[0]["example_tags"]
    assert first["source"] == "union_consensus_rubrics.jsonl:1"


def test_healthbench_examples_match_the_jsonl_reader(shared_data, healthbench_dir):
    path = shared_data / "healthbench" / "hard_sample50_seed42.jsonl"
    expected = read_examples(path, "healthbench")
    dataset = sources.example_dataset("healthbench", "hard", data_dir=healthbench_dir)
    assert len(dataset) == 50
    for index in (0, 17, 49):
        got, want = dataset[index], expected[index]
        assert got.example_id == want.example_id
        assert got.conversation == want.conversation and got.reference == want.reference
        assert got.rubric.criteria == want.rubric.criteria


def test_healthbench_1k_selection_is_seeded_and_order_free():
    ids = [f"id-{i}" for i in range(5000)]
    chosen = healthbench_1k_ids(ids)
    assert len(chosen) == 1000
    assert healthbench_1k_ids(list(reversed(ids))) == chosen
    assert healthbench_1k_ids(ids, seed=1) != chosen
    assert len(healthbench_1k_ids(ids[:788])) == 158 and len(healthbench_1k_ids(ids[:5])) == 1


def test_healthbench_prefers_the_official_files(shared_data, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    folder = shared_data / "healthbench"
    (manual / "2025-05-07-06-14-12_oss_eval.jsonl").symlink_to(folder / "oss_eval_first100.jsonl")
    (manual / "hard_2025-05-08-21-00-10.jsonl").symlink_to(folder / "hard_sample50_seed42.jsonl")
    (manual / "union_full_rubrics.jsonl").symlink_to(folder / "union_full_rubrics.jsonl")
    builder = build("healthbench", manual_dir=manual, data_dir=tmp_path / "tfds")
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    assert splits == {"oss_eval": 100, "hard": 50, "healthbench_1k": 20, "train": 80}
    metadata = sources.build_metadata("healthbench", data_dir=tmp_path / "tfds")
    assert metadata["missing_splits"] == ["consensus"] and metadata["complete"] is False


def test_duplicate_ids_are_malformed(shared_data, tmp_path):
    records = _records(shared_data / "healthbench" / "oss_eval_first100.jsonl")[:3]
    _write_jsonl(tmp_path / "m" / "oss_eval_first100.jsonl", [records[0], records[1], records[0]])
    with pytest.raises(MalformedRowError,
                       match=r"oss_eval_first100.jsonl:3: example id '1f548d5b-.*' already used "
                             r"by oss_eval_first100.jsonl:1"):
        build("healthbench", manual_dir=tmp_path / "m", data_dir=tmp_path / "tfds")


# ---------------------------------------------------------------------------------- K-QA
def test_kqa_from_shared_data(shared_data, tmp_path):
    raw = _records(shared_data / "kqa" / "questions_w_answers.jsonl")
    builder = build("kqa", manual_dir=shared_data / "kqa", data_dir=tmp_path)
    assert builder.info.splits["test"].num_examples == len(raw) == 201
    metadata = sources.build_metadata("kqa", data_dir=tmp_path)
    blank = sum(not s.strip() for r in raw for s in r["Must_have"] + r["Nice_to_have"])
    assert metadata["blank_statements"] == blank == 3
    examples = sources.read_tfds_examples("kqa", "test", data_dir=tmp_path)
    assert [e.conversation[0]["content"] for e in examples] == [r["Question"] for r in raw]
    assert [len(e.rubric) for e in examples] == [
        sum(bool(s.strip()) for s in r["Must_have"] + r["Nice_to_have"]) for r in raw]
    assert examples[5].example_id == "questions_w_answers.jsonl:6"
    # One location string for both kinds of input.
    assert len(sources.load_examples("tfds:kqa:test[:3]", "kqa", data_dir=tmp_path)) == 3
    jsonl = sources.load_examples(shared_data / "kqa" / "questions_w_answers.jsonl", "kqa", limit=2)
    assert [e.rubric.criteria for e in jsonl] == [e.rubric.criteria for e in examples[:2]]
    with pytest.raises(ValueError, match="format 'rar' does not match the data set's 'kqa'"):
        sources.load_examples("tfds:kqa:test", "rar", data_dir=tmp_path)
    with pytest.raises(ValueError, match="expected 'tfds:<name>"):
        sources.load_examples("tfds:kqa", None, data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not built"):
        sources.open_source("kqa", "test", data_dir=tmp_path / "empty")


# ---------------------------------------------------------------------------------- RaR
@pytest.fixture(scope="module")
def rar_build(shared_data, tmp_path_factory):
    """Both RaR sets built from split files made of the shared samples (see the test)."""
    root = tmp_path_factory.mktemp("rar")
    samples = shared_data / "rar_samples"
    med = _records(samples / "rar_medicine_sample3.jsonl")
    sci = _records(samples / "rar_science_sample3.jsonl")
    # Medicine: train = records 0, 1 (JSONL); val = record 2 (parquet, Hugging Face layout;
    # its first pitfall carries its own polarity, so the others get a null one in parquet);
    # test = record 1 with its question re-spaced and upper-cased (a duplicate) + record 2.
    _write_jsonl(root / "med" / "train.jsonl", med[:2])
    (root / "med" / "data").mkdir()
    items = [dict(item) for item in med[2]["rubric"]]
    first_pitfall = next(i for i, item in enumerate(items) if item["weight"] < 0)
    items[first_pitfall]["polarity"] = "positive"
    pq.write_table(pa.Table.from_pylist([dict(med[2], rubric=items)]),
                   root / "med" / "data" / "validation-00000-of-00001.parquet")
    duplicate = dict(med[1], question="  " + "  ".join(med[1]["question"].upper().split()))
    _write_jsonl(root / "med" / "test.jsonl", [duplicate, med[2]])
    # Science: train = the rubric_harness export of the same 3 questions; val = record 2 with an
    # empty reference answer; test = record 0 only (in train: the split ends up empty).
    (root / "sci").mkdir()
    (root / "sci" / "rar_science_train.jsonl").symlink_to(
        samples / "harness_format" / "rar_science_shipped_first3.jsonl")
    _write_jsonl(root / "sci" / "val.jsonl", [dict(sci[2], reference_answer="  ")])
    _write_jsonl(root / "sci" / "test.jsonl", [sci[0]])
    data_dir = root / "tfds"
    return {
        "data_dir": data_dir, "med": med, "sci": sci, "root": root,
        "rar_medicine": build("rar_medicine", manual_dir=root / "med", data_dir=data_dir),
        "rar_science": build("rar_science", manual_dir=root / "sci", data_dir=data_dir),
    }


def test_rar_medicine_splits_and_dedup(rar_build):
    data_dir, med = rar_build["data_dir"], rar_build["med"]
    splits = {k: v.num_examples for k, v in rar_build["rar_medicine"].info.splits.items()}
    train_questions = {" ".join(r["question"].split()).lower() for r in med[:2]}
    test_rows = _records(rar_build["root"] / "med" / "test.jsonl")
    kept = [r for r in test_rows if " ".join(r["question"].split()).lower() not in train_questions]
    assert splits == {"train": 2, "val": 1, "test": len(kept)} and len(kept) == 1
    metadata = sources.build_metadata("rar_medicine", data_dir=data_dir)
    assert metadata["test_in_train_removed"] == len(test_rows) - len(kept) == 1
    assert metadata["val_in_train"] == 0
    assert metadata["files"]["val"] == ["data/validation-00000-of-00001.parquet"]
    assert metadata["rows_read"] == {"train": 2, "val": 1, "test": 2}

    rubric = rar_config.base_config().rubric
    want = read_examples(rar_build["root"] / "med" / "train.jsonl", "rar", rubric=rubric)
    got = sources.read_tfds_examples("rar_medicine", "train", data_dir=data_dir, rubric=rubric)
    assert [e.rubric.criteria for e in got] == [e.rubric.criteria for e in want]
    assert [e.example_id for e in got] == ["train.jsonl:1", "train.jsonl:2"]
    val = sources.read_tfds_examples("rar_medicine", "val", data_dir=data_dir)
    assert val[0].example_id == "data/validation-00000-of-00001.parquet:1"
    assert val[0].conversation[0]["content"] == med[2]["question"]
    assert val[0].reference == med[2]["reference_answer"]
    # Without a rubric config: the data set's default pitfall polarity (Medicine: negative),
    # except where the item has its own.
    pitfalls = [c for c in val[0].rubric.criteria if c.category is Category.PITFALL]
    assert [c.polarity for c in pitfalls] == [Polarity.POSITIVE, Polarity.NEGATIVE]
    # With a config: the config decides (and its ablation applies).
    rubric.pitfall_polarity, rubric.ablation = "positive", "no_pitfalls"
    ablated = sources.read_tfds_examples("rar_medicine", "val", data_dir=data_dir, rubric=rubric)
    assert len(ablated[0].rubric) == len(val[0].rubric) - len(pitfalls)


def test_rar_science_empty_reference_and_empty_split(rar_build):
    data_dir, sci = rar_build["data_dir"], rar_build["sci"]
    splits = {k: v.num_examples for k, v in rar_build["rar_science"].info.splits.items()}
    assert splits == {"train": 3, "val": 1}
    metadata = sources.build_metadata("rar_science", data_dir=data_dir)
    assert metadata["empty_splits"] == ["test"] and metadata["test_in_train_removed"] == 1
    assert metadata["missing_reference"] == {"train": 0, "val": 1, "test": 0}
    assert metadata["val_in_train"] == 1
    record = sources.decode_record(sources.open_source("rar_science", "val", data_dir=data_dir)[0])
    assert record["has_reference"] is False and record["rubric_count"] == len(sci[2]["rubric"])
    assert record["question_source"] == sci[2]["question_source"]
    train = sources.read_tfds_examples("rar_science", "train", data_dir=data_dir)
    assert [e.conversation[0]["content"] for e in train] == [r["question"] for r in sci]
    pitfalls = [c for c in train[1].rubric.criteria if c.category is Category.PITFALL]
    assert pitfalls and all(c.polarity is Polarity.POSITIVE for c in pitfalls)  # Item-level.


def test_malformed_rows_name_file_line_and_field_or_are_counted(rar_build, tmp_path):
    med = rar_build["med"]
    bad = dict(med[1], rubric=[{k: v for k, v in item.items() if k != "weight"}
                               for item in med[1]["rubric"]])
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train.jsonl").write_text(
        json.dumps(med[0]) + "\n{not json\n" + json.dumps(bad) + "\n\n" + json.dumps(med[2]) + "\n")
    with pytest.raises(MalformedRowError, match=r"^train.jsonl:2: invalid JSON"):
        build("rar_medicine", manual_dir=manual, data_dir=tmp_path / "a")
    builder = build("rar_medicine", manual_dir=manual, data_dir=tmp_path / "b", config="skip")
    assert builder.info.splits["train"].num_examples == 2
    metadata = sources.build_metadata("rar_medicine", data_dir=tmp_path / "b", config="skip")
    assert metadata["skipped_malformed"] == {"train": 2}
    assert metadata["rows_read"] == {"train": 4}
    assert metadata["skipped_messages"][0].startswith("train.jsonl:2: invalid JSON")
    assert metadata["skipped_messages"][1] == \
        "train.jsonl:3: rubric[0].weight: missing required field"
    assert [e.example_id for e in sources.read_tfds_examples(
        "rar_medicine", "train", data_dir=tmp_path / "b", config="skip")] == \
        ["train.jsonl:1", "train.jsonl:5"]
    (manual / "train.jsonl").write_text(json.dumps(med[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(MalformedRowError, match=r"^train.jsonl:2: rubric\[0\].weight: missing"):
        build("rar_medicine", manual_dir=manual, data_dir=tmp_path / "c")


def test_split_files_must_name_one_split(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("data/train-00001-of-00002.parquet", "data/train-00000-of-00002.parquet",
                 "validation/0000.parquet", "contest.jsonl", "README.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    found = find_split_files(tmp_path, {"train": ("train",), "val": ("val", "validation"),
                                        "test": ("test",)})
    assert {k: [p.relative_to(tmp_path).as_posix() for p in v] for k, v in found.items()} == {
        "train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
        "val": ["validation/0000.parquet"], "test": []}
    (tmp_path / "train_test.jsonl").touch()
    with pytest.raises(MalformedRowError, match="train_test.jsonl: the file name matches the"):
        find_split_files(tmp_path, {"train": ("train",), "test": ("test",)})


# ---------------------------------------------------------------------------------- GPQA
GPQA_HEADER = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1",
               "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Subdomain",
               "Record ID", "High-level domain", "Canary String"]


def _gpqa_rows(count):
    rows = []
    for i in range(count):
        question = f"Question {i}: which value?" if i != 2 else "Question 2 spans\ntwo lines?"
        rows.append({
            "Pre-Revision Question": "old", "Question": question,
            "Correct Answer": f" right {i} ", "Incorrect Answer 1": f"wrong {i}a",
            "Incorrect Answer 2": f"wrong {i}b", "Incorrect Answer 3": f"wrong {i}c",
            "Explanation": "because", "Subdomain": "Organic Chemistry",
            "Record ID": f"rec{i:03d}", "High-level domain": "Chemistry" if i % 2 else "Physics",
            "Canary String": "canary",
        })
    return rows


def _write_gpqa(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=GPQA_HEADER)
        writer.writeheader()
        writer.writerows(rows)


def _orders(data_dir, config):
    source = sources.open_source("gpqa_diamond", "test", data_dir=data_dir, config=config)
    return np.stack([np.asarray(source[i]["orders"]) for i in range(len(source))])


def test_gpqa_builds_and_permutes_choices_per_run_with_a_seed(tmp_path):
    rows = _gpqa_rows(8)
    _write_gpqa(tmp_path / "manual" / "gpqa_diamond.csv", rows)
    seed0, seed1 = gpqa_config(seed=0, num_runs=4), gpqa_config(seed=1, num_runs=4)
    assert seed0.name == "seed0_runs4"
    for config in (seed0, seed1):
        build("gpqa_diamond", manual_dir=tmp_path / "manual", data_dir=tmp_path / "a",
              config=config)
    build("gpqa_diamond", manual_dir=tmp_path / "manual", data_dir=tmp_path / "b", config=seed0)
    orders = _orders(tmp_path / "a", seed0)
    assert orders.shape == (8, 4, 4)
    assert (np.sort(orders, axis=-1) == np.arange(4)).all()  # Every run's order is a permutation.
    assert np.array_equal(orders, _orders(tmp_path / "b", seed0))  # Same seed, same orders.
    assert not np.array_equal(orders, _orders(tmp_path / "a", seed1))  # Another seed, others.
    assert len({tuple(o) for o in orders.reshape(-1, 4)}) > 4  # Runs and records differ.
    assert np.array_equal(orders[3, 2], choice_order("rec003", 0, 2))
    # Read back by config name too, and as Examples.
    assert len(sources.open_source("gpqa_diamond", "test", data_dir=tmp_path / "a",
                                   config="seed1_runs4")) == 8
    for run in range(4):
        examples = sources.read_tfds_examples("gpqa_diamond", "test", data_dir=tmp_path / "a",
                                              config=seed0, gpqa_run=run)
        for row, example in zip(rows, examples):
            text = example.conversation[0]["content"]
            assert text.startswith(row["Question"])
            shown = {line[0]: line[3:] for line in text.splitlines() if line[:3] in
                     ("A) ", "B) ", "C) ", "D) ")}
            assert shown[example.reference] == row["Correct Answer"].strip()
            assert sorted(shown.values()) == sorted(
                row[c].strip() for c in ("Correct Answer", "Incorrect Answer 1",
                                         "Incorrect Answer 2", "Incorrect Answer 3"))
            assert example.example_id == f"{row['Record ID']}/run{run}" and example.rubric is None
    record = sources.decode_record(
        sources.open_source("gpqa_diamond", "test", data_dir=tmp_path / "a", config=seed0)[1])
    assert record["domain"] == "Chemistry" and record["choices"][0] == "right 1"
    with pytest.raises(ValueError, match="run 4 is out of range; .* num_runs=4"):
        sources.read_tfds_examples("gpqa_diamond", "test", data_dir=tmp_path / "a", config=seed0,
                                   gpqa_run=4)


def test_gpqa_malformed_row_names_line_and_column(tmp_path):
    rows = _gpqa_rows(5)
    rows[3]["Correct Answer"] = "   "
    _write_gpqa(tmp_path / "manual" / "gpqa_diamond.csv", rows)
    # Header on line 1; row 2 holds a two-line question, so row 3 starts on line 6.
    with pytest.raises(MalformedRowError,
                       match=r"^gpqa_diamond.csv:6: Correct Answer: expected a non-empty string"):
        build("gpqa_diamond", manual_dir=tmp_path / "manual", data_dir=tmp_path / "a")
    config = gpqa_config(num_runs=2, skip_malformed=True)
    builder = build("gpqa_diamond", manual_dir=tmp_path / "manual", data_dir=tmp_path / "b",
                    config=config)
    assert builder.info.splits["test"].num_examples == 4
    metadata = sources.build_metadata("gpqa_diamond", data_dir=tmp_path / "b", config=config)
    assert metadata["skipped_malformed"] == {"test": 1} and metadata["rows_read"] == {"test": 5}


def test_command_line_builds_a_gpqa_config(tmp_path):
    _write_gpqa(tmp_path / "manual" / "gpqa_diamond.csv", _gpqa_rows(3))
    result = subprocess.run(
        [sys.executable, "-m", "rar_jax.experiments.build_dataset", "--dataset=gpqa_diamond",
         f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={tmp_path / 'tfds'}",
         "--gpqa_seed=2", "--gpqa_runs=3"],
        capture_output=True, text=True, check=True, timeout=120)
    assert "gpqa_diamond/seed2_runs3 ->" in result.stdout and "test: 3 examples" in result.stdout
    orders = _orders(tmp_path / "tfds", "seed2_runs3")
    assert np.array_equal(orders[1], np.stack([choice_order("rec001", 2, r) for r in range(3)]))


class _TensorflowBlocker(importlib.abc.MetaPathFinder):
    """Refuses (and records) every import of tensorflow; a mere probe (``find_spec``, as etils
    does to pick a file-system backend) is answered "not installed" and not recorded."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] != "tensorflow":
            return None
        frame, callers = sys._getframe(1), []
        while frame is not None and len(callers) < 4:
            callers.append(frame.f_code.co_name)
            frame = frame.f_back
        if "_find_and_load_unlocked" in callers:  # A real import statement / import_module.
            self.attempts.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None


def test_build_and_read_never_import_tensorflow(shared_data, tmp_path):
    blocker = _TensorflowBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        build("kqa", manual_dir=shared_data / "kqa", data_dir=tmp_path)
        dataset = sources.example_dataset("kqa", "test", data_dir=tmp_path)
        assert len(list(dataset.shuffle(seed=0)[:4])) == 4
        # The check works: TFDS's lazy TensorFlow module does try to import it.
        with pytest.raises(ImportError):
            tfds.core.utils.lazy_imports_utils.tensorflow.errors  # noqa: B018
    finally:
        sys.meta_path.remove(blocker)
    assert blocker.attempts == ["tensorflow"]
