"""Judge alignment, the paper's Figure 3, as one run (``rar-judge-alignment``).

Every option is a key of the config's ``alignment`` section (``rar_jax/config/base.py``);
:func:`run_alignment` is the whole command. The math (pairs, accuracy, intervals, the stores'
records) is :mod:`rar_jax.eval.judge_alignment`.

1. **Pairs.** HealthBench prompts (``alignment.data``: a JSONL file or
   ``tfds:healthbench...:<split>``) with a physician-written ideal completion; the first
   ``alignment.limit`` of them (0 = all). Prompts without an ideal completion, and repeated
   prompt ids, are counted and left out.
2. **Perturbations.** A worse answer per prompt, written ONCE by ``alignment.generator`` with the
   perturbation prompt (:func:`rar_jax.judges.prompts.perturbation_prompt`) and stored in
   ``alignment.perturbations`` (JSONL; default ``<output_dir>/perturbations.jsonl``). A stored
   answer is reused when it was made from the same ideal answer (SHA-256 digest); only missing
   ones are generated, and each batch is appended as soon as it is done. Empty replies and
   replies equal to the ideal answer are failures: the pair is left out and counted (and retried
   next run).
3. **Conditions** (``alignment.conditions``; :data:`rar_jax.eval.judge_alignment.CONDITIONS`);
   the default is the paper's three lines: ``reference_rubric`` = the implicit judge
   (``rar_implicit``) with a rubric generated WITH the ideal completion as reference ("expert
   guidance"), ``generated_rubric`` = the same with a rubric generated WITHOUT it, ``likert`` =
   ``direct_likert``, no rubric. ``rubric`` (the physician rubric) is an extra condition.
   Rubrics come from ``alignment.rubric_generator`` (default: the generator) through
   :func:`rar_jax.judges.rubric_generation.generate_rubrics` with the ``rubric_generation.*``
   options (validation, retries), stored in ``alignment.generated_rubrics`` (without reference;
   default ``<output_dir>/generated_rubrics.jsonl``) and ``<that file without
   .jsonl>_reference.jsonl`` and reused likewise. A prompt whose rubric stays invalid after the
   last attempt is a failed pair of that condition (counted, with the reason).
4. **Judges** (``alignment.judges``, comma-separated): ``smollm2``, a ``.gguf`` file or an HF
   checkpoint directory (the in-process JAX judge with the config's ``judge.*`` options:
   scoring, batch size, ...), or ``http:<model>@<base_url>`` (an OpenAI-compatible server with
   the config's ``judge.http.*`` options). Each answer is rated on its own (1-10; the expected
   rating under verdict-probability scoring); a pair is correct when the ideal answer is rated
   higher (``alignment.ties``: a tie counts wrong, the paper's rule and the default, or half;
   the tie rate of every line is reported). Failed judgments are counted, never scored.
5. **Outputs** in ``output_dir``: ``alignment.json`` (per judge x condition: pairs, scored,
   failed, wins, ties, losses, accuracy, Wilson interval, failure reasons; plus the data and
   generation counts), ``alignment.md`` (the table), ``alignment.png`` (accuracy against judge,
   one line per condition) and ``alignment_scores.jsonl`` (every rating).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rar_jax.errors import UserError
from rar_jax.eval import judge_alignment as alignment
from rar_jax.io import append_jsonl, iter_jsonl, write_json, write_jsonl

RUBRIC_STORES = ("generated", "generated_reference")


def split_list(value: str) -> list[str]:
    """A comma-separated list option (``alignment.judges``, ``alignment.conditions``) as its
    items, in order, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclasses.dataclass
class Pair:
    """One prompt's ideal and perturbed answers (``perturbed`` None until made)."""

    example: Any
    perturbed: str | None = None
    failure: str | None = None


def build_model(config: Any, spec: alignment.ModelSpec) -> Any:
    """The judge backend of ``spec`` with the config's ``judge.*`` options
    (:func:`rar_jax.judges.factory.build_judge` loads each JAX model once per process)."""
    from rar_jax.judges.factory import build_judge

    config = copy.deepcopy(config)
    if spec.kind == "http":
        config.judge.backend = "http"
        config.judge.http.base_url = spec.base_url
        config.judge.http.model = spec.model
    else:
        config.judge.backend = "jax"
        config.judge.model_source = spec.source
    return build_judge(config)


def model_sources(config: Any) -> list[tuple[str, str]]:
    """``(config key, model source)`` of every JAX model the run may load (judges and
    generators), for the input check before anything is loaded."""
    settings = config.alignment
    keys = ("judges", "generator", "rubric_generator")
    specs = [(f"'alignment.{key}'", alignment.parse_model_spec(spec))
             for key in keys for spec in split_list(settings[key])]
    return [(key, spec.source) for key, spec in specs if spec.kind == "jax"]


def make_perturbations(pairs: Sequence[Pair], store: pathlib.Path, config: Any) -> dict[str, Any]:
    """Fills ``pair.perturbed`` from the store, generating (and appending) the missing ones with
    ``alignment.generator``.

    Returns the counts of the perturbation step (reused, generated, failed, reasons).
    """
    import tqdm

    from rar_jax.judges import prompts

    settings = config.alignment
    generator, batch_size = settings.generator, settings.batch_size
    stored = alignment.read_perturbations(store) if store.is_file() else {}
    missing = []
    for pair in pairs:
        record = stored.get(pair.example.example_id)
        if record is not None and record["ideal_sha256"] == alignment.text_digest(
                pair.example.reference):
            pair.perturbed = record["perturbed"]
        else:
            missing.append(pair)
    if missing:
        backend = build_model(config, alignment.parse_model_spec(generator))
        templates_dir = config.judge.templates_dir or None
        with tqdm.tqdm(total=len(missing), desc="perturbing", unit="answer") as bar:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                messages = [prompts.perturbation_prompt(
                    p.example.conversation, p.example.reference, templates_dir=templates_dir
                ).messages for p in chunk]
                result = backend.generate_texts(
                    messages, max_tokens=settings.perturb_max_tokens,
                    temperature=settings.perturb_temperature, seed=config.seed)
                errors = result.errors or [None] * len(chunk)
                records = []
                for pair, text, error in zip(chunk, result.texts, errors, strict=True):
                    if error is not None:
                        pair.failure = f"generator request failed: {error}"
                        continue
                    answer, reason = alignment.clean_perturbation(text, pair.example.reference)
                    if answer is None:
                        pair.failure = reason
                        continue
                    pair.perturbed = answer
                    records.append(alignment.perturbation_record(
                        pair.example.example_id, pair.example.reference, answer, generator))
                append_jsonl(store, records)
                bar.update(len(chunk))
    reasons = collections.Counter(p.failure for p in pairs if p.failure is not None)
    return {
        "generator": generator,
        "store": str(store),
        "reused": len(pairs) - len(missing),
        "generated": sum(1 for p in missing if p.perturbed is not None),
        "failed": sum(reasons.values()),
        "failure_reasons": dict(reasons.most_common()),
    }


def make_generated_rubrics(
    pairs: Sequence[Pair], store: pathlib.Path, config: Any, *, with_reference: bool,
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Rubrics generated with or without the ideal completion as reference, from the store or
    generated (with the ``rubric_generation.*`` options) and appended.

    Returns ({id: Rubric}, {id: failure reason}, counts).
    """
    from rar_jax.judges.rubric_files import generation_options
    from rar_jax.judges.rubric_generation import (
        Question,
        failure_record,
        generate_rubrics,
        question_text,
        rubric_record,
    )
    from rar_jax.rubrics.readers import rubric_from_rar_record

    generator = config.alignment.rubric_generator or config.alignment.generator
    rubrics: dict[str, Any] = {}
    if store.is_file():
        for line, record in iter_jsonl(store):
            rubrics[str(record.get("id"))] = rubric_from_rar_record(
                record, pitfall_polarity=None, source=f"{store}:{line}")
    wanted = [p.example for p in pairs]
    reused = sum(1 for e in wanted if e.example_id in rubrics)
    questions = [
        Question(f"{e.example_id}", {"id": e.example_id}, question_text(e.conversation),
                 e.reference if with_reference else None)
        for e in wanted if e.example_id not in rubrics
    ]
    failures: dict[str, str] = {}
    if questions:
        backend = build_model(config, alignment.parse_model_spec(generator))
        generate_rubrics(backend, questions,
                         **generation_options(config, config.alignment.batch_size))
        valid = [q for q in questions if q.items is not None]
        append_jsonl(store, [rubric_record(q) for q in valid])
        failed = [q for q in questions if q.items is None]
        failure_path = store.with_name(store.name.removesuffix(".jsonl") + ".failures.jsonl")
        failure_path.unlink(missing_ok=True)
        append_jsonl(failure_path, [failure_record(q) for q in failed])
        for q in valid:
            rubrics[q.record["id"]] = rubric_from_rar_record(
                rubric_record(q), pitfall_polarity=None, source=f"{store}:{q.record['id']}")
        for q in failed:
            failures[q.record["id"]] = (
                f"no valid generated rubric after {len(q.reasons)} attempts (last: "
                f"{q.reasons[-1] if q.reasons else 'unknown'})")
    counts = {
        "generator": generator,
        "with_reference": with_reference,
        "store": str(store),
        "reused": reused,
        "generated": len(questions) - len(failures),
        "failed": len(failures),
    }
    return rubrics, failures, counts


def score_condition(
    condition: str, pairs: Sequence[Pair], backend: Any, settings: Any,
    generated: Mapping[str, Any], generation_failures: Mapping[str, str], *,
    batch_size: int, judge: str,
) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]]:
    """Ratings of the ideal and perturbed answers of every pair under one condition.

    Returns (ideal f64[n], perturbed f64[n], ideal reasons, perturbed reasons); NaN + reason
    where a judgment failed or the pair has no generated rubric.
    """
    import tqdm

    from rar_jax.judges.rewards import compute_rewards

    spec = alignment.CONDITIONS[condition]
    count = len(pairs)
    ideal = np.full(count, np.nan)
    perturbed = np.full(count, np.nan)
    ideal_reasons: list[str | None] = [None] * count
    perturbed_reasons: list[str | None] = [None] * count
    rows, examples = [], []
    for row, pair in enumerate(pairs):
        example = pair.example
        if spec.rubric in RUBRIC_STORES:
            rubric = generated[spec.rubric].get(example.example_id)
            if rubric is None:
                why = generation_failures[spec.rubric].get(example.example_id,
                                                            "no generated rubric")
                ideal_reasons[row] = perturbed_reasons[row] = why
                continue
            example = dataclasses.replace(example, rubric=rubric)
        rows.append(row)
        examples.append(example)
    with tqdm.tqdm(total=len(rows), desc=f"{judge} / {condition}", unit="pair") as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            chunk_examples = examples[start : start + batch_size]
            answers = [pairs[r].example.reference for r in chunk] + [
                pairs[r].perturbed for r in chunk]
            output = compute_rewards(
                spec.method, chunk_examples + chunk_examples, answers, backend, settings)
            size = len(chunk)
            for offset, row in enumerate(chunk):
                ideal[row] = output.ratings[offset]
                perturbed[row] = output.ratings[size + offset]
                ideal_reasons[row] = output.reasons[offset]
                perturbed_reasons[row] = output.reasons[size + offset]
            bar.update(size)
    return ideal, perturbed, ideal_reasons, perturbed_reasons


def markdown_report(report: Mapping[str, Any]) -> str:
    """The report as markdown: the table, then the generation counts and failure reasons."""
    tie = "one half" if report["tie_rule"] == "half" else "wrong"
    perturbation = report["perturbation"]
    lines = [
        "# Judge alignment (Figure 3)",
        "",
        f"{report['pairs']} HealthBench prompts with an ideal completion from `{report['data']}`, "
        f"each paired with a worse answer by `{perturbation['generator']}` "
        f"({perturbation['reused']} reused, {perturbation['generated']} generated, "
        f"{perturbation['failed']} failed and left out). Accuracy = fraction of scored pairs "
        f"where the ideal answer is rated higher (a tie counts {tie}; each cell gives how many "
        f"pairs tied); "
        f"{report['confidence']:.0%} Wilson interval; `failed` = pairs with a failed judgment.",
        "",
        alignment.report_markdown(report["results"], report["judges"], report["conditions"]),
    ]
    if report["excluded"]:
        lines += ["", "Left out of the data: " + ", ".join(
            f"{count} {why}" for why, count in report["excluded"].items())]
    if perturbation["failure_reasons"]:
        lines += ["", "Perturbation failures:"]
        lines += [f"- {n} x {why}" for why, n in perturbation["failure_reasons"].items()]
    for key, how in (("reference_rubrics", "with"), ("generated_rubrics", "without")):
        if report.get(key):
            counts = report[key]
            lines += ["", f"Rubrics generated {how} reference by `{counts['generator']}`: "
                      f"{counts['reused']} reused, {counts['generated']} generated, "
                      f"{counts['failed']} failed."]
    reasons = [
        (judge, condition, result["failure_reasons"])
        for judge, by_condition in report["results"].items()
        for condition, result in by_condition.items()
        if result["failure_reasons"]
    ]
    if reasons:
        lines += ["", "Failed judgments (per answer):"]
        for judge, condition, counter in reasons:
            for why, n in counter.items():
                shown = why if len(why) <= 200 else why[:197] + "..."
                lines.append(f"- {judge} / {condition}: {n} x {shown}")
    return "\n".join(lines) + "\n"


def read_pairs(config: Any) -> tuple[list[Pair], dict[str, int]]:
    """The pairs of ``alignment.data`` (first ``alignment.limit``) and the examples left out."""
    from rar_jax.data.sources import load_examples

    data = config.alignment.data
    examples = load_examples(data, "healthbench", rubric=config.rubric,
                             data_dir=config.data.tfds_data_dir or None)
    usable, excluded = alignment.alignment_examples(examples)
    if config.alignment.limit:
        usable = usable[: config.alignment.limit]
    if not usable:
        raise UserError(f"alignment.data={data}: no prompt with an ideal completion")
    return [Pair(example) for example in usable], excluded


def run_alignment(
    config: Any, output_dir: pathlib.Path, pairs: list[Pair], excluded: Mapping[str, int]
) -> tuple[dict[str, Any], str]:
    """``rar-judge-alignment`` (module docstring) on the pairs of :func:`read_pairs`: writes the
    outputs to ``output_dir`` and returns the report and its markdown."""
    from rar_jax.eval.plots import plot_accuracy_by_judge
    from rar_jax.judges.rewards import reward_settings

    settings = config.alignment
    conditions = list(dict.fromkeys(split_list(settings.conditions)))
    specs = [alignment.parse_model_spec(spec) for spec in split_list(settings.judges)]
    names = [spec.name for spec in specs]
    names = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    perturbation = make_perturbations(
        pairs, pathlib.Path(settings.perturbations or output_dir / "perturbations.jsonl"), config)
    ready = [pair for pair in pairs if pair.perturbed is not None]
    if not ready:
        raise UserError(f"no perturbed answer could be made: {perturbation}")
    store = pathlib.Path(settings.generated_rubrics or output_dir / "generated_rubrics.jsonl")
    stores = {"generated": store, "generated_reference": store.with_name(
        store.name.removesuffix(".jsonl") + "_reference.jsonl")}
    generated, generation_failures, generated_counts = {}, {}, {}
    for kind in RUBRIC_STORES:
        if any(alignment.CONDITIONS[c].rubric == kind for c in conditions):
            generated[kind], generation_failures[kind], generated_counts[kind] = (
                make_generated_rubrics(ready, stores[kind], config,
                                       with_reference=kind == "generated_reference"))

    rewards = reward_settings(config)
    results: dict[str, dict[str, Any]] = {}
    score_lines = []
    for name, spec in zip(names, specs, strict=True):
        backend = build_model(config, spec)
        results[name] = {}
        for condition in conditions:
            ideal, perturbed, ideal_why, perturbed_why = score_condition(
                condition, ready, backend, rewards, generated, generation_failures,
                batch_size=settings.batch_size, judge=name)
            result = alignment.pairwise_accuracy(
                ideal, perturbed, ties=settings.ties, confidence=settings.confidence)
            reasons = collections.Counter(w for w in ideal_why + perturbed_why if w is not None)
            result["failure_reasons"] = dict(reasons.most_common())
            results[name][condition] = result
            outcomes = alignment.pair_outcomes(ideal, perturbed, ties=settings.ties)
            for row, pair in enumerate(ready):
                score_lines.append({
                    "judge": name, "condition": condition, "id": pair.example.example_id,
                    "ideal_rating": ideal[row], "perturbed_rating": perturbed[row],
                    "outcome": outcomes[row], "ideal_reason": ideal_why[row],
                    "perturbed_reason": perturbed_why[row],
                })
            logging.info("%s / %s: %s", name, condition, result)

    report = {
        "data": settings.data,
        "pairs": len(ready),
        "excluded": excluded,
        "perturbation": perturbation,
        "generated_rubrics": generated_counts.get("generated"),
        "reference_rubrics": generated_counts.get("generated_reference"),
        "judges": names,
        "judge_specs": [dataclasses.asdict(spec) for spec in specs],
        "conditions": conditions,
        "tie_rule": settings.ties,
        "confidence": settings.confidence,
        "results": results,
    }
    write_json(output_dir / "alignment.json", report)
    markdown = markdown_report(report)
    (output_dir / "alignment.md").write_text(markdown)
    write_jsonl(output_dir / "alignment_scores.jsonl", score_lines)
    series = {
        alignment.CONDITIONS[c].label: [
            (results[n][c]["accuracy"], results[n][c]["ci_low"], results[n][c]["ci_high"])
            for n in names
        ]
        for c in conditions
    }
    plot_accuracy_by_judge(names, series, output_dir / "alignment.png",
                           title=f"Judge alignment ({len(ready)} HealthBench pairs)")
    return report, markdown
