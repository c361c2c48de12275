"""The examples a run trains and evaluates on: read, filtered to what fits, split off held-out.

Shared by ``rar-train`` (GRPO) and ``rar-sft`` (Expert-Answer-SFT), so both see the same pool
from the same config: what is left out, and why, is logged; having nothing left is a
:class:`~rar_jax.errors.UserError` naming the source.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ml_collections import config_dict

from rar_jax.data.examples import Example
from rar_jax.data.sources import load_examples
from rar_jax.errors import UserError

logger = logging.getLogger(__name__)


def rubric_chars(example: Example) -> int:
    """Characters of the example's criteria texts (0 without a rubric)."""
    if example.rubric is None:
        return 0
    return sum(len(criterion.description) for criterion in example.rubric.criteria)


def usable_examples(examples: list[Example], config: config_dict.ConfigDict, tokenizer: Any,
                    source: str, *, require_reference: bool = False) -> list[Example]:
    """The examples whose chat-formatted prompt fits ``rl.max_prompt_length`` tokens and whose
    rubric text fits ``data.max_rubric_chars`` (0 = no limit); for ``reference_likert``, with
    ``data.require_reference`` or ``require_reference`` (supervised fine-tuning) only those with a
    reference answer. How many were left out and why is logged; having none left is an error
    naming the source."""
    prompt_limit, rubric_limit = config.rl.max_prompt_length, config.data.max_rubric_chars
    if (require_reference or config.reward.method == "reference_likert"
            or config.data.require_reference):
        # Reference-Likert and SFT need a reference answer (HealthBench: ~16 % lack an ideal
        # completion; RaR-Science: 9.5 % are empty); data.require_reference gives every method
        # that pool.
        missing = sum(example.reference is None for example in examples)
        if missing:
            logger.warning("%s: %d of %d examples have no reference answer, which "
                           "reference_likert, data.require_reference and SFT need; they are "
                           "left out", source, missing, len(examples))
            examples = [example for example in examples if example.reference is not None]
    kept, long_prompts, long_rubrics = [], 0, 0
    for example in examples:
        if len(tokenizer.encode_chat(list(example.conversation))) > prompt_limit:
            long_prompts += 1
        elif rubric_limit and rubric_chars(example) > rubric_limit:
            long_rubrics += 1
        else:
            kept.append(example)
    if long_prompts or long_rubrics:
        logger.warning(
            "%s: of %d examples, %d have prompts longer than rl.max_prompt_length=%d tokens and "
            "%d rubrics longer than data.max_rubric_chars=%d characters; they are left out",
            source, len(examples), long_prompts, prompt_limit, long_rubrics, rubric_limit,
        )
    if not kept:
        raise UserError(
            f"{source}: no example fits rl.max_prompt_length={prompt_limit} and "
            f"data.max_rubric_chars={rubric_limit}"
            + (" with a reference answer" if require_reference else "")
        )
    return kept


def read_train_and_eval(
    config: config_dict.ConfigDict, tokenizer: Any, *, require_reference: bool = False
) -> tuple[list[Example], list[Example]]:
    """The usable (:func:`usable_examples`) training examples and held-out ones: those of
    ``data.eval_path``, or ``data.eval_size`` examples drawn with ``seed`` from the training data
    and removed from it. Each path is a JSONL file or a built TFDS data set,
    ``tfds:<name>[/<config>]:<split>``."""
    data = config.data
    if not data.train_path:
        raise UserError("set --config.data.train_path to a JSONL of training prompts")
    data_dir = data.tfds_data_dir or None

    def read(path: str, limit: int) -> list[Example]:
        examples = load_examples(path, data.format, rubric=config.rubric, limit=limit,
                                 data_dir=data_dir)
        return usable_examples(examples, config, tokenizer, path,
                               require_reference=require_reference)

    train = read(data.train_path, data.train_limit)
    if data.eval_path:
        return train, read(data.eval_path, 0)
    if data.eval_size == 0:
        return train, []
    if data.eval_size >= len(train):
        raise UserError(
            f"config key 'data.eval_size' is {data.eval_size} but {data.train_path} gives only "
            f"{len(train)} usable examples; some must remain for training"
        )
    held_out = set(np.random.default_rng(config.seed).permutation(len(train))[: data.eval_size])
    return (
        [e for i, e in enumerate(train) if i not in held_out],
        [e for i, e in enumerate(train) if i in held_out],
    )
