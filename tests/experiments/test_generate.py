"""rar-generate: the Paris prompt on the embedded SmolLM2, and a JSONL round trip with a tiny model."""

import json
import pathlib
import subprocess

import jax
import numpy as np
import pytest

from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.models.sampler import Sampler, SamplingParams
from cli_runner import run_experiment
from tiny_checkpoint import write_tiny_checkpoint

RECORDS = [
    {"prompt": "hello there"},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}]},
    {"prompt": "a third, longer prompt to pad against"},
]


def run_generate(*args: str) -> subprocess.CompletedProcess:
    """Run experiments/generate.py in a subprocess (absl flags are process-global); must succeed."""
    result = run_experiment("generate.py", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> pathlib.Path:
    """The llama_tiny fixture weights plus a byte-level tokenizer, as an HF directory."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def expected_outputs(checkpoint: pathlib.Path, sampling: SamplingParams, seed: int, batch_size: int):
    """The sampler's own answers for RECORDS (the reference the CLI must reproduce)."""
    model, tokenizer = load_model_and_tokenizer(checkpoint)
    prompts = [
        tokenizer.encode(tokenizer.apply_chat_template(r.get("messages") or [{"role": "user", "content": r["prompt"]}]))
        for r in RECORDS
    ]
    sampler = Sampler(model, tokenizer)
    texts, lengths, logprob_sums = [], [], []
    for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
        out = sampler.generate(
            prompts[start:start + batch_size], sampling, jax.random.fold_in(jax.random.key(seed), batch_index)
        )
        texts += out.texts
        lengths += out.lengths.tolist()
        logprob_sums += [float(out.logprobs[r, : out.lengths[r]].sum()) for r in range(len(out.texts))]
    return texts, lengths, logprob_sums


def read_output(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_jsonl_round_trip_with_a_tiny_checkpoint(tiny_checkpoint, prompts_file, tmp_path):
    output = tmp_path / "answers.jsonl"
    result = run_generate(
        "--model", str(tiny_checkpoint), "--input", str(prompts_file), "--output", str(output),
        "--greedy", "--max_new_tokens", "5", "--num_samples", "2", "--batch_size", "2",
    )
    assert "answered 3 prompts in 2 batches" in result.stdout
    records = read_output(output)
    assert len(records) == 3
    texts, lengths, _ = expected_outputs(
        tiny_checkpoint, SamplingParams(max_new_tokens=5, greedy=True, num_samples=2), 0, 2
    )
    for index, (record, source) in enumerate(zip(records, RECORDS)):
        assert {k: record[k] for k in source} == source  # the input fields are kept
        assert record["answers"] == texts[2 * index: 2 * index + 2]
        assert record["answers"][0] == record["answers"][1]  # greedy: both samples agree
        assert record["num_tokens"] == lengths[2 * index: 2 * index + 2]
        assert all(n <= 5 for n in record["num_tokens"])
        for reason, n in zip(record["finish_reasons"], record["num_tokens"]):
            assert reason == ("length" if n == 5 else "eos")
        assert record["answers"][0] in result.stdout


@pytest.mark.slow
def test_sampling_flags_are_passed_to_the_sampler(tiny_checkpoint, prompts_file, tmp_path):
    greedy, _, _ = expected_outputs(tiny_checkpoint, SamplingParams(max_new_tokens=6, greedy=True), 0, 8)
    # top_k=1 at temperature 0.5 samples the greedy tokens; the log-probs are tempered by 0.5.
    out_k = tmp_path / "top_k.jsonl"
    run_generate(
        "--model", str(tiny_checkpoint), "--input", str(prompts_file), "--output", str(out_k),
        "--top_k", "1", "--temperature", "0.5", "--max_new_tokens", "6",
    )
    _, _, tempered = expected_outputs(
        tiny_checkpoint, SamplingParams(max_new_tokens=6, greedy=True, temperature=0.5), 0, 8
    )
    records = read_output(out_k)
    assert [r["answers"][0] for r in records] == greedy
    np.testing.assert_allclose([r["sum_logprobs"][0] for r in records], tempered, atol=1e-4)
    # A tiny nucleus is greedy too; different seeds at temperature 3 give different answers.
    out_p, out_s1, out_s2 = tmp_path / "p.jsonl", tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"
    run_generate("--model", str(tiny_checkpoint), "--input", str(prompts_file), "--output", str(out_p),
                 "--top_p", "1e-6", "--max_new_tokens", "6")
    assert [r["answers"][0] for r in read_output(out_p)] == greedy
    for path, seed in ((out_s1, "1"), (out_s2, "2")):
        run_generate("--model", str(tiny_checkpoint), "--input", str(prompts_file), "--output", str(path),
                     "--temperature", "3.0", "--max_new_tokens", "6", "--seed", seed)
    sampled, _, _ = expected_outputs(tiny_checkpoint, SamplingParams(max_new_tokens=6, temperature=3.0), 1, 8)
    assert [r["answers"][0] for r in read_output(out_s1)] == sampled
    assert [r["answers"] for r in read_output(out_s1)] != [r["answers"] for r in read_output(out_s2)]


def test_bad_prompt_records_are_rejected_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"question": "x"}) + "\n")
    result = run_experiment("generate.py", "--input", path, timeout=300)
    assert result.returncode != 0
    assert "bad.jsonl:2: record has neither 'prompt' nor 'messages'" in result.stderr


@pytest.mark.slow
def test_paris_on_the_embedded_smollm2():
    result = run_generate("--greedy", "What is the capital of France?")
    assert "Paris" in result.stdout
