"""The paper's experiment configs (configs/paper): every full variant validates with the paper's
hyper-parameters, and every small variant trains one GRPO step through rar-train's ``train``.

The one-step runs use the tiny fixture checkpoint as policy and in-process judge, with the same
small sizes for every config (one prompt bucket, 2 x 2 rows, 8 answer tokens, one-line judge
system texts) so compiled functions are shared: the persistent compilation cache (in tmp) lets
every trainer after the first reuse earlier XLA executables. Configs whose small variants are
identical after these overrides (e.g. Table 3's rows, which differ only in the generated-rubric
file of the full variant) are trained once and each checked against that run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import pathlib
import runpy
from typing import Any

import jax
import numpy as np
import pytest
from absl import flags
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_dict, config_flags

from rar_jax import config as rar_config
from rar_jax.data import selection
from rar_jax.experiments import train as train_lib
from rar_jax.judges import rewards
from rar_jax.metrics import read_metrics
from rar_jax.rubrics.schema import Category
from tiny_checkpoint import write_tiny_checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPER_DIR = REPO_ROOT / "configs" / "paper"
CONFIG_FILES = sorted(p for p in PAPER_DIR.glob("*.py") if p.name != "common.py")
NAMES = [p.stem for p in CONFIG_FILES]
SFT = "table1_expert_sft"  # Table 1's Expert-Answer-SFT: rar-sft, not GRPO.
GRPO_NAMES = [name for name in NAMES if name != SFT]


def load_config(name: str, variant: str = "full") -> config_dict.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"paper_config_{name}", PAPER_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(autouse=True)
def default_locations(monkeypatch):
    """The configs' defaults, whatever the environment says."""
    for name in ("RAR_POLICY_DIR", "RAR_JUDGE_URL", "RAR_RUBRICS_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", ["medicine_rar_implicit", "table11_qwen7b_implicit"])
def test_the_rows96_variant_reads_batch_96_as_rows(name):
    config, full = load_config(name, "rows96"), load_config(name)
    rar_config.validate(config, num_devices=8)
    assert config.rl.prompts_per_step * config.rl.num_generations == 96
    assert config.output_dir == f"runs/paper_rows96/{name}"
    config.rl.prompts_per_step, config.output_dir = full.rl.prompts_per_step, full.output_dir
    assert config.to_dict() == full.to_dict()  # Nothing else differs.


def test_prompt_and_answer_must_fit_the_context():
    config = load_config("medicine_rar_implicit")
    config.rl.max_completion_length = 3584
    with pytest.raises(rar_config.ConfigError, match="rl.max_sequence_length' is 3584"):
        rar_config.validate(config)


def test_one_config_file_per_experiment():
    common = runpy.run_path(str(PAPER_DIR / "common.py"))
    assert sorted(common["EXPERIMENTS"]) == NAMES
    # Figure 2 (2 domains x 5 methods), Table 1 (6 + SFT), Table 2 (4), Table 3 (7), Table 11
    # (4 x 2).
    assert len(NAMES) == 10 + 7 + 4 + 7 + 8
    with pytest.raises(ValueError, match="unknown variant 'tiny'"):
        load_config("medicine_rar_implicit", "tiny")


def test_the_sft_baseline_fine_tunes_on_the_grpo_pool():
    config = load_config(SFT)
    rar_config.validate(config, num_devices=8)
    grpo = load_config("table1_human")  # RaR-Implicit with the physician rubrics: same pool.
    for key in ("train_path", "eval_size", "format", "require_reference"):
        assert config.data[key] == grpo.data[key]
    assert config.data.require_reference and config.data.train_path == "tfds:healthbench:train"
    assert (config.sft.batch_size, config.optim.learning_rate, config.optim.num_steps) == (
        64, 1e-5, 160)
    assert config.model.to_dict() == grpo.model.to_dict() and config.train.export_hf
    assert config.rl.max_prompt_length + config.rl.max_completion_length == 3584
    assert config.output_dir == f"runs/paper/{SFT}"
    assert config.eval.healthbench_path == "tfds:healthbench:healthbench_1k"
    small = load_config(SFT, "small")
    rar_config.validate(small)
    assert small.sft.batch_size == 2 and small.model.source == "smollm2"


@pytest.mark.parametrize("name", GRPO_NAMES)
def test_full_variant_has_the_paper_setup(name):
    config = load_config(name)
    rar_config.validate(config)
    rar_config.validate(config, num_devices=8)  # One node of 8 GPUs, as in the paper.
    # "16 rollouts per prompt, batch 96": 96 prompts x 16 = 1,536 rows per step.
    assert (config.rl.prompts_per_step, config.rl.num_generations) == (96, 16)
    assert (config.optim.learning_rate, config.optim.warmup_fraction) == (5e-6, 0.1)
    assert config.optim.num_steps == 300 and config.sampling.temperature == 1.0
    # A context of 3,584 tokens for prompt and answer together.
    assert config.rl.max_sequence_length == 3584
    assert config.rl.max_prompt_length + config.rl.max_completion_length == 3584
    assert config.model.source.endswith("Qwen2.5-7B")
    # A row the paper printed twice trains its canonical run (Table 3 o3-mini ref = Table 1).
    assert config.output_dir == ("runs/paper/table1_synthetic" if name == "table3_o3_mini_ref"
                                 else f"runs/paper/{name}")
    assert config.judge.templates_dir == "paper"
    local_judges = {"qwen32b": ("Qwen2.5-32B-Instruct", 4), "qwen14b": ("Qwen2.5-14B-Instruct", 4),
                    "qwen7b": ("Qwen2.5-7B-Instruct", 4)}
    local = next((spec for key, spec in local_judges.items()
                  if name.startswith(f"table11_{key}_")), None)
    if local is None:  # gpt-4o-mini over the OpenAI API.
        assert config.judge.backend == "http" and config.judge.http.model == "gpt-4o-mini"
        assert config.judge.http.base_url == "https://api.openai.com/v1"
    else:  # Table 11's Qwen judges in-process, on their own devices, never an OpenAI URL.
        assert config.judge.backend == "jax" and config.judge.devices == local[1]
        assert config.judge.model_source.endswith(local[0])

    if "eval" in config:  # rar-eval's section (Figure 2: HealthBench / GPQA; Tables 1-3: 1k).
        expected_eval = ("tfds:gpqa_diamond:test" if name.startswith("science_") else
                         "tfds:healthbench:healthbench_1k" if name[:7] in ("table1_", "table2_",
                                                                           "table3_")
                         else "tfds:healthbench:oss_eval")
        assert expected_eval in (config.eval.healthbench_path, config.eval.gpqa_path)
        # The paper's GPQA verifier is GPT-4o, whatever judge trained the policy.
        assert config.eval.gpqa_verifier_model == ("gpt-4o" if name.startswith("science_")
                                                   else "")

    method = config.reward.method
    if name.startswith(("medicine_", "science_")):
        domain, expected_method = name.split("_", 1)
        assert method == expected_method
        assert config.data.train_path == f"tfds:rar_{domain}:train"
        assert config.rubric.pitfall_polarity == ("positive" if domain == "science" else "negative")
    elif name.startswith("table1_"):
        assert method == {"direct_likert": "direct_likert", "reference_likert": "reference_likert",
                          "human_points": "healthbench_points"}.get(name[7:], "rar_implicit")
        human = name[7:] in ("direct_likert", "reference_likert", "human", "human_points")
        assert config.data.train_path == ("tfds:healthbench:train" if human
                                          else "rubrics/healthbench_train.o3_mini."
                                          f"{'noref' if 'noref' in name else 'ref'}.jsonl")
        # One pool for every method: the ~3.4k training prompts with an ideal completion (the
        # generated files are made from that pool with rar-rubrics --require_reference).
        assert config.data.require_reference == human
    elif name.startswith("table2_"):
        assert method == "rar_implicit"
        assert config.rubric.ablation == {"essential_only": "essential_only",
                                          "no_pitfalls": "no_pitfalls"}.get(name[7:], "all")
        labels = name != "table2_no_labels"
        assert (config.judge.show_categories, config.judge.show_weights) == (labels, labels)
    elif name.startswith("table3_"):
        generator, reference = name[7:].rsplit("_", 1)
        assert config.data.train_path == f"rubrics/healthbench_train.{generator}.{reference}.jsonl"
        assert config.data.format == "rar" and method == "rar_implicit"
    else:
        assert method == ("rar_implicit" if name.endswith("_implicit") else "direct_likert")
    # Rows the paper reports with their own number although, as far as it says, their setup
    # equals an earlier row's are second runs of it (docs/paper.md).
    assert config.seed == (1 if name in ("table2_all", "table3_o3_mini_noref",
                                         "table11_gpt4o_mini_implicit",
                                         "table11_gpt4o_mini_direct_likert") else 0)


def test_paper_table_rows_and_their_numbers():
    """Every row of the table has its cells in paper_numbers, every trained cell has a row; a row
    printed twice is one config; rows with their own numbers have their own configs."""
    from rar_jax.eval.paper_numbers import CANONICAL_RUNS, TABLES

    common = runpy.run_path(str(PAPER_DIR / "common.py"))
    cells = {cell.run for table in TABLES.values() for row in table.rows for cell in row.cells}
    untrained = set(common["EVALUATIONS"])
    assert cells - {None} - untrained == set(common["EXPERIMENTS"])
    assert common["EXPERIMENTS"]["table3_o3_mini_ref"].title == \
        "Table 3 (v2): o3-mini, with reference"
    assert CANONICAL_RUNS == {"table3_o3_mini_ref": "table1_synthetic"}
    for variant in ("full", "rows96", "small"):
        assert load_config("table3_o3_mini_ref", variant).to_dict() == \
            load_config("table1_synthetic", variant).to_dict()
    configs = {name: json.loads(load_config(name).to_json()) for name in NAMES}
    distinct = {json.dumps(config, sort_keys=True) for config in configs.values()}
    assert len(distinct) == len(NAMES) - len(CANONICAL_RUNS)
    with pytest.raises(ValueError, match="no data 'science' with rubrics 'physician'"):
        common["data_spec"]("science", "physician")


def test_the_paper_configs_compile_five_sets_of_programs():
    """docs/pod_plan.md plans five configs: every paper config has the programs of one of them
    (the others differ in data, reward method, prompts and seed, which compile nothing)."""
    from rar_jax.aot.plan import program_shapes

    groups: dict[str, list[str]] = {}
    for name in NAMES:
        groups.setdefault(program_shapes(load_config(name), sft=name == SFT), []).append(name)
    planned = {"medicine_rar_implicit", SFT, "table11_qwen32b_implicit",
               "table11_qwen14b_implicit", "table11_qwen7b_implicit"}
    assert len(groups) == 5
    for members in groups.values():
        [representative] = planned & set(members)
        if representative.startswith("table11_qwen"):
            assert members == [representative.replace("implicit", "direct_likert"),
                               representative]
    assert max(map(len, groups.values())) == len(NAMES) - 7


def test_require_reference_gives_every_method_one_pool():
    from rar_jax.data.examples import Example

    class Tokens:
        def encode_chat(self, messages):
            return [1, 2, 3]

    turn = ({"role": "user", "content": "q"},)
    examples = [Example(turn, None, "ideal", "a"), Example(turn, None, None, "b")]
    config = load_config("table1_direct_likert")
    kept = selection.usable_examples(examples, config, Tokens(), "pool")
    assert [example.example_id for example in kept] == ["a"]
    config.data.require_reference = False
    assert len(selection.usable_examples(examples, config, Tokens(), "pool")) == 2


@pytest.mark.parametrize("name", ["medicine_rar_implicit", "table1_human_points"])
def test_small_variant_from_the_command_line_form(name, shared_data):
    """``--config=configs/paper/<name>.py:small`` (ml_collections' config string)."""
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    values(["prog", f"--config={PAPER_DIR / name}.py:small"])
    config = holder.value
    rar_config.validate(config)
    assert config.optim.num_steps == 4 and config.model.source == "smollm2"
    assert config.judge.backend == "jax" and config.output_dir == f"runs/paper_small/{name}"
    assert pathlib.Path(config.data.train_path).is_file()
    assert pathlib.Path(config.data.train_path).parent.parent == shared_data


# ------------------------------------------------------------------------- one step of each


@dataclasses.dataclass
class OneStep:
    """What one small run left behind."""

    config: config_dict.ConfigDict
    records: list[dict[str, Any]]
    calls: list[tuple[str, Any, Any, Any]]  # (method, examples, settings, RewardOutput)
    written_config: dict[str, Any]


SHORT_SYSTEM_TEXTS = {
    "implicit_judge": "Rate the response against the rubric.\n",
    "direct_likert": "Rate the response.\n",
    "reference_likert": "Rate the response against the reference answer.\n",
    "explicit_criterion": "Say whether the statement is true of the response.\n",
}


class Runner:
    """Runs small variants for one step, once per distinct effective config."""

    def __init__(self, checkpoint: pathlib.Path, root: pathlib.Path):
        self.checkpoint = checkpoint
        self.root = root
        # One-line system texts: with a byte tokenizer the packaged ones (~1 kB each) would double
        # every judge prompt, and the judge's attention cost grows with its square.
        self.templates = root / "templates"
        self.templates.mkdir()
        for name in SHORT_SYSTEM_TEXTS:
            (self.templates / f"{name}.system.txt").write_text(SHORT_SYSTEM_TEXTS[name])
        self.calls: list[tuple[str, Any, Any, Any]] = []
        self.runs: dict[str, OneStep] = {}

    def effective(self, name: str) -> config_dict.ConfigDict:
        config = load_config(name, "small")
        rar_config.validate(config)
        config.model.source = str(self.checkpoint)
        config.judge.backend = "jax"  # (already so in every small variant)
        config.judge.model_source = str(self.checkpoint)
        config.judge.templates_dir = str(self.templates)
        config.judge.batch_size = 4  # = the rows of a step: one row bucket, fewer compiled shapes.
        config.rl.num_generations = 2
        config.rl.max_prompt_length = 640  # Byte tokenizer: the longest sample question fits.
        config.rl.pad_prompts_to_max_length = True
        config.rl.max_completion_length = 8
        config.optim.num_steps = 1
        config.train.eval_every = 0
        config.seed = 0  # Rows that differ by their seed only train once here.
        config.checkpoint.async_save = False
        config.metrics.tensorboard = False
        return config

    def run(self, name: str) -> OneStep:
        config = self.effective(name)
        key = json.dumps({**json.loads(config.to_json()), "output_dir": None}, sort_keys=True)
        if key not in self.runs:
            config.output_dir = str(self.root / name)
            start = len(self.calls)
            train_lib.train(config)
            self.runs[key] = OneStep(
                config=config,
                records=read_metrics(config.output_dir),
                calls=self.calls[start:],
                written_config=json.loads((self.root / name / "config.json").read_text()),
            )
        return self.runs[key]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_small")
    options = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
               "jax_persistent_cache_min_entry_size_bytes")
    saved = {option: getattr(jax.config, option) for option in options}
    jax.config.update("jax_compilation_cache_dir", str(root / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    instance = Runner(write_tiny_checkpoint(root / "tiny"), root)

    def spy(method_name, method):
        def recorded(examples, answers, backend, settings):
            output = method(examples, answers, backend, settings)
            instance.calls.append((method_name, list(examples), settings, output))
            return output
        return recorded

    with pytest.MonkeyPatch.context() as patch:
        for method_name, method in list(rewards.REWARD_METHODS.items()):
            patch.setitem(rewards.REWARD_METHODS, method_name, spy(method_name, method))
        yield instance
    for option, value in saved.items():
        jax.config.update(option, value)
    compilation_cache.reset_cache()


@pytest.mark.slow
@pytest.mark.parametrize("name", GRPO_NAMES)
def test_small_variant_trains_one_step(name, runner):
    config = runner.effective(name)
    result = runner.run(name)

    [record] = [r for r in result.records if "reward/mean" in r]
    assert record["step"] == 0
    # The reward function was the config's method, called once (no evaluation), with its options.
    [(method, examples, settings, output)] = result.calls
    assert method == config.reward.method
    assert result.written_config["reward"]["method"] == config.reward.method
    assert settings.show_categories == settings.show_weights == config.judge.show_categories
    assert len(examples) == config.rl.prompts_per_step * config.rl.num_generations == 4
    rewards_ = np.asarray(output.rewards, np.float64)
    assert np.all(np.isfinite(rewards_)) and record["reward/judge_failures"] == 0
    assert math.isclose(record["reward/mean"], float(rewards_.mean()), rel_tol=1e-5, abs_tol=1e-7)
    if method == "healthbench_points":
        # Met points / positive points, unclipped: at most 1, at least -(negative / positive).
        for example, reward in zip(examples, rewards_):
            points = np.array([c.weight for c in example.rubric.criteria])
            low = points[points < 0].sum() / points[points > 0].sum()
            assert low - 1e-6 <= reward <= 1 + 1e-6
        assert output.verdicts.shape[1] == max(len(e.rubric.criteria) for e in examples)
    else:
        assert np.all((rewards_ >= 0) & (rewards_ <= 1))
    if method in ("rar_explicit", "rar_predefined"):
        widths = {4} if method == "rar_predefined" else {len(e.rubric.criteria) for e in examples}
        assert int(output.verdict_mask.sum(axis=1).max()) == max(widths)
        assert 0 <= record["rubric/criteria_credit"] <= 1  # Over the rubric that was judged.
    if method in ("direct_likert", "reference_likert", "rar_implicit"):
        assert output.ratings is not None and np.all((output.ratings >= 1) & (output.ratings <= 10))
    if method == "reference_likert":
        assert all(example.reference for example in examples)

    # The rubric ablation reached the examples the judge saw.
    categories = {c.category for e in examples for c in e.rubric.criteria}
    if config.rubric.ablation == "essential_only":
        assert categories == {Category.ESSENTIAL}
    elif config.rubric.ablation == "no_pitfalls":
        assert Category.PITFALL not in categories and Category.ESSENTIAL in categories


def test_locations_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAR_POLICY_DIR", str(tmp_path / "qwen"))
    monkeypatch.setenv("RAR_JUDGE_URL", "http://judge:8000/v1")
    monkeypatch.setenv("RAR_RUBRICS_DIR", str(tmp_path / "rubrics"))
    config = load_config("table3_qwen7b_noref")
    assert config.model.source == str(tmp_path / "qwen")
    assert config.judge.http.base_url == "http://judge:8000/v1"
    assert config.data.train_path == str(tmp_path / "rubrics" / "healthbench_train.qwen7b.noref.jsonl")


@pytest.mark.parametrize("name", ["qwen2.5_7b_base", "qwen2.5_7b_instruct"])
def test_the_untrained_rows_of_figure2_have_evaluation_configs(name):
    from rar_jax.eval.paper_numbers import TABLES

    spec = importlib.util.spec_from_file_location("paper_eval", PAPER_DIR / "eval" / "untrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(name)
    rar_config.validate(config, num_devices=8)
    assert config.output_dir == f"runs/paper/{name}"  # The run rar-tables reads for the row.
    assert name in {cell.run for row in TABLES["figure2"].rows for cell in row.cells}
    assert config.model.source.endswith("Qwen2.5-7B-Instruct" if "instruct" in name
                                        else "Qwen2.5-7B")
    assert config.eval.healthbench_path == "tfds:healthbench:oss_eval"
    assert (config.eval.gpqa_path, config.eval.gpqa_runs) == ("tfds:gpqa_diamond:test", 10)
    assert config.eval.gpqa_verifier_model == "gpt-4o"
    assert config.judge.http.model == "gpt-4o-mini" and config.judge.templates_dir == "paper"
    small = module.get_config(f"{name}:small")
    rar_config.validate(small)
    assert small.model.source == "smollm2" and small.eval.limit == 5


def test_the_gpqa_verifier_is_its_own_model(monkeypatch):
    """rar-eval gpqa asks eval.gpqa_verifier_model (gpt-4o) instead of the training judge."""
    from rar_jax.eval import benchmark_runs, gpqa_eval

    class Loaded(Exception):
        """Stops the run once the policy and judge would be loaded."""

    def load(config, needs_judge=True):
        raise Loaded(config.judge.http.model, needs_judge)

    monkeypatch.setattr(gpqa_eval, "read_gpqa_items", lambda *args, **kwargs: [])
    monkeypatch.setattr(benchmark_runs, "load_policy_and_judge", load)
    config = load_config("science_rar_implicit")
    config.eval.gpqa_path = "unused.csv"
    with pytest.raises(Loaded) as loaded:
        benchmark_runs.run_gpqa(config, None)
    assert loaded.value.args == ("gpt-4o", True)
    config = load_config("science_rar_implicit")
    assert config.judge.http.model == "gpt-4o-mini"  # The training judge stays gpt-4o-mini.
    config.judge.backend = "jax"
    with pytest.raises(rar_config.ConfigError, match="eval.gpqa_verifier_model"):
        rar_config.validate(config)
