"""What every console script shares: ``--help``, flag parsing and one-line user errors.

Each script in ``experiments/`` ends with ``cli.run(main, __name__)``. Then

- ``--help`` (also ``-h``, ``--helpshort``) prints the script's module docstring (what it does and
  an example), the script's own flags, and where the ``--config.*`` options are documented.
  absl's own help cannot do this behind a console-script wrapper: it looks up ``__main__``'s
  docstring and the flags of ``sys.argv[0]``, which are the wrapper's, not the script's.
- A mistake of the user's (a bad flag or ``--config.*`` override, a config that does not
  validate, a missing file, a malformed data row, an output directory in use) prints one line,
  ``<program>: error: <what, where, how to fix>``, and exits with status 2. Which exceptions count
  as such mistakes is :data:`USER_ERRORS`; anything else is a bug and keeps its traceback.
  ``--verbosity=1`` (or higher) shows the traceback of a user error too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import jax
from absl import app, flags
from absl import logging as absl_logging

from rar_jax import config as rar_config
from rar_jax.config import ConfigError
from rar_jax.data.builders.base import MalformedRowError
from rar_jax.errors import UserError
from rar_jax.rubrics.schema import RubricError
from rar_jax.run_lock import hold_output_dir

# Exit status of a user error (the convention of argparse and most Unix tools).
USER_ERROR_STATUS = 2

HELP_FLAGS = ("-h", "--help", "--helpshort", "-?")


# Exceptions that mean "the input is wrong", not "the code is wrong". FileNotFoundError and
# friends come from paths the user gave (configs, data, checkpoints); the rest are raised by the
# project's validators with the file, record and field in the message.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ConfigError,
    RubricError,
    MalformedRowError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    app.UsageError,
)

CONFIG_DOCS = (
    "Config options (--config.<key>=<value>): every key is declared, with a one-line comment, in "
    "rar_jax/config/base.py; README.md's 'Configs' section explains the main choices."
)


def program_name() -> str:
    return os.path.basename(sys.argv[0]) or "rar-jax"


def fail(message: str) -> NoReturn:
    """Prints ``<program>: error: <message>`` (one line) to stderr and exits with status 2."""
    one_line = " ".join(str(message).split())
    print(f"{program_name()}: error: {one_line}", file=sys.stderr)
    sys.exit(USER_ERROR_STATUS)


def help_text(module_name: str) -> str:
    """The ``--help`` page of the script defined in module ``module_name``."""
    module = sys.modules[module_name]
    doc = textwrap.dedent(module.__doc__ or "").strip()
    modules = (module_name, ConfigError.__module__)  # The script's flags and --config.
    own_flags = "\n".join(filter(None, (flags.FLAGS.module_help(name).strip() for name in modules)))
    parts = [f"{program_name()}: {doc}" if doc else program_name()]
    if own_flags:
        parts.append("flags:\n" + own_flags)
    if "config" in flags.FLAGS:
        parts.append(CONFIG_DOCS)
    parts.append("--helpfull lists every flag, absl's logging flags included.")
    return "\n\n".join(parts) + "\n"


def _override_message(error: BaseException) -> str:
    """The readable part of an ml_collections override error (its did-you-mean hint unescaped)."""
    text = str(error.args[0]) if error.args else str(error)
    return text.strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")


def _parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with every parsing problem reported as one line."""
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.removeprefix("--config=").split(":", 1)[0]
            if not pathlib.Path(path).is_file():
                fail(f"--config file {path!r} does not exist (relative paths start at {os.getcwd()})")
    try:
        rest = flags.FLAGS(list(argv))
        # A config file is loaded lazily; load it here so a bad --config fails as a flag error.
        if "config" in flags.FLAGS:
            config = flags.FLAGS["config"].value
            if config is None:
                fail("--config is required, e.g. --config=configs/quickstart.py (see configs/)")
            hasattr(config, "items")  # Raises the load error of a missing or broken file.
    except flags.Error as error:
        fail(str(error))
    except (AttributeError, KeyError) as error:
        # ml_collections reports an unknown --config.<key> override this way.
        bad = [arg for arg in argv[1:] if arg.startswith("--config.")]
        where = f" in {', '.join(bad)}" if bad else ""
        fail(f"unknown config key{where}: {_override_message(error)}")
    except OSError as error:
        fail(f"cannot load the --config file: {_override_message(error.__cause__ or error)}")
    except (ValueError, TypeError) as error:
        # A --config file that raises, or an override of the wrong type: its last line says why.
        lines = [line for line in str(error).splitlines() if line.strip()]
        fail(lines[-1] if lines else repr(error))
    return rest


def _verbose() -> bool:
    try:
        return flags.FLAGS["verbosity"].value >= 1
    except (KeyError, flags.UnparsedFlagAccessError):
        return False


def run(main: Callable[[list[str]], Any], module_name: str) -> None:
    """Console-script entry point: help, flags, ``main(argv)``, user errors as one line."""
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        sys.stdout.write(help_text(module_name))
        sys.exit(0)

    def guarded_main(argv: list[str]) -> None:
        try:
            main(argv)
        except USER_ERRORS as error:
            if _verbose():
                raise
            fail(f"{error} (rerun with --verbosity=1 for the traceback)")

    app.run(guarded_main, flags_parser=_parse_flags)


# Config values that name something other than a local path.
NOT_PATHS = ("", "smollm2")
NOT_PATH_PREFIXES = ("tfds:", "shape:", "http://", "https://")


def check_inputs(config: Any, keys: Sequence[str]) -> None:
    """Raises one :class:`UserError` listing every config key in ``keys`` whose path is missing.

    Entry points call this before they load a model or write anything, so a typo in a data or
    checkpoint path costs a second, not a model load. Values that are not local paths (``""``,
    the embedded ``smollm2``, ``tfds:...``, ``shape:...``, URLs) are skipped.
    """
    named = []
    for key in keys:
        value: Any = config
        for part in key.split("."):
            value = value[part]
        named.append((f"'{key}'", str(value)))
    check_paths(named)


def check_paths(named: Iterable[tuple[str, str]]) -> None:
    """:func:`check_inputs` for ``(what, path)`` pairs: one :class:`UserError` naming each
    missing local path (values that are not local paths are skipped)."""
    missing = [f"{what} = {value!r}" for what, value in named
               if value not in NOT_PATHS and not value.startswith(NOT_PATH_PREFIXES)
               and not pathlib.Path(value).expanduser().exists()]
    if missing:
        raise UserError(
            "input not found: " + "; ".join(missing) + " (check the path, or the current directory)"
        )


def model_input_keys(config: Any, *, policy: bool = True) -> tuple[str, ...]:
    """The config keys naming model checkpoints a command loads: ``model.source`` (with
    ``policy``) and ``judge.model_source`` when the judge runs in-process."""
    keys = ("model.source",) if policy else ()
    return keys + (("judge.model_source",) if config.judge.backend == "jax" else ())


def initialize_distributed(config: Any) -> None:
    """``jax.distributed.initialize`` when ``distributed.initialize`` is set (empty / 0 / -1
    fields are left to JAX's auto-detection on TPU pods and SLURM / Open MPI clusters)."""
    dist = config.distributed
    if not dist.initialize:
        return
    kwargs: dict[str, Any] = {}
    if dist.coordinator_address:
        kwargs["coordinator_address"] = dist.coordinator_address
    if dist.num_processes:
        kwargs["num_processes"] = dist.num_processes
    if dist.process_id >= 0:
        kwargs["process_id"] = dist.process_id
    jax.distributed.initialize(**kwargs)
    logging.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )


def _quiet_orbax(record: logging.LogRecord) -> bool:
    """Drops orbax's INFO chatter (one line per checkpoint operation); keeps its warnings."""
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


@contextlib.contextmanager
def training_run(config: Any, input_keys: Sequence[str]) -> Iterator[pathlib.Path]:
    """The start of a training command (``rar-train``, ``rar-sft``), around its run.

    Joins a multi-host job (``distributed.*``), validates the config against the devices, turns on
    the persistent compilation cache (``compilation_cache_dir``), checks
    that the files named by ``input_keys`` exist (orbax's INFO lines are dropped), holds ``output_dir`` for this run (process 0's
    lock in a multi-host job; :mod:`rar_jax.run_lock`) and writes ``config.json`` there; yields
    the output directory.
    """
    absl_logging.get_absl_handler().addFilter(_quiet_orbax)
    initialize_distributed(config)
    rar_config.validate(config, num_devices=jax.device_count())
    rar_config.enable_compilation_cache(config)
    check_inputs(config, input_keys)
    output_dir = pathlib.Path(config.output_dir)
    with hold_output_dir(output_dir) if jax.process_index() == 0 else contextlib.nullcontext():
        write_config(config, output_dir / "config.json")
        yield output_dir


def write_config(config: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """Writes the resolved config (every key, overrides applied) as JSON to ``path``, the record
    from which the run can be repeated (``--config=<file>`` with the same values)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json_best_effort(indent=2) + "\n")
    return path
