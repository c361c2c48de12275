"""Runs tests/parallel/multidevice_checks.py in a subprocess with 8 forced host CPU devices."""

import pathlib

import pytest
from multidevice_runner import run_checks_on_8_devices


@pytest.mark.slow
def test_multidevice_checks_pass_on_8_devices():
    run_checks_on_8_devices(pathlib.Path(__file__).parent / "multidevice_checks.py", expected_passed=5)
