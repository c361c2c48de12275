"""The tunix half of benchmarks/sampler.py; runs inside the google-tunix 0.1.7 virtual environment.

Not importable from rar_jax (tunix lives in its own venv). A line protocol on stdin/stdout, so that
the parent can alternate timed calls of ours and tunix's (a noisy machine then affects both alike):

* first line: a JSON job ``{"model_dir": HF directory written by rar_jax's export_hf, "prompts":
  [chat-formatted strings], "prompt_ids": [[ids our tokenizer gives]], "max_new_tokens": int,
  "prompt_length": padded prompt length, "no_eos_id": int, "rope_theta": ..., "bos_id": ...,
  "eos_id": ...}``: loads the same weights with tunix's Llama3 in float32, checks that its
  tokenization of the prompts equals ours, answers ``{"ready": true, "load_s": ...}``;
* then lines ``{"batch": b, "steps": n}``: one greedy call on the first b prompts (cycled) that
  generates n tokens; answers ``{"seconds": wall time, "first_answer_ids": [...]}``;
* an empty line ends it.

Set-up quirks (see the project's NOTES.md): the mesh needs explicit Auto axis types; the tokenizer is
a small wrapper (encode/decode/bos_id/eos_id/pad_id) around our exported tokenizer.json. Its pad id is
0 (<|endoftext|>), not SmolLM2's pad 2 = <|im_end|>, because tunix derives the prompt mask from
``tokens != pad_id`` and ChatML prompts contain <|im_end|>.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from tunix.generate import sampler as tunix_sampler
from tunix.models.llama3 import model as llama3_model
from tunix.models.llama3 import params as llama3_params


class TokenizerForTunix:
    """The tokenizer methods tunix's TokenizerAdapter asks for, over a ``tokenizers`` backend."""

    def __init__(self, path: str, bos_id: int, eos_id: int, pad_id: int):
        self.backend = tokenizers.Tokenizer.from_file(path)
        self._bos, self._eos, self._pad = bos_id, eos_id, pad_id

    def encode(self, text: str, **_: object) -> list[int]:
        return list(self.backend.encode(str(text), add_special_tokens=False).ids)

    def decode(self, ids: list[int], **_: object) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def bos_id(self) -> int:
        return self._bos

    def eos_id(self) -> int:
        return self._eos

    def pad_id(self) -> int:
        return self._pad


def llama3_config(model_dir: str, rope_theta: float) -> llama3_model.ModelConfig:
    """tunix's Llama3 config of the HF directory ``model_dir`` (its config.json)."""
    hf = json.loads(open(f"{model_dir}/config.json").read())
    return llama3_model.ModelConfig(
        num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"]),
        num_kv_heads=hf["num_key_value_heads"], rope_theta=int(rope_theta),
        norm_eps=hf["rms_norm_eps"], weight_tying=hf.get("tie_word_embeddings", False),
    )


def check_tokenization(tokenizer: TokenizerForTunix, prompts: list[str], prompt_ids: list[list[int]]) -> None:
    """Exits unless tunix's tokenization of each prompt (BOS prepended, a doubled BOS dropped, as
    its sampler does) equals ours."""
    for text, ids in zip(prompts, prompt_ids):
        got = [tokenizer.bos_id()] + tokenizer.encode(text)
        while len(got) > 1 and got[0] == got[1] == tokenizer.bos_id():
            got = got[1:]
        if got != ids:
            raise SystemExit(f"tunix tokenization differs from ours for prompt {text[:60]!r}")


def main() -> None:
    job = json.loads(sys.stdin.readline())
    model_dir = job["model_dir"]
    config = llama3_config(model_dir, job["rope_theta"])
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    start = time.perf_counter()
    model = llama3_params.create_model_from_safe_tensors(model_dir, config, mesh, dtype=jnp.float32)
    load_s = time.perf_counter() - start
    tokenizer = TokenizerForTunix(f"{model_dir}/tokenizer.json", job["bos_id"], job["eos_id"], pad_id=0)
    check_tokenization(tokenizer, job["prompts"], job["prompt_ids"])
    prompt_length = int(job["prompt_length"])
    max_new = int(job["max_new_tokens"])
    cache = tunix_sampler.CacheConfig(
        cache_size=prompt_length + max_new, num_layers=config.num_layers,
        num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
    )
    sampler = tunix_sampler.Sampler(model, tokenizer, cache)
    reply({"ready": True, "load_s": load_s, "device": str(jax.devices()[0])})
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        prompts = [job["prompts"][i % len(job["prompts"])] for i in range(int(request["batch"]))]
        start = time.perf_counter()
        out = sampler(
            prompts, max_generation_steps=int(request["steps"]), max_prompt_length=prompt_length,
            eos_tokens=[int(job["no_eos_id"])], temperature=0.0,
        )
        seconds = time.perf_counter() - start
        reply({"seconds": seconds, "first_answer_ids": np.asarray(out.tokens[0]).tolist()})


def reply(message: dict) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
