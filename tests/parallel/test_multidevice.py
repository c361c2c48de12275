"""Run tests/parallel/multidevice_checks.py in a subprocess with 8 forced host CPU devices.

XLA fixes the device count when JAX starts, so the checks need their own process.
"""

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


@pytest.mark.slow
def test_multidevice_checks_pass_on_8_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(HERE / "multidevice_checks.py"),
            "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts=", "-rs",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "6 passed" in output and "skipped" not in output, output
