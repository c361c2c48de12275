"""Tests of the rubric readers on every real file and on malformed input."""

import json
import logging

import pytest

from rar_jax.io import JsonlError, iter_jsonl
from rar_jax.rubrics.readers import (
    KQA_MUST_HAVE_WEIGHT,
    KQA_NICE_TO_HAVE_WEIGHT,
    PITFALL_POLARITY_DEFAULTS,
    RubricError,
    iter_rubric_records,
    parse_polarity,
    read_rubrics,
    rubric_from_rar_record,
)
from rar_jax.rubrics.schema import Category, Polarity

DOMAINS = ("medicine", "science")


def _raw_records(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _native(shared_data, domain):
    return shared_data / "rar_samples" / f"rar_{domain}_sample3.jsonl"


def _harness(shared_data, domain):
    return shared_data / "rar_samples" / "harness_format" / f"rar_{domain}_shipped_first3.jsonl"


@pytest.mark.parametrize("domain", DOMAINS)
def test_native_rar_records_read_category_weight_and_text(shared_data, domain):
    path = _native(shared_data, domain)
    raw = _raw_records(path)
    records = list(
        iter_rubric_records(
            path, "rar", pitfall_polarity=PITFALL_POLARITY_DEFAULTS[f"rar_{domain}"]
        )
    )
    assert [item.line for item in records] == [1, 2, 3]
    for item, record in zip(records, raw, strict=True):
        assert item.record == record
        assert item.rubric.source == f"{path}:{item.line}"
        assert len(item.rubric) == record["rubric_count"] == len(record["rubric"])
        for criterion, source_item in zip(item.rubric.criteria, record["rubric"], strict=True):
            prefix, _, text = source_item["description"].partition(" Criteria: ")
            assert criterion.category is Category(prefix.lower())
            assert criterion.description == text
            assert criterion.title == source_item["title"]
            assert criterion.weight == source_item["weight"]
            assert (criterion.weight < 0) == (criterion.category is Category.PITFALL)
            if criterion.category is not Category.PITFALL:
                assert criterion.polarity is Polarity.POSITIVE


def test_dataset_default_disagrees_with_item_polarity_and_item_polarity_wins(shared_data):
    path = _native(shared_data, "medicine")
    raw = _raw_records(path)
    default = PITFALL_POLARITY_DEFAULTS["rar_medicine"]
    assert default is Polarity.NEGATIVE
    by_default = read_rubrics(path, "rar", pitfall_polarity=default)
    disagreements = []
    for record_index, (rubric, record) in enumerate(zip(by_default, raw, strict=True)):
        for item_index, criterion in enumerate(rubric.criteria):
            if criterion.category is Category.PITFALL:
                assert criterion.polarity is Polarity.NEGATIVE  # The default, for every pitfall.
                if record["_harness_polarity"][item_index] != criterion.polarity.value:
                    disagreements.append((record_index, item_index))
    # Record 2's pitfall "Does not misinterpret the cystic mass as a tumor" is satisfied = good.
    assert disagreements == [(1, 8)]
    assert by_default[1].criteria[8].description.startswith("Does not misinterpret the cystic mass")

    for record in raw:
        for item, polarity in zip(record["rubric"], record["_harness_polarity"], strict=True):
            item["polarity"] = polarity
    for record in raw:
        rubric = rubric_from_rar_record(record, pitfall_polarity=default)
        assert [c.polarity.value for c in rubric.criteria] == record["_harness_polarity"]
    # The positive pitfall keeps its negative weight: only the polarity says what satisfying means.
    honoured = rubric_from_rar_record(raw[1], pitfall_polarity="negative").criteria[8]
    assert (honoured.polarity, honoured.weight) == (Polarity.POSITIVE, -1.0)


@pytest.mark.parametrize("domain", DOMAINS)
def test_harness_format_equals_native_with_item_polarity(shared_data, domain):
    native = _raw_records(_native(shared_data, domain))
    for record in native:
        for item, polarity in zip(record["rubric"], record["_harness_polarity"], strict=True):
            item["polarity"] = polarity
    # Every harness pitfall carries its own polarity: no default is needed (None).
    harness = read_rubrics(_harness(shared_data, domain), "rar", pitfall_polarity=None)
    assert len(harness) == 3
    for rubric, record in zip(harness, native, strict=True):
        expected = rubric_from_rar_record(record, pitfall_polarity=None, source=rubric.source)
        assert rubric == expected


def test_science_default_matches_every_sample_pitfall(shared_data):
    path = _native(shared_data, "science")
    raw = _raw_records(path)
    rubrics = read_rubrics(path, "rar", pitfall_polarity=PITFALL_POLARITY_DEFAULTS["rar_science"])
    pitfalls = [
        (criterion.polarity.value, record["_harness_polarity"][index])
        for rubric, record in zip(rubrics, raw, strict=True)
        for index, criterion in enumerate(rubric.criteria)
        if criterion.category is Category.PITFALL
    ]
    assert pitfalls == [("positive", "positive"), ("positive", "positive")]


def test_pitfall_without_polarity_needs_a_default(shared_data):
    path = _native(shared_data, "medicine")
    with pytest.raises(
        RubricError, match=r"rar_medicine_sample3\.jsonl:1: rubric\[8\]\.polarity: missing"
    ):
        read_rubrics(path, "rar", pitfall_polarity=None)


def test_healthbench_union_reads_all_788(shared_data):
    path = shared_data / "healthbench" / "union_full_rubrics.jsonl"
    raw = _raw_records(path)
    rubrics = read_rubrics(path, "healthbench")
    assert len(rubrics) == len(raw) == 788
    criteria = [c for rubric in rubrics for c in rubric.criteria]
    items = [item for record in raw for item in record["rubrics"]]
    assert len(criteria) == len(items)
    for criterion, item in zip(criteria, items, strict=True):
        assert criterion.description == item["criterion"]
        assert criterion.weight == item["points"]
        assert criterion.tags == tuple(item["tags"])
        assert criterion.category is None and criterion.title == ""
        assert criterion.polarity is (
            Polarity.NEGATIVE if item["points"] < 0 else Polarity.POSITIVE
        )
    assert (
        sum(c.polarity is Polarity.NEGATIVE for c in criteria)
        == sum(i["points"] < 0 for i in items)
        > 0
    )


def test_kqa_reads_201_records_and_skips_the_3_blank_statements(shared_data, caplog):
    path = shared_data / "kqa" / "questions_w_answers.jsonl"
    raw = _raw_records(path)
    with caplog.at_level(logging.WARNING, logger="rar_jax.rubrics.readers"):
        rubrics = read_rubrics(path, "kqa")
    assert len(rubrics) == len(raw) == 201
    essential = [c for r in rubrics for c in r.criteria if c.category is Category.ESSENTIAL]
    optional = [c for r in rubrics for c in r.criteria if c.category is Category.OPTIONAL]
    skipped = [
        record.getMessage()
        for record in caplog.records
        if "blank K-QA statement" in record.getMessage()
    ]
    assert len(skipped) == 3
    assert f"{path}:24: Must_have[3]" in skipped[0]
    assert len(essential) + len(skipped) == sum(len(r["Must_have"]) for r in raw) == 892
    assert len(optional) == sum(len(r["Nice_to_have"]) for r in raw) == 697
    assert {c.weight for c in essential} == {KQA_MUST_HAVE_WEIGHT} == {5.0}
    assert {c.weight for c in optional} == {KQA_NICE_TO_HAVE_WEIGHT} == {1.0}
    assert all(c.polarity is Polarity.POSITIVE for r in rubrics for c in r.criteria)
    assert [c.description for c in rubrics[0].criteria] == raw[0]["Must_have"] + raw[0][
        "Nice_to_have"
    ]


def test_kqa_blank_statement_is_an_error_when_not_skipped(shared_data):
    path = shared_data / "kqa" / "questions_w_answers.jsonl"
    with pytest.raises(
        RubricError, match=r"questions_w_answers\.jsonl:24: Must_have\[3\]: expected a non-empty"
    ):
        read_rubrics(path, "kqa", skip_blank_statements=False)


GOOD_RAR = {
    "question": "q",
    "rubric": [
        {"title": "Names D", "description": "Essential Criteria: Names D.", "weight": 5},
        {"title": "No A", "description": "Pitfall Criteria: Does not pick A.", "weight": -1},
    ],
    "rubric_count": 2,
}
GOOD_HARNESS = {
    "rubric": [
        {
            "title": "Names D",
            "description": "Names D.",
            "weight": 5,
            "category": "Essential",
            "polarity": "positive",
        }
    ],
    "n_criteria": 1,
}
GOOD_HEALTHBENCH = {
    "rubrics": [{"criterion": "Advises rest.", "points": 5, "tags": ["axis:accuracy"]}]
}
GOOD_KQA = {"Must_have": ["Rest."], "Nice_to_have": ["Fluids."]}


def _with(record, path, value):
    """A deep copy of ``record`` with ``value`` at ``path`` (a tuple of keys); ``...`` deletes."""
    copy = json.loads(json.dumps(record))
    node = copy
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copy


MALFORMED = [
    (
        "rar",
        GOOD_RAR,
        ("rubric", 1, "description"),
        ...,
        "rubric[1].description: missing required field",
    ),
    ("rar", GOOD_RAR, ("rubric", 0, "title"), ..., "rubric[0].title: missing required field"),
    ("rar", GOOD_RAR, ("rubric", 1, "weight"), ..., "rubric[1].weight: missing required field"),
    ("rar", GOOD_RAR, ("rubric",), ..., "rubric: missing required field"),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "description"),
        "Names D.",
        "rubric[0].description: expected a category prefix like 'Essential Criteria:'",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "description"),
        "Crucial Criteria: Names D.",
        "rubric[0].description: expected a category prefix",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "description"),
        "Essential Criteria:  ",
        "rubric[0].description: expected a non-empty",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "weight"),
        0,
        "rubric[0].weight: expected a finite nonzero number, got 0",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "weight"),
        float("nan"),
        "rubric[0].weight: expected a finite nonzero number, got nan",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "weight"),
        "5",
        "rubric[0].weight: expected a number, got str '5'",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "weight"),
        -5,
        "rubric[0].weight: expected a positive weight for an Essential",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 1, "weight"),
        2,
        "rubric[1].weight: expected a negative weight for a Pitfall",
    ),
    ("rar", GOOD_RAR, ("rubric", 0, "title"), 7, "rubric[0].title: expected a string, got int 7"),
    ("rar", GOOD_RAR, ("rubric",), {"a": 1}, "rubric: expected a list, got dict"),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 1),
        "Pitfall Criteria: x",
        "rubric[1]: expected an object, got str",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 1, "polarity"),
        "neg",
        "rubric[1].polarity: unknown polarity 'neg'",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric", 0, "polarity"),
        "negative",
        "rubric[0].polarity: expected positive polarity for an Essential",
    ),
    (
        "rar",
        GOOD_RAR,
        ("rubric_count",),
        3,
        "rubric_count: expected 2 (the number of rubric items), got 3",
    ),
    ("rar", GOOD_RAR, ("rubric_count",), "2", "rubric_count: expected an integer, got str '2'"),
    ("healthbench", GOOD_HEALTHBENCH, ("rubrics",), [], "rubrics: expected at least one criterion"),
    (
        "rar",
        GOOD_HARNESS,
        ("rubric", 0, "category"),
        "Crucial",
        "rubric[0].category: expected one of Essential, Important, Optional, Pitfall, "
        "got 'Crucial'",
    ),
    (
        "rar",
        GOOD_HARNESS,
        ("rubric", 0, "description"),
        "Essential Criteria: Names D.",
        "rubric[0].description: expected the text without its category prefix",
    ),
    (
        "rar",
        GOOD_HARNESS,
        ("n_criteria",),
        2,
        "n_criteria: expected 1 (the number of rubric items), got 2",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "points"),
        ...,
        "rubrics[0].points: missing required field",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "points"),
        0,
        "rubrics[0].points: expected a finite nonzero number",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "points"),
        None,
        "rubrics[0].points: expected a number, got NoneType",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "criterion"),
        3,
        "rubrics[0].criterion: expected a string, got int 3",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "tags"),
        "axis:accuracy",
        "rubrics[0].tags: expected a list, got str",
    ),
    (
        "healthbench",
        GOOD_HEALTHBENCH,
        ("rubrics", 0, "tags"),
        [1],
        "rubrics[0].tags[0]: expected a string, got int 1",
    ),
    ("kqa", GOOD_KQA, ("Must_have",), ..., "Must_have: missing required field"),
    ("kqa", GOOD_KQA, ("Nice_to_have",), "Fluids.", "Nice_to_have: expected a list, got str"),
    ("kqa", GOOD_KQA, ("Nice_to_have", 0), 4, "Nice_to_have[0]: expected a string, got int 4"),
]


@pytest.mark.parametrize(("format_name", "good", "path", "value", "message"), MALFORMED)
def test_malformed_record_names_file_line_and_field(
    tmp_path, format_name, good, path, value, message
):
    bad = _with(good, path, value)
    file = tmp_path / f"bad_{format_name}.jsonl"
    # Line 1 good, line 2 blank (still counted), line 3 bad.
    file.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(RubricError) as caught:
        read_rubrics(
            file, format_name, **({"pitfall_polarity": "negative"} if format_name == "rar" else {})
        )
    assert str(caught.value).startswith(f"{file}:3: ")
    assert message in str(caught.value)
    assert f"bad_{format_name}.jsonl:3: {message}" in str(caught.value)


def test_good_records_read_as_expected(tmp_path):
    rar = rubric_from_rar_record(GOOD_RAR, pitfall_polarity="negative")
    assert [(c.category, c.description, c.weight, c.polarity) for c in rar.criteria] == [
        (Category.ESSENTIAL, "Names D.", 5.0, Polarity.POSITIVE),
        (Category.PITFALL, "Does not pick A.", -1.0, Polarity.NEGATIVE),
    ]
    flipped = rubric_from_rar_record(GOOD_RAR, pitfall_polarity=Polarity.POSITIVE)
    assert flipped.criteria[1].polarity is Polarity.POSITIVE
    with pytest.raises(
        ValueError, match="unknown polarity 'sideways'; expected one of 'positive', 'negative'"
    ):
        rubric_from_rar_record(GOOD_RAR, pitfall_polarity="sideways")


def test_invalid_json_and_non_object_lines(tmp_path):
    file = tmp_path / "broken.jsonl"
    file.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(JsonlError, match=r"broken\.jsonl:2: invalid JSON"):
        list(iter_jsonl(file))
    file.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=r"broken\.jsonl:2: expected a JSON object, got list"):
        list(iter_jsonl(file))


def test_unknown_format_lists_the_formats(tmp_path):
    with pytest.raises(
        ValueError, match="unknown rubric format 'csv'; expected one of rar, healthbench, kqa"
    ):
        read_rubrics(tmp_path / "x.jsonl", "csv")


def test_parse_polarity():
    assert parse_polarity("negative") is Polarity.NEGATIVE
    assert parse_polarity(Polarity.POSITIVE) is Polarity.POSITIVE
    with pytest.raises(ValueError, match="unknown polarity 'Negative'"):
        parse_polarity("Negative")
