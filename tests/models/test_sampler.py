"""The KV-cache sampler: exactness against full forwards, sampling distributions, stopping, buckets
(no recompiles), weight updates, attention windows, sharding, and the real SmolLM2 end to end."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rar_jax.models.loading import load_hf_checkpoint
from rar_jax.models.sampler import SampleOutput, Sampler
from rar_jax.models.sampling import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP_STRING,
    SamplingParams,
    find_stop_string,
    sample_next_tokens,
)
from tiny_checkpoint import byte_tokenizer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = [[5, 17, 200, 33, 9, 41, 77], [8, 3], [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]]


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    """The llama_tiny fixture model (vocab 256)."""
    return load_hf_checkpoint(fixtures_dir / "llama_tiny")


@nnx.jit
def _full_logits(model, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return model(tokens, positions)[0]


def full_forward_logits(model, ids: list[int]) -> np.ndarray:
    """float64[len(ids), vocab] logits of one sequence by a full forward without a cache.

    The ids are right-padded to a multiple of 32 (one compile for many lengths); causal attention
    keeps the padding from affecting the real positions.
    """
    width = -(-len(ids) // 32) * 32
    padded = np.zeros((1, width), np.int32)
    padded[0, : len(ids)] = ids
    logits = _full_logits(model, jnp.asarray(padded))[0, : len(ids)]
    return np.asarray(logits, np.float64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def greedy_reference(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy continuation by argmax of a full (uncached) forward at every step."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(full_forward_logits(model, ids)[-1].argmax()))
    return ids[len(prompt):]


# ------------------------------------------------------------------------------------ pure helpers
def test_find_stop_string():
    assert find_stop_string("abc\nUser: x", ["User:", "\n"]) == 3
    assert find_stop_string("abc", ["z"]) == -1


def test_greedy_token_and_tempered_logprob():
    logits = np.array([[1.0, 3.0, 2.0, -1.0], [0.5, 0.1, 0.2, 4.0]], np.float32)
    tokens, logprobs = sample_next_tokens(
        jnp.asarray(logits), jax.random.key(0), 0.5, 1.0, greedy=True
    )
    np.testing.assert_array_equal(tokens, [1, 3])
    expected = log_softmax(logits.astype(np.float64) / 0.5)[[0, 1], [1, 3]]
    np.testing.assert_allclose(logprobs, expected, atol=1e-6)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7), (2.0, 4, 0.8)],
)
def test_sampling_frequencies_follow_the_truncated_tempered_distribution(temperature, top_k, top_p):
    logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    draws = 40_000
    tokens, logprobs = sample_next_tokens(
        jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (draws, logits.size)),
        jax.random.key(1), temperature, top_p, top_k=top_k, use_top_p=top_p < 1.0,
    )
    # Expected distribution, by hand: temper, keep top-k, keep the nucleus, renormalise.
    probs = np.exp(log_softmax(logits / temperature))
    order = np.argsort(-probs)
    keep = np.zeros(logits.size, bool)
    keep[order[: top_k or logits.size]] = True
    kept = np.where(keep, probs, 0.0) / np.where(keep, probs, 0.0).sum()
    mass_before = np.cumsum(kept[order]) - kept[order]
    nucleus = np.zeros(logits.size, bool)
    nucleus[order[mass_before < top_p]] = True
    expected = np.where(nucleus & keep, kept, 0.0)
    expected /= expected.sum()
    counts = np.bincount(np.asarray(tokens), minlength=logits.size)
    assert np.all(counts[expected == 0] == 0)
    support = expected > 0
    chi_square = np.sum((counts[support] - draws * expected[support]) ** 2 / (draws * expected[support]))
    assert chi_square < 40.0, (counts, draws * expected)
    # The returned log-probs are those of the tempered, UNtruncated distribution.
    np.testing.assert_allclose(logprobs, np.log(probs)[np.asarray(tokens)], atol=1e-5)


# ------------------------------------------------------------------------------------ tiny model
def test_greedy_equals_stepwise_argmax_of_a_full_forward(tiny):
    sampler = Sampler(tiny, stop_ids=())
    out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8, greedy=True), jax.random.key(0))
    for row, prompt in enumerate(PROMPTS):
        assert out.tokens[row].tolist() == greedy_reference(tiny, prompt, 8)
    assert out.finish_reasons == [FINISH_LENGTH] * 3
    np.testing.assert_array_equal(out.lengths, [8, 8, 8])
    assert out.texts == ["", "", ""]  # no tokenizer


def test_logprobs_equal_a_full_forward_tempered_log_softmax(tiny):
    sampler = Sampler(tiny, stop_ids=())
    temperature = 0.7
    sampling = SamplingParams(max_new_tokens=10, temperature=temperature, top_k=20, num_samples=3)
    out = sampler.generate(PROMPTS[:2], sampling, jax.random.key(3))
    assert out.tokens.shape == (6, 10) and out.logprobs.shape == (6, 10)
    np.testing.assert_array_equal(out.prompt_indices, [0, 0, 0, 1, 1, 1])
    for row in range(6):
        prompt = PROMPTS[out.prompt_indices[row]]
        generated = out.tokens[row].tolist()
        logits = full_forward_logits(tiny, prompt + generated)[len(prompt) - 1:-1]
        expected = log_softmax(logits / temperature)[np.arange(10), generated]
        np.testing.assert_allclose(out.logprobs[row], expected, atol=1e-4)
    # Samples of one prompt differ from each other (each row draws its own tokens).
    assert len({tuple(out.tokens[r]) for r in range(3)}) == 3


@pytest.mark.parametrize("name", ["llama3_scaled", "qwen2_tiny", "qwen3_tiny"])
def test_decode_layout_matches_a_full_forward_for_each_family(fixtures_dir, name):
    # The decode loop runs per-layer weights over the per-layer cache: tied heads and llama3
    # RoPE scaling, q/k/v biases (Qwen2) and q/k norms (Qwen3).
    model = load_hf_checkpoint(fixtures_dir / name)
    out = Sampler(model, stop_ids=()).generate(
        PROMPTS[:2], SamplingParams(max_new_tokens=6, temperature=1.0), jax.random.key(5)
    )
    for row, prompt in enumerate(PROMPTS[:2]):
        generated = out.tokens[row].tolist()
        logits = full_forward_logits(model, prompt + generated)[len(prompt) - 1:-1]
        expected = log_softmax(logits)[np.arange(6), generated]
        np.testing.assert_allclose(out.logprobs[row], expected, atol=1e-4)


def test_first_token_frequencies_over_many_samples(tiny):
    """num_samples rows share one prefill; their first tokens follow the truncated distribution."""
    prompt = PROMPTS[0]
    sampler = Sampler(tiny, stop_ids=())
    draws, temperature, top_k = 6000, 0.5, 6
    out = sampler.generate(
        [prompt],
        SamplingParams(max_new_tokens=1, temperature=temperature, top_k=top_k, num_samples=draws),
        jax.random.key(5),
    )
    logits = full_forward_logits(tiny, prompt)[-1]
    probs = np.exp(log_softmax(logits / temperature))
    top = np.argsort(-probs)[:top_k]
    expected = probs[top] / probs[top].sum()
    counts = np.bincount(out.tokens[:, 0], minlength=256)
    assert counts.sum() == counts[top].sum() == draws
    chi_square = np.sum((counts[top] - draws * expected) ** 2 / (draws * expected))
    assert chi_square < 30.0, (counts[top], draws * expected)


def test_top_k_one_and_tiny_top_p_equal_greedy(tiny):
    sampler = Sampler(tiny, stop_ids=())
    greedy = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=6, greedy=True), jax.random.key(0))
    top_k = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=6, top_k=1), jax.random.key(7))
    top_p = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=6, top_p=1e-6), jax.random.key(8))
    np.testing.assert_array_equal(top_k.tokens, greedy.tokens)
    np.testing.assert_array_equal(top_p.tokens, greedy.tokens)
    np.testing.assert_allclose(top_k.logprobs, greedy.logprobs, atol=1e-6)


def test_batched_greedy_equals_one_prompt_at_a_time(tiny):
    sampler = Sampler(tiny, stop_ids=())
    sampling = SamplingParams(max_new_tokens=7, greedy=True, num_samples=2)
    batched = sampler.generate(PROMPTS, sampling, jax.random.key(0))
    for index, prompt in enumerate(PROMPTS):
        alone = sampler.generate([prompt], sampling, jax.random.key(0))
        for sample in range(2):
            np.testing.assert_array_equal(batched.tokens[2 * index + sample], alone.tokens[sample])
            np.testing.assert_allclose(batched.logprobs[2 * index + sample], alone.logprobs[sample], atol=1e-5)


def test_concatenated_calls_equal_one_call(tiny):
    """Rollouts in chunks of prompts (rl.rollout_chunk_prompts) give the rows of one call."""
    sampler = Sampler(tiny, stop_ids=())
    sampling = SamplingParams(max_new_tokens=5, greedy=True, num_samples=2)
    whole = sampler.generate(PROMPTS, sampling, jax.random.key(0))
    parts = [sampler.generate(PROMPTS[:2], sampling, jax.random.key(0)),
             sampler.generate(PROMPTS[2:], sampling, jax.random.key(0))]
    joined = SampleOutput.concatenate(parts, [0, 2])
    np.testing.assert_array_equal(joined.prompt_indices, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(joined.prompt_indices, whole.prompt_indices)
    np.testing.assert_array_equal(joined.tokens, whole.tokens)
    np.testing.assert_array_equal(joined.lengths, whole.lengths)
    np.testing.assert_allclose(joined.logprobs, whole.logprobs, atol=1e-5)
    assert joined.finish_reasons == whole.finish_reasons and len(joined.texts) == 6


def test_stop_id_ends_a_row(tiny):
    sampling = SamplingParams(max_new_tokens=8, greedy=True)
    free = Sampler(tiny, stop_ids=()).generate(PROMPTS, sampling, jax.random.key(0))
    stop_id = int(free.tokens[0, 3])
    stopped = Sampler(tiny, stop_ids=(stop_id,)).generate(PROMPTS, sampling, jax.random.key(0))
    for row in range(3):
        hits = np.flatnonzero(free.tokens[row] == stop_id)
        if hits.size:
            length = int(hits[0]) + 1
            assert stopped.finish_reasons[row] == FINISH_EOS
        else:
            length = 8
            assert stopped.finish_reasons[row] == FINISH_LENGTH
        assert stopped.lengths[row] == length
        np.testing.assert_array_equal(stopped.tokens[row, :length], free.tokens[row, :length])
        np.testing.assert_array_equal(stopped.tokens[row, length:], 0)  # the pad id
        np.testing.assert_allclose(stopped.logprobs[row, :length], free.logprobs[row, :length], atol=1e-6)
        np.testing.assert_array_equal(stopped.logprobs[row, length:], 0.0)
    assert stopped.lengths[0] <= 4


def test_max_new_tokens_sets_the_shape(tiny):
    sampler = Sampler(tiny, stop_ids=())
    for max_new in (1, 5):
        out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=max_new), jax.random.key(0))
        assert out.tokens.shape == (3, max_new)
        np.testing.assert_array_equal(out.lengths, [max_new] * 3)
        assert out.num_decode_steps == max_new - 1


def test_texts_and_stop_strings_with_a_byte_tokenizer(tiny):
    tokenizer = byte_tokenizer()
    sampler = Sampler(tiny, tokenizer, stop_ids=())  # no stop ids: only stop strings end rows
    sampling = SamplingParams(max_new_tokens=40, temperature=1.5, num_samples=2)
    free = sampler.generate(PROMPTS, sampling, jax.random.key(11))
    for row in range(6):
        assert free.texts[row] == tokenizer.decode(free.tokens[row].tolist(), skip_special_tokens=True)
    # A printable character that row 0 generates after its third token is the stop string.
    row0 = free.tokens[0].tolist()
    stop_at = next(i for i in range(3, 40) if 33 <= row0[i] <= 126)  # a printable ASCII byte
    stop = chr(row0[stop_at])
    out = sampler.generate(
        PROMPTS, dataclass_replace(sampling, stop_strings=(stop,), stop_check_interval=4),
        jax.random.key(11),
    )
    for row in range(6):
        generated = free.tokens[row].tolist()
        hits = [i for i, t in enumerate(generated) if t == ord(stop)]
        if hits:
            length = hits[0] + 1
            assert out.finish_reasons[row] == FINISH_STOP_STRING
            assert out.texts[row] == tokenizer.decode(generated[: hits[0]], skip_special_tokens=True)
        else:
            length = 40
            assert out.finish_reasons[row] == FINISH_LENGTH
        assert out.lengths[row] == length
        np.testing.assert_array_equal(out.tokens[row, :length], generated[:length])
        np.testing.assert_array_equal(out.tokens[row, length:], tokenizer.pad_id)
        np.testing.assert_array_equal(out.logprobs[row, length:], 0.0)
        np.testing.assert_allclose(out.logprobs[row, :length], free.logprobs[row, :length], atol=1e-6)
    assert out.lengths[0] == stop_at + 1 or ord(stop) in row0[:stop_at]
    # Host checks every 4 steps: once all rows stopped, decoding ended within 4 more steps.
    if all(reason == FINISH_STOP_STRING for reason in out.finish_reasons):
        assert out.num_decode_steps <= max(out.lengths) - 1 + 4
    # The stop string ends row 0 early; with a larger check interval the result is the same.
    late = sampler.generate(
        PROMPTS, dataclass_replace(sampling, stop_strings=(stop,), stop_check_interval=64),
        jax.random.key(11),
    )
    np.testing.assert_array_equal(late.tokens, out.tokens)
    assert late.texts == out.texts


def test_stop_check_interval_bounds_the_decode_steps(tiny):
    """All rows stop on a stop string early; the host notices within one interval."""
    tokenizer = byte_tokenizer()
    sampler = Sampler(tiny, tokenizer, stop_ids=())
    sampling = SamplingParams(max_new_tokens=60, greedy=True)
    free = sampler.generate([PROMPTS[0]], sampling, jax.random.key(0))
    stop = tokenizer.decode(free.tokens[0, 1:3].tolist())
    expected_length = 3 if find_stop_string(tokenizer.decode(free.tokens[0, :2].tolist()), [stop]) < 0 else 2
    for interval, max_steps in ((2, 4), (8, 8)):
        out = sampler.generate(
            [PROMPTS[0]], dataclass_replace(sampling, stop_strings=(stop,), stop_check_interval=interval),
            jax.random.key(0),
        )
        assert out.finish_reasons == [FINISH_STOP_STRING]
        assert out.lengths[0] <= expected_length
        assert out.num_decode_steps <= max_steps  # not 59: the check interval is honoured


def test_deterministic_under_a_fixed_key(tiny):
    sampler = Sampler(tiny, stop_ids=())
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, num_samples=2)
    a = sampler.generate(PROMPTS, sampling, jax.random.key(42))
    b = sampler.generate(PROMPTS, sampling, jax.random.key(42))
    c = sampler.generate(PROMPTS, sampling, jax.random.key(43))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.tokens, c.tokens)


def test_no_recompile_inside_a_bucket_and_new_weights_without_recompiling(tiny):
    sampler = Sampler(tiny, stop_ids=(), prompt_buckets=(16, 32), batch_buckets=(4, 8))
    sampling = SamplingParams(max_new_tokens=4, greedy=True)
    first = sampler.generate(PROMPTS, sampling, jax.random.key(0))  # 3 prompts -> 4 rows, length 16
    assert sampler.compile_counts() == {"prefill": 1, "decode": 1}
    sampler.generate([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]], sampling, jax.random.key(1))
    sampler.generate([[9], [8], [7], [6]], sampling, jax.random.key(2))
    sampler.generate(PROMPTS, SamplingParams(max_new_tokens=4, greedy=True, temperature=0.3), jax.random.key(0))
    assert sampler.compile_counts() == {"prefill": 1, "decode": 1}
    # New weights (same shapes) are used without recompiling.
    graphdef, params = nnx.split(tiny)
    scaled = jax.tree.map(lambda x: x * 1.5, params)
    changed = sampler.generate(PROMPTS, sampling, jax.random.key(0), params=scaled)
    assert sampler.compile_counts() == {"prefill": 1, "decode": 1}
    reference = greedy_reference(nnx.merge(graphdef, scaled), PROMPTS[0], 4)
    assert changed.tokens[0].tolist() == reference
    assert not np.array_equal(changed.tokens, first.tokens)
    sampler.set_params(scaled)
    np.testing.assert_array_equal(sampler.generate(PROMPTS, sampling, jax.random.key(0)).tokens, changed.tokens)
    # Crossing a bucket compiles once more: a 17-token prompt and 5 prompts.
    sampler.generate([list(range(1, 18))], sampling, jax.random.key(0))
    assert sampler.compile_counts()["prefill"] == 2
    sampler.generate([[3]] * 5, sampling, jax.random.key(0))
    assert sampler.compile_counts()["prefill"] == 3


def test_buckets_pick_the_compiled_shapes(tiny):
    coarse = Sampler(tiny, stop_ids=(), prompt_buckets=(16,), batch_buckets=(4,))
    fine = Sampler(tiny, stop_ids=(), prompt_buckets=(4, 16), batch_buckets=(1, 4))
    sampling = SamplingParams(max_new_tokens=3, greedy=True)
    for sampler in (coarse, fine):
        for prompts in ([[1, 2, 3]], [[1, 2, 3, 4, 5, 6], [7, 8], [9]]):
            sampler.generate(prompts, sampling, jax.random.key(0))
    assert coarse.compile_counts()["prefill"] == 1
    assert fine.compile_counts()["prefill"] == 2


def test_attention_window_gives_the_same_answers_with_several_windows(tiny):
    whole = Sampler(tiny, stop_ids=(), attention_window_multiple=0)
    windowed = Sampler(tiny, stop_ids=(), attention_window_multiple=8, prompt_buckets=(16,))
    sampling = SamplingParams(max_new_tokens=20, temperature=0.8, num_samples=2)
    a = whole.generate(PROMPTS, sampling, jax.random.key(4))
    b = windowed.generate(PROMPTS, sampling, jax.random.key(4))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert whole.compile_counts()["decode"] == 1
    # Prompt bucket 16 + 20 new tokens = 36 slots: windows 24, 32 and 36.
    assert windowed.compile_counts()["decode"] == 3
    assert [windowed.attention_window(16, step, 20) for step in (1, 8, 9, 17, 19)] == [24, 24, 32, 36, 36]


def test_bad_input_is_rejected(tiny):
    sampler = Sampler(tiny, stop_ids=())
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        sampler.generate([[1], []], SamplingParams(max_new_tokens=2), jax.random.key(0))
    with pytest.raises(ValueError, match="stop_strings need a tokenizer"):
        sampler.generate([[1]], SamplingParams(max_new_tokens=2, stop_strings=("x",)), jax.random.key(0))
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="stop_strings"):
        SamplingParams(stop_strings="abc")


def dataclass_replace(sampling: SamplingParams, **changes) -> SamplingParams:
    import dataclasses

    return dataclasses.replace(sampling, **changes)


# ------------------------------------------------------------------------------------ sharding
SHARDED_CHECK = textwrap.dedent(
    """
    import jax, numpy as np
    from rar_jax.models.loading import load_hf_checkpoint
    from rar_jax.models.sampler import Sampler, SamplingParams
    from rar_jax.parallel import make_mesh
    assert jax.device_count() == 8, jax.devices()
    directory = {directory!r}
    prompts = {prompts!r}
    sampling = SamplingParams(max_new_tokens=6, greedy=True, num_samples=2)
    plain = Sampler(load_hf_checkpoint(directory), stop_ids=()).generate(prompts, sampling, jax.random.key(0))
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = load_hf_checkpoint(directory, mesh=mesh)
    sharded_sampler = Sampler(model, stop_ids=(), mesh=mesh)
    sharded = sharded_sampler.generate(prompts, sampling, jax.random.key(0))
    spec = model.layers.q_proj[...].sharding.spec
    assert tuple(spec) == (None, "fsdp", "tensor", None), spec
    np.testing.assert_array_equal(sharded.tokens, plain.tokens)
    np.testing.assert_allclose(sharded.logprobs, plain.logprobs, atol=1e-5)
    print("SHARDED_OK", sharded.tokens.shape)
    """
)


@pytest.mark.slow
def test_sharded_greedy_equals_unsharded_on_8_devices(fixtures_dir):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    code = SHARDED_CHECK.format(directory=str(fixtures_dir / "llama_tiny"), prompts=PROMPTS)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert result.returncode == 0 and "SHARDED_OK (6, 6)" in result.stdout, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ SmolLM2
@pytest.mark.slow
def test_smollm2_batched_greedy_equals_one_at_a_time_and_answers_paris(smollm2_model, smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    questions = ["What is the capital of France?", "Say hi.", "List two fruits, then explain why each is healthy."]
    prompts = [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": q}])) for q in questions]
    assert len({len(p) for p in prompts}) == 3  # different lengths: real left padding
    sampler = Sampler(smollm2_model, tokenizer)
    sampling = SamplingParams(max_new_tokens=12, greedy=True)
    batched = sampler.generate(prompts, sampling, jax.random.key(0))
    assert "Paris" in batched.texts[0]
    assert batched.finish_reasons[0] == FINISH_EOS
    assert batched.tokens[0, batched.lengths[0] - 1] in tokenizer.stop_ids
    for row, prompt in enumerate(prompts):
        alone = sampler.generate([prompt], sampling, jax.random.key(0))
        np.testing.assert_array_equal(batched.tokens[row], alone.tokens[0])
        assert batched.texts[row] == alone.texts[0]
    # The log-probs are the full forward's log-softmax (temperature 1) at the chosen tokens.
    generated = batched.tokens[2].tolist()
    logits = full_forward_logits(smollm2_model, prompts[2] + generated)[len(prompts[2]) - 1:-1]
    expected = log_softmax(logits)[np.arange(12), generated]
    np.testing.assert_allclose(batched.logprobs[2], expected, atol=1e-4)
    assert generated == greedy_reference(smollm2_model, prompts[2], 12)
