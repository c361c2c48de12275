"""Generation continuing shared prefixes (rar_jax.models.prefix_decoding, Sampler.generate's
``prefix_groups``) against the plain path, which prefills every prompt whole."""

import jax
import numpy as np
import pytest

from rar_jax.models.loading import load_hf_checkpoint
from rar_jax.models.prefix_decoding import shared_prefix_length, split_shared_prefixes
from rar_jax.models.sampler import Sampler
from rar_jax.models.sampling import SamplingParams


def test_split_shared_prefixes_by_hand():
    prompts = [[1, 2, 3, 4], [7, 8], [1, 2, 3, 9, 9], [7, 8, 5], [1, 2, 3]]
    split = split_shared_prefixes(prompts, ["a", "b", "a", "b", "a"])
    # Group a shares [1, 2, 3] but [1, 2, 3] must keep a token: its prefix is [1, 2].
    assert split.prefixes == [[1, 2], [7]]
    assert split.sources == [0, 1, 0, 1, 0]
    assert split.suffixes == [[3, 4], [8], [3, 9, 9], [8, 5], [3]]
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5], [6]]) == 0


def test_split_shared_prefixes_rejects_groups_without_a_prefix():
    with pytest.raises(ValueError, match=r"prefix group 3 \(prompts \[0, 1\]\).*share no token"):
        split_shared_prefixes([[1, 2], [5, 2]], [3, 3])
    with pytest.raises(ValueError, match="prefix group 0 .*share no token"):
        split_shared_prefixes([[1]], [0])  # one token: nothing left for a prefix
    with pytest.raises(ValueError, match="2 group ids for 3 prompts"):
        split_shared_prefixes([[1, 2], [1, 3], [1, 4]], [0, 0])


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return load_hf_checkpoint(fixtures_dir / "llama_tiny")


def test_prefix_reuse_equals_whole_prompts_on_the_tiny_model(tiny):
    shared_a = list(range(10, 50))  # 40 tokens: the prefix pads to 64, suffixes to 32
    shared_b = [3, 1, 4, 1, 5, 9, 2, 6]
    prompts = [
        shared_a + [200, 201],
        shared_b + [7, 7, 7, 7, 7, 7, 7],
        shared_a + [90, 91, 92, 93, 94, 95, 96, 97, 98],
        shared_b + [8],
        shared_a + [60],
    ]
    groups = [0, 1, 0, 1, 0]
    sampler = Sampler(tiny, stop_ids=(), pad_id=0)
    sampling = SamplingParams(max_new_tokens=12, greedy=True, num_samples=2)
    whole = sampler.generate(prompts, sampling, jax.random.key(0))
    reused = sampler.generate(prompts, sampling, jax.random.key(0), prefix_groups=groups)
    np.testing.assert_array_equal(reused.tokens, whole.tokens)
    np.testing.assert_allclose(reused.logprobs, whole.logprobs, atol=1e-5)
    assert sampler.compile_counts()["prefill"] == 2  # the whole prompts' and the prefix one
    # 2 prefix rows of 64 slots, 8 prompt rows of 32 slots, against 8 rows of 64.
    assert sampler.prefill_slots(prompts, groups) == 2 * 64 + 8 * 32
    assert sampler.prefill_slots(prompts) == 8 * 64


@pytest.mark.slow
def test_prefix_reuse_equals_whole_prompts_on_judge_prompts_with_smollm2(
    smollm2_model, smollm2_tokenizer, shared_data
):
    from rar_jax.eval.judge_quality import healthbench_pairs, judge_prompts

    pairs = healthbench_pairs(shared_data / "healthbench_graded_m42" / "judge_responses_100.jsonl")
    prompts, groups = judge_prompts(pairs.pairs)
    ids = [smollm2_tokenizer.encode_chat(p.messages) for p in prompts]
    # Two answers with two criteria each, the shortest such prompts (cheap on CPU).
    by_group: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    chosen_groups = sorted(
        (g for g, members in by_group.items() if len(members) >= 2),
        key=lambda g: max(len(ids[i]) for i in by_group[g][:2]),
    )[:2]
    chosen = [i for g in chosen_groups for i in by_group[g][:2]]
    chosen = [chosen[0], chosen[2], chosen[1], chosen[3]]  # interleave the two answers
    batch = [ids[i] for i in chosen]
    sampler = Sampler(smollm2_model, smollm2_tokenizer)
    sampling = SamplingParams(max_new_tokens=16, greedy=True)
    whole = sampler.generate(batch, sampling, jax.random.key(0))
    reuse_groups = [groups[i] for i in chosen]
    reused = sampler.generate(batch, sampling, jax.random.key(0), prefix_groups=reuse_groups)
    assert sampler.prefill_slots(batch, reuse_groups) < sampler.prefill_slots(batch)
    np.testing.assert_array_equal(reused.tokens, whole.tokens)
    assert reused.texts == whole.texts
    np.testing.assert_allclose(reused.logprobs, whole.logprobs, atol=1e-4)
