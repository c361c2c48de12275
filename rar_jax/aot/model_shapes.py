"""Architectures of the paper's models, from their published ``config.json``, for planning without
weights.

``rar-compile`` builds a model abstractly (``nnx.eval_shape``): it needs the architecture only. A
config's ``model.source`` (or ``judge.model_source``) that is an HF directory on this host is read
from its ``config.json``; otherwise the directory's name is looked up here (the paper configs
point at ``checkpoints/Qwen2.5-7B`` ... which a planning host does not have). The fields are those
of the models' ``config.json`` files on the Hugging Face hub (Qwen/Qwen2.5-*, meta-llama/Meta-
Llama-3-8B); the Instruct variants have the same shapes as their base models.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from rar_jax.errors import UserError
from rar_jax.models.config import ModelConfig

_QWEN2 = {"model_type": "qwen2", "hidden_act": "silu", "vocab_size": 152064,
          "max_position_embeddings": 131072, "rope_theta": 1000000.0, "tie_word_embeddings": False}

# Lower-cased directory name (without "-instruct") -> config.json fields.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": {**_QWEN2, "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "rms_norm_eps": 1e-6},
    "qwen2.5-14b": {**_QWEN2, "hidden_size": 5120, "intermediate_size": 13824,
                    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
                    "rms_norm_eps": 1e-5},
    "qwen2.5-32b": {**_QWEN2, "hidden_size": 5120, "intermediate_size": 27648,
                    "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8,
                    "rms_norm_eps": 1e-6},
    "qwen2.5-72b": {**_QWEN2, "hidden_size": 8192, "intermediate_size": 29568,
                    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                    "rms_norm_eps": 1e-6},
    "llama-3-8b": {"model_type": "llama", "hidden_act": "silu", "vocab_size": 128256,
                   "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0,
                   "tie_word_embeddings": False},
    # SmolLM2-135M-Instruct (the embedded model): config.json of HuggingFaceTB's release.
    "smollm2": {"model_type": "llama", "hidden_act": "silu", "vocab_size": 49152,
                "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
                "max_position_embeddings": 8192, "rope_theta": 100000.0,
                "tie_word_embeddings": True},
}


def model_architecture(source: str, **overrides: Any) -> ModelConfig:
    """The architecture of checkpoint ``source`` with the run's numeric choices (``overrides``:
    ``dtype``, ``param_dtype``, ``remat_policy``, ``attention_chunk``).

    Raises:
        UserError: ``source`` is neither a directory with a ``config.json`` nor a known model.
    """
    path = pathlib.Path(source)
    if (path / "config.json").is_file():
        hf_config = json.loads((path / "config.json").read_text())
        return ModelConfig.from_hf_config(hf_config, source=str(path / "config.json"), **overrides)
    name = "smollm2" if source == "smollm2" else path.name.lower()
    name = name.removesuffix("-instruct")
    if name not in KNOWN_MODELS:
        raise UserError(
            f"model {source!r}: no config.json there and not a known architecture; known: "
            f"{', '.join(KNOWN_MODELS)} (a directory name, '-Instruct' allowed)")
    return ModelConfig.from_hf_config(KNOWN_MODELS[name], source=f"known model {name}",
                                      **overrides)
