"""Generate rubrics for a JSONL of questions with any judge backend (``rar-rubrics``).

Every option is a config key (``--config.rubric_generation.<key>=``; the section
``rubric_generation`` of ``rar_jax/config/base.py``): the input (a JSONL of questions or
HealthBench records, or a built ``tfds:`` data set), the domain of the prompt, whether the
reference answer is shown or required, attempts, temperatures, item limits. The judge that writes
the rubrics is ``judge.*``; attempt 1 is seeded with ``seed``. :mod:`rar_jax.judges.rubric_files`
describes the records, the retries and the outputs: the valid rubrics as RaR records
(``rubric_generation.output``), the failures with the reason of every attempt
(``<output>.failures.jsonl``), their statistics (``<output>.stats.json``) and the resolved
config (``<output>.config.json``). ``rubric_generation.stats_only`` generates nothing: it writes
the rubric statistics of the input (``data.format`` records or ``tfds:``) to the output, for
``rar-tables --rubric_stats``.

A rubric is a long reply: against a slow server (``rar-serve-judge`` on CPU answers one request
at a time) raise ``--config.judge.http.timeout_s`` (default 60 s per attempt).

    rar-rubrics --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=http://127.0.0.1:8000/v1 \\
        --config.rubric_generation.input=questions.jsonl \\
        --config.rubric_generation.output=rubrics.jsonl --config.rubric_generation.domain=science

HealthBench training prompts (Tables 1-3; ``configs/paper/common.py``, ``rubric_file``):

    rar-rubrics --config=configs/base.py --config.judge.backend=http \\
        --config.judge.http.base_url=https://api.openai.com/v1 --config.judge.http.model=gpt-4o \\
        --config.rubric_generation.input=tfds:healthbench:train \\
        --config.rubric_generation.output=rubrics/healthbench_train.gpt4o.noref.jsonl \\
        --config.rubric_generation.use_reference=False \\
        --config.rubric_generation.require_reference=True
    rar-rubrics --config.rubric_generation.stats_only=True \\
        --config.rubric_generation.input=tfds:rar_medicine:train \\
        --config.rubric_generation.output=rubric_stats/rar_medicine.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import app

from rar_jax import cli
from rar_jax import config as rar_config
from rar_jax.judges import rubric_files

_CONFIG = rar_config.define_config_flag(str(rar_config.BASE_CONFIG_PATH))


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    settings = config.rubric_generation
    if not settings.input or not settings.output:
        raise app.UsageError("give --config.rubric_generation.input=questions.jsonl (or "
                             "tfds:<name>:<split>) and --config.rubric_generation.output=...")
    rar_config.validate(config)
    inputs = ["rubric_generation.input"]
    if not settings.stats_only:
        inputs += cli.model_input_keys(config, policy=False)
    cli.check_inputs(config, inputs)
    paths = rubric_files.rubric_paths(settings)
    if settings.stats_only:
        print(json.dumps(rubric_files.rubric_statistics_file(config), indent=2))
        cli.write_config(config, paths.config)
        print(f"wrote the statistics to {paths.output} and the config to {paths.config}")
        return
    questions = rubric_files.config_questions(config)  # Every record checked first.
    cli.write_config(config, paths.config)
    files = rubric_files.generate_rubric_file(config, questions)
    valid, failed = len(files.valid), len(files.failed)
    first = sum(1 for q in files.valid if not q.reasons)
    print(f"rubrics for {len(files.questions)} questions: {valid} valid ({first} on the first "
          f"attempt, {valid - first} after retries), {failed} failed after "
          f"{settings.max_attempts} attempts")
    print(f"wrote {valid} rubrics to {paths.output}, {failed} failures to {paths.failures}, "
          f"their statistics to {paths.statistics} and the config to {paths.config}")


def run() -> None:
    """Console-script entry point (``rar-rubrics``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
