"""Fixtures for the model tests: fixture directories and the embedded SmolLM2, loaded once."""

import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
TINY_MODELS = ("llama_tiny", "llama3_scaled", "qwen2_tiny", "qwen3_tiny")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """tests/fixtures (tiny HF models and reference outputs made by make_model_fixtures.py)."""
    return FIXTURES


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2 tokenizer, rebuilt from the GGUF metadata once per session."""
    from rar_jax.models.tokenizer import Tokenizer

    return Tokenizer.embedded_smollm2()


@pytest.fixture(scope="session")
def smollm2_model():
    """The embedded SmolLM2-135M-Instruct (float32), loaded once per session."""
    from rar_jax.models.loading import load_embedded_smollm2

    return load_embedded_smollm2()
