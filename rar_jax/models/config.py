"""Decoder architecture description: one frozen `ModelConfig` for Llama, Qwen2 and Qwen3.

A `ModelConfig` is built from a Hugging Face ``config.json`` dictionary (both RoPE forms: the older
``rope_theta`` + ``rope_scaling`` and transformers 5's ``rope_parameters``) or from GGUF metadata, and
written back as an HF ``config.json`` dictionary for export. It also carries the numeric choices of a
run: parameter dtype, compute dtype and the rematerialisation policy of the scanned layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")

_HF_ARCHITECTURE_CLASS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling ("linear" or Llama 3's "llama3").

    Attributes:
        rope_type: "linear" (all frequencies divided by `factor`) or "llama3" (low frequencies divided
            by `factor`, high ones kept, a smooth interpolation between).
        factor: the context extension factor.
        low_freq_factor: llama3 only.
        high_freq_factor: llama3 only.
        original_max_position_embeddings: llama3 only; the pre-training context length.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.rope_type not in ("linear", "llama3"):
            raise ValueError(
                f"rope scaling type {self.rope_type!r} is not supported; expected 'linear' or 'llama3'"
            )
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be positive, got {self.factor}")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                "llama3 rope scaling needs high_freq_factor > low_freq_factor, got "
                f"{self.high_freq_factor} <= {self.low_freq_factor}"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a decoder-only transformer.

    Attributes:
        architecture: "llama" (also SmolLM2, Llama 3.x), "qwen2" (q/k/v biases) or "qwen3" (per-head
            q/k RMSNorm).
        vocab_size: number of token embeddings.
        hidden_size: model width d.
        intermediate_size: SwiGLU MLP width.
        num_layers: number of decoder layers.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention; must divide num_heads).
        head_dim: width of one head.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: optional RoPE frequency scaling.
        max_position_embeddings: the context length the model was trained for (metadata only).
        tie_word_embeddings: the LM head is the transposed token embedding.
        attention_bias: q, k and v projections have biases (Qwen2).
        qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3).
        param_dtype: dtype parameters are stored in ("float32", "bfloat16", "float16").
        dtype: compute dtype of activations and matmuls; softmax, norms and logits are float32.
        remat_policy: rematerialisation of each scanned layer in the backward pass: "none",
            "full" (save nothing), "dots_saveable", "dots_with_no_batch_dims_saveable".
        attention_chunk: queries attend in blocks of this many, so attention scores take
            [batch, heads, attention_chunk, keys] of memory at a time rather than [batch, heads,
            time, keys] (for a 4k-token judge prompt, SmolLM2's 9 heads otherwise need 0.6 GB of
            scores per row); 0 = all queries at once. Does not change results.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat_policy: str = "none"
    attention_chunk: int = 1024

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"architecture {self.architecture!r} is not supported; expected one of "
                f"{SUPPORTED_ARCHITECTURES}"
            )
        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
            "num_kv_heads", "head_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in SUPPORTED_DTYPES:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {SUPPORTED_DTYPES}, got {getattr(self, name)!r}"
                )
        if not isinstance(self.attention_chunk, (int, np.integer)) or self.attention_chunk < 0:
            raise ValueError(
                f"ModelConfig.attention_chunk must be an integer >= 0 (0 = off), got "
                f"{self.attention_chunk!r}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"ModelConfig.remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}"
            )

    @property
    def num_query_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (e.g. ``dtype="bfloat16"``)."""
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        """Number of scalar parameters of the model this config describes."""
        d, f, h, k, hd = (
            self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim,
        )
        per_layer = 2 * d + d * hd * (h + 2 * k) + h * hd * d + 3 * d * f
        if self.attention_bias:
            per_layer += hd * (h + 2 * k)
        if self.qk_norm:
            per_layer += 2 * hd
        total = self.num_layers * per_layer + self.vocab_size * d + d
        if not self.tie_word_embeddings:
            total += self.vocab_size * d
        return total

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf_config(
        cls, hf_config: Mapping[str, Any], *, source: str = "config.json", **overrides: Any
    ) -> "ModelConfig":
        """Build a config from an HF ``config.json`` dictionary.

        Args:
            hf_config: the parsed JSON.
            source: where it came from, used in error messages.
            **overrides: fields to set on the result (e.g. ``dtype``, ``remat_policy``).

        Raises:
            ValueError: naming `source` and the field, for unsupported model types or features.
        """
        model_type = hf_config.get("model_type")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"{source}: field 'model_type' is {model_type!r}; expected one of {SUPPORTED_ARCHITECTURES}"
            )

        def required(key: str) -> Any:
            if key not in hf_config:
                raise ValueError(f"{source}: required field {key!r} is missing")
            return hf_config[key]

        act = hf_config.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{source}: field 'hidden_act' is {act!r}; only 'silu' is supported")
        if hf_config.get("mlp_bias"):
            raise ValueError(f"{source}: field 'mlp_bias' is true; MLP biases are not supported")
        if model_type == "llama" and hf_config.get("attention_bias"):
            raise ValueError(
                f"{source}: field 'attention_bias' is true for a llama model; not supported"
            )
        if model_type == "qwen3" and hf_config.get("attention_bias"):
            raise ValueError(f"{source}: field 'attention_bias' is true for qwen3; not supported")
        if hf_config.get("use_sliding_window"):
            raise ValueError(f"{source}: field 'use_sliding_window' is true; sliding window is not supported")

        hidden_size = int(required("hidden_size"))
        num_heads = int(required("num_attention_heads"))
        head_dim = hf_config.get("head_dim") or hidden_size // num_heads
        rope_theta, rope_scaling = _rope_from_hf(hf_config, source)
        fields: dict[str, Any] = dict(
            architecture=model_type,
            vocab_size=int(required("vocab_size")),
            hidden_size=hidden_size,
            intermediate_size=int(required("intermediate_size")),
            num_layers=int(required("num_hidden_layers")),
            num_heads=num_heads,
            num_kv_heads=int(hf_config.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(hf_config.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2",
            qk_norm=model_type == "qwen3",
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf_config(self, *, torch_dtype: str | None = None, **extra: Any) -> dict[str, Any]:
        """An HF ``config.json`` dictionary for this architecture (older ``rope_theta`` +
        ``rope_scaling`` form, which vLLM and transformers 4 and 5 all read).

        Args:
            torch_dtype: dtype name written as ``torch_dtype``; defaults to `param_dtype`.
            **extra: further keys (e.g. ``bos_token_id``, ``eos_token_id``).
        """
        rope_scaling = None
        if self.rope_scaling is not None:
            rope_scaling = {"rope_type": self.rope_scaling.rope_type, "factor": self.rope_scaling.factor}
            if self.rope_scaling.rope_type == "llama3":
                rope_scaling.update(
                    low_freq_factor=self.rope_scaling.low_freq_factor,
                    high_freq_factor=self.rope_scaling.high_freq_factor,
                    original_max_position_embeddings=self.rope_scaling.original_max_position_embeddings,
                )
        config: dict[str, Any] = {
            "architectures": [_HF_ARCHITECTURE_CLASS[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_dropout": 0.0,
            "torch_dtype": torch_dtype or self.param_dtype,  # transformers 4 / vLLM
            "dtype": torch_dtype or self.param_dtype,  # transformers 5
        }
        if self.architecture == "llama":
            config.update(attention_bias=False, mlp_bias=False)
        if self.architecture in ("qwen2", "qwen3"):
            config.update(use_sliding_window=False, sliding_window=None, max_window_layers=self.num_layers)
        if self.architecture == "qwen3":
            config.update(attention_bias=False)
        config.update(extra)
        return config

    # ------------------------------------------------------------------ GGUF metadata
    @classmethod
    def from_gguf_metadata(
        cls,
        metadata: Mapping[str, Any],
        *,
        has_output_weight: bool,
        source: str = "GGUF file",
        **overrides: Any,
    ) -> "ModelConfig":
        """Build a config from GGUF key/value metadata (already decoded to Python values).

        Args:
            metadata: e.g. ``{"general.architecture": "llama", "llama.block_count": 30, ...}``.
            has_output_weight: whether the file holds an ``output.weight`` tensor (untied LM head).
            source: the file, for error messages.
            **overrides: fields to set on the result.
        """
        arch = metadata.get("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"{source}: metadata 'general.architecture' is {arch!r}; expected one of "
                f"{SUPPORTED_ARCHITECTURES}"
            )

        def required(key: str) -> Any:
            full = f"{arch}.{key}"
            if full not in metadata:
                raise ValueError(f"{source}: required metadata {full!r} is missing")
            return metadata[full]

        hidden_size = int(required("embedding_length"))
        num_heads = int(required("attention.head_count"))
        head_dim = metadata.get(f"{arch}.attention.key_length") or metadata.get(
            f"{arch}.rope.dimension_count"
        ) or hidden_size // num_heads
        vocab_size = metadata.get(f"{arch}.vocab_size")
        if vocab_size is None:
            tokens = metadata.get("tokenizer.ggml.tokens")
            if tokens is None:
                raise ValueError(f"{source}: neither '{arch}.vocab_size' nor 'tokenizer.ggml.tokens' present")
            vocab_size = len(tokens)
        scaling_type = metadata.get(f"{arch}.rope.scaling.type", "none")
        rope_scaling = None
        if scaling_type == "linear":
            rope_scaling = RopeScaling("linear", float(required("rope.scaling.factor")))
        elif scaling_type not in ("none", None):
            raise ValueError(
                f"{source}: metadata '{arch}.rope.scaling.type' is {scaling_type!r}; only 'none' and "
                "'linear' are supported for GGUF"
            )
        fields: dict[str, Any] = dict(
            architecture=arch,
            vocab_size=int(vocab_size),
            hidden_size=hidden_size,
            intermediate_size=int(required("feed_forward_length")),
            num_layers=int(required("block_count")),
            num_heads=num_heads,
            num_kv_heads=int(metadata.get(f"{arch}.attention.head_count_kv", num_heads)),
            head_dim=int(head_dim),
            rms_norm_eps=float(required("attention.layer_norm_rms_epsilon")),
            rope_theta=float(metadata.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_scaling=rope_scaling,
            max_position_embeddings=int(metadata.get(f"{arch}.context_length", 2048)),
            tie_word_embeddings=not has_output_weight,
            attention_bias=arch == "qwen2",
            qk_norm=arch == "qwen3",
        )
        fields.update(overrides)
        return cls(**fields)


def _rope_from_hf(hf_config: Mapping[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """Read RoPE theta and scaling from either HF form.

    transformers 5 writes ``rope_parameters: {"rope_theta", "rope_type", ...}``; older checkpoints
    have a top-level ``rope_theta`` and an optional ``rope_scaling: {"rope_type" | "type", ...}``.
    """
    params = hf_config.get("rope_parameters")
    if params:
        field = "rope_parameters"
        theta = params.get("rope_theta", hf_config.get("rope_theta"))
        scaling = dict(params)
    else:
        field = "rope_scaling"
        theta = hf_config.get("rope_theta")
        scaling = dict(hf_config.get("rope_scaling") or {})
    if theta is None:
        theta = 10000.0
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type == "linear":
        return float(theta), RopeScaling("linear", float(scaling["factor"]))
    if rope_type == "llama3":
        try:
            return float(theta), RopeScaling(
                "llama3",
                factor=float(scaling["factor"]),
                low_freq_factor=float(scaling["low_freq_factor"]),
                high_freq_factor=float(scaling["high_freq_factor"]),
                original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
            )
        except KeyError as err:
            raise ValueError(f"{source}: field '{field}' of type llama3 lacks {err.args[0]!r}") from err
    raise ValueError(
        f"{source}: field '{field}' has rope type {rope_type!r}; supported: default, linear, llama3"
    )


def rope_inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """RoPE inverse frequencies with the config's scaling applied.

    Returns:
        float32[head_dim // 2], computed like HF (float32 powers of theta).
    """
    dim = config.head_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(config.rope_theta) ** exponents)).astype(np.float32)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    # llama3: keep high frequencies, divide low ones by factor, interpolate in between.
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)
