"""Rubric ablations (the paper's Table 2) on real RaR rubrics, and their config binding."""

import pytest

from rar_jax import config as rar_config
from rar_jax.rubrics.ablations import (
    RUBRIC_ABLATIONS,
    apply_rubric_ablation,
    essential_only,
    without_pitfalls,
)
from rar_jax.rubrics.readers import read_rubrics, read_rubrics_for_config
from rar_jax.rubrics.schema import Category, Criterion, Polarity, Rubric, RubricError


@pytest.fixture(scope="module")
def medicine_path(shared_data):
    return shared_data / "rar_samples" / "rar_medicine_sample3.jsonl"


@pytest.fixture(scope="module")
def medicine_rubrics(medicine_path):
    return read_rubrics(medicine_path, "rar", pitfall_polarity="negative")


def test_rubric_ablations_on_real_rubrics(medicine_rubrics):
    rubric = medicine_rubrics[2]  # 2 Essential, 4 Important, 2 Optional, 2 Pitfall.
    kept = essential_only(rubric)
    assert [c.title for c in kept.criteria] == [
        c.title for c in rubric.criteria if c.category is Category.ESSENTIAL
    ]
    assert len(kept) == 2 and kept.source == rubric.source
    no_pitfalls = without_pitfalls(rubric)
    assert len(no_pitfalls) == 8
    assert no_pitfalls.criteria == rubric.criteria[:8]
    assert apply_rubric_ablation(rubric, "all") is rubric
    assert apply_rubric_ablation(rubric, "essential_only") == kept
    assert apply_rubric_ablation(rubric, "no_pitfalls") == no_pitfalls
    assert set(RUBRIC_ABLATIONS) == {"all", "essential_only", "no_pitfalls"}
    with pytest.raises(
        ValueError,
        match="unknown rubric ablation 'x'; expected one of all, essential_only, no_pitfalls",
    ):
        apply_rubric_ablation(rubric, "x")


def test_ablations_need_categories_and_leave_criteria():
    uncategorised = Rubric((Criterion("", "Good.", None, 3, Polarity.POSITIVE),), "hb.jsonl:1")
    with pytest.raises(
        RubricError, match="hb.jsonl:1: ablation 'essential_only' needs category labels"
    ):
        essential_only(uncategorised)
    only_pitfall = Rubric(
        (Criterion("t", "Avoids X.", Category.PITFALL, -1, Polarity.POSITIVE),), "r:1"
    )
    with pytest.raises(RubricError, match="r:1: ablation 'no_pitfalls' leaves no criteria"):
        without_pitfalls(only_pitfall)


@pytest.mark.parametrize(("ablation", "sizes"), [
    ("all", [9, 10, 10]), ("essential_only", [3, 3, 2]), ("no_pitfalls", [8, 9, 8]),
])
def test_config_ablation_is_applied_when_reading(medicine_path, ablation, sizes):
    rubric_config = rar_config.base_config().rubric
    rubric_config.ablation = ablation
    rubrics = read_rubrics_for_config(medicine_path, "rar", rubric_config)
    assert [len(rubric) for rubric in rubrics] == sizes


def test_config_pitfall_polarity_is_applied_when_reading(medicine_path):
    rubric_config = rar_config.base_config().rubric
    polarities = {}
    for default in ("negative", "positive"):
        rubric_config.pitfall_polarity = default
        rubric = read_rubrics_for_config(medicine_path, "rar", rubric_config)[0]
        polarities[default] = rubric.criteria[-1].polarity  # Its one pitfall, no own polarity.
    assert polarities == {"negative": Polarity.NEGATIVE, "positive": Polarity.POSITIVE}


def test_config_reading_of_uncategorised_rubrics(shared_data):
    rubric_config = rar_config.base_config().rubric
    path = shared_data / "healthbench" / "hard_sample50_seed42.jsonl"
    assert len(read_rubrics_for_config(path, "healthbench", rubric_config)) == 50
    rubric_config.ablation = "essential_only"
    with pytest.raises(RubricError, match="needs category labels"):
        read_rubrics_for_config(path, "healthbench", rubric_config)
