"""Answer prompts with any supported checkpoint (``rar-generate``).

Prompts come from the command line (positional arguments) and/or a JSONL file (``--input``): each
record has a ``prompt`` string (sent as one user message through the model's chat template; raw text
if the tokenizer has no template) or a ``messages`` chat list ([{"role", "content"}, ...]). Answers
are printed; with ``--output`` a JSONL file gets one record per prompt: the prompt or messages, the
answers, their finish reasons ("eos", "stop", "length"), token counts and summed log-probs (under the
tempered, untruncated distribution; see rar_jax.models.sampler).

    rar-generate --greedy "What is the capital of France?"
    rar-generate --model=path/to/hf_dir --input=prompts.jsonl --output=answers.jsonl \\
        --num_samples=4 --temperature=0.8 --top_p=0.95 --max_new_tokens=512
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Sequence

import jax
from absl import app, flags

from rar_jax import cli
from rar_jax.errors import UserError
from rar_jax.io import iter_jsonl, write_jsonl
from rar_jax.models.loading import load_model_and_tokenizer
from rar_jax.models.sampler import Sampler, SamplingParams

_MODEL = flags.DEFINE_string("model", "smollm2", "'smollm2' (embedded), a .gguf file or an HF directory.")
_INPUT = flags.DEFINE_string("input", None, "JSONL file of records with 'prompt' or 'messages'.")
_OUTPUT = flags.DEFINE_string("output", None, "JSONL file to write the answers to.")
_GREEDY = flags.DEFINE_bool("greedy", False, "Greedy decoding (argmax) instead of sampling.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass; 1 = off.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Most tokens per answer.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Answers per prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sampling key.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts per generate call.")


def read_prompt_records(path: pathlib.Path) -> list[dict[str, Any]]:
    """Records of a JSONL prompt file, each with a 'prompt' string or a 'messages' list.

    Raises:
        UserError: naming the file, line and field, for a record that has neither or a bad one.
    """
    records = []
    for line_number, record in iter_jsonl(path):
        where = f"{path}:{line_number}"
        if "messages" in record:
            messages = record["messages"]
            if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            ):
                raise UserError(
                    f"{where}: field 'messages' must be a non-empty list of "
                    "{'role': str, 'content': str} objects"
                )
        elif "prompt" in record:
            if not isinstance(record["prompt"], str) or not record["prompt"]:
                raise UserError(f"{where}: field 'prompt' must be a non-empty string")
        else:
            raise UserError(f"{where}: record has neither 'prompt' nor 'messages'")
        records.append(record)
    return records


def prompt_ids(tokenizer: Any, record: dict[str, Any]) -> list[int]:
    """Token ids of a record: its messages, or its prompt as one user message, through the chat
    template (a prompt is encoded as raw text when the tokenizer has no template)."""
    if "messages" in record:
        return tokenizer.encode_chat(record["messages"])
    if tokenizer.chat_template is None:
        return tokenizer.encode(record["prompt"])
    return tokenizer.encode_chat([{"role": "user", "content": record["prompt"]}])


def main(argv: Sequence[str]) -> None:
    records = [{"prompt": text} for text in argv[1:]]
    if _INPUT.value:
        records += read_prompt_records(pathlib.Path(_INPUT.value))
    if not records:
        raise app.UsageError("give prompts as arguments or a JSONL file with --input")
    if _BATCH_SIZE.value < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}")
    try:
        sampling = SamplingParams(
            max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
            top_p=_TOP_P.value, greedy=_GREEDY.value, num_samples=_NUM_SAMPLES.value,
        )
    except ValueError as err:
        raise app.UsageError(str(err)) from err

    from tqdm import tqdm

    model, tokenizer = load_model_and_tokenizer(_MODEL.value)
    logging.info("loaded %s (%s)", _MODEL.value, model.config.architecture)
    sampler = Sampler(model, tokenizer)
    key = jax.random.key(_SEED.value)
    ids = [prompt_ids(tokenizer, record) for record in records]
    batch_size = _BATCH_SIZE.value
    starts = list(range(0, len(records), batch_size))
    results = []
    for batch_index, start in enumerate(
        tqdm(starts, desc="generating", unit="batch", disable=len(starts) < 2)
    ):
        out = sampler.generate(
            ids[start:start + batch_size], sampling, jax.random.fold_in(key, batch_index)
        )
        samples = sampling.num_samples
        for offset in range(len(out.texts) // samples):
            rows = range(offset * samples, (offset + 1) * samples)
            results.append({
                **records[start + offset],
                "answers": [out.texts[r] for r in rows],
                "finish_reasons": [out.finish_reasons[r] for r in rows],
                "num_tokens": [int(out.lengths[r]) for r in rows],
                "sum_logprobs": [float(out.logprobs[r, : out.lengths[r]].sum()) for r in rows],
            })
    for index, result in enumerate(results):
        question = result.get("prompt") or result["messages"][-1]["content"]
        print(f"[{index}] {question}")
        for number, answer in enumerate(result["answers"]):
            label = f"  answer {number + 1}" if len(result["answers"]) > 1 else "  answer"
            print(f"{label} ({result['finish_reasons'][number]}, {result['num_tokens'][number]} tokens): {answer}")
    if _OUTPUT.value:
        output = pathlib.Path(_OUTPUT.value)
        write_jsonl(output, results)
        print(f"wrote {len(results)} records to {output}")
    print(f"answered {len(results)} prompts in {len(starts)} batches")


def run() -> None:
    """Console-script entry point (``rar-generate``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
