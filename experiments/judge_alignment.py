"""Judge alignment, the paper's Figure 3 (``rar-judge-alignment``).

HealthBench prompts with a physician-written ideal completion become pairs (the ideal answer and
a worse one written once by a generator model and stored for later runs); each judge rates both
answers of every pair under each condition (Figure 3's three lines by default: the implicit judge
with a rubric generated with the ideal answer as reference, with one generated without it, and
Direct-Likert), and a pair is right when the ideal answer is rated higher. Every option is a
config key (``--config.alignment.<key>=``; the section ``alignment`` of
``rar_jax/config/base.py``); the generated rubrics use ``rubric_generation.*``, JAX judges
``judge.*``, HTTP judges ``judge.http.*``. :mod:`rar_jax.eval.judge_alignment_run` describes
every step. Writes ``alignment.json``, ``alignment.md``, ``alignment.png``,
``alignment_scores.jsonl`` and the resolved config (``config.json``) to ``output_dir``.

    rar-judge-alignment \\
        --config.alignment.data=../shared/data/healthbench/oss_eval_first100.jsonl \\
        --config.alignment.limit=5 --config.alignment.generator=smollm2 \\
        --config.alignment.judges=smollm2,http:gpt-4o-mini@https://api.openai.com/v1 \\
        --config.output_dir=runs/alignment
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.eval import judge_alignment_run

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if not config.alignment.data:
        raise app.UsageError("give --config.alignment.data=<HealthBench JSONL or "
                             "tfds:healthbench:...>")
    rar_config.validate(config)
    cli.check_inputs(config, ("alignment.data",))
    cli.check_paths(judge_alignment_run.model_sources(config))
    pairs, excluded = judge_alignment_run.read_pairs(config)  # Every record checked first.
    output_dir = pathlib.Path(config.output_dir)
    cli.write_config(config, output_dir / "config.json")
    _, markdown = judge_alignment_run.run_alignment(config, output_dir, pairs, excluded)
    print(markdown)
    print(f"wrote alignment.json, alignment.md, alignment.png, alignment_scores.jsonl and "
          f"config.json to {output_dir}")


def run() -> None:
    """Console-script entry point (``rar-judge-alignment``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
