"""Judge alignment (the paper's Figure 3): does a judge rate the ideal answer above a worse one?

Each HealthBench prompt that has a physician-written ideal completion becomes a *pair*: the ideal
answer and a perturbed, strictly worse answer written once by a generator model with
:func:`rar_jax.judges.prompts.perturbation_prompt`. A judge scores each answer on its own (a
1-10 rating, or the expected rating under verdict-probability scoring) under a *condition*
(:data:`CONDITIONS`), and the pair counts as correct when the ideal answer gets the higher score.

Pure parts, all tested against hand-computed values:

- :func:`alignment_examples`: pair construction from Examples: keeps those with a non-blank
  reference (the ideal completion), drops repeated ids, and counts every example left out by
  reason (never silently).
- :func:`pair_outcomes` / :func:`pairwise_accuracy`: per pair 1 (ideal scored higher), 0 (lower)
  or a tie, which counts **wrong** (``ties="wrong"``, the default and the paper's definition: the
  judge is right when it scores the preferred answer strictly higher) or **one half**
  (``ties="half"``: a judge that cannot tell the answers apart is credited with a coin flip). The
  share of tied pairs is reported per condition (``tie_rate``), so a judge that rates everything
  alike shows as such under either rule. A pair where either score is NaN
  (a failed judgment) is *failed*: counted, and left out of the accuracy, never scored 0.
- :func:`wilson_interval`: the 95% (``confidence``) interval of the accuracy is the **Wilson
  score interval** for a binomial proportion, with p = successes / n and z the normal quantile
  ``Phi^-1(1 - (1 - confidence) / 2)``::

      centre = (p + z^2 / (2n)) / (1 + z^2 / n)
      half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

  With ties counted as half, ``successes`` may be fractional; the interval then treats the
  accuracy as a proportion of n Bernoulli pairs, which slightly overstates the variance of a tie
  (a sure 0.5) and so errs on the wide side. Wilson rather than the normal (Wald) interval because
  it stays inside [0, 1] and keeps a sensible width at the small n and accuracies near 1 of
  small runs.
- Perturbation store records (:func:`perturbation_record`, :func:`read_perturbations`): one
  JSONL line per prompt with the perturbed answer, the generator and a digest of the ideal answer
  it was made from, so a stored file is reused only for the ideal answers it belongs to.
- :func:`clean_perturbation`: an empty reply, or one equal to the ideal answer up to whitespace,
  is a failed perturbation with a reason.
- :func:`parse_model_spec`: a judge or generator named on the command line: ``http:<model>@<base
  url>`` (an OpenAI-compatible server), else a source of the in-process JAX backend
  (``smollm2``, a ``.gguf`` file or an HF checkpoint directory).
- :func:`report_markdown`: the judge x condition table.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.io import iter_jsonl
from rar_jax.rubrics.schema import RubricError

__all__ = [
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "TIE_RULES",
    "Condition",
    "ModelSpec",
    "alignment_examples",
    "clean_perturbation",
    "pair_outcomes",
    "pairwise_accuracy",
    "parse_model_spec",
    "perturbation_record",
    "read_perturbations",
    "report_markdown",
    "text_digest",
    "wilson_interval",
]

TIE_RULES = ("wrong", "half")


@dataclasses.dataclass(frozen=True)
class Condition:
    """A judging condition of Figure 3.

    Attributes:
        method: the reward method that rates one answer (``rar_implicit`` or ``direct_likert``).
        rubric: where the rubric comes from: ``"generated_reference"`` (generated with the
            ideal completion as reference: "expert guidance"), ``"generated"`` (generated without
            it), ``"physician"`` (the HealthBench rubric) or None (no rubric).
        label: the legend / table text.
    """

    method: str
    rubric: str | None
    label: str


CONDITIONS: dict[str, Condition] = {
    "reference_rubric": Condition(
        "rar_implicit", "generated_reference", "implicit judge, rubric generated with reference"
    ),
    "generated_rubric": Condition(
        "rar_implicit", "generated", "implicit judge, rubric generated without reference"
    ),
    "likert": Condition("direct_likert", None, "Likert, no rubric"),
    "rubric": Condition("rar_implicit", "physician", "implicit judge, physician rubric"),
}
# Figure 3's three lines (the physician rubric is an extra condition of ours).
DEFAULT_CONDITIONS = ("reference_rubric", "generated_rubric", "likert")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A judge or generator named on the command line.

    Attributes:
        kind: ``"jax"`` (in-process) or ``"http"`` (OpenAI-compatible server).
        name: the display name (the source's last path part, or the HTTP model name).
        source: the JAX model source (``smollm2``, a .gguf file, an HF dir); "" for http.
        model: the HTTP model name; "" for jax.
        base_url: the HTTP API root; "" for jax.
    """

    kind: str
    name: str
    source: str = ""
    model: str = ""
    base_url: str = ""


def parse_model_spec(spec: str) -> ModelSpec:
    """``"http:<model>@<base_url>"`` -> an http spec; anything else -> a jax model source.

    Examples: ``smollm2``, ``/ckpt/qwen2.5-7b``, ``http:gpt-4o-mini@https://api.openai.com/v1``.
    The model name may itself contain ``@``: the URL starts after the last ``@``.
    """
    text = spec.strip()
    if not text:
        raise ValueError("model spec: expected a model source or http:<model>@<base_url>, got ''")
    if text.startswith("http:") and not text.startswith("http://"):
        model, separator, base_url = text[len("http:"):].rpartition("@")
        if not separator or not model or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"model spec {spec!r}: expected http:<model>@<http(s) base url>, e.g. "
                "http:gpt-4o-mini@https://api.openai.com/v1"
            )
        return ModelSpec("http", model, model=model, base_url=base_url)
    name = os.path.basename(os.path.normpath(text)) or text
    return ModelSpec("jax", name, source=text)


def alignment_examples(examples: Sequence[Any]) -> tuple[list[Any], dict[str, int]]:
    """The examples usable as pairs: a non-blank ``reference`` (the ideal completion), first of
    each ``example_id``.

    Args:
        examples: Example-like objects (``reference``, ``example_id``), in data order.

    Returns:
        (kept examples in input order, {reason: count} of those left out).
    """
    kept, seen = [], set()
    excluded: collections.Counter[str] = collections.Counter()
    for example in examples:
        reference = example.reference
        if not isinstance(reference, str) or not reference.strip():
            excluded["no ideal completion"] += 1
        elif example.example_id in seen:
            excluded["repeated prompt id"] += 1
        else:
            seen.add(example.example_id)
            kept.append(example)
    return kept, dict(excluded)


def _as_scores(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of scores, got shape {array.shape}")
    return array


def pair_outcomes(ideal: Any, perturbed: Any, *, ties: str = "wrong") -> np.ndarray:
    """Per pair: 1.0 when the ideal answer scored higher, 0.0 when lower, a tie 0.5 (``"half"``)
    or 0.0 (``"wrong"``); NaN where either score is NaN.

    Args:
        ideal: f[n] scores of the ideal answers (NaN = failed judgment).
        perturbed: f[n] scores of the perturbed answers.
        ties: a value of :data:`TIE_RULES`.

    Returns:
        f64[n].
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties: expected one of {', '.join(TIE_RULES)}, got {ties!r}")
    ideal, perturbed = _as_scores(ideal, "ideal"), _as_scores(perturbed, "perturbed")
    if ideal.shape != perturbed.shape:
        raise ValueError(
            f"expected one perturbed score per ideal score, got {ideal.shape[0]} and "
            f"{perturbed.shape[0]}"
        )
    tie_value = 0.5 if ties == "half" else 0.0
    outcome = np.where(ideal > perturbed, 1.0, np.where(ideal < perturbed, 0.0, tie_value))
    return np.where(np.isnan(ideal) | np.isnan(perturbed), np.nan, outcome)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``successes / n`` (see the module docstring).

    Returns (NaN, NaN) when ``n == 0``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if n < 0 or not 0.0 <= successes <= n:
        raise ValueError(f"expected 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    z = statistics.NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def pairwise_accuracy(
    ideal: Any, perturbed: Any, *, ties: str = "wrong", confidence: float = 0.95
) -> dict[str, Any]:
    """Pairwise accuracy of one judge under one condition, with its Wilson interval.

    Args:
        ideal: f[n] scores of the ideal answers (NaN = failed judgment).
        perturbed: f[n] scores of the perturbed answers.
        ties: ``"half"`` or ``"wrong"`` (see the module docstring).
        confidence: coverage of the interval.

    Returns:
        ``{pairs, scored, failed, wins, ties, losses, tie_rate, accuracy, ci_low, ci_high,
        tie_rule, confidence, interval}``; tie_rate = ties / scored; accuracy, tie rate and
        interval are NaN when no pair was scored.
    """
    outcome = pair_outcomes(ideal, perturbed, ties=ties)
    ideal, perturbed = _as_scores(ideal, "ideal"), _as_scores(perturbed, "perturbed")
    scored = ~np.isnan(outcome)
    count = int(scored.sum())
    wins = int((scored & (ideal > perturbed)).sum())
    losses = int((scored & (ideal < perturbed)).sum())
    tied = count - wins - losses
    successes = float(outcome[scored].sum())
    low, high = wilson_interval(successes, count, confidence)
    return {
        "pairs": int(outcome.size),
        "scored": count,
        "failed": int(outcome.size - count),
        "wins": wins,
        "ties": tied,
        "losses": losses,
        "tie_rate": tied / count if count else math.nan,
        "accuracy": successes / count if count else math.nan,
        "ci_low": low,
        "ci_high": high,
        "tie_rule": ties,
        "confidence": confidence,
        "interval": "wilson",
    }


def text_digest(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def clean_perturbation(text: str, ideal: str) -> tuple[str | None, str | None]:
    """A generator's reply as a perturbed answer: ``(text, None)`` or ``(None, reason)``.

    The reply is stripped; an empty one, or one equal to the ideal answer up to whitespace, fails.
    """
    answer = text.strip()
    if not answer:
        return None, "empty perturbation"
    if " ".join(answer.split()) == " ".join(ideal.split()):
        return None, "perturbation identical to the ideal answer"
    return answer, None


def perturbation_record(example_id: str, ideal: str, perturbed: str, generator: str) -> dict:
    """One line of the perturbation store."""
    return {
        "id": example_id,
        "perturbed": perturbed,
        "generator": generator,
        "ideal_sha256": text_digest(ideal),
    }


def read_perturbations(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The perturbation store: ``{id: record}`` (a later line for the same id replaces one before).

    Raises:
        RubricError naming the file, line and field of a malformed record.
    """
    name = os.fspath(path)
    records: dict[str, dict[str, Any]] = {}
    for line, record in iter_jsonl(name):
        for field in ("id", "perturbed", "generator", "ideal_sha256"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise RubricError(
                    f"{name}:{line}: {field}: expected a non-empty string, got {value!r:.60}"
                )
        records[record["id"]] = record
    return records


def _format_accuracy(result: Mapping[str, Any]) -> str:
    if not result["scored"]:
        return f"n/a (0 of {result['pairs']} scored)"
    text = (
        f"{result['accuracy']:.3f} [{result['ci_low']:.3f}, {result['ci_high']:.3f}] "
        f"(n={result['scored']}, {result['ties']} tied"
    )
    if result["failed"]:
        text += f", {result['failed']} failed"
    return text + ")"


def report_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    judges: Sequence[str],
    conditions: Sequence[str],
) -> str:
    """A markdown table: one row per judge, one column per condition, cells
    ``accuracy [low, high] (n=scored, failed)``."""
    header = "| judge | " + " | ".join(CONDITIONS[c].label for c in conditions) + " |"
    lines = [header, "|---" * (len(conditions) + 1) + "|"]
    for judge in judges:
        cells = [_format_accuracy(results[judge][c]) for c in conditions]
        lines.append(f"| {judge} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
