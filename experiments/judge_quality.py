"""Judge quality on labels nobody here wrote (``rar-judge-quality``).

Scores (answer, criterion) pairs with the configured judge's explicit per-criterion check and
reports its agreement with

- the per-criterion grader verdicts of the graded HealthBench fixture (m42's
  ``judge_responses_100.jsonl``; CC BY-NC, evaluation only), and
- the physicians' labels of K-QA's ``NLI_medical_annotator.csv`` (is the statement supported by
  the answer; Entailment = true, Neutral and Contradiction = false, majority of three; see
  :mod:`rar_jax.eval.judge_quality`).

The judge is whatever ``judge.*`` says: the in-process JAX judge with any checkpoint
(``judge.model_source``; verdict probabilities, or ``judge.scoring=generate``) or an
OpenAI-compatible server (``judge.backend=http``). The probability is P(true) (a parsed 0/1 for
generating judges), the prediction P(true) >= 0.5. Pairs the judge could not score are counted
(``failed``) and listed with their reasons; the metrics are over the scored pairs.

Writes to ``--output_dir``: ``judge_quality.json`` (per data set and subgroup: n, failed,
accuracy, precision, recall, F1, Cohen's kappa, ROC AUC, positive rates of labels and
predictions, confusion counts), ``judge_quality.md`` (the same as tables) and
``judge_quality_pairs.jsonl`` (every pair with its label, P(true), prediction and failure
reason). The work is :mod:`rar_jax.eval.judge_quality_run`.

    rar-judge-quality --config=configs/base.py \\
        --healthbench_path=../shared/data/healthbench_graded_m42/judge_responses_100.jsonl \\
        --kqa_path=../shared/data/kqa/NLI_medical_annotator.csv \\
        --limit_healthbench=160 --limit_kqa=200 --output_dir=runs/judge_quality
    rar-judge-quality --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://judge-host:8000/v1 --config.judge.http.model=judge ...
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

import jax
from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import judge_quality, judge_quality_run

_CONFIG = rar_config.define_config_flag()
_HEALTHBENCH_PATH = flags.DEFINE_string(
    "healthbench_path",
    None,
    "Graded HealthBench JSONL (m42 layout); default config.healthbench.graded_path; '' skips it.",
)
_KQA_PATH = flags.DEFINE_string(
    "kqa_path", "", "K-QA NLI_medical_annotator.csv; '' skips the K-QA table."
)
_LIMIT_HEALTHBENCH = flags.DEFINE_integer(
    "limit_healthbench", 0, "Score the first N HealthBench pairs (file order); 0 = all."
)
_LIMIT_KQA = flags.DEFINE_integer("limit_kqa", 0, "Score the first N K-QA pairs; 0 = all.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder for the reports; default config.output_dir."
)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    rar_config.validate(config, num_devices=jax.device_count())
    for flag in (_LIMIT_HEALTHBENCH, _LIMIT_KQA):
        if flag.value < 0:
            raise app.UsageError(f"--{flag.name} must be >= 0 (0 = all), got {flag.value}")
    healthbench_path = _HEALTHBENCH_PATH.value
    if healthbench_path is None:
        healthbench_path = config.healthbench.graded_path
    if not healthbench_path and not _KQA_PATH.value:
        raise app.UsageError(
            "nothing to score: give --healthbench_path (or config.healthbench.graded_path) "
            "and/or --kqa_path"
        )
    pair_sets: dict[str, judge_quality.PairSet] = {}
    if healthbench_path:
        pair_sets["healthbench"] = judge_quality.healthbench_pairs(
            healthbench_path, limit=_LIMIT_HEALTHBENCH.value
        )
    if _KQA_PATH.value:
        pair_sets["kqa"] = judge_quality.kqa_pairs(_KQA_PATH.value, limit=_LIMIT_KQA.value)
    for name, pair_set in pair_sets.items():
        logging.info("%s: %d pairs from %s", name, len(pair_set.pairs), pair_set.source)

    output_dir = pathlib.Path(_OUTPUT_DIR.value or config.output_dir)
    _, markdown = judge_quality_run.run_judge_quality(config, pair_sets, output_dir)
    print(markdown)
    print(
        f"Wrote judge_quality.json, judge_quality.md and judge_quality_pairs.jsonl to {output_dir}"
    )


def run() -> None:
    """Console-script entry point (``rar-judge-quality``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
