"""The generated-rubric files of Tables 1-3 (``rar-rubrics``), one config per file.

The argument is ``<generator>.<ref|noref>``: a generator of ``common.RUBRIC_GENERATORS`` and
whether it sees the ideal completion. The paper's seven files are ``o3_mini.ref`` (Table 1
synthetic = Table 3 with reference, and Table 2) and ``<g>.noref`` for ``o3_mini``, ``gpt4o``,
``gpt4o_mini``, ``qwen72b``, ``qwen32b`` and ``qwen7b``. Each reads the HealthBench training
pool (``tfds:healthbench:train``, built once by ``rar-build-dataset --dataset=healthbench``;
records without an ideal completion are left out, ``rubric_generation.require_reference``) and
writes ``common.rubric_file(generator, with_reference)``, where the paper configs read it:

    rar-rubrics --config=configs/paper/rubrics/healthbench_train.py:o3_mini.ref
    rar-rubrics --config=configs/paper/rubrics/healthbench_train.py:qwen7b.noref \\
        --config.judge.http.base_url=http://qwen-host:8000/v1

The OpenAI generators go to ``https://api.openai.com/v1`` (key in ``$OPENAI_API_KEY``); the Qwen
ones to an OpenAI-compatible server of ``Qwen/Qwen2.5-<size>-Instruct`` (vLLM, or
``rar-serve-judge``) at ``$RAR_GENERATOR_URL`` (default ``http://127.0.0.1:8000/v1``). o3-mini
is a reasoning model: its replies may take 16,384 tokens, hidden reasoning included. Replies are
cached in ``cache/rubrics``; the paper's generator prompt is used (``judge.templates_dir =
"paper"``). ``rar-rubrics`` writes the resolved config beside the output.
"""

import os
import pathlib
import runpy

from rar_jax.config import base_config

_COMMON = runpy.run_path(str(pathlib.Path(__file__).parents[1] / "common.py"))
OPENAI_URL = "https://api.openai.com/v1"
OPENAI_GENERATORS = ("o3_mini", "gpt4o", "gpt4o_mini")
REASONING_GENERATORS = ("o3_mini",)


def get_config(argument: str = "o3_mini.ref"):
    """``<generator>.<ref|noref>`` -> the rar-rubrics config of that file."""
    generator, _, reference = argument.partition(".")
    if generator not in _COMMON["RUBRIC_GENERATORS"] or reference not in ("ref", "noref"):
        raise ValueError(f"expected <generator>.<ref|noref> with a generator of "
                         f"{', '.join(_COMMON['RUBRIC_GENERATORS'])}; got {argument!r}")
    config = base_config()
    http = config.judge.http
    config.judge.backend = "http"
    config.judge.templates_dir = "paper"
    http.model = _COMMON["RUBRIC_GENERATORS"][generator]
    http.base_url = (OPENAI_URL if generator in OPENAI_GENERATORS
                     else os.environ.get("RAR_GENERATOR_URL", "http://127.0.0.1:8000/v1"))
    http.timeout_s = 300.0
    http.cache_dir = "cache/rubrics"
    http.reasoning_model = generator in REASONING_GENERATORS
    settings = config.rubric_generation
    settings.input = "tfds:healthbench:train"
    settings.domain = "medical"
    settings.use_reference = reference == "ref"
    settings.require_reference = True
    settings.output = _COMMON["rubric_file"](generator, reference == "ref")
    if generator in REASONING_GENERATORS:
        settings.max_tokens = 16384
    return config
