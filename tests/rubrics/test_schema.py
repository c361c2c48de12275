"""Tests of the rubric schema: validation rules, category prefixes and padded arrays."""

import math

import numpy as np
import pytest

from rar_jax.rubrics.schema import (
    CATEGORY_IDS,
    NO_CATEGORY_ID,
    Category,
    Criterion,
    Polarity,
    Rubric,
    RubricError,
    criterion_problems,
    rubric_arrays,
    split_category_prefix,
)

ESS, IMP, OPT, PIT = Category.ESSENTIAL, Category.IMPORTANT, Category.OPTIONAL, Category.PITFALL
POS, NEG = Polarity.POSITIVE, Polarity.NEGATIVE


def test_category_prefix_split_and_round_trip():
    assert split_category_prefix("Essential Criteria: Mentions X.") == (ESS, "Mentions X.")
    assert split_category_prefix("Pitfall Criteria:  Does not Y.") == (PIT, "Does not Y.")
    assert split_category_prefix("important criteria: lower case") == (IMP, "lower case")
    assert split_category_prefix("Mentions X.") == (None, "Mentions X.")
    assert split_category_prefix("Essential: no 'Criteria' word") == (
        None,
        "Essential: no 'Criteria' word",
    )
    for category in Category:
        assert split_category_prefix(category.prefix + "text") == (category, "text")
    assert Category.OPTIONAL.prefix == "Optional Criteria: "
    assert POS.sign == 1 and NEG.sign == -1


def test_valid_criteria_keep_their_fields():
    pitfall = Criterion("Avoids X", "Avoids X.", PIT, -2, POS)
    assert pitfall.weight == -2.0 and isinstance(pitfall.weight, float)
    assert Criterion("t", "Does not mention X.", PIT, -1, NEG).polarity is NEG
    hb = Criterion("", "Recommends stopping.", None, -7, NEG, ("axis:accuracy",))
    assert hb.tags == ("axis:accuracy",) and hb.category is None


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        (dict(description=""), "description", "non-empty"),
        (dict(description="   "), "description", "non-empty"),
        (
            dict(description="Essential Criteria: kept prefix"),
            "description",
            "without its category prefix",
        ),
        (dict(description=5), "description", "expected a string"),
        (dict(title=None), "title", "expected a string"),
        (dict(weight=0), "weight", "finite nonzero"),
        (dict(weight=math.nan), "weight", "finite nonzero"),
        (dict(weight=math.inf), "weight", "finite nonzero"),
        (dict(weight=True), "weight", "expected a number"),
        (dict(weight="5"), "weight", "expected a number"),
        (dict(weight=-5), "weight", "positive weight for an Essential"),
        (dict(category=PIT, weight=2), "weight", "negative weight for a Pitfall"),
        (dict(polarity=NEG), "polarity", "positive polarity for an Essential"),
        (dict(polarity="positive"), "polarity", "expected 'positive' or 'negative'"),
        (dict(category="essential"), "category", "expected a Category"),
        (dict(category=None, weight=-3, polarity=POS), "polarity", "expected polarity negative"),
        (dict(category=None, weight=3, polarity=NEG), "polarity", "expected polarity positive"),
        (dict(tags=["a"]), "tags", "tuple of strings"),
    ],
)
def test_each_rule_names_its_field(kwargs, field, fragment):
    fields = dict(
        title="t", description="Mentions X.", category=ESS, weight=5, polarity=POS, tags=()
    )
    fields.update(kwargs)
    problems = criterion_problems(**fields)
    assert [f for f, _ in problems] == [field], problems
    assert fragment in problems[0][1]
    with pytest.raises(RubricError, match=f"{field}: .*{fragment}"):
        Criterion(**fields)


def test_rubric_needs_criteria():
    with pytest.raises(RubricError, match="x.jsonl:2: criteria: expected at least one"):
        Rubric((), "x.jsonl:2")
    with pytest.raises(RubricError, match="tuple of Criterion"):
        Rubric([Criterion("t", "d", ESS, 5, POS)], "src")


def test_rubric_arrays_pad_to_the_largest_rubric():
    first = Rubric(
        (
            Criterion("a", "A.", ESS, 5, POS),
            Criterion("b", "B.", OPT, 2, POS),
            Criterion("c", "C.", PIT, -2, NEG),
        ),
        "first",
    )
    second = Rubric((Criterion("", "D.", None, -4, NEG, ("axis:x",)),), "second")
    arrays = rubric_arrays([first, second])
    np.testing.assert_array_equal(arrays.weights, [[5, 2, -2], [-4, 0, 0]])
    np.testing.assert_array_equal(arrays.polarity_signs, [[1, 1, -1], [-1, 0, 0]])
    np.testing.assert_array_equal(arrays.category_ids, [[0, 2, 3], [-1, -1, -1]])
    np.testing.assert_array_equal(arrays.mask, [[True, True, True], [True, False, False]])
    assert arrays.weights.dtype == np.float32 and arrays.category_ids.dtype == np.int32
    assert arrays.mask.dtype == bool
    assert CATEGORY_IDS == {ESS: 0, IMP: 1, OPT: 2, PIT: 3} and NO_CATEGORY_ID == -1


def test_rubric_arrays_pad_to_fixed_width():
    rubric = Rubric((Criterion("a", "A.", IMP, 3, POS),), "r")
    arrays = rubric_arrays([rubric], pad_to=4)
    assert arrays.weights.shape == (1, 4)
    np.testing.assert_array_equal(arrays.weights, [[3, 0, 0, 0]])
    np.testing.assert_array_equal(arrays.category_ids, [[1, -1, -1, -1]])
    np.testing.assert_array_equal(arrays.mask, [[True, False, False, False]])
    with pytest.raises(ValueError, match="pad_to=0 is smaller than the largest rubric"):
        rubric_arrays([rubric], pad_to=0)
    with pytest.raises(ValueError, match="at least one rubric"):
        rubric_arrays([])
