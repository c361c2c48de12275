"""Rubric schema: criteria with a category, a raw weight and an explicit polarity.

A rubric is a checklist of ``k`` self-contained criteria for one prompt. Every criterion keeps

- ``weight``: the raw weight exactly as the data gives it, sign included. RaR data: Essential 5,
  Important 3-4, Optional 1-2, Pitfall -1 or -2 (the released sets also hold e.g. an Important 5
  and an Optional 3, so per-category ranges are *not* enforced, only signs). HealthBench: points in
  -10..10. K-QA: 5 (Must_have) or 1 (Nice_to_have), set by the reader.
- ``polarity``: whether *satisfying* the criterion is good (``positive``) or bad (``negative``).
  The judge is always asked the polarity-neutral question "is this statement true of the
  response?"; the sign of the reward contribution comes from the polarity, never from the wording
  or from the weight alone. This matters for RaR pitfalls: both data sets give them negative
  weights, but most RaR-Medicine pitfalls describe a failure ("Does not mention X": satisfied =
  bad, polarity negative) while most RaR-Science pitfalls describe what to do ("Avoids X":
  satisfied = good, polarity positive).
- ``category``: Essential / Important / Optional / Pitfall, or ``None`` for rubrics without
  categories (HealthBench).

All validation rules live in :func:`criterion_problems` (one place); :class:`Criterion` runs it on
construction and readers run it first so that they can name the offending field of the file.
Sign conventions checked there:

- Essential, Important, Optional: weight > 0 and polarity positive.
- Pitfall: weight < 0 (the RaR convention); polarity either way, it must be stated.
- No category (HealthBench): the polarity must agree with the sign of the weight (negative points
  mark an undesirable behaviour).

:func:`rubric_arrays` turns a batch of rubrics into padded numpy arrays for the aggregation math
(``rar_jax.judges.aggregation``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "CATEGORY_IDS",
    "CATEGORY_PREFIX_PATTERN",
    "Category",
    "Criterion",
    "NO_CATEGORY_ID",
    "Polarity",
    "Rubric",
    "RubricArrays",
    "RubricError",
    "criterion_problems",
    "rubric_arrays",
    "split_category_prefix",
]


class RubricError(ValueError):
    """A rubric or criterion that breaks the schema; the message names where and what."""


class Category(enum.StrEnum):
    """Category of a RaR criterion (the prefix of its description in the released data)."""

    ESSENTIAL = "essential"
    IMPORTANT = "important"
    OPTIONAL = "optional"
    PITFALL = "pitfall"

    @property
    def prefix(self) -> str:
        """The description prefix used by the RaR data, e.g. ``"Essential Criteria: "``."""
        return f"{self.value.capitalize()} Criteria: "


class Polarity(enum.StrEnum):
    """Whether satisfying a criterion is good (positive) or bad (negative)."""

    POSITIVE = "positive"
    NEGATIVE = "negative"

    @property
    def sign(self) -> int:
        """+1 for positive, -1 for negative."""
        return 1 if self is Polarity.POSITIVE else -1


# Integer ids of the categories in the arrays (index into a category-weight table of length 4).
CATEGORY_IDS: dict[Category, int] = {category: index for index, category in enumerate(Category)}
# Id of an uncategorised criterion and of padding. Never index a table with it directly.
NO_CATEGORY_ID = -1

# "<Category> Criteria:" at the start of a description, category word case-insensitive.
CATEGORY_PREFIX_PATTERN = re.compile(
    r"^\s*(essential|important|optional|pitfall)\s+criteria\s*:\s*", re.IGNORECASE
)


def split_category_prefix(text: str) -> tuple[Category | None, str]:
    """Splits ``"Essential Criteria: Mentions X."`` into ``(Category.ESSENTIAL, "Mentions X.")``.

    Returns ``(None, text)`` when the text has no recognised prefix.
    """
    match = CATEGORY_PREFIX_PATTERN.match(text)
    if match is None:
        return None, text
    return Category(match.group(1).lower()), text[match.end() :]


def _is_real_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def criterion_problems(
    title: object,
    description: object,
    category: object,
    weight: object,
    polarity: object,
    tags: object = (),
) -> list[tuple[str, str]]:
    """Every way the given criterion fields break the schema, as ``(field, what was expected)``.

    The single place where criterion rules live. An empty list means the fields are valid.
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(title, str):
        problems.append(("title", f"expected a string, got {type(title).__name__}"))
    if not isinstance(description, str):
        problems.append(("description", f"expected a string, got {type(description).__name__}"))
    elif not description.strip():
        problems.append(("description", "expected a non-empty criterion text"))
    elif CATEGORY_PREFIX_PATTERN.match(description):
        problems.append(
            ("description", "expected the text without its category prefix (it is in 'category')")
        )
    if category is not None and not isinstance(category, Category):
        problems.append(("category", f"expected a Category or None, got {category!r}"))
        category = None
    if not isinstance(polarity, Polarity):
        problems.append(("polarity", f"expected 'positive' or 'negative', got {polarity!r}"))
        polarity = None
    if not _is_real_number(weight):
        problems.append(("weight", f"expected a number, got {type(weight).__name__} {weight!r}"))
    elif not math.isfinite(float(weight)) or float(weight) == 0.0:
        problems.append(("weight", f"expected a finite nonzero number, got {weight!r}"))
    else:
        value = float(weight)
        if category is Category.PITFALL and value > 0:
            problems.append(
                ("weight", f"expected a negative weight for a Pitfall criterion, got {weight!r}")
            )
        elif category is not None and category is not Category.PITFALL and value < 0:
            problems.append(
                (
                    "weight",
                    f"expected a positive weight for an {category.value.capitalize()} "
                    f"criterion, got {weight!r}",
                )
            )
        elif (
            category is None
            and polarity is not None
            and (value < 0) != (polarity is Polarity.NEGATIVE)
        ):
            problems.append(
                (
                    "polarity",
                    f"expected polarity {'negative' if value < 0 else 'positive'} for an "
                    f"uncategorised criterion of weight {weight!r}, got {polarity.value}",
                )
            )
    if category is not None and category is not Category.PITFALL and polarity is Polarity.NEGATIVE:
        problems.append(
            (
                "polarity",
                f"expected positive polarity for an {category.value.capitalize()} criterion",
            )
        )
    if not isinstance(tags, tuple) or not all(isinstance(tag, str) for tag in tags):
        problems.append(("tags", f"expected a tuple of strings, got {tags!r}"))
    return problems


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One rubric item.

    Attributes:
        title: short name (RaR: 2-4 words; empty for HealthBench and K-QA, which have none).
        description: the statement the judge checks, without the "<Category> Criteria: " prefix.
        category: the RaR category, or None for uncategorised rubrics (HealthBench).
        weight: the raw weight as given in the data, sign kept (see the module docstring).
        polarity: whether satisfying the criterion is good (positive) or bad (negative).
        tags: free-form tags kept from the data (HealthBench ``axis:...``, ``level:...``).
    """

    title: str
    description: str
    category: Category | None
    weight: float
    polarity: Polarity
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = criterion_problems(
            self.title, self.description, self.category, self.weight, self.polarity, self.tags
        )
        if problems:
            details = "; ".join(f"{field}: {message}" for field, message in problems)
            raise RubricError(f"invalid criterion {self.title or self.description!r}: {details}")
        object.__setattr__(self, "weight", float(self.weight))


@dataclasses.dataclass(frozen=True)
class Rubric:
    """The checklist of one prompt.

    Attributes:
        criteria: the k >= 1 criteria, in data order (verdicts are aligned with it).
        source: where the rubric came from, e.g. ``"rar_medicine.jsonl:3"``; used in messages.
    """

    criteria: tuple[Criterion, ...]
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.criteria, tuple) or not all(
            isinstance(criterion, Criterion) for criterion in self.criteria
        ):
            raise RubricError(f"{self.source}: criteria: expected a tuple of Criterion")
        if not self.criteria:
            raise RubricError(f"{self.source}: criteria: expected at least one criterion")

    def __len__(self) -> int:
        return len(self.criteria)

    @property
    def has_categories(self) -> bool:
        """True when every criterion has a category (RaR, K-QA), False otherwise."""
        return all(criterion.category is not None for criterion in self.criteria)


class RubricArrays(NamedTuple):
    """A batch of n rubrics padded to k criteria (numpy).

    Attributes:
        weights: f32[n, k], raw signed weights; 0 in padding.
        polarity_signs: f32[n, k], +1 positive / -1 negative; 0 in padding.
        category_ids: int32[n, k], ``CATEGORY_IDS`` of each criterion; ``NO_CATEGORY_ID`` (-1)
            for uncategorised criteria and padding.
        mask: bool[n, k], True for real criteria.
    """

    weights: np.ndarray
    polarity_signs: np.ndarray
    category_ids: np.ndarray
    mask: np.ndarray


def rubric_arrays(rubrics: Sequence[Rubric], *, pad_to: int | None = None) -> RubricArrays:
    """Stacks rubrics into padded arrays, criteria in rubric order.

    Args:
        rubrics: n >= 1 rubrics.
        pad_to: number of criterion slots k; default the largest rubric. A fixed value keeps
            array shapes (and so compiled functions) the same across batches. Must be at least
            the largest rubric.

    Returns:
        RubricArrays with arrays of shape [n, k].
    """
    if not rubrics:
        raise ValueError("rubric_arrays: expected at least one rubric")
    largest = max(len(rubric) for rubric in rubrics)
    width = largest if pad_to is None else pad_to
    if width < largest:
        raise ValueError(
            f"rubric_arrays: pad_to={pad_to} is smaller than the largest rubric "
            f"({largest} criteria)"
        )
    n = len(rubrics)
    weights = np.zeros((n, width), np.float32)
    polarity_signs = np.zeros((n, width), np.float32)
    category_ids = np.full((n, width), NO_CATEGORY_ID, np.int32)
    mask = np.zeros((n, width), bool)
    for row, rubric in enumerate(rubrics):
        for column, criterion in enumerate(rubric.criteria):
            weights[row, column] = criterion.weight
            polarity_signs[row, column] = criterion.polarity.sign
            if criterion.category is not None:
                category_ids[row, column] = CATEGORY_IDS[criterion.category]
            mask[row, column] = True
    return RubricArrays(weights, polarity_signs, category_ids, mask)
