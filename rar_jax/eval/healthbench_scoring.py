"""HealthBench scoring as in OpenAI simple-evals (``healthbench_eval.py``) from criterion verdicts.

Per example (:func:`example_metrics`):

- ``overall_score`` = points of met criteria / positive points (unclipped, may be negative), the
  formula of :func:`rar_jax.judges.aggregation.healthbench_points_score_np`;
- every example-level tag (``example_tags``: ``theme:...``, ``physician_agreed_category:...``)
  gets the example's overall score;
- every rubric-level tag (``axis:...``, ``level:...``, ``cluster:...``) gets the same formula over
  only the criteria carrying that tag, and is skipped for this example when those criteria have
  no positive points.

Over examples (:func:`aggregate_metrics`): for each name (``overall_score``, every tag, and
``score``, a second copy of the overall score that simple-evals also reports) the metric is
``clip(mean, 0, 1)``, ``<name>:n_samples`` the number of examples that have it and
``<name>:bootstrap_std`` the standard deviation of ``bootstrap_samples`` (default 1,000, config
``healthbench.bootstrap_samples``) clipped means of resamples with replacement, drawn from a
numpy Generator seeded by ``seed``. Keys come in simple-evals' order (first appearance, with
``score`` after the first example's names), as in m42's ``final_metrics.json``.

A missing verdict (None / NaN) raises: an ungraded criterion is never counted as unmet.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.judges.aggregation import healthbench_points_score_np
from rar_jax.io import iter_jsonl
from rar_jax.rubrics.readers import rubric_from_healthbench_record
from rar_jax.rubrics.schema import Rubric, RubricError

__all__ = [
    "GradedExample",
    "aggregate_metrics",
    "example_metrics",
    "healthbench_metrics",
    "read_graded_examples",
]


@dataclasses.dataclass(frozen=True)
class GradedExample:
    """One HealthBench example with the grader's verdict for each rubric criterion.

    Attributes:
        rubric: the example's rubric (weights = points, tags kept), see the "healthbench" reader.
        criteria_met: f64[k], 1.0 met / 0.0 not met (or a probability) per criterion, in rubric
            order; NaN = no verdict.
        example_tags: the example-level tags.
    """

    rubric: Rubric
    criteria_met: np.ndarray
    example_tags: tuple[str, ...] = ()


def example_metrics(example: GradedExample) -> dict[str, float]:
    """Per-example metrics: ``overall_score``, example tags, then rubric tags (first-seen order).

    Raises ValueError (naming the rubric's source) for a missing verdict, a verdict count that
    differs from the rubric, no positive points, or a duplicated tag.
    """
    source = example.rubric.source
    met = np.asarray(example.criteria_met, np.float64)
    points = np.array([criterion.weight for criterion in example.rubric.criteria], np.float64)
    if met.shape != points.shape:
        raise ValueError(
            f"{source}: expected {points.size} verdicts (one per criterion), got shape {met.shape}"
        )
    missing = np.flatnonzero(np.isnan(met))
    if missing.size:
        raise ValueError(
            f"{source}: criteria {missing.tolist()} have no verdict; "
            "refusing to score them as unmet"
        )
    everything = np.ones_like(points, bool)
    overall = float(healthbench_points_score_np(points[None], met[None], everything[None])[0])
    if np.isnan(overall):
        raise ValueError(f"{source}: the rubric has no positive points; its score is undefined")
    metrics = {"overall_score": overall}
    if len(set(example.example_tags)) != len(example.example_tags):
        raise ValueError(f"{source}: example_tags has duplicates: {list(example.example_tags)}")
    for tag in example.example_tags:
        metrics[tag] = overall
    rubric_tags: dict[str, None] = {}
    for index, criterion in enumerate(example.rubric.criteria):
        if len(set(criterion.tags)) != len(criterion.tags):
            raise ValueError(
                f"{source}: rubrics[{index}].tags has duplicates: {list(criterion.tags)}"
            )
        rubric_tags.update(dict.fromkeys(criterion.tags))
    for tag in rubric_tags:
        tagged = np.array([tag in criterion.tags for criterion in example.rubric.criteria])
        score = float(healthbench_points_score_np(points[None], met[None], tagged[None])[0])
        if not np.isnan(score):
            metrics[tag] = score
    return metrics


def _clipped_mean(values: np.ndarray) -> np.ndarray:
    return np.clip(np.mean(values, axis=-1), 0.0, 1.0)


def aggregate_metrics(
    per_example: Sequence[Mapping[str, float]],
    *,
    seed: int,
    bootstrap_samples: int = 1000,
) -> dict[str, float | int]:
    """simple-evals' aggregate of per-example metrics (see the module docstring).

    Args:
        per_example: :func:`example_metrics` of each example, in data order.
        seed: seed of the numpy Generator that draws the bootstrap resamples.
        bootstrap_samples: number of resamples for each ``:bootstrap_std``.

    Returns:
        ``{name: clipped mean, name + ":n_samples": count, name + ":bootstrap_std": std}``.
    """
    if not per_example:
        raise ValueError("aggregate_metrics: expected at least one example")
    if bootstrap_samples < 1:
        raise ValueError(f"bootstrap_samples must be >= 1, got {bootstrap_samples}")
    values_by_name: dict[str, list[float]] = {}
    for metrics in per_example:
        for name, value in metrics.items():
            values_by_name.setdefault(name, []).append(value)
        values_by_name.setdefault("score", []).append(metrics["overall_score"])
    rng = np.random.default_rng(seed)
    final: dict[str, float | int] = {}
    for name, values in values_by_name.items():
        array = np.asarray(values, np.float64)
        resamples = rng.choice(array, size=(bootstrap_samples, array.size), replace=True)
        final[name] = float(_clipped_mean(array))
        final[f"{name}:n_samples"] = int(array.size)
        final[f"{name}:bootstrap_std"] = float(np.std(_clipped_mean(resamples)))
    return final


def healthbench_metrics(
    examples: Sequence[GradedExample], *, seed: int, bootstrap_samples: int = 1000
) -> dict[str, float | int]:
    """Final HealthBench metrics of graded examples (:func:`example_metrics` then aggregate)."""
    return aggregate_metrics(
        [example_metrics(example) for example in examples],
        seed=seed,
        bootstrap_samples=bootstrap_samples,
    )


def _criteria_met(record: Mapping[str, Any], rubric: Rubric, source: str) -> np.ndarray:
    responses = record.get("responses")
    if responses is None:
        raise RubricError(f"{source}: responses: missing required field")
    if isinstance(responses, str):
        try:
            responses = ast.literal_eval(responses)
        except (ValueError, SyntaxError) as error:
            raise RubricError(
                f"{source}: responses: expected a list (or its Python literal): {error}"
            ) from None
    if not isinstance(responses, list) or len(responses) != len(rubric):
        raise RubricError(
            f"{source}: responses: expected a list of {len(rubric)} grades, one per rubric item"
        )
    met = np.empty(len(rubric), np.float64)
    for index, (grade, criterion) in enumerate(zip(responses, rubric.criteria, strict=True)):
        field = f"responses[{index}]"
        verdict = (
            grade.get("response_dict", {}).get("criteria_met") if isinstance(grade, dict) else None
        )
        if not isinstance(verdict, bool):
            raise RubricError(
                f"{source}: {field}.response_dict.criteria_met: "
                f"expected true or false, got {verdict!r}"
            )
        if "points" in grade and grade["points"] != criterion.weight:
            raise RubricError(
                f"{source}: {field}.points: expected {criterion.weight:g} "
                f"(rubrics[{index}].points), got {grade['points']!r}"
            )
        met[index] = float(verdict)
    return met


def read_graded_examples(path: str | os.PathLike[str]) -> list[GradedExample]:
    """Reads graded HealthBench answers (m42 / simple-evals layout) from a JSONL file.

    Each record holds the native HealthBench fields plus ``responses``: a list (or its Python
    literal string) aligned with ``rubrics`` of ``{"response_dict": {"criteria_met": bool, ...},
    "points": int, ...}``. Config ``healthbench.graded_path`` names such a file.
    """
    name = os.fspath(path)
    examples = []
    for line_number, record in iter_jsonl(name):
        source = f"{name}:{line_number}"
        rubric = rubric_from_healthbench_record(record, source=source)
        tags = record.get("example_tags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise RubricError(f"{source}: example_tags: expected a list of strings, got {tags!r}")
        examples.append(GradedExample(rubric, _criteria_met(record, rubric, source), tuple(tags)))
    return examples


def metrics_markdown(metrics: Mapping[str, float | int]) -> str:
    """A markdown table of final metrics: overall first, then axes, themes and other tags.

    Each row shows the clipped mean, its bootstrap std and the number of examples behind it.
    """
    names = [name for name in metrics if ":" not in name or name.count(":") == 1]
    names = [name for name in names if f"{name}:n_samples" in metrics and name != "score"]
    order = {"overall_score": 0, "axis": 1, "theme": 2}
    names.sort(key=lambda name: (order.get(name.split(":")[0], 3), name))
    rows = ["| metric | score | bootstrap std | n |", "|---|---:|---:|---:|"]
    for name in names:
        rows.append(
            f"| {name} | {metrics[name]:.4f} | {metrics[name + ':bootstrap_std']:.4f} "
            f"| {metrics[name + ':n_samples']} |"
        )
    return "\n".join(rows)
