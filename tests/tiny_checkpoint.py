"""Test helper: a tiny HF checkpoint directory (llama_tiny fixture weights + a byte tokenizer).

Shared by the tests of the CLIs that load a model from a checkpoint directory (rar-generate,
rar-serve-judge). Not part of the library.
"""

from __future__ import annotations

import pathlib
import shutil

from rar_jax.models.tokenizer import Tokenizer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LLAMA_TINY = REPO_ROOT / "tests" / "fixtures" / "llama_tiny"


def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer whose id i is byte i (fits the fixture's 256-token vocabulary).

    Byte 2 is the end-of-sequence token; the chat template renders ``role: content`` lines and
    ends with ``assistant:``.
    """
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for byte in range(256):
        chars[byte] = chr(byte) if byte in printable else chr(256 + extra)
        extra += byte not in printable
    backend = tokenizers.Tokenizer(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([tokenizers.AddedToken(chars[2], special=True, normalized=False)])
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    return Tokenizer(backend, chat_template=template, eos_token=chars[2], source="byte tokenizer")


def write_tiny_checkpoint(directory: pathlib.Path) -> pathlib.Path:
    """Writes the llama_tiny weights and the byte tokenizer into ``directory`` (an HF dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(LLAMA_TINY / name, directory / name)
    byte_tokenizer().save_hf(directory)
    return directory
