"""rar_jax.eval.answering: the prompt records of rar-generate and the batched answer loop."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from rar_jax.eval import answering
from rar_jax.io import RecordErrors


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_prompt_records_are_kept_and_every_bad_one_is_named(tmp_path):
    good = [{"prompt": "hi", "id": 7}, {"messages": [{"role": "user", "content": "why?"}]}]
    assert answering.read_prompt_records(_write(tmp_path / "good.jsonl", good)) == good
    bad = [{"prompt": "ok"}, {"question": "x"}, {"prompt": ""},
           {"messages": [{"role": "user"}]}, {"messages": []}]
    path = _write(tmp_path / "bad.jsonl", bad)
    with pytest.raises(RecordErrors) as error:
        answering.read_prompt_records(path)
    assert str(error.value).splitlines() == [
        f"{path}:2: record has neither 'prompt' nor 'messages'",
        f"{path}:3: field 'prompt' must be a non-empty string",
        f"{path}:4: field 'messages' must be a non-empty list of {{'role': str, 'content': str}} objects",
        f"{path}:5: field 'messages' must be a non-empty list of {{'role': str, 'content': str}} objects",
    ]


class _FakeTokenizer:
    """encode: one id per character; encode_chat: "<role>content" per message, then "<a>"."""

    def __init__(self, chat_template):
        self.chat_template = chat_template

    def encode(self, text):
        return [ord(c) for c in text]

    def encode_chat(self, messages):
        return self.encode("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<a>")


def test_record_prompt_ids_use_the_chat_template_unless_there_is_none():
    chat = _FakeTokenizer("{{ template }}")
    assert answering.record_prompt_ids(chat, {"prompt": "q"}) == chat.encode("<user>q<a>")
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert answering.record_prompt_ids(chat, {"messages": messages}) == chat.encode("<system>s<user>u<a>")
    assert answering.record_prompt_ids(_FakeTokenizer(None), {"prompt": "q"}) == [ord("q")]


class _RecordingSampler:
    """generate returns each prompt's length as its text, repeated num_samples times; keeps keys."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling, key):
        self.calls.append(([list(p) for p in prompts], key))
        rows = [str(len(p)) for p in prompts for _ in range(sampling.num_samples)]
        return SimpleNamespace(texts=rows, finish_reasons=["length"] * len(rows))


def test_generate_in_batches_folds_the_batch_index_into_the_seed():
    ids = [[1], [1, 2], [1, 2, 3]]
    sampler = _RecordingSampler()
    batches = [[2, 0], [1]]
    got = list(answering.generate_in_batches(
        sampler, ids, batches, SimpleNamespace(num_samples=2), seed=5, description="t"))
    assert [batch for batch, _ in got] == batches
    assert [out.texts for _, out in got] == [["3", "3", "1", "1"], ["2", "2"]]
    assert [prompts for prompts, _ in sampler.calls] == [[[1, 2, 3], [1]], [[1, 2]]]
    for index, (_, key) in enumerate(sampler.calls):
        expected = jax.random.fold_in(jax.random.key(5), index)
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(expected))


def test_answers_text_lists_each_question_and_its_answers():
    results = [
        {"prompt": "p?", "answers": ["a"], "finish_reasons": ["eos"], "num_tokens": [1]},
        {"messages": [{"role": "user", "content": "m?"}], "answers": ["b", "c"],
         "finish_reasons": ["length", "stop"], "num_tokens": [4, 2]},
    ]
    assert answering.answers_text(results).splitlines() == [
        "[0] p?", "  answer (eos, 1 tokens): a",
        "[1] m?", "  answer 1 (length, 4 tokens): b", "  answer 2 (stop, 2 tokens): c",
    ]
