"""Two source trees side by side: the working tree (or a revision) and a baseline revision.

Shared by the benchmarks that time this tree's programs against an earlier revision's in one run
(`benchmarks/grpo_update.py`, `benchmarks/decode_revisions.py`, `benchmarks/roofline.py
--baseline`). Each tree runs in its own worker process (a script of this tree with ``--worker``,
its ``rar_jax`` imported from that tree); the parent alternates calls between the workers, so a
noisy machine affects both alike.

Protocol: a worker prints JSON lines (anything else on stdout is ignored); it prints one when it
is ready, then answers each request line with one, and stops at an empty line.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def source_trees(current: str | None, baseline: str | None,
                 scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """{"current": tree, ["baseline": tree]}: the working tree (or revision `current`) and the
    files of revision `baseline` (``git archive``, unpacked under `scratch`)."""
    trees = {"current": REPO_ROOT}
    for name, revision in (("current", current), ("baseline", baseline)):
        if revision:
            trees[name] = scratch / name
            trees[name].mkdir()
            archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", revision],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(trees[name])], input=archive, check=True)
    return trees


class Worker:
    """A worker process running `script` with ``--worker`` and `arguments` on `tree`'s rar_jax.

    Attributes:
        first: the worker's ready line (e.g. its compiling call's figures).
    """

    def __init__(self, tree: pathlib.Path, script: str, arguments: Sequence[str]):
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(script).resolve()), "--worker", *arguments],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(tree))
        self.first = self.reply()

    def reply(self) -> dict:
        """The worker's next JSON line."""
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"worker exited with {self.process.wait()} (see its stderr above)")

    def send(self, request: str = "run") -> None:
        """Send one request line without waiting (read its answer with `reply`), so that several
        workers can work on their requests at once."""
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()

    def call(self, request: str = "run") -> dict:
        """Send one request line; its JSON answer."""
        self.send(request)
        return self.reply()

    def close(self) -> None:
        """Stop the worker (nothing to do if it has exited already)."""
        if self.process.poll() is not None:
            return
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)


def serve(answer: object) -> None:
    """The worker's loop: answer each stdin request line with ``answer(line)`` as a JSON line,
    until an empty line."""
    for line in sys.stdin:
        if not line.strip():
            return
        print(json.dumps(answer(line.strip())), flush=True)
