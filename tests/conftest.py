"""Shared pytest fixtures: where the real data lives, and a fake OpenAI-compatible server.

The data is read from ``../shared/data`` beside the repository root (read-only in CI);
``RAR_SHARED_DATA`` overrides the location.
"""

import os
import pathlib

import pytest

from fake_openai_server import FakeOpenAIServer
from rar_jax.data.shared import shared_data_dir

SHARED_DATA = shared_data_dir()


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
    """Caches (the persistent XLA compilation cache of ``compilation_cache_dir="auto"``) go to a
    temporary folder, never to the home directory; subprocesses inherit it."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA}; set RAR_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture
def server():
    """A started `FakeOpenAIServer` (echo replies unless scripted), stopped after the test."""
    fake = FakeOpenAIServer()
    fake.start()
    yield fake
    fake.stop()
