"""Runs a pytest file of multi-device checks in a subprocess with 8 forced host CPU devices."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_checks_on_8_devices(checks_file: pathlib.Path, expected_passed: int) -> None:
    """Runs a pytest file in a subprocess with 8 forced host CPU devices; fails with its output.

    XLA fixes the device count when JAX starts, so multi-device checks need their own process.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(checks_file),
            "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts=", "-rs",
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{expected_passed} passed" in output and "skipped" not in output, output
