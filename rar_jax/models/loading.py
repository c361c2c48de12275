"""Weight loading (HF safetensors directory, GGUF file, the embedded SmolLM2) and HF export.

Every source is read as HF-named tensors in HF layout (``[out_features, in_features]``); one converter
turns them into the decoder's stacked parameters. Each host numpy array is placed straight into its
target sharding with ``jax.device_put(array, sharding)``, one tensor at a time, so no device ever holds
a full copy of a sharded parameter and the host holds at most one stacked tensor beyond the source.

No torch is used: safetensors are read with ``safetensors.numpy`` and GGUF with the ``gguf`` package
(``GGUFReader`` + ``gguf.quants.dequantize``).
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rar_jax.models.config import ModelConfig
from rar_jax.models.decoder import Decoder, layer_param_shapes
from rar_jax.models.model_files import embedded_smollm2_path, gguf_metadata

logger = logging.getLogger(__name__)


# Our stacked layer parameter -> HF per-layer tensor suffix.
_HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight",
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "q_bias": "self_attn.q_proj.bias",
    "k_bias": "self_attn.k_proj.bias",
    "v_bias": "self_attn.v_proj.bias",
    "q_norm": "self_attn.q_norm.weight",
    "k_norm": "self_attn.k_norm.weight",
    "mlp_norm": "post_attention_layernorm.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
}

# HF tensor name (with {i} for the layer) -> GGUF tensor name.
_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.self_attn.q_proj.bias": "blk.{i}.attn_q.bias",
    "model.layers.{i}.self_attn.k_proj.bias": "blk.{i}.attn_k.bias",
    "model.layers.{i}.self_attn.v_proj.bias": "blk.{i}.attn_v.bias",
    "model.layers.{i}.self_attn.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "blk.{i}.attn_k_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}

TensorGetter = Callable[[str], np.ndarray]


# ---------------------------------------------------------------------------- layout conversion
def hf_to_param(config: ModelConfig, name: str, hf: np.ndarray) -> np.ndarray:
    """Convert one HF layer tensor to our per-layer layout.

    Args:
        config: the model config.
        name: our layer parameter name (e.g. "q_proj").
        hf: the HF tensor, e.g. q_proj.weight [h * e, d].

    Returns:
        The tensor in our layout, e.g. q_proj [d, h, e].
    """
    d, h, k, e = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    if name == "q_proj":
        return hf.T.reshape(d, h, e)
    if name in ("k_proj", "v_proj"):
        return hf.T.reshape(d, k, e)
    if name == "o_proj":
        return hf.T.reshape(h, e, d)
    if name == "q_bias":
        return hf.reshape(h, e)
    if name in ("k_bias", "v_bias"):
        return hf.reshape(k, e)
    if name in ("gate_proj", "up_proj", "down_proj"):
        return hf.T
    return hf


def param_to_hf(config: ModelConfig, name: str, param: np.ndarray) -> np.ndarray:
    """Inverse of `hf_to_param` for one layer's tensor."""
    d, h, k, e = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    if name == "q_proj":
        return param.reshape(d, h * e).T
    if name in ("k_proj", "v_proj"):
        return param.reshape(d, k * e).T
    if name == "o_proj":
        return param.reshape(h * e, d).T
    if name in ("q_bias", "k_bias", "v_bias"):
        return param.reshape(-1)
    if name in ("gate_proj", "up_proj", "down_proj"):
        return param.T
    return param


def host_params(config: ModelConfig, get: TensorGetter) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Yield (state path, host array in our layout) for every model parameter.

    Args:
        config: the model config.
        get: returns an HF-named tensor in HF layout; raises KeyError if absent.
    """
    yield ("embed",), get("model.embed_tokens.weight")
    yield ("final_norm",), get("model.norm.weight")
    if not config.tie_word_embeddings:
        yield ("lm_head",), get("lm_head.weight").T
    for name in layer_param_shapes(config):
        suffix = _HF_LAYER_NAMES[name]
        per_layer = [
            hf_to_param(config, name, get(f"model.layers.{i}.{suffix}")) for i in range(config.num_layers)
        ]
        yield ("layers", name), np.stack(per_layer)


def model_from_host_params(
    config: ModelConfig,
    params: Iterator[tuple[tuple[str, ...], np.ndarray]] | Mapping[tuple[str, ...], np.ndarray],
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    source: str = "checkpoint",
) -> Decoder:
    """Build a `Decoder` whose parameters are the given host arrays, placed per tensor.

    Args:
        config: the model config (its param_dtype is applied).
        params: (state path, numpy array in our layout) pairs for every parameter.
        mesh: optional mesh; each array goes straight to its rule-given NamedSharding.
        rules: logical -> mesh axis rules (default rar_jax.parallel.LOGICAL_AXIS_RULES).
        source: the file or directory, for error messages.

    Raises:
        ValueError: naming the source and tensor, for a missing, unexpected or mis-shaped tensor.
    """
    from rar_jax.parallel.sharding import param_shardings

    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = param_shardings(abstract_state, mesh, rules) if mesh is not None else None
    flat_abstract = dict(nnx.to_flat_state(abstract_state))
    flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    param_dtype = jnp.dtype(config.param_dtype)
    items = params.items() if isinstance(params, Mapping) else params
    loaded: dict[tuple[str, ...], nnx.Variable] = {}
    for path, array in items:
        path = tuple(path)
        if path not in flat_abstract:
            raise ValueError(f"{source}: unexpected parameter {'/'.join(path)}")
        variable = flat_abstract[path]
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(
                f"{source}: parameter {'/'.join(path)} has shape {tuple(array.shape)}, expected "
                f"{tuple(variable.shape)} for this config"
            )
        host = np.asarray(array).astype(param_dtype, copy=False)
        if path in flat_shardings:
            value = jax.device_put(host, flat_shardings[path].get_value())
        else:
            value = jax.device_put(host)
        loaded[path] = variable.replace(value)
    missing = sorted("/".join(p) for p in flat_abstract if p not in loaded)
    if missing:
        raise ValueError(f"{source}: parameters missing: {missing}")
    state = nnx.from_flat_state(loaded)
    return nnx.merge(graphdef, state)


# ---------------------------------------------------------------------------- HF directory
class SafetensorsDirectory:
    """HF-named tensors of a checkpoint directory (one or several ``*.safetensors``)."""

    def __init__(self, directory: str | pathlib.Path):
        from safetensors import safe_open

        self.directory = pathlib.Path(directory)
        index_path = self.directory / "model.safetensors.index.json"
        if index_path.exists():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{index_path}: expected JSON with a 'weight_map' object ({err})") from err
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{self.directory}: no *.safetensors files")
            weight_map = None
        self._handles = {name: safe_open(str(self.directory / name), framework="numpy") for name in files}
        self._file_of: dict[str, str] = {}
        for name, handle in self._handles.items():
            for key in handle.keys():
                self._file_of[key] = name
        if weight_map is not None:
            for key, name in weight_map.items():
                if self._file_of.get(key) != name:
                    raise ValueError(f"{index_path}: tensor {key!r} is not in {name}")

    def names(self) -> set[str]:
        """All tensor names."""
        return set(self._file_of)

    def __call__(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array (bf16 as ml_dtypes.bfloat16)."""
        if name not in self._file_of:
            raise KeyError(f"{self.directory}: tensor {name!r} not found in the safetensors files")
        return self._handles[self._file_of[name]].get_tensor(name)


def read_hf_config(directory: str | pathlib.Path, **overrides: Any) -> ModelConfig:
    """ModelConfig from ``<directory>/config.json``; `overrides` set dtype, remat_policy, ..."""
    path = pathlib.Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: config.json not found in the checkpoint directory")
    try:
        hf_config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return ModelConfig.from_hf_config(hf_config, source=str(path), **overrides)


def load_hf_checkpoint(
    directory: str | pathlib.Path,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> Decoder:
    """Load an HF checkpoint directory (config.json + *.safetensors [+ index]).

    Args:
        directory: the checkpoint directory.
        mesh: optional mesh; parameters are placed directly into their shardings.
        rules: optional logical -> mesh axis rules.
        **config_overrides: ModelConfig fields, e.g. ``dtype="bfloat16"``, ``param_dtype=...``,
            ``remat_policy="full"``.
    """
    config = read_hf_config(directory, **config_overrides)
    tensors = SafetensorsDirectory(directory)
    logger.info("loading %s (%s, %d layers)", directory, config.architecture, config.num_layers)
    return model_from_host_params(
        config, _checked(host_params(config, tensors), directory), mesh=mesh, rules=rules,
        source=str(directory),
    )


def _checked(params: Iterator[tuple[tuple[str, ...], np.ndarray]], source: Any) -> Iterator:
    """Re-raise a missing tensor as a ValueError naming the source."""
    try:
        yield from params
    except KeyError as err:
        raise ValueError(f"{source}: missing tensor ({err.args[0]})") from err


# ---------------------------------------------------------------------------- GGUF
def unpermute_llama_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (adjacent-pair RoPE) to HF's rotate-half layout.

    Args:
        weight: [rows, cols] (or a [rows] bias) as stored in the GGUF file, rows = num_heads * e.

    Returns:
        Same shape, rows reordered so each head's first half/second half are the RoPE pairs.
    """
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape((num_heads, rows // num_heads // 2, 2) + rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_llama_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (the inverse of `unpermute_llama_rows`)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape((num_heads, 2, rows // num_heads // 2) + rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class GGUFTensors:
    """HF-named, dequantized float32 tensors of a GGUF file, in HF layout."""

    def __init__(self, reader: Any, config: ModelConfig, source: str):
        self.reader = reader
        self.config = config
        self.source = source
        self._tensors = {tensor.name: tensor for tensor in reader.tensors}

    def _gguf_name(self, name: str) -> str:
        if name in _GGUF_NAMES:
            return _GGUF_NAMES[name]
        parts = name.split(".")
        if len(parts) > 3 and parts[0] == "model" and parts[1] == "layers":
            template = ".".join(parts[:2] + ["{i}"] + parts[3:])
            if template in _GGUF_NAMES:
                return _GGUF_NAMES[template].replace("{i}", parts[2])
        raise KeyError(f"{self.source}: no GGUF name for tensor {name!r}")

    def __call__(self, name: str) -> np.ndarray:
        """The HF tensor `name` as float32 in HF layout."""
        import gguf

        gguf_name = self._gguf_name(name)
        if gguf_name not in self._tensors:
            raise KeyError(f"{self.source}: GGUF tensor {gguf_name!r} (for {name}) not found")
        tensor = self._tensors[gguf_name]
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # GGUF dims are listed innermost first; numpy data is [rows=out, cols=in] already.
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        array = np.asarray(array, dtype=np.float32).reshape(shape)
        if self.config.architecture == "llama":
            if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
                array = unpermute_llama_rows(array, self.config.num_heads)
            elif gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
                array = unpermute_llama_rows(array, self.config.num_kv_heads)
        return array


def read_gguf(path: str | pathlib.Path, **config_overrides: Any) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """Open a GGUF file: (GGUFReader, ModelConfig, metadata dict)."""
    import gguf

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    reader = gguf.GGUFReader(str(path))
    metadata = gguf_metadata(reader)
    if "rope_freqs.weight" in {t.name for t in reader.tensors}:
        raise ValueError(f"{path}: tensor 'rope_freqs.weight' (llama3 RoPE scaling in GGUF) is not supported")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = ModelConfig.from_gguf_metadata(
        metadata, has_output_weight=has_output, source=str(path), **config_overrides
    )
    return reader, config, metadata


def load_gguf(
    path: str | pathlib.Path,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> Decoder:
    """Load a GGUF model file (llama / qwen2 / qwen3), dequantized to the config's param_dtype.

    Args:
        path: the .gguf file.
        mesh: optional mesh for direct sharded placement.
        rules: optional logical -> mesh axis rules.
        **config_overrides: ModelConfig fields (dtype, param_dtype, remat_policy, ...).
    """
    reader, config, _ = read_gguf(path, **config_overrides)
    tensors = GGUFTensors(reader, config, str(path))
    logger.info("loading GGUF %s (%s, %d layers)", path, config.architecture, config.num_layers)
    return model_from_host_params(
        config, _checked(host_params(config, tensors), path), mesh=mesh, rules=rules, source=str(path)
    )


# ---------------------------------------------------------------------------- embedded SmolLM2
def load_embedded_smollm2(
    *, mesh: jax.sharding.Mesh | None = None, **config_overrides: Any
) -> Decoder:
    """Load the embedded SmolLM2-135M-Instruct (see `embedded_smollm2_path`)."""
    return load_gguf(embedded_smollm2_path(), mesh=mesh, **config_overrides)


def load_model_and_tokenizer(
    source: str | pathlib.Path,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> tuple[Decoder, Any]:
    """Load a model and its tokenizer from one source.

    Args:
        source: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct), a ``.gguf`` file, or an HF
            checkpoint directory (config.json, *.safetensors, tokenizer.json, tokenizer_config.json).
        mesh: optional mesh for direct sharded placement.
        rules: optional logical -> mesh axis rules.
        **config_overrides: ModelConfig fields (dtype, param_dtype, remat_policy).

    Returns:
        (Decoder, rar_jax.models.tokenizer.Tokenizer).
    """
    from rar_jax.models.tokenizer import Tokenizer

    if str(source) == "smollm2":
        source = embedded_smollm2_path()
    path = pathlib.Path(source)
    if path.is_dir():
        model = load_hf_checkpoint(path, mesh=mesh, rules=rules, **config_overrides)
        return model, Tokenizer.from_hf_dir(path)
    if path.suffix == ".gguf":
        reader, config, metadata = read_gguf(path, **config_overrides)
        tokenizer = Tokenizer.from_gguf_metadata(metadata, source=str(path))
        tensors = GGUFTensors(reader, config, str(path))
        model = model_from_host_params(
            config, _checked(host_params(config, tensors), path), mesh=mesh, rules=rules, source=str(path)
        )
        return model, tokenizer
    raise FileNotFoundError(
        f"model source {str(source)!r}: expected 'smollm2', a .gguf file or an HF checkpoint directory"
    )


MODEL_CONFIG_KEYS = ("source", "dtype", "param_dtype", "remat_policy", "attention_chunk")


def load_from_config(
    model_config: Mapping[str, Any],
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
) -> tuple[Decoder, Any]:
    """`load_model_and_tokenizer` driven by a ``config.model`` section.

    Args:
        model_config: a mapping (or ConfigDict) with keys ``source`` ("smollm2", a .gguf file or an
            HF directory), ``dtype`` (compute), ``param_dtype``, ``remat_policy`` and
            ``attention_chunk`` (see `ModelConfig`).
        mesh: optional mesh for direct sharded placement.
        rules: optional logical -> mesh axis rules.

    Raises:
        ValueError: naming the first missing key.
    """
    for key in MODEL_CONFIG_KEYS:
        if key not in model_config:
            raise ValueError(f"config key 'model.{key}' is missing; expected keys {MODEL_CONFIG_KEYS}")
    return load_model_and_tokenizer(
        model_config["source"],
        mesh=mesh,
        rules=rules,
        dtype=model_config["dtype"],
        param_dtype=model_config["param_dtype"],
        remat_policy=model_config["remat_policy"],
        attention_chunk=model_config["attention_chunk"],
    )


# ---------------------------------------------------------------------------- export
def hf_tensors_of(model: Decoder, dtype: Any = None) -> dict[str, np.ndarray]:
    """All parameters as HF-named host numpy arrays in HF layout.

    Args:
        model: the decoder.
        dtype: numpy dtype of the result; default the config's param_dtype.
    """
    config = model.config
    dtype = np.dtype(jnp.dtype(dtype or config.param_dtype))

    def host(value: jax.Array) -> np.ndarray:
        return np.asarray(jax.device_get(value)).astype(dtype)

    tensors = {
        "model.embed_tokens.weight": host(model.embed[...]),
        "model.norm.weight": host(model.final_norm[...]),
    }
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = np.ascontiguousarray(host(model.lm_head[...]).T)
    for name in layer_param_shapes(config):
        stacked = host(getattr(model.layers, name)[...])
        for i in range(config.num_layers):
            tensors[f"model.layers.{i}.{_HF_LAYER_NAMES[name]}"] = np.ascontiguousarray(
                param_to_hf(config, name, stacked[i])
            )
    return tensors


def export_hf(
    model: Decoder,
    directory: str | pathlib.Path,
    *,
    tokenizer: Any = None,
    dtype: Any = None,
) -> pathlib.Path:
    """Write an HF-format directory that transformers and vLLM can load.

    Writes ``config.json``, ``model.safetensors`` and, if a tokenizer (rar_jax.models.tokenizer.Tokenizer)
    is given, its files (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``)
    and ``generation_config.json`` with its stop ids as ``eos_token_id``.

    Args:
        model: the decoder.
        directory: created if needed; existing files of the same names are overwritten.
        tokenizer: optional Tokenizer to save beside the weights.
        dtype: dtype of the saved weights ("float32", "bfloat16", ...); default param_dtype.
    """
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype_name = jnp.dtype(dtype or model.config.param_dtype).name
    extra: dict[str, Any] = {}
    if tokenizer is not None:
        extra.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    config_json = model.config.to_hf_config(torch_dtype=dtype_name, **extra)
    (directory / "config.json").write_text(json.dumps(config_json, indent=2))
    save_file(hf_tensors_of(model, dtype_name), str(directory / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_hf(directory)
        stop_ids = list(tokenizer.stop_ids)
        generation = {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": stop_ids if len(stop_ids) > 1 else stop_ids[0],
            "pad_token_id": tokenizer.pad_id,
        }
        (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    logger.info("exported %s to %s", model.config.architecture, directory)
    return directory
