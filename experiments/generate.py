"""Answer prompts with any supported checkpoint (``rar-generate``).

Prompts come from the command line (positional arguments) and/or a JSONL file (``--input``): each
record has a ``prompt`` string (sent as one user message through the model's chat template; raw text
if the tokenizer has no template) or a ``messages`` chat list ([{"role", "content"}, ...]). Answers
are printed; with ``--output`` a JSONL file gets one record per prompt: the prompt or messages, the
answers, their finish reasons ("eos", "stop", "length"), token counts and summed log-probs (under the
tempered, untruncated distribution; see rar_jax.models.sampler). The work is
:func:`rar_jax.eval.answering.generate_answers`.

    rar-generate --greedy "What is the capital of France?"
    rar-generate --model=path/to/hf_dir --input=prompts.jsonl --output=answers.jsonl \\
        --num_samples=4 --temperature=0.8 --top_p=0.95 --max_new_tokens=512
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags

from rar_jax import cli
from rar_jax.eval import answering
from rar_jax.io import write_jsonl
from rar_jax.models.sampler import SamplingParams

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


def main(argv: Sequence[str]) -> None:
    records = [{"prompt": text} for text in argv[1:]]
    if _INPUT.value:
        records += answering.read_prompt_records(_INPUT.value)
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
    results, num_batches = answering.generate_answers(
        _MODEL.value, records, sampling, seed=_SEED.value, batch_size=_BATCH_SIZE.value
    )
    print(answering.answers_text(results))
    if _OUTPUT.value:
        write_jsonl(_OUTPUT.value, results)
        print(f"wrote {len(results)} records to {_OUTPUT.value}")
    print(f"answered {len(results)} prompts in {num_batches} batches")


def run() -> None:
    """Console-script entry point (``rar-generate``)."""
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
