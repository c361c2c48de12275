"""Runs tests/rl/multidevice_train_step_checks.py with 8 forced host CPU devices."""

import pathlib

import pytest
from multidevice_runner import run_checks_on_8_devices


@pytest.mark.slow
def test_train_step_is_the_same_on_8_devices():
    run_checks_on_8_devices(
        pathlib.Path(__file__).parent / "multidevice_train_step_checks.py", expected_passed=4
    )
