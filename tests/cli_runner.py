"""Test helper: run an ``experiments/`` entry point in a subprocess.

absl flags are process-global, so CLI tests run each script in a fresh interpreter: on CPU, with
the repository importable, and without an API key from the caller's environment.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_experiment(
    script: str,
    *args: object,
    cwd: str | os.PathLike[str] = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Runs ``experiments/<script>`` with ``args`` (str()-ed); returns the finished process.

    Args:
        script: the file name under ``experiments/``, e.g. ``"train.py"``.
        args: command-line arguments.
        cwd: the working directory.
        env: extra environment variables (e.g. ``XLA_FLAGS``).
        timeout: seconds before the run is killed (the test then fails).
    """
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    environment.pop("OPENAI_API_KEY", None)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
    )
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / script), *map(str, args)],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False,
    )
