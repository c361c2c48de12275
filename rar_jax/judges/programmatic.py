"""Programmatic rewards: answers scored by a function, no judge (``reward.method = programmatic``).

A programmatic reward is a named function ``(reference, answer) -> (reward, reason)`` in
:data:`PROGRAMMATIC_REWARDS`, chosen by ``reward.programmatic_fn``:

- ``boxed_exact_match``: 1.0 when the last ``\\boxed{...}`` of the answer equals the reference
  (the reference's own last box when it has one), after dropping ``$``, collapsing whitespace and
  lower-casing; else 0.0. This is RLVR, the paper's special case of a rubric with one criterion
  ("matches the answer", weight 1). An answer without a box scores 0.0 (a wrong format is a
  wrong answer, as in RLVR); an example without a reference cannot be scored (NaN + reason).
- ``distinct_words``: the share of distinct words among the answer's words (0.0 for an empty
  answer). A reward that costs nothing, for benchmarks of the training loop.
- ``length``: ``min(characters / 512, 1)``. Also for benchmarks.

The result has the shape of every reward method's output (:class:`~rar_jax.judges.rewards.
RewardOutput`): NaN with a reason where a reward cannot be computed, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Callable

from rar_jax.judges.parsing import boxed_contents

# Characters at which the ``length`` reward reaches 1.
LENGTH_TARGET_CHARS = 512

ProgrammaticReward = Callable[[str | None, str], tuple[float, str | None]]


def _normalise(text: str) -> str:
    return " ".join(text.replace("$", "").split()).lower()


def boxed_exact_match(reference: str | None, answer: str) -> tuple[float, str | None]:
    """1.0 if the answer's last box equals the reference (see the module docstring), else 0.0."""
    if not reference or not reference.strip():
        return float("nan"), "boxed_exact_match needs a reference answer; the example has none"
    reference_boxes = boxed_contents(reference)
    expected = _normalise(reference_boxes[-1] if reference_boxes else reference)
    boxes = boxed_contents(answer)
    return (1.0 if boxes and _normalise(boxes[-1]) == expected else 0.0), None


def distinct_words(reference: str | None, answer: str) -> tuple[float, str | None]:
    """Distinct words / words of the answer (0.0 without words)."""
    del reference
    words = answer.split()
    return (len(set(words)) / len(words) if words else 0.0), None


def length(reference: str | None, answer: str) -> tuple[float, str | None]:
    """``min(len(answer) / LENGTH_TARGET_CHARS, 1)``."""
    del reference
    return min(len(answer) / LENGTH_TARGET_CHARS, 1.0), None


PROGRAMMATIC_REWARDS: dict[str, ProgrammaticReward] = {
    "boxed_exact_match": boxed_exact_match,
    "distinct_words": distinct_words,
    "length": length,
}
