"""The paper's experiments as configs: shared hyper-parameters and one spec per experiment.

Every file beside this one is a thin wrapper: ``get_config(variant)`` returns
``experiment_config(<its name>, variant)``. Two variants:

- ``full`` (the default): the paper's setup (PAPER.md section 4). Policy Qwen2.5-7B (base) from
  the HF checkpoint directory in ``$RAR_POLICY_DIR`` (default ``checkpoints/Qwen2.5-7B``), GRPO
  with 16 answers per prompt and 96 prompts per step (1,536 rows; see
  :data:`PAPER_PROMPTS_PER_STEP`), lr 5e-6 constant after a 10 % linear warm-up, temperature 1.0,
  a context of 3,584 tokens (prompt <= 1,024 + answer <= 2,560), 300 steps, judge gpt-4o-mini
  over an OpenAI-compatible HTTP API (``$RAR_JUDGE_URL``, default ``https://api.openai.com/v1``;
  key in ``$OPENAI_API_KEY``), Table 11's Qwen judges in-process on their own devices
  (:data:`LOCAL_JUDGES`). Data from built TFDS data sets (``rar-build-dataset``:
  ``tfds:rar_medicine:train`` ...) and, for the rubric ablations, from JSONL files of generated
  rubrics in ``$RAR_RUBRICS_DIR`` (default ``rubrics``; see :func:`rubric_file`).
- ``rows96``: ``full`` with the other reading of the paper's "batch 96": 6 prompts x 16 answers
  = 96 rows per step (writes to ``runs/paper_rows96/<name>``).
- ``small``: the same experiment on 2 CPU cores: the embedded SmolLM2-135M-Instruct as policy and
  in-process JAX judge, the sample records of ``../shared/data``, 2 prompts x 4 answers of at
  most 64 tokens, 4 steps, held-out rewards at the start and the end.

    rar-train --config=configs/paper/medicine_rar_implicit.py
    rar-train --config=configs/paper/medicine_rar_implicit.py:small
    rar-train --config=configs/paper/medicine_rar_implicit.py:rows96
    rar-train --config=configs/paper/table3_qwen7b_noref.py --config.judge.http.base_url=...

What the paper does not give (KL coefficient, clip range, loss aggregation, prompt template) is
left at ``configs/base.py``'s defaults. Assumptions where the paper is silent are marked
"assumed" in :data:`EXPERIMENTS`. Each run writes to ``runs/paper/<name>`` (``runs/paper_small/
<name>`` for ``small``); ``rar-tables`` finds an experiment's run by that folder name.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from ml_collections import config_dict

from rar_jax.config import base_config
from rar_jax.judges.prompts import PAPER_PROMPTS

# Where the small variant's sample data lives: ../shared/data beside the repository root.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = pathlib.Path(os.environ.get("RAR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

VARIANTS = ("full", "rows96", "small")

# The paper's batch: "16 rollouts per prompt, batch 96", read as 96 prompts x 16 rollouts = 1,536
# rows per step (300 steps x 96 prompts = 1.6 passes over RaR-Medicine's 17,926 training prompts;
# 6 prompts would see 10% of them). The other reading, 6 x 16 = 96 rows, is the `rows96` variant.
PAPER_PROMPTS_PER_STEP = 96
ROWS96_PROMPTS_PER_STEP = 6
# The paper's context is 3,584 tokens for prompt and answer together; the split is ours.
PAPER_CONTEXT = 3584
PAPER_MAX_PROMPT = 1024

# Judges of the paper (Table 11 compares sizes): name -> model name sent to the HTTP API.
JUDGE_MODELS = {
    "gpt4o_mini": "gpt-4o-mini",
    "qwen32b": "Qwen/Qwen2.5-32B-Instruct",
    "qwen14b": "Qwen/Qwen2.5-14B-Instruct",
    "qwen7b": "Qwen/Qwen2.5-7B-Instruct",
}
# Table 11's Qwen judges run in-process (jax backend) on their own devices of the node, from the
# HF checkpoint directory $RAR_CHECKPOINTS_DIR/<dir> (default checkpoints/<dir>): name -> (dir,
# devices). Devices are ours: bf16 compute over f32 parameters, the 32B judge on 4 of 8 GPUs.
LOCAL_JUDGES = {
    "qwen32b": ("Qwen2.5-32B-Instruct", 4),
    "qwen14b": ("Qwen2.5-14B-Instruct", 2),
    "qwen7b": ("Qwen2.5-7B-Instruct", 2),
}
# Rubric generators of Table 3: name -> the model (for file names and documentation).
RUBRIC_GENERATORS = {
    "gpt4o": "gpt-4o",
    "gpt4o_mini": "gpt-4o-mini",
    "o3_mini": "o3-mini",
    "qwen72b": "Qwen/Qwen2.5-72B-Instruct",
    "qwen32b": "Qwen/Qwen2.5-32B-Instruct",
    "qwen7b": "Qwen/Qwen2.5-7B-Instruct",
}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Training data of an experiment in both variants.

    Attributes:
        format: record layout (``data.format``): rar or healthbench.
        train_path: full variant: a ``tfds:`` location or a JSONL file.
        eval_path: full variant: held-out prompts ("" = ``eval_size`` drawn from train_path).
        eval_size: full variant: held-out prompts drawn from the training data.
        small_path: small variant: a file of ``../shared/data`` (relative to it).
        small_eval_size: small variant: held-out prompts drawn from ``small_path``.
        pitfall_polarity: polarity of pitfalls without an item-level one (PAPER.md section 2:
            Medicine pitfalls describe failures, Science pitfalls what to avoid).
    """

    format: str
    train_path: str
    eval_path: str = ""
    eval_size: int = 0
    small_path: str = ""
    small_eval_size: int = 1
    pitfall_polarity: str = "negative"


def rubric_file(generator: str, with_reference: bool) -> str:
    """The JSONL of rubrics generated for the HealthBench training prompts (``rar-rubrics``).

    ``$RAR_RUBRICS_DIR/healthbench_train.<generator>.<ref|noref>.jsonl``: one RaR-format record
    per ``tfds:healthbench:train`` prompt (HealthBench without HealthBench-1k) that got a valid
    rubric: ``question`` = the HealthBench conversation (the trainer sees the same prompt as
    with the physician rubrics), ``id`` = ``prompt_id``, ``example_tags``, the generated
    ``rubric``; ``reference_answer`` = the ideal completion for ``ref`` files (where the prompt
    has one), "" for ``noref`` files. Made once per file (seven files: ``o3_mini`` ``ref`` and
    ``noref``, and ``noref`` for ``gpt4o``, ``gpt4o_mini``, ``qwen72b``, ``qwen32b``,
    ``qwen7b``). First build the data set (once), then run ``rar-rubrics`` per file:

        rar-build-dataset --dataset=healthbench \\
            --manual_dir=<folder with simple-evals' HealthBench JSONL files> \\
            --data_dir=$TFDS_DATA_DIR
        # Table 1 (synthetic), Table 2 (all rows), Table 3 (o3-mini with reference):
        rar-rubrics --config=configs/base.py --config.judge.backend=http \\
            --config.judge.http.base_url=https://api.openai.com/v1 \\
            --config.judge.http.model=o3-mini --config.judge.http.reasoning_model=true \\
            --config.judge.http.timeout_s=300 --config.judge.http.cache_dir=cache/rubrics \\
            --input=tfds:healthbench:train --domain=medical --use_reference --max_tokens=16384 \\
            --output=$RAR_RUBRICS_DIR/healthbench_train.o3_mini.ref.jsonl
        # Table 1 (synthetic, no reference) and Table 3 (no reference), generator <g>:
        rar-rubrics --config=configs/base.py --config.judge.backend=http \\
            --config.judge.http.base_url=<API of the generator> \\
            --config.judge.http.model=<RUBRIC_GENERATORS[<g>]> --config.judge.http.timeout_s=300 \\
            --config.judge.http.cache_dir=cache/rubrics \\
            --input=tfds:healthbench:train --domain=medical --nouse_reference \\
            --output=$RAR_RUBRICS_DIR/healthbench_train.<g>.noref.jsonl

    with ``<g>`` each of ``o3_mini``, ``gpt4o``, ``gpt4o_mini`` (``https://api.openai.com/v1``,
    key in ``$OPENAI_API_KEY``; for ``o3_mini`` add ``--config.judge.http.reasoning_model=true
    --max_tokens=16384`` as above: the limit also covers its hidden reasoning), ``qwen72b``,
    ``qwen32b``, ``qwen7b`` (an OpenAI-compatible server of ``Qwen/Qwen2.5-<size>-Instruct``, e.g.
    vLLM, or ``rar-serve-judge``). ``$TFDS_DATA_DIR``
    (or ``--config.data.tfds_data_dir``) must be where the data set was built. Prompts still
    without a valid rubric after ``--max_attempts`` go to ``<file>.failures.jsonl``, not into
    training. A JSONL of HealthBench records works as ``--input`` too.
    """
    if generator not in RUBRIC_GENERATORS:
        raise ValueError(f"unknown rubric generator {generator!r}; expected one of "
                         f"{', '.join(RUBRIC_GENERATORS)}")
    directory = os.environ.get("RAR_RUBRICS_DIR", "rubrics")
    suffix = "ref" if with_reference else "noref"
    return f"{directory}/healthbench_train.{generator}.{suffix}.jsonl"


MEDICINE = DataSpec(
    format="rar", train_path="tfds:rar_medicine:train", eval_path="tfds:rar_medicine:val[:192]",
    small_path="rar_samples/rar_medicine_sample3.jsonl", pitfall_polarity="negative",
)
SCIENCE = DataSpec(
    format="rar", train_path="tfds:rar_science:train", eval_path="tfds:rar_science:val[:192]",
    small_path="rar_samples/rar_science_sample3.jsonl", pitfall_polarity="positive",
)
# HealthBench without HealthBench-1k (about 4,000 prompts; the paper's ~3.5k), physician rubrics.
HEALTHBENCH_HUMAN = DataSpec(
    format="healthbench", train_path="tfds:healthbench:train", eval_size=96,
    small_path="healthbench/oss_eval_first100.jsonl", small_eval_size=2,
)


def healthbench_synthetic(generator: str, with_reference: bool) -> DataSpec:
    """HealthBench training prompts with generated rubrics (Tables 1-3). The small variant reads
    the RaR-Medicine samples instead: the same record layout as ``rar-rubrics``' output."""
    return DataSpec(
        format="rar", train_path=rubric_file(generator, with_reference), eval_size=96,
        small_path="rar_samples/rar_medicine_sample3.jsonl", pitfall_polarity="negative",
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One training run of the paper.

    Attributes:
        title: what it is, with the table and row it reproduces.
        data: its training data.
        method: ``reward.method``.
        judge: a key of :data:`JUDGE_MODELS` (full variant).
        ablation: ``rubric.ablation`` (Table 2).
        show_labels: show category labels and weights to the implicit judge (Table 2).
    """

    title: str
    data: DataSpec
    method: str
    judge: str = "gpt4o_mini"
    ablation: str = "all"
    show_labels: bool = True


MAIN_METHODS = (
    "direct_likert", "reference_likert", "rar_predefined", "rar_explicit", "rar_implicit"
)

EXPERIMENTS: dict[str, Experiment] = {}
for _domain, _data in (("medicine", MEDICINE), ("science", SCIENCE)):
    for _method in MAIN_METHODS:
        EXPERIMENTS[f"{_domain}_{_method}"] = Experiment(
            f"Figure 2: {_method} on RaR-{_domain.capitalize()}", _data, _method
        )
EXPERIMENTS.update({
    "table1_direct_likert": Experiment(
        "Table 1: Simple-Likert on HealthBench", HEALTHBENCH_HUMAN, "direct_likert"),
    "table1_reference_likert": Experiment(
        "Table 1: Reference-Likert on HealthBench", HEALTHBENCH_HUMAN, "reference_likert"),
    "table1_human": Experiment(
        "Table 1: RaR-Implicit with the physician rubrics", HEALTHBENCH_HUMAN, "rar_implicit"),
    "table1_human_points": Experiment(
        "Table 1 (extra row): HealthBench points over the physician rubrics, judged criterion "
        "by criterion", HEALTHBENCH_HUMAN, "healthbench_points"),
    # Table 3's o3-mini-with-reference row has Table 1's synthetic number (35.9): same run.
    "table1_synthetic": Experiment(
        "Table 1: RaR-Implicit with synthetic rubrics (o3-mini, with reference)",
        healthbench_synthetic("o3_mini", True), "rar_implicit"),
    "table1_synthetic_noref": Experiment(
        "Table 1: RaR-Implicit with synthetic rubrics generated without reference (o3-mini)",
        healthbench_synthetic("o3_mini", False), "rar_implicit"),
})
# Table 2: rubric design, implicit judge; generator assumed o3-mini with reference.
_TABLE2_DATA = healthbench_synthetic("o3_mini", True)
EXPERIMENTS.update({
    "table2_essential_only": Experiment(
        "Table 2: essential criteria only", _TABLE2_DATA, "rar_implicit",
        ablation="essential_only"),
    "table2_no_labels": Experiment(
        "Table 2: no category labels (nor weights) shown to the judge", _TABLE2_DATA,
        "rar_implicit", show_labels=False),
    "table2_no_pitfalls": Experiment(
        "Table 2: pitfall criteria removed", _TABLE2_DATA, "rar_implicit", ablation="no_pitfalls"),
    "table2_all": Experiment("Table 2: all criteria", _TABLE2_DATA, "rar_implicit"),
})
# Table 3: which model generated the rubrics (without reference, plus o3-mini with reference).
for _generator in RUBRIC_GENERATORS:
    EXPERIMENTS[f"table3_{_generator}_noref"] = Experiment(
        f"Table 3: rubrics by {RUBRIC_GENERATORS[_generator]} without reference",
        healthbench_synthetic(_generator, False), "rar_implicit")
EXPERIMENTS["table3_o3_mini_ref"] = Experiment(
    "Table 3: rubrics by o3-mini with reference", healthbench_synthetic("o3_mini", True),
    "rar_implicit")
# Table 11: judge size; training data assumed RaR-Medicine (PAPER.md does not say).
for _judge in JUDGE_MODELS:
    for _method, _label in (("rar_implicit", "implicit"), ("direct_likert", "direct_likert")):
        EXPERIMENTS[f"table11_{_judge}_{_label}"] = Experiment(
            f"Table 11: {_method} with judge {JUDGE_MODELS[_judge]}", MEDICINE, _method,
            judge=_judge)


def paper_hyperparameters(config: config_dict.ConfigDict) -> None:
    """Sets the paper's training setup (PAPER.md section 4) on ``config`` in place."""
    config.model.source = os.environ.get("RAR_POLICY_DIR", "checkpoints/Qwen2.5-7B")
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.remat_policy = "full"
    config.mesh.data = 1
    config.mesh.fsdp = -1  # Every device: 8 H100 in the paper.
    config.mesh.tensor = 1
    config.rl.prompts_per_step = PAPER_PROMPTS_PER_STEP
    config.rl.num_generations = 16  # 96 x 16 = 1,536 rows per step.
    config.rl.max_sequence_length = PAPER_CONTEXT
    config.rl.max_prompt_length = PAPER_MAX_PROMPT
    config.rl.max_completion_length = PAPER_CONTEXT - PAPER_MAX_PROMPT
    config.rl.micro_batch_size = 16
    config.sampling.temperature = 1.0
    config.optim.learning_rate = 5e-6
    config.optim.warmup_fraction = 0.1
    config.optim.num_steps = 300
    config.checkpoint.every_steps = 50
    config.train.eval_every = 50
    config.train.export_hf = True  # rar-eval reads the final policy from <output_dir>/hf_export.
    config.judge.backend = "http"
    config.judge.http.base_url = os.environ.get("RAR_JUDGE_URL", "https://api.openai.com/v1")
    config.judge.http.model = JUDGE_MODELS["gpt4o_mini"]
    config.judge.http.max_concurrency = 64
    config.judge.max_tokens = 512  # Room for the explicit judge's explanation before its verdict.


def small_hyperparameters(config: config_dict.ConfigDict) -> None:
    """Sets the 2-CPU-core setup on ``config`` in place (SmolLM2 as policy and JAX judge)."""
    config.model.source = "smollm2"
    config.judge.backend = "jax"
    config.judge.model_source = "smollm2"
    config.judge.batch_size = 8
    config.rl.prompts_per_step = 2
    config.rl.num_generations = 4
    config.rl.max_prompt_length = 256
    config.rl.pad_prompts_to_max_length = True  # One compiled prompt shape.
    config.rl.max_completion_length = 64
    config.optim.num_steps = 4
    config.checkpoint.every_steps = 0
    config.train.eval_every = 4  # At the start and the end.
    config.train.log_samples_every = 1


def experiment_config(name: str, variant: str = "full") -> config_dict.ConfigDict:
    """The config of experiment ``name`` (a key of :data:`EXPERIMENTS`) in ``variant``.

    Args:
        name: the experiment, also the file name of its config (``configs/paper/<name>.py``).
        variant: ``full`` (the paper's setup) or ``small`` (2 CPU cores); "" means full.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown paper experiment {name!r}; expected one of "
                         f"{', '.join(EXPERIMENTS)}")
    variant = variant or "full"
    if variant not in VARIANTS:
        raise ValueError(f"configs/paper/{name}.py: unknown variant {variant!r}; expected "
                         f"{' or '.join(VARIANTS)} (--config=configs/paper/{name}.py:small)")
    experiment = EXPERIMENTS[name]
    data = experiment.data
    config = base_config()
    config.data.format = data.format
    config.rubric.pitfall_polarity = data.pitfall_polarity
    config.rubric.ablation = experiment.ablation
    config.judge.show_categories = experiment.show_labels
    config.judge.show_weights = experiment.show_labels
    config.reward.method = experiment.method
    config.judge.templates_dir = PAPER_PROMPTS  # The paper's appendix prompts (docs/paper.md).
    if variant in ("full", "rows96"):
        paper_hyperparameters(config)
        set_judge(config, experiment.judge)
        config.data.train_path = data.train_path
        config.data.eval_path = data.eval_path
        config.data.eval_size = data.eval_size
        config.output_dir = f"runs/paper/{name}"
        if variant == "rows96":
            config.rl.prompts_per_step = ROWS96_PROMPTS_PER_STEP
            config.output_dir = f"runs/paper_rows96/{name}"
    else:
        small_hyperparameters(config)
        config.data.train_path = str(SHARED_DATA / data.small_path)
        config.data.eval_size = data.small_eval_size
        if data.format == "healthbench":
            config.data.max_rubric_chars = 1200  # Short physician rubrics: one judge read each.
        config.output_dir = f"runs/paper_small/{name}"
    set_evaluation(config, name, variant)
    return config


# Figure 2's rows of untrained checkpoints, evaluated with rar-eval (configs/paper/eval/):
# run name (rar-tables' row) -> the HF checkpoint directory's name under $RAR_CHECKPOINTS_DIR
# (the base policy comes from $RAR_POLICY_DIR, as for training).
EVALUATIONS = {
    "qwen2.5_7b_base": None,
    "qwen2.5_7b_instruct": "Qwen2.5-7B-Instruct",
}


def evaluation_config(name: str, variant: str = "full") -> config_dict.ConfigDict:
    """The ``rar-eval`` config of an untrained checkpoint of Figure 2 (HealthBench and
    GPQA-Diamond, greedy answers of at most the training runs' answer length, the paper's judge
    and prompts); ``small`` evaluates SmolLM2 on the shared HealthBench subset."""
    if name not in EVALUATIONS:
        raise ValueError(f"unknown paper evaluation {name!r}; expected one of "
                         f"{', '.join(EVALUATIONS)}")
    config = base_config()
    config.judge.templates_dir = PAPER_PROMPTS
    if variant == "small":
        small_hyperparameters(config)
        config.output_dir = f"runs/paper_small/{name}"
        set_evaluation(config, name, variant)
        return config
    paper_hyperparameters(config)
    if EVALUATIONS[name] is not None:
        config.model.source = str(
            pathlib.Path(os.environ.get("RAR_CHECKPOINTS_DIR", "checkpoints")) / EVALUATIONS[name])
    config.output_dir = f"runs/paper/{name}"
    set_evaluation(config, name, variant)
    config.eval.gpqa_path = "tfds:gpqa_diamond:test"  # Both benchmarks of Figure 2.
    config.eval.gpqa_runs = 10
    return config


def set_judge(config: config_dict.ConfigDict, judge: str) -> None:
    """gpt-4o-mini over the OpenAI-compatible API, or a Qwen judge of Table 11 in-process."""
    config.judge.http.model = JUDGE_MODELS[judge]
    if judge in LOCAL_JUDGES:
        directory, devices = LOCAL_JUDGES[judge]
        config.judge.backend = "jax"
        config.judge.model_source = str(
            pathlib.Path(os.environ.get("RAR_CHECKPOINTS_DIR", "checkpoints")) / directory)
        config.judge.devices = devices


def set_evaluation(config: config_dict.ConfigDict, name: str, variant: str) -> None:
    """What ``rar-eval`` reads for this experiment (the ``eval`` section, when the base config
    has one): Figure 2 evaluates Medicine runs on HealthBench (all 5,000) and Science runs on
    GPQA-Diamond (10 runs); Tables 1-3 on HealthBench-1k; Table 11 on HealthBench. Its outputs
    land in ``output_dir``, where ``rar-tables`` looks for them. The small variant evaluates on 5
    prompts of the shared HealthBench subset (Science: no GPQA data is shared; give
    ``--config.eval.gpqa_path`` a CSV)."""
    if "eval" not in config:
        return
    evaluation = config.eval
    evaluation.max_new_tokens = config.rl.max_completion_length
    if variant == "small":
        evaluation.limit = 5
        if not name.startswith("science_"):
            evaluation.healthbench_path = str(
                SHARED_DATA / "healthbench" / "oss_eval_first100.jsonl")
        return
    if name.startswith("science_"):
        evaluation.gpqa_path = "tfds:gpqa_diamond:test"
        evaluation.gpqa_runs = 10
    elif name.startswith(("table1_", "table2_", "table3_")):
        evaluation.healthbench_path = "tfds:healthbench:healthbench_1k"
    else:
        evaluation.healthbench_path = "tfds:healthbench:oss_eval"
