"""Judge alignment, the paper's Figure 3 (``rar-judge-alignment``).

1. **Pairs.** HealthBench prompts (``--data``: a JSONL file or ``tfds:healthbench...:<split>``)
   with a physician-written ideal completion; the first ``--limit`` of them (0 = all). Prompts
   without an ideal completion, and repeated prompt ids, are counted and left out.
2. **Perturbations.** A worse answer per prompt, written ONCE by ``--generator`` with the
   perturbation prompt (:func:`rar_jax.judges.prompts.perturbation_prompt`) and stored in
   ``--perturbations`` (JSONL; default ``<output_dir>/perturbations.jsonl``). A stored answer is
   reused when it was made from the same ideal answer (SHA-256 digest); only missing ones are
   generated, and each batch is appended as soon as it is done. Empty replies and replies equal
   to the ideal answer are failures: the pair is left out and counted (and retried next run).
3. **Conditions** (``--conditions``; see ``rar_jax.eval.judge_alignment.CONDITIONS``); the
   default is the paper's three lines: ``reference_rubric`` = the implicit judge
   (``rar_implicit``) with a rubric generated WITH the ideal completion as reference ("expert
   guidance"), ``generated_rubric`` = the same with a rubric generated WITHOUT it, ``likert`` =
   ``direct_likert``, no rubric. ``rubric`` (the physician rubric) is an extra condition.
   Rubrics come from ``--rubric_generator`` (default: the generator) through
   :func:`rar_jax.judges.rubric_generation.generate_rubrics` (validation, retries), stored in
   ``--generated_rubrics`` (without reference; default ``<output_dir>/generated_rubrics.jsonl``)
   and ``<that file without .jsonl>_reference.jsonl`` and reused likewise. A prompt whose rubric
   stays invalid after the last attempt is a failed pair of that condition (counted, with the
   reason).
4. **Judges** (``--judges``, comma-separated): ``smollm2``, a ``.gguf`` file or an HF checkpoint
   directory (the in-process JAX judge with the config's ``judge.*`` options: scoring, batch
   size, ...), or ``http:<model>@<base_url>`` (an OpenAI-compatible server with the config's
   ``judge.http.*`` options). Each answer is rated on its own (1-10; the expected rating under
   verdict-probability scoring); a pair is correct when the ideal answer is rated higher
   (``--ties``: a tie counts wrong, the paper's rule and the default, or half; the tie rate of
   every line is reported). Failed judgments are counted, never scored.
5. **Outputs** in ``--output_dir``: ``alignment.json`` (per judge x condition: pairs, scored,
   failed, wins, ties, losses, accuracy, Wilson interval, failure reasons; plus the data and
   generation counts), ``alignment.md`` (the table), ``alignment.png`` (accuracy against judge,
   one line per condition) and ``alignment_scores.jsonl`` (every rating).

    rar-judge-alignment --data=../shared/data/healthbench/oss_eval_first100.jsonl --limit=5 \\
        --generator=smollm2 --judges=smollm2,http:gpt-4o-mini@https://api.openai.com/v1 \\
        --output_dir=runs/alignment
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
from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import judge_alignment as alignment
from rar_jax.io import append_jsonl, write_json, write_jsonl

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))
_DATA = flags.DEFINE_string(
    "data", None, "HealthBench JSONL, or tfds:healthbench[/<config>]:<split>."
)
_LIMIT = flags.DEFINE_integer("limit", 0, "Use the first N prompts with an ideal answer; 0 = all.")
_GENERATOR = flags.DEFINE_string(
    "generator",
    "smollm2",
    "Writes the perturbed answers: a JAX model source or http:<model>@<url>.",
)
_PERTURBATIONS = flags.DEFINE_string(
    "perturbations",
    None,
    "JSONL store of perturbed answers; default <output_dir>/perturbations.jsonl.",
)
_PERTURB_MAX_TOKENS = flags.DEFINE_integer(
    "perturb_max_tokens", 1024, "Most tokens per perturbed answer."
)
_PERTURB_TEMPERATURE = flags.DEFINE_float(
    "perturb_temperature", 0.0, "Temperature of the perturbation (0 = greedy)."
)
_RUBRIC_GENERATOR = flags.DEFINE_string(
    "rubric_generator", None, "Writes the reference-free rubrics; default --generator."
)
_GENERATED_RUBRICS = flags.DEFINE_string(
    "generated_rubrics",
    None,
    "JSONL store of the generated rubrics; default <output_dir>/generated_rubrics.jsonl.",
)
_RUBRIC_MAX_ATTEMPTS = flags.DEFINE_integer(
    "rubric_max_attempts", 3, "Rubric-generation attempts per prompt, the first included."
)
_RUBRIC_MAX_TOKENS = flags.DEFINE_integer("rubric_max_tokens", 2048, "Most tokens per rubric.")
_RUBRIC_MIN_ITEMS = flags.DEFINE_integer("rubric_min_items", 7, "Fewest rubric items accepted.")
_RUBRIC_MAX_ITEMS = flags.DEFINE_integer("rubric_max_items", 20, "Most rubric items accepted.")
_JUDGES = flags.DEFINE_list(
    "judges", ["smollm2"], "Judges: JAX model sources and/or http:<model>@<base_url>."
)
_CONDITIONS = flags.DEFINE_list(
    "conditions", list(alignment.DEFAULT_CONDITIONS),
    "Conditions, from: " + ", ".join(alignment.CONDITIONS)
)
_TIES = flags.DEFINE_enum(
    "ties", "wrong", list(alignment.TIE_RULES), "A tied pair counts wrong (the paper) / half."
)
_CONFIDENCE = flags.DEFINE_float("confidence", 0.95, "Coverage of the Wilson interval.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Pairs per judge / generator call.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder of the outputs; default config.output_dir."
)


@dataclasses.dataclass
class Pair:
    """One prompt's ideal and perturbed answers (``perturbed`` None until made)."""

    example: Any
    perturbed: str | None = None
    failure: str | None = None


class Backends:
    """Judge backends by spec (``rar_jax.judges.factory.build_judge`` loads each JAX model once)."""

    def __init__(self, config: Any):
        self.config = config

    def get(self, spec: alignment.ModelSpec) -> Any:
        """The backend of ``spec`` with the config's ``judge.*`` options."""
        from rar_jax.judges.factory import build_judge

        config = copy.deepcopy(self.config)
        if spec.kind == "http":
            config.judge.backend = "http"
            config.judge.http.base_url = spec.base_url
            config.judge.http.model = spec.model
        else:
            config.judge.backend = "jax"
            config.judge.model_source = spec.source
        return build_judge(config)


def make_perturbations(
    pairs: Sequence[Pair], store: pathlib.Path, generator: str, backends: Backends, *,
    max_tokens: int, temperature: float, seed: int, batch_size: int, templates_dir: str | None,
) -> dict[str, Any]:
    """Fills ``pair.perturbed`` from the store, generating (and appending) the missing ones.

    Returns the counts of the perturbation step (reused, generated, failed, reasons).
    """
    import tqdm

    from rar_jax.judges import prompts

    stored = alignment.read_perturbations(store) if store.is_file() else {}
    missing = []
    for pair in pairs:
        example = pair.example
        record = stored.get(example.example_id)
        digest = alignment.text_digest(example.reference)
        if record is not None and record["ideal_sha256"] == digest:
            pair.perturbed = record["perturbed"]
        else:
            missing.append(pair)
    reused = len(pairs) - len(missing)
    if missing:
        spec = alignment.parse_model_spec(generator)
        backend = backends.get(spec)
        with tqdm.tqdm(total=len(missing), desc="perturbing", unit="answer") as bar:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                messages = [
                    prompts.perturbation_prompt(
                        p.example.conversation, p.example.reference, templates_dir=templates_dir
                    ).messages
                    for p in chunk
                ]
                result = backend.generate_texts(
                    messages, max_tokens=max_tokens, temperature=temperature, seed=seed
                )
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
                    records.append(
                        alignment.perturbation_record(
                            pair.example.example_id, pair.example.reference, answer, generator
                        )
                    )
                append_jsonl(store, records)
                bar.update(len(chunk))
    reasons = collections.Counter(p.failure for p in pairs if p.failure is not None)
    return {
        "generator": generator,
        "store": str(store),
        "reused": reused,
        "generated": sum(1 for p in missing if p.perturbed is not None),
        "failed": sum(reasons.values()),
        "failure_reasons": dict(reasons.most_common()),
    }


def make_generated_rubrics(
    pairs: Sequence[Pair], store: pathlib.Path, generator: str, backends: Backends,
    config: Any, *, seed: int, batch_size: int, with_reference: bool,
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Rubrics generated with or without the ideal completion as reference, from the store or
    generated (and appended).

    Returns ({id: Rubric}, {id: failure reason}, counts).
    """
    from rar_jax.judges.rubric_generation import (
        Question,
        failure_record,
        generate_rubrics,
        question_text,
        rubric_record,
    )
    from rar_jax.io import iter_jsonl
    from rar_jax.rubrics.readers import rubric_from_rar_record

    rubrics: dict[str, Any] = {}
    if store.is_file():
        for line, record in iter_jsonl(store):
            rubrics[str(record.get("id"))] = rubric_from_rar_record(
                record, pitfall_polarity=None, source=f"{store}:{line}"
            )
    wanted = [p.example for p in pairs]
    reused = sum(1 for e in wanted if e.example_id in rubrics)
    questions = [
        Question(f"{e.example_id}", {"id": e.example_id}, question_text(e.conversation),
                 e.reference if with_reference else None)
        for e in wanted
        if e.example_id not in rubrics
    ]
    failures: dict[str, str] = {}
    if questions:
        backend = backends.get(alignment.parse_model_spec(generator))
        generate_rubrics(
            backend,
            questions,
            domain="medical",
            templates_dir=config.judge.templates_dir or None,
            max_attempts=_RUBRIC_MAX_ATTEMPTS.value,
            max_tokens=_RUBRIC_MAX_TOKENS.value,
            temperature=0.0,
            retry_temperature=0.8,
            seed=seed,
            batch_size=batch_size,
            min_items=_RUBRIC_MIN_ITEMS.value,
            max_items=_RUBRIC_MAX_ITEMS.value,
            pitfall_polarity=config.rubric.pitfall_polarity,
        )
        valid = [q for q in questions if q.items is not None]
        append_jsonl(store, [rubric_record(q) for q in valid])
        failed = [q for q in questions if q.items is None]
        failure_path = store.with_name(store.name.removesuffix(".jsonl") + ".failures.jsonl")
        failure_path.unlink(missing_ok=True)
        append_jsonl(failure_path, [failure_record(q) for q in failed])
        for q in valid:
            record = rubric_record(q)
            rubrics[q.record["id"]] = rubric_from_rar_record(
                record, pitfall_polarity=None, source=f"{store}:{q.record['id']}"
            )
        for q in failed:
            failures[q.record["id"]] = (
                f"no valid generated rubric after {len(q.reasons)} attempts (last: "
                f"{q.reasons[-1] if q.reasons else 'unknown'})"
            )
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
        if spec.rubric in ("generated", "generated_reference"):
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
                pairs[r].perturbed for r in chunk
            ]
            output = compute_rewards(
                spec.method, chunk_examples + chunk_examples, answers, backend, settings
            )
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


def _check_flags() -> list[str]:
    unknown = [c for c in _CONDITIONS.value if c not in alignment.CONDITIONS]
    if unknown or not _CONDITIONS.value:
        raise app.UsageError(
            f"--conditions: unknown {unknown}; choose from {', '.join(alignment.CONDITIONS)}"
        )
    if not _JUDGES.value:
        raise app.UsageError("--judges: give at least one judge")
    for flag in (_PERTURB_MAX_TOKENS, _RUBRIC_MAX_ATTEMPTS, _RUBRIC_MAX_TOKENS, _RUBRIC_MIN_ITEMS,
                 _BATCH_SIZE):
        if flag.value < 1:
            raise app.UsageError(f"--{flag.name} must be >= 1, got {flag.value}")
    if _LIMIT.value < 0:
        raise app.UsageError(f"--limit must be >= 0 (0 = all), got {_LIMIT.value}")
    if not 0 < _CONFIDENCE.value < 1:
        raise app.UsageError(f"--confidence must be in (0, 1), got {_CONFIDENCE.value}")
    if _PERTURB_TEMPERATURE.value < 0:
        raise app.UsageError("--perturb_temperature must be >= 0")
    return list(dict.fromkeys(_CONDITIONS.value))


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _DATA.value:
        raise app.UsageError("give --data=<HealthBench JSONL or tfds:healthbench:...>")
    conditions = _check_flags()
    config = _CONFIG.value
    try:
        rar_config.validate(config)
        specs = [alignment.parse_model_spec(spec) for spec in _JUDGES.value]
        alignment.parse_model_spec(_GENERATOR.value)
        from rar_jax.data.sources import load_examples

        examples = load_examples(_DATA.value, "healthbench", rubric=config.rubric,
                                 data_dir=config.data.tfds_data_dir or None)
    except (OSError, ValueError) as error:
        raise SystemExit(f"rar-judge-alignment: {error}") from None
    usable, excluded = alignment.alignment_examples(examples)
    if _LIMIT.value:
        usable = usable[: _LIMIT.value]
    if not usable:
        raise SystemExit(f"rar-judge-alignment: {_DATA.value}: no prompt with an ideal completion")
    names = [spec.name for spec in specs]
    names = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    output_dir = pathlib.Path(_OUTPUT_DIR.value or config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    templates_dir = config.judge.templates_dir or None
    backends = Backends(config)

    pairs = [Pair(example) for example in usable]
    perturbation = make_perturbations(
        pairs, pathlib.Path(_PERTURBATIONS.value or output_dir / "perturbations.jsonl"),
        _GENERATOR.value, backends, max_tokens=_PERTURB_MAX_TOKENS.value,
        temperature=_PERTURB_TEMPERATURE.value, seed=config.seed, batch_size=_BATCH_SIZE.value,
        templates_dir=templates_dir,
    )
    ready = [pair for pair in pairs if pair.perturbed is not None]
    if not ready:
        raise SystemExit(f"rar-judge-alignment: no perturbed answer could be made: {perturbation}")
    store = pathlib.Path(_GENERATED_RUBRICS.value or output_dir / "generated_rubrics.jsonl")
    stores = {"generated": store,
              "generated_reference": store.with_name(
                  store.name.removesuffix(".jsonl") + "_reference.jsonl")}
    generated, generation_failures, generated_counts = {}, {}, {}
    for kind in stores:
        if any(alignment.CONDITIONS[c].rubric == kind for c in conditions):
            generated[kind], generation_failures[kind], generated_counts[kind] = (
                make_generated_rubrics(
                    ready, stores[kind], _RUBRIC_GENERATOR.value or _GENERATOR.value, backends,
                    config, seed=config.seed, batch_size=_BATCH_SIZE.value,
                    with_reference=kind == "generated_reference",
                ))

    from rar_jax.eval.plots import plot_accuracy_by_judge
    from rar_jax.judges.rewards import reward_settings

    settings = reward_settings(config)
    results: dict[str, dict[str, Any]] = {}
    score_lines = []
    for name, spec in zip(names, specs, strict=True):
        backend = backends.get(spec)
        results[name] = {}
        for condition in conditions:
            ideal, perturbed, ideal_why, perturbed_why = score_condition(
                condition, ready, backend, settings, generated, generation_failures,
                batch_size=_BATCH_SIZE.value, judge=name,
            )
            result = alignment.pairwise_accuracy(
                ideal, perturbed, ties=_TIES.value, confidence=_CONFIDENCE.value
            )
            reasons = collections.Counter(w for w in ideal_why + perturbed_why if w is not None)
            result["failure_reasons"] = dict(reasons.most_common())
            results[name][condition] = result
            outcomes = alignment.pair_outcomes(ideal, perturbed, ties=_TIES.value)
            for row, pair in enumerate(ready):
                score_lines.append({
                    "judge": name, "condition": condition, "id": pair.example.example_id,
                    "ideal_rating": ideal[row], "perturbed_rating": perturbed[row],
                    "outcome": outcomes[row], "ideal_reason": ideal_why[row],
                    "perturbed_reason": perturbed_why[row],
                })
            logging.info("%s / %s: %s", name, condition, result)

    report = {
        "data": _DATA.value,
        "pairs": len(ready),
        "excluded": excluded,
        "perturbation": perturbation,
        "generated_rubrics": generated_counts.get("generated"),
        "reference_rubrics": generated_counts.get("generated_reference"),
        "judges": names,
        "judge_specs": [dataclasses.asdict(spec) for spec in specs],
        "conditions": conditions,
        "tie_rule": _TIES.value,
        "confidence": _CONFIDENCE.value,
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
    print(markdown)
    print(f"wrote alignment.json, alignment.md, alignment.png and alignment_scores.jsonl to "
          f"{output_dir}")


def run() -> None:
    """Console-script entry point (``rar-judge-alignment``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
