"""The tokenizer rebuilt from SmolLM2's GGUF metadata, its chat template and the HF-directory form.

Expected ids come from transformers' own GGUF tokenizer conversion (tests/fixtures/smollm2_tokens.json,
made by make_model_fixtures.py) and from the GGUF vocabulary itself.
"""

import json

import pytest

from rar_jax.models.model_files import embedded_smollm2_path, gguf_metadata
from rar_jax.models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "smollm2_tokens.json").read_text())


@pytest.fixture(scope="module")
def vocabulary():
    import gguf

    metadata = gguf_metadata(gguf.GGUFReader(str(embedded_smollm2_path())))
    return metadata["tokenizer.ggml.tokens"]


def test_special_token_ids(smollm2_tokenizer, vocabulary):
    assert vocabulary[1] == "<|im_start|>" and vocabulary[2] == "<|im_end|>"
    assert smollm2_tokenizer.bos_id == 1
    assert smollm2_tokenizer.eos_id == 2
    assert smollm2_tokenizer.pad_id == 2
    assert smollm2_tokenizer.stop_ids == (2,)
    assert smollm2_tokenizer.vocab_size == 49152
    assert smollm2_tokenizer.encode("<|im_start|><|im_end|><|endoftext|>") == [1, 2, 0]


def test_probe_strings_match_transformers(smollm2_tokenizer, reference):
    for text, expected in reference["probes"].items():
        assert smollm2_tokenizer.encode(text) == expected, text


def test_encode_decode_round_trip(smollm2_tokenizer, reference):
    for text in list(reference["probes"]) + [reference["prompt"]]:
        assert smollm2_tokenizer.decode(smollm2_tokenizer.encode(text)) == text


def test_words_map_to_their_vocabulary_entries(smollm2_tokenizer, vocabulary):
    # Byte-level BPE: a leading space is the byte-level character "Ġ" (U+0120).
    ids = smollm2_tokenizer.encode("Hello world")
    assert [vocabulary[i] for i in ids] == ["Hello", "Ġworld"]


def test_digits_are_split_one_by_one(smollm2_tokenizer, vocabulary):
    # The vocabulary has no multi-digit token (and no token mixing a digit with other characters),
    # and SmolLM2's original pre-tokenizer splits digits individually; both are reproduced.
    assert not [t for t in vocabulary if len(t) > 1 and any(c.isdigit() for c in t) and t.isascii()]
    ids = smollm2_tokenizer.encode("in 2024")
    assert [vocabulary[i] for i in ids] == ["in", "Ġ", "2", "0", "2", "4"]
    pieces = [piece for piece, _ in smollm2_tokenizer.backend.pre_tokenizer.pre_tokenize_str("in 2024")]
    assert pieces == ["in", "Ġ", "2", "0", "2", "4"]  # split before BPE, as in the original


def test_chat_template_renders_chatml(smollm2_tokenizer, reference):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert smollm2_tokenizer.apply_chat_template(messages) == reference["prompt"]
    without_prompt = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    assert without_prompt == reference["prompt"].removesuffix("<|im_start|>assistant\n")
    with_system = smollm2_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert with_system == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_decode_can_skip_special_tokens(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode("Paris.<|im_end|>")
    assert ids[-1] == 2
    assert smollm2_tokenizer.decode(ids) == "Paris.<|im_end|>"
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=True) == "Paris."


def test_bad_messages_are_rejected(smollm2_tokenizer):
    with pytest.raises(ValueError, match=r"messages\[1\].*content"):
        smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "assistant"}])


def test_hf_directory_round_trip(smollm2_tokenizer, reference, tmp_path):
    smollm2_tokenizer.save_hf(tmp_path)
    loaded = Tokenizer.from_hf_dir(tmp_path)
    for text, expected in reference["probes"].items():
        assert loaded.encode(text) == expected
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert loaded.apply_chat_template(messages) == reference["prompt"]
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (1, 2, 2)


def test_hf_directory_prefers_chat_template_jinja_and_reads_token_dicts(smollm2_tokenizer, tmp_path):
    smollm2_tokenizer.save_hf(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["eos_token"] = {"content": "<|endoftext|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    loaded = Tokenizer.from_hf_dir(tmp_path)
    assert loaded.eos_id == 0
    assert loaded.apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"


def test_gguf_metadata_errors_name_the_field():
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"}, source="x.gguf")
    with pytest.raises(ValueError, match="tokenizer.ggml.pre"):
        Tokenizer.from_gguf_metadata(
            {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}, source="x.gguf"
        )
    with pytest.raises(ValueError, match="tokenizer.ggml.merges"):
        Tokenizer.from_gguf_metadata(
            {
                "tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.pre": "smollm",
                "tokenizer.ggml.tokens": ["a", "b"],
                "tokenizer.ggml.token_type": [1, 1],
                "tokenizer.ggml.merges": ["a b c"],
            },
            source="x.gguf",
        )


def _chatml_base_tokenizer(template: str) -> Tokenizer:
    """A Qwen2.5-base-like tokenizer: eos <|endoftext|>, turns in ChatML ended by <|im_end|>."""
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocabulary = {char: index for index, char in enumerate("abcdefghijklmnopqrstuvwxyzQ\n ")}
    backend = tokenizers.Tokenizer(models.WordLevel(vocabulary, unk_token="Q"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return Tokenizer(backend, chat_template=template, eos_token="<|endoftext|>",
                     source="chatml base")


# Our own ChatML template (the layout of Qwen2.5's): each turn ends with <|im_end|>.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_base_model_stops_at_the_chat_templates_turn_end_too():
    tokenizer = _chatml_base_tokenizer(CHATML)
    end_of_text, im_end = (tokenizer.backend.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>"))
    assert tokenizer.eos_id == end_of_text
    assert tokenizer.stop_ids == (end_of_text, im_end)
    # A template that ends a turn with plain text adds nothing; neither does none at all.
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert _chatml_base_tokenizer(plain).stop_ids == (end_of_text,)
    assert _chatml_base_tokenizer(None).stop_ids == (end_of_text,)


def test_the_embedded_chat_model_stops_at_its_eos(smollm2_tokenizer):
    assert smollm2_tokenizer.stop_ids == (smollm2_tokenizer.eos_id,)  # <|im_end|> is its eos.
