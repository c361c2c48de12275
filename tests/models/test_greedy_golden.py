"""Our Sampler's greedy answers on the embedded SmolLM2-135M-Instruct (float32) equal transformers'
token for token: stored ids made by tests/fixtures/make_greedy_fixture.py (transformers generate,
eager attention, on the weights our export_hf writes), for four chat prompts of 37-107 tokens decoded
as one left-padded batch, and for one of them alone. Any speed-up of the sampler must keep these."""

import json

import jax
import pytest

from rar_jax.models.sampler import Sampler, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return json.loads((fixtures_dir / "smollm2_greedy.json").read_text())


def _assert_same_answers(out, examples) -> None:
    """Each row's answer (up to its length) equals the stored ids; a failure names the first
    differing step and the reference's smallest top-2 logit gap (a near tie or a real bug)."""
    for row, example in enumerate(examples):
        ours = out.tokens[row, : out.lengths[row]].tolist()
        want = example["greedy_ids"]
        if ours != want:
            first = next((i for i, (a, b) in enumerate(zip(ours, want)) if a != b), min(len(ours), len(want)))
            pytest.fail(
                f"prompt {row} ({len(example['prompt_ids'])} tokens): ours differs from transformers "
                f"from step {first} (ours {ours[first:first + 4]}, theirs {want[first:first + 4]}; "
                f"lengths {len(ours)} vs {len(want)}; reference's smallest top-2 gap "
                f"{example['min_top2_logit_gap']})"
            )


def test_prompts_tokenize_as_stored(smollm2_tokenizer, golden):
    for example in golden["examples"]:
        text = smollm2_tokenizer.apply_chat_template(example["conversation"])
        assert smollm2_tokenizer.encode(text) == example["prompt_ids"]
    assert list(smollm2_tokenizer.stop_ids) == golden["stop_ids"]


def test_greedy_ids_equal_transformers_batched_and_alone(smollm2_model, smollm2_tokenizer, golden):
    sampler = Sampler(smollm2_model, smollm2_tokenizer)
    sampling = SamplingParams(max_new_tokens=golden["max_new_tokens"], greedy=True)
    examples = golden["examples"]
    assert len({len(e["prompt_ids"]) for e in examples}) == len(examples)  # left padding is exercised
    assert {len(e["greedy_ids"]) < golden["max_new_tokens"] for e in examples} == {True, False}

    batched = sampler.generate([e["prompt_ids"] for e in examples], sampling, jax.random.key(0))
    _assert_same_answers(batched, examples)

    single = examples[golden["single_index"]]
    alone = sampler.generate([single["prompt_ids"]], sampling, jax.random.key(1))
    _assert_same_answers(alone, [single])
