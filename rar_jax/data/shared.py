"""Where the real public data lives: ``$RAR_SHARED_DATA``, else ``shared/data`` beside the checkout.

The data (HealthBench subsets, K-QA, RaR samples, the paper's prompts, simple-evals' grader
prompt) is read in place, never copied into the repository or downloaded. Config files, tests and
the commands find it with :func:`shared_data_dir`.
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "RAR_SHARED_DATA"


def shared_data_dir(anchor: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The shared data folder.

    ``$RAR_SHARED_DATA`` when set; else the first ``shared/data`` folder beside a parent of
    ``anchor`` (a config file's ``__file__``; default this package, which finds ``../shared/data``
    beside a checkout of the repository). Without one, the path beside the package is returned
    and :func:`shared_file` names the variable to set.
    """
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR]).expanduser()
    start = pathlib.Path(anchor or __file__).resolve()
    for parent in start.parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_file(relative: str, anchor: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """``shared_data_dir(anchor) / relative``, which must exist (else a FileNotFoundError that
    names the path and ``RAR_SHARED_DATA``)."""
    path = shared_data_dir(anchor) / relative
    if not path.exists():
        raise FileNotFoundError(
            f"shared data {relative!r} not found at {path}; set {ENV_VAR} to the folder that "
            "holds the project's shared data (healthbench/, rar_samples/, paper_prompts/, ...)"
        )
    return path
