"""Orbax checkpoints of a run: train state (params, optimiser state, step) plus JSON metadata.

The metadata holds what a resumed run needs besides the arrays: the data position, the RNG key
(as its raw uint32 words, see :func:`key_to_json`) and anything else JSON-serialisable. Saves are
asynchronous by default (the arrays are copied off the devices, then written in the background
while training goes on) and atomic: orbax writes each step into a temporary folder and renames it
when complete, so a crash during a save leaves the previous checkpoint as the latest good one.
Only the newest ``max_to_keep`` checkpoints are kept.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import config_dict

logger = logging.getLogger(__name__)


def key_to_json(key: jax.Array) -> list[int]:
    """A typed PRNG key -> its raw uint32 words (JSON-serialisable)."""
    return np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist()


def key_from_json(words: list[int]) -> jax.Array:
    """Inverse of :func:`key_to_json` (default PRNG implementation)."""
    return jax.random.wrap_key_data(jnp.asarray(words, jnp.uint32))


class Checkpointer:
    """Saves and restores ``(state, metadata)`` pairs by step under one folder.

    Args:
        directory: the checkpoint folder (created if missing).
        max_to_keep: newest checkpoints kept; older ones are deleted after a save.
        async_save: write in the background (call :meth:`wait` before reading the files).
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int, async_save: bool):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    @classmethod
    def from_config(cls, config: config_dict.ConfigDict) -> Checkpointer:
        """The run's checkpointer: ``<output_dir>/checkpoints`` with the ``checkpoint`` section."""
        return cls(
            os.path.join(config.output_dir, "checkpoints"),
            max_to_keep=config.checkpoint.max_to_keep,
            async_save=config.checkpoint.async_save,
        )

    def save(self, step: int, state: Any, metadata: dict[str, Any]) -> None:
        """Starts saving ``state`` (a pytree of arrays) and ``metadata`` (JSON) as ``step``."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
            ),
        )
        logger.info("checkpoint of step %d started in %s", step, self.directory)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (None if there is none)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Reads a checkpoint (the latest by default) into arrays shaped and sharded like
        ``abstract_state`` (a pytree of arrays or ``jax.ShapeDtypeStruct`` with shardings).

        Raises:
            FileNotFoundError: naming the folder, when it holds no complete checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), metadata=ocp.args.JsonRestore()
            ),
        )
        logger.info("restored the checkpoint of step %d from %s", step, self.directory)
        return restored.state, restored.metadata

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.close()
