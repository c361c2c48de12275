"""The tunix half of benchmarks/sampler.py; runs inside the google-tunix 0.1.7 virtual environment.

Not importable from rar_jax (tunix lives in its own venv). A line protocol on stdin/stdout, so that
the parent can alternate timed calls of ours and tunix's (a noisy machine then affects both alike):

* first line: a JSON job ``{"model_dir": HF directory written by rar_jax's export_hf, "prompts":
  [chat-formatted strings], "prompt_ids": [[ids our tokenizer gives]], "max_new_tokens": int,
  "prompt_length": padded prompt length, "no_eos_id": int, "rope_theta": ..., "bos_id": ...,
  "eos_id": ..., "dtype": "float32" | "bfloat16"}``: loads the same weights with tunix's Llama3 in
  that dtype, checks that its tokenization of the prompts equals ours, answers ``{"ready": true,
  "load_s": ...}``;
* then lines ``{"batch": b, "steps": n}``: one greedy call on the first b prompts (cycled) that
  generates n tokens; answers ``{"seconds": wall time, "answer_ids": [[...] for each row]}``;
* an empty line ends it.

Set-up quirks (see the project's NOTES.md): the mesh needs explicit Auto axis types; the tokenizer is
a small wrapper (encode/decode/bos_id/eos_id/pad_id) around our exported tokenizer.json.

Two settings make tunix decode exactly what transformers and rar_jax decode (checked on 2026-12-04
against tests/fixtures/smollm2_greedy.json: all four prompts token for token, batched and alone,
in float32; without them its answers leave transformers' after 6-9 tokens):

* RoPE theta. tunix 0.1.7's Llama3 attention calls ``apply_rope(x, positions, head_dim=...)``
  without the config's ``rope_theta``, so every Llama3 it builds rotates with the function's
  default theta of 1,000,000 (SmolLM2 uses 100,000). ``use_config_rope_theta`` binds the config's
  theta into that module-level function before anything is traced; the work is unchanged (the
  theta is a constant of the rotation), so the timings stay tunix's own.
* The pad id. tunix derives the prompt mask and positions from ``tokens != pad_id`` and, at every
  decode step, masks every slot of the token buffer that holds ``pad_id``, generated tokens
  included. SmolLM2's pad 2 = <|im_end|> occurs inside ChatML prompts, and 0 = <|endoftext|> can
  be generated once EOS is disabled, so the worker pads with ``vocab_size``, an id that no prompt
  or answer holds (its embedding lookup is clamped by JAX to a real row, then masked).
"""

from __future__ import annotations

import functools
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


def use_config_rope_theta(config: llama3_model.ModelConfig) -> None:
    """Make tunix's Llama3 rotate with ``config.rope_theta`` (see the module docstring)."""
    rope = llama3_model.apply_rope
    if isinstance(rope, functools.partial):
        rope = rope.func
    llama3_model.apply_rope = functools.partial(rope, rope_theta=config.rope_theta)


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
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[job.get("dtype", "float32")]
    model = llama3_params.create_model_from_safe_tensors(model_dir, config, mesh, dtype=dtype)
    load_s = time.perf_counter() - start
    use_config_rope_theta(config)
    tokenizer = TokenizerForTunix(
        f"{model_dir}/tokenizer.json", job["bos_id"], job["eos_id"], pad_id=config.vocab_size
    )
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
        reply({"seconds": seconds, "answer_ids": [np.asarray(t).tolist() for t in out.tokens]})


def reply(message: dict) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
