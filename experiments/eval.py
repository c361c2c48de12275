"""HealthBench and GPQA-Diamond evaluation of a policy (``rar-eval healthbench|gpqa``).

The policy is ``model.*`` (any checkpoint; default the embedded SmolLM2), answering greedily in
batches of ``eval.batch_size`` with at most ``eval.max_new_tokens`` tokens. The judge is
``judge.*``: the in-process JAX judge on ``judge.model_source``, or an OpenAI-compatible server
with ``judge.backend=http``. By default it writes its replies (greedy, at most
``eval.grader_max_tokens`` tokens) whatever ``judge.scoring`` says, because both protocols are
explicit: HealthBench's grader answers ``{"explanation", "criteria_met"}`` per rubric item,
GPQA's verifier Yes or No. ``eval.grader_scoring=verdict_probs`` instead reads each HealthBench
verdict's probability (the same grader, verdict key first; P(true) after ``{"criteria_met": ``)
with the JAX judge (``judge.scoring=verdict_probs``): met when P(true) >=
``eval.grader_threshold``, P(true) kept per criterion. ``--config`` defaults to
``configs/base.py``. The work is :mod:`rar_jax.eval.benchmark_runs`.

``rar-eval healthbench`` (:mod:`rar_jax.eval.healthbench_eval`): prompts from
``eval.healthbench_path`` (JSONL or ``tfds:healthbench...``; the first ``eval.limit``), answers,
per-criterion grading (``eval.grader_scoring``), the official simple-evals scoring (overall, per
axis, per theme, bootstrap std over ``healthbench.bootstrap_samples`` resamples seeded by
``seed``). A failed grading is left out of its example's score and counted (see that module).
Writes ``healthbench_eval.json``, ``healthbench_eval.md`` and ``healthbench_answers.jsonl``; the
reports name the grading mode and threshold, and each criterion's record has ``criteria_met``,
``p_true`` and ``verdict_mass`` (verdict mode) to re-threshold.

``rar-eval gpqa`` (:mod:`rar_jax.eval.gpqa_eval`): questions from ``eval.gpqa_path`` (official
CSV, or ``tfds:gpqa_diamond...``), ``eval.gpqa_runs`` runs with choice orders seeded by ``seed``,
boxed-letter extraction, the judge's Yes/No verifier for answers without a letter
(``eval.gpqa_verifier``; the HTTP model ``eval.gpqa_verifier_model`` when set), mean accuracy
over runs with a 95% interval. Writes
``gpqa_eval.json``, ``gpqa_eval.md`` and ``gpqa_answers.jsonl``.

    rar-eval healthbench --config=configs/base.py \\
        --config.eval.healthbench_path=../shared/data/healthbench/oss_eval_first100.jsonl \\
        --config.eval.limit=5 --config.output_dir=runs/eval_healthbench
    rar-eval healthbench --config=configs/base.py \\
        --config.eval.healthbench_path=../shared/data/healthbench/oss_eval_first100.jsonl \\
        --config.eval.limit=5 --config.eval.grader_scoring=verdict_probs \\
        --config.eval.grader_threshold=0.5 --config.output_dir=runs/eval_healthbench_verdict
    rar-eval gpqa --config=configs/base.py --config.eval.gpqa_path=gpqa_diamond.csv \\
        --config.judge.backend=http --config.judge.http.base_url=http://judge-host:8000/v1
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import jax
from absl import app

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import benchmark_runs

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))
BENCHMARKS = benchmark_runs.BENCHMARKS


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[1] not in BENCHMARKS:
        raise app.UsageError(
            f"usage: rar-eval {{{'|'.join(BENCHMARKS)}}} --config=...; got {list(argv[1:])}"
        )
    benchmark = argv[1]
    config = _CONFIG.value
    rar_config.validate(config, num_devices=jax.device_count())
    rar_config.enable_compilation_cache(config)
    benchmark_runs.data_path(config, benchmark)  # Set at all?
    cli.check_inputs(config, (benchmark_runs.DATA_KEYS[benchmark][0],)
                     + cli.model_input_keys(config))
    output_dir = pathlib.Path(config.output_dir)
    run = benchmark_runs.run_healthbench if benchmark == "healthbench" else benchmark_runs.run_gpqa
    report, markdown = run(config, output_dir)
    print(markdown)
    print(f"Wrote {benchmark}_eval.json, {benchmark}_eval.md and {benchmark}_answers.jsonl to "
          f"{output_dir} ({report['seconds']:.1f} s)")


def run() -> None:
    """Console-script entry point (``rar-eval``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
