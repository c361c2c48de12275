"""Programmatic rewards (reward.method = programmatic): hand-computed values, no judge."""

import math

import numpy as np
import pytest

from rar_jax import config as rar_config
from rar_jax.judges import programmatic
from rar_jax.judges.rewards import JudgeExample, make_reward_fn

CONVERSATION = ({"role": "user", "content": "What is 6 x 7?"},)


def _example(reference):
    return JudgeExample(CONVERSATION, None, reference, "q1")


@pytest.mark.parametrize(
    ("reference", "answer", "expected"),
    [
        ("42", "So the answer is \\boxed{42}.", 1.0),
        ("42", "\\boxed{41} then, correcting myself, \\boxed{ 42 }", 1.0),  # The last box counts.
        ("42", "\\boxed{42} no wait \\boxed{41}", 0.0),
        ("The answer is \\boxed{\\frac{1}{2}}", "\\boxed{\\frac{1}{2}}", 1.0),  # Nested braces.
        ("Paris", "\\boxed{$paris$}", 1.0),  # $ dropped, case folded.
        ("42", "42", 0.0),  # No box: wrong format, a wrong answer.
    ],
)
def test_boxed_exact_match(reference, answer, expected):
    assert programmatic.boxed_exact_match(reference, answer) == (expected, None)


def test_boxed_exact_match_without_a_reference_is_a_failure_with_a_reason():
    reward, reason = programmatic.boxed_exact_match("  ", "\\boxed{1}")
    assert math.isnan(reward) and "needs a reference" in reason


def test_benchmark_rewards():
    assert programmatic.distinct_words(None, "a b a c") == (0.75, None)
    assert programmatic.distinct_words(None, "   ") == (0.0, None)
    assert programmatic.length(None, "x" * 256) == (0.5, None)
    assert programmatic.length(None, "x" * 2000) == (1.0, None)


def test_the_method_needs_no_judge_and_keeps_failures_visible():
    config = rar_config.base_config()
    config.reward.method = "programmatic"
    reward_fn = make_reward_fn(config, backend=None)
    output = reward_fn([_example("42"), _example("42"), _example(None)],
                       ["\\boxed{42}", "\\boxed{7}", "\\boxed{42}"])
    np.testing.assert_array_equal(output.rewards[:2], [1.0, 0.0])
    assert np.isnan(output.rewards[2]) and output.failed.tolist() == [False, False, True]
    assert output.reasons[2].startswith("boxed_exact_match needs a reference")
    assert output.verdicts.shape == (3, 0)


def test_the_function_is_a_validated_config_choice():
    config = rar_config.base_config()
    config.reward.programmatic_fn = "exact"
    with pytest.raises(rar_config.ConfigError, match="reward.programmatic_fn"):
        rar_config.validate(config)
    assert rar_config.CHOICES["reward.programmatic_fn"] == tuple(programmatic.PROGRAMMATIC_REWARDS)

