"""One run per output directory: an exclusive lock on ``<output_dir>/.lock``.

Two processes writing one run folder would resume from each other's checkpoints and interleave
their metrics. :func:`hold_output_dir` takes an advisory ``fcntl.flock`` lock on a file in the
folder for as long as the run lasts and writes the holder (host, pid, start time) into it. A
second run on the folder fails at once with a :class:`OutputDirInUse` naming the holder. The
kernel releases the lock when its process dies however it dies (``kill -9`` included), so a lock
file left by a dead process is stale by construction: the next run takes it over and logs whose
it was.

``flock`` is reliable on local disks; on network file systems its semantics vary (NFS emulates
it with byte-range locks), so give each concurrent run its own ``output_dir`` there.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import pathlib
import socket
from collections.abc import Iterator

from rar_jax.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class OutputDirInUse(UserError):
    """Another live process holds the output directory's lock."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']} (since {info['started']})"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def hold_output_dir(output_dir: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Holds the exclusive lock of ``output_dir`` (created if missing) for the ``with`` block.

    Raises:
        OutputDirInUse: naming the holder's host and pid, when a live process holds it.
    """
    directory = pathlib.Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise OutputDirInUse(
                f"output directory {directory} is in use by {_holder(handle.read())}; wait for "
                "that run to finish or give this one another output_dir"
            ) from None
        handle.seek(0)
        previous = handle.read()
        if previous.strip():
            logger.warning("%s: taking over the lock left by %s, which is no longer running",
                           path, _holder(previous))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }) + "\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()  # A clean exit leaves no holder behind.
            fcntl.flock(handle, fcntl.LOCK_UN)
