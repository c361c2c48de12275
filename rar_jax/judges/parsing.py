"""Parsing of judge and generator replies: never raises on bad text, returns a value or a reason.

Every parser returns a :class:`ParseResult`: ``value`` set and ``reason`` None on success, or
``value`` None and ``reason`` saying what was wrong (empty output, no JSON, a missing key, a value
out of range, ...). A failed parse must reach the reward as a failure (NaN), never as 0: callers
check ``result.ok``.

What the parsers tolerate (real judge output does all of this):

- code fences (```` ```json ... ``` ````) and text before or after the JSON;
- trailing commas, single-quoted keys and strings, Python ``True`` / ``False`` / ``None``;
- a reply cut off after the verdict (``{"criteria_met": true, "explanation": "The resp``), since
  the explanation comes after the verdict and ``max_tokens`` may end it;
- for ratings: a bare number (``7``), ``8/10``, ``Rating: 6``, a numeric string (``"7"``).

What they refuse (with a reason): a rating outside [low, high] (never clipped), a non-finite
number, a boolean where a number is expected, a ``N/M`` rating on another scale, two different
verdicts in one reply.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import Category, Polarity, RubricError, split_category_prefix

__all__ = [
    "ParseResult",
    "boxed_contents",
    "extract_json",
    "parse_boxed_letter",
    "parse_criteria_met",
    "parse_rating",
    "parse_rubric",
    "parse_yes_no",
]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ParseResult(Generic[T]):
    """A parsed value, or None and the reason the text could not be parsed."""

    value: T | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError("ParseResult: expected exactly one of value and reason")

    @property
    def ok(self) -> bool:
        """True when a value was parsed."""
        return self.reason is None


def _fail(reason: str) -> ParseResult[Any]:
    return ParseResult(None, reason)


def _preview(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _strip_fences(text: str) -> str:
    """The content of the first fenced block that holds a brace, else the text without fences."""
    for match in _FENCE.finditer(text):
        if "{" in match.group(1) or "[" in match.group(1):
            return match.group(1)
    return text.replace("```json", "").replace("```", "")


def _balanced_spans(text: str, opener: str) -> list[str]:
    """Every top-level balanced ``{...}`` / ``[...]`` span starting with ``opener``, in order.

    Quotes (double and single) are skipped so that brackets inside strings do not count.
    """
    closer = {"{": "}", "[": "]"}[opener]
    spans = []
    start = text.find(opener)
    while start != -1:
        depth = 0
        quote = ""
        escaped = False
        end = -1
        for index in range(start, len(text)):
            char = text[index]
            if quote:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == quote:
                    quote = ""
                continue
            if char in "\"'":
                # An apostrophe inside a word ("don't") is not a quote.
                if char == "'" and index > 0 and text[index - 1].isalnum():
                    continue
                quote = char
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    end = index
                    break
        if end == -1:
            break
        if text[end] == closer:
            spans.append(text[start : end + 1])
        start = text.find(opener, end + 1)
    return spans


def _python_literals_to_json(text: str) -> str:
    return re.sub(r"\b(True|False|None)\b", lambda m: _PYTHON_LITERALS[m.group(1)], text)


def _loads_lenient(candidate: str) -> Any:
    """json.loads, then without trailing commas, then as a Python literal; else ValueError."""
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", candidate)
    try:
        return json.loads(_python_literals_to_json(repaired))
    except json.JSONDecodeError:
        pass
    # Single-quoted strings: a Python literal with JSON's true/false/null mapped to Python.
    python_text = re.sub(
        r"\b(true|false|null)\b",
        lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)],
        repaired,
    )
    try:
        return ast.literal_eval(python_text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError("not valid JSON") from None


def extract_json(text: str, *, kind: type = dict) -> ParseResult[Any]:
    """Finds the first JSON object (``kind=dict``) or array (``kind=list``) in ``text``.

    Handles code fences, surrounding prose, trailing commas, single quotes and Python literals.
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    body = _strip_fences(text)
    opener = "{" if kind is dict else "["
    spans = _balanced_spans(body, opener)
    if not spans:
        what = "object" if kind is dict else "array"
        return _fail(f"no complete JSON {what} in output {_preview(text)}")
    for span in spans:
        try:
            value = _loads_lenient(span)
        except ValueError:
            continue
        if isinstance(value, kind):
            return ParseResult(value)
    return _fail(f"invalid JSON in output {_preview(spans[0])}")


def _find_key(mapping: Mapping[Any, Any], key: str) -> tuple[bool, Any]:
    """Looks ``key`` up case-insensitively (``Rating`` == ``rating``)."""
    for name, value in mapping.items():
        if isinstance(name, str) and name.strip().lower() == key:
            return True, value
    return False, None


_NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _check_rating(value: float, low: float, high: float, source: str) -> ParseResult[float]:
    if not math.isfinite(value):
        return _fail(f"rating {value!r} is not a finite number ({source})")
    if not low <= value <= high:
        return _fail(f"rating {value:g} outside [{low:g}, {high:g}] ({source})")
    return ParseResult(float(value))


def _rating_from_value(value: Any, low: float, high: float) -> ParseResult[float]:
    if isinstance(value, bool) or value is None:
        return _fail(f"'rating' is {json.dumps(value)}, expected a number")
    if isinstance(value, (int, float)):
        return _check_rating(float(value), low, high, "JSON 'rating'")
    if isinstance(value, str):
        text = value.strip()
        fraction = re.fullmatch(rf"({_NUMBER})\s*/\s*({_NUMBER})", text)
        if fraction:
            return _rating_from_fraction(fraction.group(1), fraction.group(2), low, high)
        if re.fullmatch(_NUMBER, text):
            return _check_rating(float(text), low, high, "JSON 'rating'")
    return _fail(f"'rating' is {_preview(str(value))}, expected a number")


def _rating_from_fraction(number: str, scale: str, low: float, high: float) -> ParseResult[float]:
    if float(scale) != high:
        return _fail(f"rating {number}/{scale} is on a different scale than {low:g}-{high:g}")
    return _check_rating(float(number), low, high, f"{number}/{scale}")


def _json_objects(text: str) -> list[dict[Any, Any]]:
    """Every top-level JSON object in ``text`` (fenced or not), in order; unparseable spans skipped."""
    body = re.sub(r"```[a-zA-Z0-9_-]*", "", text)
    objects = []
    for span in _balanced_spans(body, "{"):
        try:
            value = _loads_lenient(span)
        except ValueError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects


def _single_verdict(results: list[ParseResult[T]], what: str, show: Any) -> ParseResult[T] | None:
    """The one verdict that every mention in a reply gives; a failure if a mention is unusable
    or two mentions differ (a reply that contradicts itself is refused, never resolved); None
    without mentions."""
    for result in results:
        if not result.ok:
            return result
    values: list[T] = []
    for result in results:
        if result.value not in values:
            values.append(result.value)
    if len(values) > 1:
        return _fail(f"{what}: {', '.join(show(value) for value in sorted(values))}")
    return ParseResult(values[0]) if values else None


def parse_rating(text: str, low: float = 1, high: float = 10) -> ParseResult[float]:
    """A holistic rating from a judge reply, e.g. ``{"rating": 7}`` -> 7.0.

    Every way the reply states a rating counts: each JSON object's ``rating`` key, ``rating: N``
    / ``"rating": N`` anywhere (also a cut-off JSON), and ``N/high``; they must all agree (two
    different ratings are refused with a reason). Without any of them, the whole reply being one
    number. Out-of-range values give a reason, never a clipped value.
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    objects = _json_objects(text)
    results = []
    for mapping in objects:
        found, value = _find_key(mapping, "rating")
        if found:
            results.append(_rating_from_value(value, low, high))
    keyed = re.findall(rf"""["']?\brating["']?\s*[:=]\s*["']?({_NUMBER})""", text, re.IGNORECASE)
    results += [_check_rating(float(value), low, high, "'rating:' in text") for value in keyed]
    fractions = re.findall(rf"({_NUMBER})\s*/\s*({_NUMBER})", text)
    results += [_rating_from_fraction(number, scale, low, high)
                for number, scale in fractions if float(scale) == high]
    verdict = _single_verdict(results, "several different ratings in output", lambda v: f"{v:g}")
    if verdict is not None:
        return verdict
    if fractions:  # Only on another scale.
        return _rating_from_fraction(fractions[0][0], fractions[0][1], low, high)
    bare = text.strip().strip("*`'\".").strip()
    if re.fullmatch(_NUMBER, bare):
        return _check_rating(float(bare), low, high, "bare number")
    if objects:
        return _fail(f"JSON object has no 'rating' key (keys: {', '.join(map(str, objects[0]))})")
    return _fail(f"no rating found in output {_preview(text)}")


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False}


def _bool_from_value(value: Any) -> ParseResult[bool]:
    if isinstance(value, bool):
        return ParseResult(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return ParseResult(_BOOL_WORDS[value.strip().lower()])
    return _fail(
        f"'criteria_met' is {json.dumps(value) if value is None else _preview(str(value))}, "
        "expected true or false"
    )


def parse_criteria_met(text: str) -> ParseResult[bool]:
    """A per-criterion verdict, e.g. ``{"criteria_met": true, "explanation": "..."}`` -> True.

    Every way the reply states the verdict counts: each JSON object's ``criteria_met`` key (bool,
    or "true"/"false"/"yes"/"no" strings) and ``criteria_met: true`` anywhere (also a reply cut
    off in its explanation); they must all agree (true and false in one reply is refused with a
    reason). Without any of them, the whole reply being one of true / false / yes / no.
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    objects = _json_objects(text)
    results = []
    for mapping in objects:
        found, value = _find_key(mapping, "criteria_met")
        if found:
            results.append(_bool_from_value(value))
    keyed = re.findall(
        r"""["']?\bcriteria_met["']?\s*[:=]\s*["']?(true|false|yes|no)\b""", text, re.IGNORECASE
    )
    results += [ParseResult(_BOOL_WORDS[word.lower()]) for word in keyed]
    verdict = _single_verdict(results, "contradictory 'criteria_met' values in output",
                              lambda v: str(v).lower())
    if verdict is not None:
        return verdict
    bare = text.strip().strip("*`'\".").strip().lower()
    if bare in _BOOL_WORDS:
        return ParseResult(_BOOL_WORDS[bare])
    if objects:
        keys = ", ".join(map(str, objects[0]))
        return _fail(f"JSON object has no 'criteria_met' key (keys: {keys})")
    return _fail(f"no criteria_met verdict found in output {_preview(text)}")


_RUBRIC_KEYS = ("title", "description", "weight")


def _generated_weight_problem(category: Category | None, weight: Any) -> str | None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"expected a number, got {type(weight).__name__} {weight!r}"
    if not math.isfinite(weight) or weight != int(weight):
        return f"expected an integer, got {weight!r}"
    if category is Category.PITFALL:
        if weight not in (-1, -2):
            return f"expected -1 or -2 for a Pitfall item, got {weight!r}"
    elif not 1 <= weight <= 5:
        return f"expected 1 to 5 for a non-Pitfall item, got {weight!r}"
    return None


def parse_rubric(
    text: str,
    *,
    min_items: int = 1,
    max_items: int | None = None,
) -> ParseResult[list[dict[str, Any]]]:
    """A generated rubric: the JSON array of ``{title, description, weight}`` items, validated.

    Each item is checked through the schema's own validation (by building the Rubric with
    :func:`rar_jax.rubrics.readers.rubric_from_rar_record`, which needs the category prefix on
    every description) and the generator's weight ranges (1-5, or -1/-2 for pitfalls), so a
    reason names the item and field, e.g. ``"rubric[3].weight: expected -1 or -2 ..."``. An
    object wrapping the array under ``rubric`` or ``criteria`` is accepted.

    Args:
        text: the generator's reply.
        min_items: fewest items accepted (the templates ask for 7-20).
        max_items: most items accepted; None for no limit.

    Returns:
        The items as plain dicts with exactly the keys title, description (category prefix kept,
        as in the RaR data) and weight, in reply order; or a reason. Build the Rubric with
        ``rubric_from_rar_record({"rubric": items}, pitfall_polarity="negative")``: our generation
        templates ask for pitfalls that describe the mistake (true when an answer makes it).
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    body = _strip_fences(text)
    first_brace, first_bracket = body.find("{"), body.find("[")
    wrapped_first = first_brace != -1 and (first_bracket == -1 or first_brace < first_bracket)
    if wrapped_first:
        # An object first: the array must be its "rubric" (or "criteria") value.
        wrapped = extract_json(text, kind=dict)
        if not wrapped.ok:
            return _fail(wrapped.reason or "invalid JSON")
        items = None
        for key in ("rubric", "criteria"):
            found, value = _find_key(wrapped.value, key)
            if found and isinstance(value, list):
                items = value
                break
        if items is None:
            return _fail(
                "expected a JSON array of rubric items (or an object with a 'rubric' list)"
            )
    else:
        parsed = extract_json(text, kind=list)
        if not parsed.ok:
            return _fail(parsed.reason or "invalid JSON")
        items = parsed.value
    if len(items) < min_items:
        return _fail(f"rubric: expected at least {min_items} items, got {len(items)}")
    if max_items is not None and len(items) > max_items:
        return _fail(f"rubric: expected at most {max_items} items, got {len(items)}")
    cleaned = []
    for index, item in enumerate(items):
        path = f"rubric[{index}]"
        if not isinstance(item, dict):
            return _fail(f"{path}: expected an object, got {type(item).__name__}")
        for key in _RUBRIC_KEYS:
            if key not in item:
                return _fail(f"{path}.{key}: missing required field")
        description = item["description"]
        if isinstance(description, str):
            category, _ = split_category_prefix(description)
            problem = _generated_weight_problem(category, item["weight"])
            if category is not None and problem is not None:
                return _fail(f"{path}.weight: {problem}")
        cleaned.append({key: item[key] for key in _RUBRIC_KEYS})
    try:
        # The schema accepts either polarity for a pitfall, so the one used here does not matter.
        rubric_from_rar_record(
            {"rubric": cleaned}, pitfall_polarity=Polarity.NEGATIVE, source="generated"
        )
    except RubricError as error:
        return _fail(str(error).removeprefix("generated: "))
    return ParseResult(cleaned)


_BOXED = re.compile(r"\\boxed\s*\{")
_LETTER_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


def boxed_contents(text: str) -> list[str]:
    """The contents of every complete ``\\boxed{...}`` (nested braces balanced), in order."""
    contents = []
    for match in _BOXED.finditer(text):
        depth = 1
        for index in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                contents.append(text[match.end() : index])
                break
    return contents


def parse_boxed_letter(text: str, choices: Sequence[str] = "ABCD") -> ParseResult[str]:
    """The multiple-choice letter of the LAST ``\\boxed{...}`` in the reply (GPQA).

    Accepts ``\\boxed{C}``, ``\\boxed{(C)}``, ``\\boxed{\\text{C}}``, ``\\boxed{C) 4.2 eV}``,
    ``\\boxed{C: ...}``; a letter outside ``choices`` or boxed content that is not a choice gives a
    reason. The last box is the final answer (earlier boxes may be intermediate results).
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    contents = boxed_contents(text)
    if not contents:
        return _fail("no \\boxed{...} answer in output")
    content = contents[-1]
    for _ in range(3):
        content = _LETTER_WRAPPERS.sub(r"\1", content)
    content = content.strip().strip("$").strip()
    match = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?(?:\s*[.:)\-]\s*.*|\s+.*)?", content, re.DOTALL)
    if not match:
        return _fail(f"boxed answer {_preview(content)} is not a choice letter")
    letter = match.group(1).upper()
    allowed = [choice.upper() for choice in choices]
    if letter not in allowed:
        return _fail(f"boxed letter {letter!r} is not one of {', '.join(allowed)}")
    return ParseResult(letter)


_ANSWER_LINE = re.compile(
    r"\b(?:final answer|answer|verdict)\s*(?:is)?\s*[:\-]?\s*\**\s*(yes|no)\b", re.IGNORECASE
)


def _yes_no_word(text: str) -> bool | None:
    word = re.sub(r"^[\s*_`'\"#>]+|[\s*_`'\".,!:;]+$", "", text).lower()
    return {"yes": True, "no": False}.get(word)


def parse_yes_no(text: str) -> ParseResult[bool]:
    """A Yes / No verdict (GPQA verifier): first word, else last line, else ``Answer: X``."""
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    if not text.strip():
        return _fail("empty output")
    first = re.split(r"[\s,.;:!]+", text.strip(" \t\n*_`'\"#>"), maxsplit=1)[0]
    verdict = _yes_no_word(first)
    if verdict is not None:
        return ParseResult(verdict)
    last_line = text.strip().splitlines()[-1]
    verdict = _yes_no_word(last_line)
    if verdict is not None:
        return ParseResult(verdict)
    stated = {word.lower() for word in _ANSWER_LINE.findall(text)}
    if len(stated) == 1:
        return ParseResult(stated.pop() == "yes")
    if len(stated) > 1:
        return _fail("both Yes and No stated as the answer")
    return _fail(f"no Yes/No verdict in output {_preview(text)}")
