"""Policy answers for the evaluations: greedy, batched, with progress, in input order.

The evaluations (:mod:`rar_jax.eval.healthbench_eval`, :mod:`rar_jax.eval.gpqa_eval`) take any
:class:`Policy`: an object whose ``answer(conversations)`` returns one text and one finish reason
per conversation. :class:`SamplerPolicy` is the real one: a
:class:`~rar_jax.models.sampler.Sampler` over a checkpoint, decoding greedily as the paper's
evaluation does. Conversations are sorted by prompt length before they are cut into batches (a
batch then pads little and few prompt-length buckets compile); the answers come back in the
order of the input.

``rar-generate`` is :func:`generate_answers` over :func:`read_prompt_records`: records with a
``prompt`` or ``messages``, answered in input order in consecutive batches (batch ``i`` samples
with ``fold_in(key(seed), i)``, so a run is reproducible from its flags), ``num_samples`` answers
per record with their finish reasons, token counts and summed log-probs. Both answer loops run
through :func:`generate_in_batches`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from rar_jax.io import check_records, iter_jsonl

__all__ = [
    "PolicyAnswers", "Policy", "SamplerPolicy", "length_sorted_batches", "generate_in_batches",
    "read_prompt_records", "record_prompt_ids", "generate_answers", "answers_text",
]

logger = logging.getLogger(__name__)

Conversation = Sequence[Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class PolicyAnswers:
    """n answers of a policy, in input order.

    Attributes:
        texts: the answer texts.
        finish_reasons: "eos", "stop" or "length" per answer (see ``rar_jax.models.sampler``).
    """

    texts: list[str]
    finish_reasons: list[str]


class Policy(Protocol):
    """Answers chat conversations (each ending with a user turn)."""

    def answer(self, conversations: Sequence[Conversation]) -> PolicyAnswers:
        """One answer per conversation, in input order."""
        ...


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, shortest prompts first.

    Args:
        lengths: int[n] prompt lengths.
        batch_size: most indices per batch (>= 1).

    Returns:
        Lists of indices covering 0..n-1 once; ties keep input order (stable sort).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, np.int64), kind="stable").tolist()
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SamplerPolicy:
    """A checkpoint answering greedily through :class:`~rar_jax.models.sampler.Sampler`.

    Args:
        model: the policy decoder.
        tokenizer: its tokenizer (with a chat template).
        batch_size: prompts per ``Sampler.generate`` call (config ``eval.batch_size``).
        max_new_tokens: most tokens per answer (config ``eval.max_new_tokens``).
        description: label of the progress bar.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int,
        max_new_tokens: int,
        description: str = "answering",
    ):
        from rar_jax.models.sampler import Sampler, SamplingParams

        if batch_size < 1:
            raise ValueError(f"eval.batch_size: expected >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.sampling = SamplingParams(max_new_tokens=int(max_new_tokens), greedy=True)
        self.sampler = Sampler(model, tokenizer)
        self.description = description

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The chat-formatted prompt of one conversation as token ids."""
        return self.tokenizer.encode_chat(list(conversation))

    def answer(self, conversations: Sequence[Conversation]) -> PolicyAnswers:
        """Greedy answers, length-sorted batches, a tqdm bar over prompts."""
        ids = [self.prompt_ids(conversation) for conversation in conversations]
        texts: list[str] = [""] * len(ids)
        reasons: list[str] = [""] * len(ids)
        batches = length_sorted_batches([len(i) for i in ids], self.batch_size)
        # Greedy decoding does not use the key.
        for batch, output in generate_in_batches(
            self.sampler, ids, batches, self.sampling, seed=0, description=self.description
        ):
            for offset, index in enumerate(batch):
                texts[index] = output.texts[offset]
                reasons[index] = output.finish_reasons[offset]
        return PolicyAnswers(texts, reasons)


def generate_in_batches(
    sampler: Any,
    ids: Sequence[Sequence[int]],
    batches: Sequence[Sequence[int]],
    sampling: Any,
    *,
    seed: int,
    description: str,
) -> Iterator[tuple[Sequence[int], Any]]:
    """``Sampler.generate`` over batches of prompts, with a progress bar over prompts.

    Args:
        sampler: a :class:`~rar_jax.models.sampler.Sampler`.
        ids: n prompts as token ids.
        batches: lists of indices into ``ids`` (e.g. :func:`length_sorted_batches`).
        sampling: the :class:`~rar_jax.models.sampler.SamplingParams` of every call.
        seed: batch ``i`` samples with ``jax.random.fold_in(jax.random.key(seed), i)``.
        description: label of the progress bar (shown when there are two batches or more).

    Yields:
        ``(batch, output)`` per batch, in order; the output's rows are the batch's prompts, each
        ``sampling.num_samples`` times in a row.
    """
    import jax
    from tqdm import tqdm

    key = jax.random.key(seed)
    with tqdm(total=len(ids), desc=description, unit="prompt", disable=len(batches) < 2) as progress:
        for batch_index, batch in enumerate(batches):
            output = sampler.generate(
                [ids[i] for i in batch], sampling, jax.random.fold_in(key, batch_index)
            )
            yield batch, output
            progress.update(len(batch))


def _prompt_record(path: str, row: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    """The record of one JSONL row if it has a good 'prompt' or 'messages', else a ValueError
    naming the file, line and field."""
    line_number, record = row
    where = f"{path}:{line_number}"
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError(
                f"{where}: field 'messages' must be a non-empty list of "
                "{'role': str, 'content': str} objects"
            )
    elif "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"]:
            raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
    else:
        raise ValueError(f"{where}: record has neither 'prompt' nor 'messages'")
    return record


def read_prompt_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSONL prompt file, each with a 'prompt' string or a 'messages' chat list.

    Raises:
        rar_jax.io.RecordErrors: one line per bad record (file, line and field), all checked
            before the error; JsonlError for a line that is not a JSON object.
    """
    name = os.fspath(path)
    return check_records(iter_jsonl(name), lambda row: _prompt_record(name, row))


def record_prompt_ids(tokenizer: Any, record: Mapping[str, Any]) -> list[int]:
    """Token ids of a record: its messages, or its prompt as one user message, through the chat
    template (a prompt is encoded as raw text when the tokenizer has no template)."""
    if "messages" in record:
        return tokenizer.encode_chat(record["messages"])
    if tokenizer.chat_template is None:
        return tokenizer.encode(record["prompt"])
    return tokenizer.encode_chat([{"role": "user", "content": record["prompt"]}])


def generate_answers(
    model_source: str,
    records: Sequence[Mapping[str, Any]],
    sampling: Any,
    *,
    seed: int,
    batch_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """Loads a checkpoint and answers every record (``rar-generate``; see the module docstring).

    Args:
        model_source: 'smollm2' (embedded), a .gguf file or an HF directory.
        records: dicts with a 'prompt' string or a 'messages' list (:func:`read_prompt_records`).
        sampling: the :class:`~rar_jax.models.sampler.SamplingParams` of every answer.
        seed: seed of the sampling key.
        batch_size: records per ``Sampler.generate`` call (>= 1).

    Returns:
        (results, number of batches): per record, in input order, the record's fields plus
        ``answers``, ``finish_reasons`` ("eos", "stop", "length"), ``num_tokens`` and
        ``sum_logprobs`` (under the tempered, untruncated distribution), each a list of
        ``sampling.num_samples``.
    """
    from rar_jax.models.loading import load_model_and_tokenizer
    from rar_jax.models.sampler import Sampler

    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    model, tokenizer = load_model_and_tokenizer(model_source)
    logger.info("loaded %s (%s)", model_source, model.config.architecture)
    ids = [record_prompt_ids(tokenizer, record) for record in records]
    batches = [list(range(start, min(start + batch_size, len(ids))))
               for start in range(0, len(ids), batch_size)]
    samples = sampling.num_samples
    results = []
    for batch, out in generate_in_batches(
        Sampler(model, tokenizer), ids, batches, sampling, seed=seed, description="generating"
    ):
        for offset, index in enumerate(batch):
            rows = range(offset * samples, (offset + 1) * samples)
            results.append({
                **records[index],
                "answers": [out.texts[r] for r in rows],
                "finish_reasons": [out.finish_reasons[r] for r in rows],
                "num_tokens": [int(out.lengths[r]) for r in rows],
                "sum_logprobs": [float(out.logprobs[r, : out.lengths[r]].sum()) for r in rows],
            })
    return results, len(batches)


def answers_text(results: Sequence[Mapping[str, Any]]) -> str:
    """The answers of :func:`generate_answers` for a terminal: per record its index and question
    (the prompt, or the last message), then each answer with its finish reason and length."""
    lines = []
    for index, result in enumerate(results):
        question = result.get("prompt") or result["messages"][-1]["content"]
        lines.append(f"[{index}] {question}")
        for number, answer in enumerate(result["answers"]):
            label = f"  answer {number + 1}" if len(result["answers"]) > 1 else "  answer"
            lines.append(f"{label} ({result['finish_reasons'][number]}, "
                         f"{result['num_tokens'][number]} tokens): {answer}")
    return "\n".join(lines)
