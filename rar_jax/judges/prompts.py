"""Judge prompts: chat messages for every judge and generator of the paper, built from templates.

The wording lives in plain ``string.Template`` files in ``rar_jax/judges/templates/`` (``${name}``
placeholders, so JSON braces need no escaping). Every builder takes ``templates_dir``: a folder
whose files replace the packaged ones file by file (config ``judge.templates_dir``). A template
must use every placeholder its builder fills and no other; a mismatch raises a ValueError naming
the file, so a replaced template cannot silently drop the rubric or the response.

Every builder returns a :class:`JudgePrompt`: a system + user message pair and the
``verdict_prefix``, the exact beginning of the JSON reply up to the verdict value
(``{"criteria_met": `` or ``{"rating": ``). An in-process judge appends the prefix after the chat
template's assistant header and reads the next-token distribution over ``true``/``false`` or the
rating digits without decoding; the judge templates therefore put the verdict key first.
``verdict_prefix`` is ``""`` when the verdict is the first word of the reply (the GPQA Yes/No
verifier) and ``None`` when there is no verdict to read off a prefix (rubric generation,
perturbation, and the HealthBench grader, whose JSON puts the explanation first as HealthBench's
own grader does; :func:`healthbench_grader_verdict_prompt` is the same grader with the verdict
key first, for prefix scoring).

Conversations (``conversation`` arguments) are a prompt string (one user turn) or a list of chat
messages ``{"role", "content"}``; they are rendered as a tagged transcript inside the user
message (:func:`render_conversation`), so multi-turn HealthBench prompts keep every turn.

Rubric rendering for the implicit judge (:func:`render_rubric`): one numbered line per criterion,
``[<Category>, weight <w>]`` in front when shown. The weight shown is signed by the criterion's
*polarity*, not its raw sign: ``+|w|`` when satisfying the statement is good, ``-|w|`` when it is
bad. So a RaR-Science pitfall "Avoids X" (raw weight -1, polarity positive) is shown with weight 1,
a RaR-Medicine pitfall "Mentions Y wrongly" (raw -2, polarity negative) with weight -2, and the
template tells the judge that a negative weight marks a flaw. With ``show_weights=False`` a
negative-polarity item is marked ``undesirable`` instead, so the judge always knows the direction.
``show_categories=False`` drops the category labels (the paper's "no category labels" ablation,
Table 2); ``show_weights=False`` drops the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import re
import string
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from rar_jax.data.shared import shared_file
from rar_jax.rubrics.readers import rubric_from_rar_record
from rar_jax.rubrics.schema import Criterion, Polarity, Rubric

__all__ = [
    "CRITERIA_MET_PREFIX",
    "PACKAGED_TEMPLATES_DIR",
    "RATING_PREFIX",
    "RUBRIC_GENERATION_DOMAINS",
    "ChatMessage",
    "Conversation",
    "JudgePrompt",
    "direct_likert_prompt",
    "explicit_criterion_prompt",
    "gpqa_verifier_prompt",
    "healthbench_grader_prompt",
    "healthbench_grader_verdict_prompt",
    "implicit_judge_prompt",
    "load_template",
    "perturbation_prompt",
    "predefined_rubric",
    "reference_likert_prompt",
    "render_conversation",
    "render_rubric",
    "rubric_generation_prompt",
    "template_path",
]

PACKAGED_TEMPLATES_DIR = pathlib.Path(__file__).resolve().parent / "templates"
# judge.templates_dir value naming the paper's appendix prompts ($RAR_SHARED_DATA/paper_prompts).
PAPER_PROMPTS = "paper"

# Exact reply beginnings, up to the verdict value, of the verdict-scored judge templates.
RATING_PREFIX = '{"rating": '
CRITERIA_MET_PREFIX = '{"criteria_met": '

RUBRIC_GENERATION_DOMAINS = ("medical", "science")
_CHAT_ROLES = ("system", "developer", "user", "assistant")

ChatMessage = dict[str, str]
Conversation = str | Sequence[Mapping[str, Any]]
TemplatesDir = str | os.PathLike[str] | None


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
    """A prompt for a judge or generator model.

    Attributes:
        messages: the chat messages, ``[{"role": "system", ...}, {"role": "user", ...}]``.
        verdict_prefix: the exact start of the reply up to the verdict value (e.g.
            ``'{"criteria_met": '``); ``""`` when the verdict is the reply's first word; ``None``
            when the reply has no verdict readable after a prefix.
    """

    messages: list[ChatMessage]
    verdict_prefix: str | None


def resolve_templates_dir(templates_dir: TemplatesDir) -> pathlib.Path | None:
    """The folder of ``templates_dir``: :data:`PAPER_PROMPTS` names the paper's own prompts in
    the shared data (``$RAR_SHARED_DATA/paper_prompts``); None / "" mean the packaged ones."""
    if templates_dir is None or os.fspath(templates_dir) == "":
        return None
    if os.fspath(templates_dir) == PAPER_PROMPTS:
        return shared_file("paper_prompts")
    return pathlib.Path(templates_dir)


def template_path(name: str, templates_dir: TemplatesDir = None) -> pathlib.Path:
    """The file for template ``name`` (e.g. ``"implicit_judge.user.txt"``).

    ``templates_dir/name`` when that file exists, else the packaged file (a folder may replace
    only some files: the paper prints no system text for the GPQA verifier, for instance).
    """
    folder = resolve_templates_dir(templates_dir)
    if folder is not None:
        if not folder.is_dir():
            raise ValueError(f"templates_dir {os.fspath(folder)!r}: expected an existing folder")
        candidate = folder / name
        if candidate.is_file():
            return candidate
    packaged = PACKAGED_TEMPLATES_DIR / name
    if not packaged.is_file():
        raise ValueError(f"no template {name!r} in {os.fspath(PACKAGED_TEMPLATES_DIR)!r}")
    return packaged


@functools.lru_cache(maxsize=256)
def _read_template(path: str, modified_ns: int) -> string.Template:
    del modified_ns  # Part of the cache key only: an edited file is read again.
    text = pathlib.Path(path).read_text(encoding="utf-8")
    template = string.Template(text.rstrip("\n"))
    if not template.is_valid():
        raise ValueError(
            f"template {path!r}: invalid placeholder; write ${{name}} for a placeholder and $$ "
            "for a literal dollar sign"
        )
    return template


def load_template(name: str, templates_dir: TemplatesDir = None) -> tuple[string.Template, str]:
    """Reads template ``name`` (see :func:`template_path`); returns it and its file path."""
    path = template_path(name, templates_dir)
    return _read_template(os.fspath(path), path.stat().st_mtime_ns), os.fspath(path)


def _render(
    name: str,
    templates_dir: TemplatesDir,
    values: Mapping[str, str],
    optional: Collection[str] = (),
) -> str:
    """Fills template ``name`` from ``values``.

    The template must use every key of ``values`` except those in ``optional`` (which a
    replacement may leave out, e.g. the paper's GPQA verifier shows no question) and no other.
    """
    template, path = load_template(name, templates_dir)
    used = set(template.get_identifiers())
    expected = set(values)
    missing = sorted(expected - used - set(optional))
    unknown = sorted(used - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("does not use " + ", ".join(f"${{{key}}}" for key in missing))
        if unknown:
            parts.append("uses unknown " + ", ".join(f"${{{key}}}" for key in unknown))
        allowed = ", ".join(f"${{{key}}}" for key in sorted(expected)) or "no placeholders"
        raise ValueError(f"template {path!r}: {'; '.join(parts)} (expected {allowed})")
    return template.substitute(values)


def reply_prefix(name: str, templates_dir: TemplatesDir, key: str, default: str) -> str:
    """The start of the reply up to the verdict value that template pair ``name`` asks for.

    A template that shows its reply as a fenced JSON example (the paper's judges: ``````json``,
    then ``{``, then ``"rating": 7``) asks the judge to start its reply with that fence, so the
    prefix is the example's text up to the value: ``"```json\n{\n\"rating\": "``. A template
    without such an example (the packaged ones) asks for a bare JSON object: ``default``.
    """
    pattern = re.compile(r"```json[ \t]*\n?\{\s*\"" + re.escape(key) + r"\":[ \t]*")
    for part in ("system", "user"):
        template, _ = load_template(f"{name}.{part}.txt", templates_dir)
        match = pattern.search(template.template)
        if match:
            return match.group(0)
    return default


def _messages(
    name: str, templates_dir: TemplatesDir, values: Mapping[str, str],
    optional: Collection[str] = (),
) -> list[ChatMessage]:
    return [
        {"role": "system", "content": _render(f"{name}.system.txt", templates_dir, {})},
        {"role": "user", "content": _render(f"{name}.user.txt", templates_dir, values, optional)},
    ]


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a string, got {type(value).__name__}")
    return value


def render_conversation(conversation: Conversation) -> str:
    """Renders a prompt as a tagged transcript, one ``<role>...</role>`` block per turn.

    Args:
        conversation: a string (one user turn) or chat messages with string ``role`` (system,
            developer, user or assistant) and string ``content``.

    Raises:
        ValueError naming the message index and field when a message is malformed.
    """
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if not isinstance(conversation, Sequence) or not conversation:
        raise ValueError("conversation: expected a string or a non-empty list of chat messages")
    blocks = []
    for index, message in enumerate(conversation):
        if not isinstance(message, Mapping):
            raise ValueError(
                f"conversation[{index}]: expected a {{'role', 'content'}} mapping, got "
                f"{type(message).__name__}"
            )
        role = message.get("role")
        if role not in _CHAT_ROLES:
            raise ValueError(
                f"conversation[{index}].role: expected one of {', '.join(_CHAT_ROLES)}, "
                f"got {role!r}"
            )
        content = _check_text(message.get("content"), f"conversation[{index}].content")
        blocks.append(f"<{role}>\n{content.strip()}\n</{role}>")
    return "\n".join(blocks)


def _format_weight(value: float) -> str:
    return f"{value:g}"


def render_rubric(
    rubric: Rubric, *, show_categories: bool = True, show_weights: bool = True
) -> str:
    """Renders a rubric as numbered lines for the implicit judge (see the module docstring).

    Example line: ``3. [Pitfall, weight -2] Recommends antibiotics for a viral infection.``
    """
    lines = []
    for number, criterion in enumerate(rubric.criteria, start=1):
        labels = []
        if show_categories and criterion.category is not None:
            labels.append(criterion.category.value.capitalize())
        if show_weights:
            labels.append(
                f"weight {_format_weight(criterion.polarity.sign * abs(criterion.weight))}"
            )
        elif criterion.polarity is Polarity.NEGATIVE:
            labels.append("undesirable")
        label = f"[{', '.join(labels)}] " if labels else ""
        lines.append(f"{number}. {label}{criterion.description.strip()}")
    return "\n".join(lines)


def implicit_judge_prompt(
    conversation: Conversation,
    response: str,
    rubric: Rubric,
    *,
    show_categories: bool = True,
    show_weights: bool = True,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """RaR-Implicit: one holistic 1-10 rating of ``response`` against the whole rubric.

    Reply ``{"rating": <int>}``; verdict prefix :data:`RATING_PREFIX`.
    """
    values = {
        "conversation": render_conversation(conversation),
        "response": _check_text(response, "response").strip(),
        "rubric": render_rubric(rubric, show_categories=show_categories, show_weights=show_weights),
    }
    return JudgePrompt(_messages("implicit_judge", templates_dir, values),
                       reply_prefix("implicit_judge", templates_dir, "rating", RATING_PREFIX))


def direct_likert_prompt(
    conversation: Conversation, response: str, *, templates_dir: TemplatesDir = None
) -> JudgePrompt:
    """Direct-Likert: a 1-10 rating with no rubric and no reference. Reply ``{"rating": <int>}``."""
    values = {
        "conversation": render_conversation(conversation),
        "response": _check_text(response, "response").strip(),
    }
    return JudgePrompt(_messages("direct_likert", templates_dir, values),
                       reply_prefix("direct_likert", templates_dir, "rating", RATING_PREFIX))


def reference_likert_prompt(
    conversation: Conversation,
    response: str,
    reference: str,
    *,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """Reference-Likert: a 1-10 rating against the reference answer. Reply ``{"rating": <int>}``."""
    reference = _check_text(reference, "reference")
    if not reference.strip():
        raise ValueError("reference: expected a non-empty reference answer for Reference-Likert")
    values = {
        "conversation": render_conversation(conversation),
        "response": _check_text(response, "response").strip(),
        "reference": reference.strip(),
    }
    return JudgePrompt(_messages("reference_likert", templates_dir, values),
                       reply_prefix("reference_likert", templates_dir, "rating", RATING_PREFIX))


def _criterion_text(criterion: Criterion | str) -> str:
    text = criterion.description if isinstance(criterion, Criterion) else criterion
    text = _check_text(text, "criterion")
    if not text.strip():
        raise ValueError("criterion: expected a non-empty statement")
    return text.strip()


def explicit_criterion_prompt(
    conversation: Conversation,
    response: str,
    criterion: Criterion | str,
    *,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """RaR-Explicit: is this one statement true of the response? (polarity-neutral).

    Only the statement is shown (no category, weight or polarity), so the judge answers the same
    question for a good and for a bad behaviour; the sign comes later from the polarity. Reply
    ``{"criteria_met": true|false, "explanation": "..."}``; verdict prefix
    :data:`CRITERIA_MET_PREFIX`.
    """
    values = {
        "conversation": render_conversation(conversation),
        "response": _check_text(response, "response").strip(),
        "criterion": _criterion_text(criterion),
    }
    return JudgePrompt(_messages("explicit_criterion", templates_dir, values), CRITERIA_MET_PREFIX)


def _grader_values(
    conversation: Conversation, response: str, criterion: Criterion
) -> dict[str, str]:
    """The template values of both HealthBench grader prompts (the item with its signed points)."""
    if not isinstance(criterion, Criterion):
        raise ValueError(f"criterion: expected a Criterion, got {type(criterion).__name__}")
    return {
        "conversation": render_conversation(conversation),
        "response": _check_text(response, "response").strip(),
        "criterion": _criterion_text(criterion),
        "points": _format_weight(criterion.weight),
    }


def healthbench_grader_prompt(
    conversation: Conversation,
    response: str,
    criterion: Criterion,
    *,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """The HealthBench grader for one rubric item (its points shown, raw sign kept).

    Reply ``{"explanation": "...", "criteria_met": true|false}`` (HealthBench's key order), so
    ``verdict_prefix`` is None: generate and parse with
    :func:`rar_jax.judges.parsing.parse_criteria_met`.
    """
    values = _grader_values(conversation, response, criterion)
    return JudgePrompt(_messages("healthbench_grader", templates_dir, values), None)


# simple-evals' own HealthBench grader prompt, read from the shared data (MIT, OpenAI).
SIMPLE_EVALS_GRADER = "healthbench/grader_template.txt"


def simple_evals_grader_prompt(
    conversation: Conversation, response: str, criterion: Criterion
) -> JudgePrompt:
    """HealthBench's official grader prompt, filled as simple-evals fills it.

    ``<<conversation>>``: every turn and the graded answer as a final assistant turn, each
    ``role: content``, joined by a blank line; ``<<rubric_item>>``: ``[points] criterion``. One
    user message, no system message. The reply (explanation first) is generated and parsed, so
    ``verdict_prefix`` is None.
    """
    if not isinstance(criterion, Criterion):
        raise ValueError(f"criterion: expected a Criterion, got {type(criterion).__name__}")
    turns = ([{"role": "user", "content": conversation}] if isinstance(conversation, str)
             else [dict(turn) for turn in conversation])
    turns.append({"role": "assistant", "content": _check_text(response, "response")})
    points = int(criterion.weight) if float(criterion.weight).is_integer() else criterion.weight
    template = _simple_evals_template(os.fspath(shared_file(SIMPLE_EVALS_GRADER)))
    text = template.replace(
        "<<conversation>>", "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
    ).replace("<<rubric_item>>", f"[{points}] {_criterion_text(criterion)}")
    return JudgePrompt([{"role": "user", "content": text}], None)


@functools.lru_cache(maxsize=4)
def _simple_evals_template(path: str) -> str:
    text = pathlib.Path(path).read_text(encoding="utf-8")
    for marker in ("<<conversation>>", "<<rubric_item>>"):
        if marker not in text:
            raise ValueError(f"{path}: expected the grader template's {marker} placeholder")
    return text


def healthbench_grader_verdict_prompt(
    conversation: Conversation,
    response: str,
    criterion: Criterion,
    *,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """The HealthBench grader for one rubric item, verdict first, for reading P(true).

    The same instructions and inputs as :func:`healthbench_grader_prompt` (conversation, final
    message, the item with its signed points); only the reply's key order differs:
    ``{"criteria_met": true|false, "explanation": "..."}``, so the verdict is the first word
    after :data:`CRITERIA_MET_PREFIX` and an in-process judge reads its probability with no
    decoding (``rar-eval healthbench`` with ``eval.grader_scoring=verdict_probs``).
    """
    values = _grader_values(conversation, response, criterion)
    return JudgePrompt(
        _messages("healthbench_grader_verdict", templates_dir, values), CRITERIA_MET_PREFIX
    )


def rubric_generation_prompt(
    question: str,
    reference: str | None,
    *,
    domain: str,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """Asks a generator for a 7-20 item RaR rubric (JSON array of {title, description, weight}).

    Args:
        question: the prompt the rubric is for.
        reference: the reference answer, or None (or blank) for the no-reference ablation.
        domain: "medical" or "science" (picks the system text).
        templates_dir: optional folder of replacement templates.

    Pitfalls are asked for as descriptions of the mistake (true when an answer makes it), i.e.
    polarity negative: parse replies with :func:`rar_jax.judges.parsing.parse_rubric` and build the
    Rubric with ``pitfall_polarity="negative"``.
    """
    if domain not in RUBRIC_GENERATION_DOMAINS:
        raise ValueError(
            f"domain: expected one of {', '.join(RUBRIC_GENERATION_DOMAINS)}, got {domain!r}"
        )
    question = _check_text(question, "question").strip()
    if not question:
        raise ValueError("question: expected a non-empty question")
    system = _render(f"rubric_generation_{domain}.system.txt", templates_dir, {})
    if reference is not None and _check_text(reference, "reference").strip():
        user = _render(
            "rubric_generation_with_reference.user.txt",
            templates_dir,
            {"question": question, "reference": reference.strip()},
        )
    else:
        user = _render(
            "rubric_generation_without_reference.user.txt", templates_dir, {"question": question}
        )
    return JudgePrompt(
        [{"role": "system", "content": system}, {"role": "user", "content": user}], None
    )


def gpqa_verifier_prompt(
    question: str,
    correct_answer: str,
    correct_answer_text: str,
    response: str,
    *,
    templates_dir: TemplatesDir = None,
) -> JudgePrompt:
    """GPQA fallback verifier: is the response's final answer the correct option? Reply Yes / No.

    ``question`` should include the lettered options; ``correct_answer`` is the correct letter
    (``"C"``) and ``correct_answer_text`` that option's text (``"4.2 eV"``). A replacement template
    may leave out the question (the paper's verifier does). The verdict is the reply's first word:
    ``verdict_prefix == ""``.
    """
    values = {
        "question": _check_text(question, "question").strip(),
        "correct_answer": _check_text(correct_answer, "correct_answer").strip(),
        "correct_answer_text": _check_text(correct_answer_text, "correct_answer_text").strip(),
        "response": _check_text(response, "response").strip(),
    }
    return JudgePrompt(_messages("gpqa_verifier", templates_dir, values, optional=("question",)),
                       "")


def perturbation_prompt(
    conversation: Conversation, ideal_response: str, *, templates_dir: TemplatesDir = None
) -> JudgePrompt:
    """Judge alignment: asks for a plausible but strictly worse answer than ``ideal_response``."""
    values = {
        "conversation": render_conversation(conversation),
        "ideal_response": _check_text(ideal_response, "ideal_response").strip(),
    }
    return JudgePrompt(_messages("perturbation", templates_dir, values), None)


def predefined_rubric(templates_dir: TemplatesDir = None) -> Rubric:
    """The fixed generic rubric of RaR-Predefined, read from ``predefined_rubric.json``.

    The file is a JSON array of ``{title, description, category, weight}`` items (the
    rubric_harness item format of :func:`rar_jax.rubrics.readers.rubric_from_rar_record`; an item
    may carry ``polarity``). The packaged one holds four Essential items of weight 1, so the
    items weigh the same under both explicit normalisations.
    """
    path = os.fspath(template_path("predefined_rubric.json", templates_dir))
    try:
        with open(path, encoding="utf-8") as handle:
            items = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(items, list):
        raise ValueError(
            f"{path}: expected a JSON array of rubric items, got {type(items).__name__}"
        )
    return rubric_from_rar_record({"rubric": items}, pitfall_polarity=None, source=path)
