"""build_judge: the one place a judge is built (HTTP client, shared / copied policy, loaded once)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_checkpoint import write_tiny_checkpoint

from rar_jax.config import base_config
from rar_jax.judges import factory
from rar_jax.judges.factory import build_judge
from rar_jax.judges.jax_backend import JaxJudge
from rar_jax.judges.rewards import HttpJudgeBackend
from rar_jax.models.loading import load_model_and_tokenizer


@pytest.fixture()
def tiny_dir(tmp_path):
    return write_tiny_checkpoint(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(factory, "_LOADED", {})


def _config(source, judge_source=None, **model):
    config = base_config()
    config.model.source = str(source)
    config.judge.model_source = str(judge_source or source)
    for key, value in model.items():
        config.model[key] = value
    return config


def _leaves(model):
    return jax.tree.leaves(nnx.state(model))


def test_http_backend_reads_the_http_section():
    config = base_config()
    config.judge.backend = "http"
    config.judge.http.base_url = "http://127.0.0.1:9/v1"
    config.judge.max_tokens = 17
    judge = build_judge(config)
    assert isinstance(judge, HttpJudgeBackend) and judge.max_tokens == 17
    assert judge.client.config.base_url == "http://127.0.0.1:9/v1"
    assert judge.client.config.cache_dir is None  # "" means no cache.


def test_evaluation_shares_the_policy_and_training_copies_it(tiny_dir):
    policy = load_model_and_tokenizer(tiny_dir)
    config = _config(tiny_dir)
    shared = build_judge(config, policy=policy)
    assert isinstance(shared, JaxJudge) and shared.model is policy[0]

    copied = build_judge(config, policy=policy, policy_is_trained=True)
    assert copied.model is not policy[0] and copied.tokenizer is policy[1]
    for original, copy in zip(_leaves(policy[0]), _leaves(copied.model), strict=True):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))
    # The copy owns its buffers: deleting the policy's (as a donated train step does) leaves it.
    for original in _leaves(policy[0]):
        original.delete()
    assert all(np.isfinite(np.asarray(leaf, np.float32)).all() for leaf in _leaves(copied.model))


def test_a_separate_judge_is_loaded_once_with_the_models_dtype(tiny_dir, monkeypatch):
    loads = []
    real_load = factory.load_model_and_tokenizer

    def counting_load(source, **kwargs):
        loads.append((str(source), kwargs["dtype"], kwargs["param_dtype"],
                      kwargs["attention_chunk"]))
        return real_load(source, **kwargs)

    monkeypatch.setattr(factory, "load_model_and_tokenizer", counting_load)
    config = _config("smollm2", tiny_dir, dtype="bfloat16", param_dtype="bfloat16",
                     attention_chunk=16)
    first = build_judge(config)
    second = build_judge(config)
    assert loads == [(str(tiny_dir), "bfloat16", "bfloat16", 16)]
    assert second.model is first.model
    assert first.model.config.param_dtype == "bfloat16"
    assert all(leaf.dtype == np.dtype("bfloat16") for leaf in _leaves(first.model))


def test_bad_options_are_named():
    config = base_config()
    config.judge.scoring = "logits"
    with pytest.raises(ValueError, match="judge.scoring"):
        build_judge(config)
    config = base_config()
    config.judge.model_source = "/tmp/no-such-judge"
    with pytest.raises(FileNotFoundError, match="no-such-judge"):
        build_judge(config)
