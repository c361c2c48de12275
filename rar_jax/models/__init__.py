"""Decoder models (Llama / Qwen2 / Qwen3), weight loading and export, tokenizer with chat template."""

from rar_jax.models.config import ModelConfig, RopeScaling
from rar_jax.models.cache import KVCache, init_cache
from rar_jax.models.decoder import Decoder
from rar_jax.models.loading import (
    export_hf,
    load_embedded_smollm2,
    load_from_config,
    load_gguf,
    load_hf_checkpoint,
    load_model_and_tokenizer,
)
from rar_jax.models.model_files import embedded_smollm2_path
from rar_jax.models.tokenizer import Tokenizer

__all__ = [
    "Decoder",
    "KVCache",
    "ModelConfig",
    "RopeScaling",
    "Tokenizer",
    "embedded_smollm2_path",
    "export_hf",
    "init_cache",
    "load_embedded_smollm2",
    "load_from_config",
    "load_gguf",
    "load_hf_checkpoint",
    "load_model_and_tokenizer",
]
