"""Score a JSONL of answers with any reward method and judge backend (``rar-judge``).

Every input record holds

- the prompt: ``messages`` (chat list), ``prompt`` (a string, or a chat list as in HealthBench) or
  ``question`` (RaR); the conversation must end with a user turn;
- ``answer``: the answer text to judge;
- what the method needs: a rubric, either RaR ``rubric`` items (native ``"Essential Criteria:
  ..."`` descriptions or the rubric_harness format with ``category`` / ``polarity``) or the
  HealthBench ``rubrics`` list (``criterion``, ``points``); and/or a reference answer
  (``reference``, ``reference_answer``, or HealthBench ``ideal_completions_data``);
- optionally ``id`` (else HealthBench's ``prompt_id``, else ``<file>:<line>``).

The method and judge come from the config (``reward.method``, ``judge.backend``, ``judge.*``,
``reward.*``; ``rubric.pitfall_polarity`` for RaR pitfalls without their own polarity,
``rubric.ablation`` to drop criteria). Every record is read and checked before any judging: bad
records stop the run, each named with its file, line and field (the first 10 are listed).
Records are judged ``--batch_size`` at a time (one reward-function call each, with a progress
bar) and one output line is written per record, in input order:

``{"id", "reward" (null if failed), "failed", "reason" (null unless failed), "rating" (rating
methods: the (expected) 1-10 rating, else null), "verdicts"}``

``verdicts`` (verdict methods) is aligned with the record's rubric criteria: P(true) or a parsed
1/0 per criterion, null where the judgment failed or the criterion was left out by
``rubric.ablation``; for ``rar_predefined`` it is aligned with the fixed predefined rubric; null
for rating methods. A summary (n, mean reward of the scored records, failures and their most
common reasons) is printed at the end. The work is :mod:`rar_jax.judges.answer_scoring`.

    rar-judge --config=configs/base.py --config.reward.method=rar_explicit \\
        --config.judge.backend=http --config.judge.http.base_url=http://127.0.0.1:8000/v1 \\
        --input=records.jsonl --output=scores.jsonl
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from absl import app, flags

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.judges import answer_scoring

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))
_INPUT = flags.DEFINE_string("input", None, "JSONL of records (prompt, answer, rubric/reference).")
_OUTPUT = flags.DEFINE_string("output", None, "JSONL to write one score record per input record.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    64,
    "Records per reward-function call (the JAX judge's forward batch is config judge.batch_size).",
)
_LIMIT = flags.DEFINE_integer("limit", 0, "Judge only the first N records; 0 = all.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError("give --input=records.jsonl and --output=scores.jsonl")
    if _BATCH_SIZE.value < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}")
    config = _CONFIG.value
    rar_config.validate(config)
    cli.check_inputs(config, cli.model_input_keys(config, policy=False))
    records = answer_scoring.read_judge_records(_INPUT.value, config, _LIMIT.value)
    logging.info("read %d records from %s", len(records), _INPUT.value)
    lines = answer_scoring.score_file(config, records, _OUTPUT.value, _BATCH_SIZE.value)
    print(answer_scoring.summary(lines))
    print(f"wrote {len(lines)} score records to {_OUTPUT.value}")


def run() -> None:
    """Console-script entry point (``rar-judge``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
