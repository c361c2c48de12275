"""ModelConfig from HF config.json (both RoPE forms) and GGUF metadata, and back."""

import json

import pytest

from rar_jax.models.config import ModelConfig, RopeScaling

LLAMA3_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _hf_llama(**extra):
    config = {
        "model_type": "llama",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    }
    config.update(extra)
    return config


def test_both_rope_forms_give_the_same_config():
    old = ModelConfig.from_hf_config(
        _hf_llama(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", **LLAMA3_SCALING})
    )
    new = ModelConfig.from_hf_config(
        _hf_llama(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3_SCALING})
    )
    assert old == new
    assert old.rope_theta == 500000.0
    assert old.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)


def test_old_rope_scaling_with_type_key_and_default_type():
    linear = ModelConfig.from_hf_config(_hf_llama(rope_scaling={"type": "linear", "factor": 2.0}))
    assert linear.rope_scaling == RopeScaling("linear", 2.0)
    assert linear.rope_theta == 10000.0
    default = ModelConfig.from_hf_config(
        _hf_llama(rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    )
    assert default.rope_scaling is None and default.rope_theta == 1e6


def test_fields_read_from_hf_config():
    config = ModelConfig.from_hf_config(_hf_llama(head_dim=32), dtype="bfloat16", remat_policy="full")
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (2, 4, 2, 32)
    assert config.tie_word_embeddings and not config.attention_bias and not config.qk_norm
    assert (config.dtype, config.remat_policy) == ("bfloat16", "full")
    assert ModelConfig.from_hf_config(_hf_llama()).head_dim == 16  # hidden / heads by default
    assert ModelConfig.from_hf_config(_hf_llama(model_type="qwen2")).attention_bias
    assert ModelConfig.from_hf_config(_hf_llama(model_type="qwen3")).qk_norm


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True, "model_type": "qwen2"}, "use_sliding_window"),
        ({"attention_bias": True}, "attention_bias"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
    ],
)
def test_unsupported_hf_configs_are_rejected_with_the_field(change, message):
    with pytest.raises(ValueError, match=message) as info:
        ModelConfig.from_hf_config(_hf_llama(**change), source="some/config.json")
    assert "some/config.json" in str(info.value)


def test_missing_required_field_is_named():
    config = _hf_llama()
    del config["num_hidden_layers"]
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ModelConfig.from_hf_config(config)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"dtype": "float64"}, "dtype"),
        ({"remat_policy": "sometimes"}, "remat_policy"),
        ({"head_dim": 15}, "head_dim"),
    ],
)
def test_invalid_fields_are_rejected(change, message):
    base = ModelConfig.from_hf_config(_hf_llama())
    with pytest.raises(ValueError, match=message):
        base.replace(**change)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_hf_config_round_trip(arch):
    scaling = {"rope_scaling": {"rope_type": "llama3", **LLAMA3_SCALING}} if arch == "llama" else {}
    config = ModelConfig.from_hf_config(_hf_llama(model_type=arch, rope_theta=1e6, **scaling))
    written = json.loads(json.dumps(config.to_hf_config()))
    assert written["architectures"] == [
        {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]
    ]
    assert ModelConfig.from_hf_config(written) == config


def test_from_gguf_metadata():
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": 30,
        "llama.context_length": 8192,
        "llama.embedding_length": 576,
        "llama.feed_forward_length": 1536,
        "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3,
        "llama.rope.freq_base": 100000.0,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.vocab_size": 49152,
    }
    config = ModelConfig.from_gguf_metadata(metadata, has_output_weight=False)
    assert config.head_dim == 64 and config.tie_word_embeddings and config.rope_theta == 100000.0
    assert config.num_parameters() == 134_515_008  # SmolLM2-135M
    assert not ModelConfig.from_gguf_metadata(metadata, has_output_weight=True).tie_word_embeddings
    with pytest.raises(ValueError, match="llama.block_count"):
        ModelConfig.from_gguf_metadata(
            {k: v for k, v in metadata.items() if k != "llama.block_count"}, has_output_weight=False
        )
