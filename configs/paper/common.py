"""The paper's experiments as configs: the paper's table as data, and the shared setup.

:data:`PAPER_TABLE` holds one row per experiment (its name, reward method, data, rubric source,
judge and the options of ablations); every config is derived from its row by
:func:`experiment_config`, and every file beside this one is a thin wrapper:
``get_config(variant)`` returns ``experiment_config(<its name>, variant)``. The paper's numbers
for each row are in ``rar_jax.eval.paper_numbers`` under the same name; where the paper printed
one experiment in two rows (``paper_numbers.CANONICAL_RUNS``: Table 3's o3-mini with reference
is Table 1's RaR-Implicit-Synthetic) the second row's config is the first's, writing to the first
row's folder, and ``rar-tables`` shows that run in both rows. ``docs/paper.md`` lists every
decision these configs take where the paper is silent. Three variants:

- ``full`` (the default): the paper's setup (PAPER.md section 4). Policy Qwen2.5-7B (base) from
  the HF checkpoint directory in ``$RAR_POLICY_DIR`` (default ``checkpoints/Qwen2.5-7B``), GRPO
  with 16 answers per prompt and 96 prompts per step (1,536 rows; see
  :data:`PAPER_PROMPTS_PER_STEP`), lr 5e-6 constant after a 10 % linear warm-up, temperature 1.0,
  a context of 3,584 tokens (prompt <= 1,024 + answer <= 2,560), 300 steps, judge gpt-4o-mini
  over an OpenAI-compatible HTTP API (``$RAR_JUDGE_URL``, default ``https://api.openai.com/v1``;
  key in ``$OPENAI_API_KEY``), Table 11's Qwen judges in-process on their own devices
  (:data:`LOCAL_JUDGES`), the paper's prompts (``judge.templates_dir = "paper"``), GPQA's
  verifier gpt-4o. Data from built TFDS data sets (``rar-build-dataset``:
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
"assumed" in :data:`PAPER_TABLE`. Each run writes to ``runs/paper/<name>`` (``runs/paper_small/
<name>`` for ``small``); ``rar-tables`` finds an experiment's run by that folder name.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from ml_collections import config_dict

from rar_jax.config import base_config
from rar_jax.eval.paper_numbers import CANONICAL_RUNS, TABLES
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
# devices). Devices are ours: every judge on 4 of the 8 chips, so the policy keeps 4, which
# divide its dimensions; on 6 they do not, its parameters stay unsharded and the update needs
# 171 GiB per chip (rar-compile, docs/pod_plan.md).
LOCAL_JUDGES = {
    "qwen32b": ("Qwen2.5-32B-Instruct", 4),
    "qwen14b": ("Qwen2.5-14B-Instruct", 4),
    "qwen7b": ("Qwen2.5-7B-Instruct", 4),
}
# The GPQA verifier of the paper (an answer without a boxed letter is judged by it).
GPQA_VERIFIER = "gpt-4o"
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
        require_reference: train only on prompts with a reference answer
            (``data.require_reference``): the HealthBench pool of Tables 1-3.
    """

    format: str
    train_path: str
    eval_path: str = ""
    eval_size: int = 0
    small_path: str = ""
    small_eval_size: int = 1
    pitfall_polarity: str = "negative"
    require_reference: bool = False


def rubric_file(generator: str, with_reference: bool) -> str:
    """The JSONL of rubrics generated for the HealthBench training pool (``rar-rubrics``).

    ``$RAR_RUBRICS_DIR/healthbench_train.<generator>.<ref|noref>.jsonl``: one RaR-format record
    per prompt of the pool that got a valid rubric. The pool is the paper's "about 3.5k"
    HealthBench training prompts: the ``tfds:healthbench:train`` prompts (HealthBench without
    HealthBench-1k, 4,000) that have an ideal completion (about 84 %, some 3,400), so that
    every Table 1-3 method, Reference-Likert included, trains on the same prompts and a ``ref``
    file holds no rubric made without the reference (``require_reference``). Record fields:
    ``question`` = the HealthBench conversation (the trainer sees the same prompt as with the
    physician rubrics), ``id`` = ``prompt_id``, ``example_tags``, the generated ``rubric``;
    ``reference_answer`` = the ideal completion for ``ref`` files, "" for ``noref`` files. Made
    once per file (seven files: ``o3_mini`` ``ref`` and ``noref``, and ``noref`` for ``gpt4o``,
    ``gpt4o_mini``, ``qwen72b``, ``qwen32b``, ``qwen7b``). First build the data set (once),
    then run ``rar-rubrics`` per file with its config (``configs/paper/rubrics/
    healthbench_train.py``: the generator's API, the paper's prompt, ``require_reference``,
    o3-mini as a reasoning model with 16,384 tokens, the output path of this function):

        rar-build-dataset --dataset=healthbench \\
            --manual_dir=<folder with simple-evals' HealthBench JSONL files> \\
            --data_dir=$TFDS_DATA_DIR
        # Table 1 (synthetic) = Table 3 (o3-mini with reference), and Table 2:
        rar-rubrics --config=configs/paper/rubrics/healthbench_train.py:o3_mini.ref
        # Table 1 (synthetic, no reference) and Table 3 (no reference), generator <g>:
        rar-rubrics --config=configs/paper/rubrics/healthbench_train.py:<g>.noref

    with ``<g>`` each of ``o3_mini``, ``gpt4o``, ``gpt4o_mini`` (``https://api.openai.com/v1``,
    key in ``$OPENAI_API_KEY``), ``qwen72b``, ``qwen32b``, ``qwen7b`` (an OpenAI-compatible
    server of ``Qwen/Qwen2.5-<size>-Instruct``, e.g. vLLM, or ``rar-serve-judge``, at
    ``$RAR_GENERATOR_URL`` or ``--config.judge.http.base_url``). ``$TFDS_DATA_DIR`` (or
    ``--config.data.tfds_data_dir``) must be where the data set was built. Prompts still without
    a valid rubric after ``rubric_generation.max_attempts`` go to ``<file>.failures.jsonl``, not
    into training; the rubric statistics go to ``<file>.stats.json`` (for ``rar-tables
    --rubric_stats``) and the resolved config to ``<file>.config.json``. A JSONL of HealthBench
    records works as ``--config.rubric_generation.input`` too.
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
# HealthBench without HealthBench-1k, the prompts with an ideal completion (the paper's ~3.5k
# pool, see rubric_file), physician rubrics.
HEALTHBENCH_HUMAN = DataSpec(
    format="healthbench", train_path="tfds:healthbench:train", eval_size=96,
    small_path="healthbench/oss_eval_first100.jsonl", small_eval_size=2, require_reference=True,
)


def healthbench_synthetic(generator: str, with_reference: bool) -> DataSpec:
    """The HealthBench pool with generated rubrics (Tables 1-3; the file holds the pool only).
    The small variant reads the RaR-Medicine samples instead: the same record layout as
    ``rar-rubrics``' output."""
    return DataSpec(
        format="rar", train_path=rubric_file(generator, with_reference), eval_size=96,
        small_path="rar_samples/rar_medicine_sample3.jsonl", pitfall_polarity="negative",
    )


def data_spec(data: str, rubrics: str) -> DataSpec:
    """The training data of a row of :data:`PAPER_TABLE`.

    Args:
        data: ``medicine`` / ``science`` (RaR-Medicine / RaR-Science) or ``healthbench`` (the
            pool of Tables 1-3).
        rubrics: ``released`` (RaR's released rubrics), ``physician`` (HealthBench's), or
            ``<generator>.<ref|noref>`` (a :func:`rubric_file` of the HealthBench pool).
    """
    if data in ("medicine", "science") and rubrics == "released":
        return MEDICINE if data == "medicine" else SCIENCE
    if data == "healthbench" and rubrics == "physician":
        return HEALTHBENCH_HUMAN
    generator, _, reference = rubrics.partition(".")
    if data == "healthbench" and generator in RUBRIC_GENERATORS and reference in ("ref", "noref"):
        return healthbench_synthetic(generator, reference == "ref")
    raise ValueError(f"paper table: no data {data!r} with rubrics {rubrics!r}")


def paper_row_title(name: str) -> str:
    """"<source>: <row label> (<column>)" of the cells of ``rar-tables`` that run ``name`` fills
    (rar_jax.eval.paper_numbers), joined by "; "."""
    titles = [f"{table.source.split(';')[0]}: {row.label}"
              + (f" ({table.columns[index].header})" if len(table.columns) > 1 else "")
              for table in TABLES.values() for row in table.rows
              for index, cell in enumerate(row.cells) if cell.run == name]
    if not titles:
        raise ValueError(f"paper table: run {name!r} fills no cell of rar_jax.eval.paper_numbers")
    return "; ".join(titles)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One row of the paper: a training run and what it reproduces.

    Attributes:
        name: the run (its config ``configs/paper/<name>.py``, its folder ``runs/paper/<name>``,
            its cells in ``rar_jax.eval.paper_numbers``).
        method: ``reward.method``, or ``sft`` for supervised fine-tuning on the reference
            answers (``rar-sft``; :func:`sft_hyperparameters`).
        data: ``medicine``, ``science`` or ``healthbench`` (:func:`data_spec`).
        rubrics: ``released``, ``physician`` or ``<generator>.<ref|noref>`` (:func:`data_spec`).
        judge: a key of :data:`JUDGE_MODELS` (full variant).
        ablation: ``rubric.ablation`` (Table 2).
        show_labels: show category labels and weights to the implicit judge (Table 2).
        seed: ``seed``: 1 for a row the paper reports with its own number although its setup,
            as far as the paper says, equals an earlier row's (a second run of it).
    """

    name: str
    method: str
    data: str
    rubrics: str
    judge: str = "gpt4o_mini"
    ablation: str = "all"
    show_labels: bool = True
    seed: int = 0

    @property
    def title(self) -> str:
        """Its table, row and column in the paper."""
        return paper_row_title(self.name)

    @property
    def same_as(self) -> str | None:
        """The run reproducing this row when the paper printed one experiment in two rows."""
        return CANONICAL_RUNS.get(self.name)

    @property
    def data_spec(self) -> DataSpec:
        """Its training data."""
        return data_spec(self.data, self.rubrics)


# The paper's experiments, one row each; the paper's numbers are in rar_jax.eval.paper_numbers
# (by name), the canonical run of a row printed twice in its CANONICAL_RUNS. A new experiment is
# one row here, its config file (a copy of any wrapper beside this file) and its cell there.
# Table 1's Expert-Answer-SFT is supervised fine-tuning, not GRPO (method "sft": rar-sft).
PAPER_TABLE: tuple[Experiment, ...] = (
    # Figure 2: the five rewards on RaR-Medicine (HealthBench) and RaR-Science (GPQA-Diamond).
    Experiment("medicine_direct_likert", "direct_likert", "medicine", "released"),
    Experiment("medicine_reference_likert", "reference_likert", "medicine", "released"),
    Experiment("medicine_rar_predefined", "rar_predefined", "medicine", "released"),
    Experiment("medicine_rar_explicit", "rar_explicit", "medicine", "released"),
    Experiment("medicine_rar_implicit", "rar_implicit", "medicine", "released"),
    Experiment("science_direct_likert", "direct_likert", "science", "released"),
    Experiment("science_reference_likert", "reference_likert", "science", "released"),
    Experiment("science_rar_predefined", "rar_predefined", "science", "released"),
    Experiment("science_rar_explicit", "rar_explicit", "science", "released"),
    Experiment("science_rar_implicit", "rar_implicit", "science", "released"),
    # Table 1: the HealthBench pool, human vs synthetic rubrics (HealthBench-1k).
    Experiment("table1_direct_likert", "direct_likert", "healthbench", "physician"),
    Experiment("table1_reference_likert", "reference_likert", "healthbench", "physician"),
    Experiment("table1_human", "rar_implicit", "healthbench", "physician"),
    Experiment("table1_human_points", "healthbench_points", "healthbench", "physician"),
    Experiment("table1_synthetic", "rar_implicit", "healthbench", "o3_mini.ref"),
    Experiment("table1_synthetic_noref", "rar_implicit", "healthbench", "o3_mini.noref"),
    Experiment("table1_expert_sft", "sft", "healthbench", "physician"),
    # Table 2: rubric design (generator assumed o3-mini with reference, as Table 1's synthetic).
    Experiment("table2_essential_only", "rar_implicit", "healthbench", "o3_mini.ref",
               ablation="essential_only"),
    Experiment("table2_no_labels", "rar_implicit", "healthbench", "o3_mini.ref",
               show_labels=False),
    Experiment("table2_no_pitfalls", "rar_implicit", "healthbench", "o3_mini.ref",
               ablation="no_pitfalls"),
    Experiment("table2_all", "rar_implicit", "healthbench", "o3_mini.ref", seed=1),
    # Table 3: the rubric generator (without reference; o3-mini also with it).
    Experiment("table3_gpt4o_noref", "rar_implicit", "healthbench", "gpt4o.noref"),
    Experiment("table3_gpt4o_mini_noref", "rar_implicit", "healthbench", "gpt4o_mini.noref"),
    Experiment("table3_o3_mini_noref", "rar_implicit", "healthbench", "o3_mini.noref", seed=1),
    Experiment("table3_qwen72b_noref", "rar_implicit", "healthbench", "qwen72b.noref"),
    Experiment("table3_qwen32b_noref", "rar_implicit", "healthbench", "qwen32b.noref"),
    Experiment("table3_qwen7b_noref", "rar_implicit", "healthbench", "qwen7b.noref"),
    Experiment("table3_o3_mini_ref", "rar_implicit", "healthbench", "o3_mini.ref"),
    # Table 11: the judge (training data assumed RaR-Medicine; PAPER.md does not say).
    Experiment("table11_gpt4o_mini_implicit", "rar_implicit", "medicine", "released", seed=1),
    Experiment("table11_gpt4o_mini_direct_likert", "direct_likert", "medicine", "released",
               seed=1),
    Experiment("table11_qwen32b_implicit", "rar_implicit", "medicine", "released", "qwen32b"),
    Experiment("table11_qwen32b_direct_likert", "direct_likert", "medicine", "released",
               "qwen32b"),
    Experiment("table11_qwen14b_implicit", "rar_implicit", "medicine", "released", "qwen14b"),
    Experiment("table11_qwen14b_direct_likert", "direct_likert", "medicine", "released",
               "qwen14b"),
    Experiment("table11_qwen7b_implicit", "rar_implicit", "medicine", "released", "qwen7b"),
    Experiment("table11_qwen7b_direct_likert", "direct_likert", "medicine", "released",
               "qwen7b"),
)
EXPERIMENTS: dict[str, Experiment] = {experiment.name: experiment for experiment in PAPER_TABLE}


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
    # What rar-compile found to fit one node of 8 chips (docs/pod_plan.md): micro-batches of 4
    # rows (384 per update of 1,536 rows) and rollouts of 32 prompts (512 rows) per sampler call.
    config.rl.micro_batch_size = 4
    config.rl.rollout_chunk_prompts = 32
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


# Expert-Answer-SFT: the paper gives no hyper-parameters. Ours: 64 examples per step, lr 1e-5
# (twice GRPO's: a supervised loss on few examples) after a 10 % warm-up, 160 steps, about three
# epochs of the ~3,300 training prompts of the HealthBench pool left after the 96 held out.
SFT_BATCH_SIZE = 64
SFT_LEARNING_RATE = 1e-5
SFT_STEPS = 160


def sft_hyperparameters(config: config_dict.ConfigDict, variant: str) -> None:
    """The supervised fine-tuning setup of Table 1's Expert-Answer-SFT (after the variant's
    GRPO setup, whose model, context, mesh and judge it keeps; the judge grades ``rar-eval``)."""
    if variant == "small":
        config.sft.batch_size = 2
        config.optim.learning_rate = SFT_LEARNING_RATE
        config.data.max_rubric_chars = 0  # No judge reads the rubric during SFT.
        return
    config.sft.batch_size = SFT_BATCH_SIZE
    config.optim.learning_rate = SFT_LEARNING_RATE
    config.optim.num_steps = SFT_STEPS
    config.checkpoint.every_steps = 40
    config.train.eval_every = 40


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
    data = experiment.data_spec
    config = base_config()
    config.seed = experiment.seed
    config.data.format = data.format
    config.data.require_reference = data.require_reference
    config.rubric.pitfall_polarity = data.pitfall_polarity
    config.rubric.ablation = experiment.ablation
    config.judge.show_categories = experiment.show_labels
    config.judge.show_weights = experiment.show_labels
    if experiment.method != "sft":
        config.reward.method = experiment.method
    config.judge.templates_dir = PAPER_PROMPTS  # The paper's appendix prompts (docs/paper.md).
    run = experiment.same_as or name  # A row the paper printed twice trains its canonical run.
    if variant in ("full", "rows96"):
        paper_hyperparameters(config)
        set_judge(config, experiment.judge)
        config.data.train_path = data.train_path
        config.data.eval_path = data.eval_path
        config.data.eval_size = data.eval_size
        config.output_dir = f"runs/paper/{run}"
        if variant == "rows96":
            config.rl.prompts_per_step = ROWS96_PROMPTS_PER_STEP
            config.output_dir = f"runs/paper_rows96/{run}"
    else:
        small_hyperparameters(config)
        config.data.train_path = str(SHARED_DATA / data.small_path)
        config.data.eval_size = data.small_eval_size
        if data.format == "healthbench":
            config.data.max_rubric_chars = 1200  # Short physician rubrics: one judge read each.
        config.output_dir = f"runs/paper_small/{run}"
    if experiment.method == "sft":
        sft_hyperparameters(config, variant)
    set_evaluation(config, run, variant)
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
    set_gpqa(config.eval)  # Both benchmarks of Figure 2.
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


def set_gpqa(evaluation: config_dict.ConfigDict) -> None:
    """GPQA-Diamond as the paper evaluates it: 10 runs, the GPT-4o Yes/No verifier for answers
    without a boxed letter (over the judge's HTTP API)."""
    evaluation.gpqa_path = "tfds:gpqa_diamond:test"
    evaluation.gpqa_runs = 10
    evaluation.gpqa_verifier_model = GPQA_VERIFIER


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
        set_gpqa(evaluation)
    elif name.startswith(("table1_", "table2_", "table3_")):
        evaluation.healthbench_path = "tfds:healthbench:healthbench_1k"
    else:
        evaluation.healthbench_path = "tfds:healthbench:oss_eval"
