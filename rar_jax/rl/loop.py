"""The training loop GRPO (:mod:`rar_jax.rl.trainer`) and SFT (:mod:`rar_jax.rl.sft`) share.

:class:`TrainingLoop` runs ``optim.num_steps`` steps of a subclass's ``train_step``: it resumes
from the latest checkpoint of ``output_dir`` (train state and data position), opens the metrics
files at the resumed step (rows written after that checkpoint are dropped), evaluates on the
held-out examples every ``train.eval_every`` steps and at the end, checkpoints every
``checkpoint.every_steps`` steps and at the end, shows progress, and stops with a checkpoint
after ``rl.max_consecutive_skipped`` updates in a row with non-finite gradients. Its summary is
read back from the run's files, so after a resume it covers the whole run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

import jax
import optax
from flax import nnx
from ml_collections import config_dict
from tqdm.auto import tqdm

from rar_jax import checkpoint as checkpoint_lib
from rar_jax import metrics as metrics_lib
from rar_jax.data.examples import Example, ExampleStream
from rar_jax.errors import UserError
from rar_jax.parallel import make_mesh, param_shardings
from rar_jax.rl import train_step

logger = logging.getLogger(__name__)

# Environment variable of the fault injection used by the crash-and-resume tests (`fault_point`).
KILL_AT_ENV = "RAR_JAX_KILL_AT"


class TrainingStopped(RuntimeError):
    """Too many consecutive non-finite updates; a checkpoint was written first."""


class TrainingLoop:
    """Resume, steps, evaluation, checkpoints and progress (see the module docstring).

    A subclass sets ``config``, ``stream`` (its :class:`ExampleStream`) and ``eval_examples``,
    calls :meth:`place` for the mesh, the sharded train state and the checkpointer, and defines
    :meth:`train_step`, :meth:`evaluate` and :meth:`summary`. The metrics writer is opened by
    :meth:`train`, after resuming.
    """

    progress_name = "train"  # The progress bar's label.
    config: config_dict.ConfigDict
    state: Any
    stream: ExampleStream
    eval_examples: Sequence[Example]
    checkpointer: checkpoint_lib.Checkpointer
    writer: metrics_lib.MetricsWriter | None = None

    def place(self, policy: nnx.Module, devices: Sequence[jax.Device] | None, rows: int,
              rows_are: str) -> optax.GradientTransformation:
        """Builds the ``mesh.*`` mesh over ``devices`` (default all), checks that a step's
        ``rows`` (``rows_are`` says what they are) split over its data-parallel devices, places
        the policy's train state sharded over it (``graphdef``, ``state``, ``state_shardings``)
        and opens the checkpointer; returns the optimiser of the state."""
        config = self.config
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              devices=devices)
        data_parallel = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if rows % data_parallel:
            raise UserError(f"{rows_are} = {rows} rows do not split over the {data_parallel} "
                            "data-parallel devices of the mesh")
        self.graphdef, params = nnx.split(policy)
        state, optimizer = train_step.make_train_state(params, config.optim)
        self.state_shardings = param_shardings(state, self.mesh)
        self.state = jax.device_put(state, self.state_shardings)
        self.checkpointer = checkpoint_lib.Checkpointer.from_config(config)
        return optimizer

    def train_step(self, step: int) -> dict[str, float]:
        """Runs step ``step`` (0-based) and returns its metrics (``loss``,
        ``consecutive_skipped`` and what the subclass reports)."""
        raise NotImplementedError

    def evaluate(self, step: int) -> float:
        """Evaluates on the held-out examples, writes the metrics of ``step``; the main figure."""
        raise NotImplementedError

    def summary(self) -> Any:
        """The run's summary, from its files."""
        raise NotImplementedError

    def progress_fields(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows after a step."""
        return {"loss": f"{metrics['loss']:.4f}"}

    # ------------------------------------------------------------------ checkpoints
    def _metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "data_position": self.stream.position, "seed": self.config.seed}

    def save(self, step: int) -> None:
        """Checkpoints the state after ``step`` steps (asynchronously when configured)."""
        self.checkpointer.save(step, self.state, self._metadata(step))

    def maybe_resume(self) -> int:
        """Restores the latest checkpoint of ``output_dir`` if any; returns the steps done."""
        if self.checkpointer.latest_step() is None:
            return 0
        self.state, metadata = self.checkpointer.restore(self.state)
        self.stream.position = metadata["data_position"]
        logger.info("resumed after step %d", metadata["step"])
        return int(metadata["step"])

    # ------------------------------------------------------------------ the run
    def train(self) -> Any:
        """Trains for ``optim.num_steps`` steps (continuing a checkpointed run) and summarises."""
        config = self.config
        done = self.maybe_resume() if config.checkpoint.resume else 0
        self.writer = metrics_lib.MetricsWriter(
            config.output_dir, tensorboard=config.metrics.tensorboard, start_step=done
        )
        evaluates = bool(self.eval_examples) and config.train.eval_every > 0
        progress = tqdm(range(done, config.optim.num_steps), initial=done,
                        total=config.optim.num_steps, desc=self.progress_name, unit="step")
        try:
            for step in progress:
                if evaluates and step % config.train.eval_every == 0:
                    self.evaluate(step)
                metrics = self.train_step(step)
                self.writer.write(step, metrics)
                fault_point("after_log", step)
                progress.set_postfix(self.progress_fields(metrics))
                if metrics["consecutive_skipped"] >= config.rl.max_consecutive_skipped:
                    self.save(step + 1)
                    self.checkpointer.wait()
                    raise TrainingStopped(
                        f"step {step}: {int(metrics['consecutive_skipped'])} updates in a row had "
                        f"non-finite gradients (rl.max_consecutive_skipped="
                        f"{config.rl.max_consecutive_skipped}); stopped with a checkpoint in "
                        f"{self.checkpointer.directory}"
                    )
                if config.checkpoint.every_steps and (step + 1) % config.checkpoint.every_steps == 0:
                    self.save(step + 1)
                    fault_point("during_save", step)
            if evaluates:
                self.evaluate(config.optim.num_steps)
            if config.optim.num_steps > done:
                self.save(config.optim.num_steps)
        finally:
            self.checkpointer.wait()
            self.writer.close()
        return self.summary()


def fault_point(name: str, step: int) -> None:
    """Kills this process with SIGKILL at a named point of a step, when asked to.

    Fault injection for the crash-and-resume tests: ``RAR_JAX_KILL_AT=<name>:<step>`` (names
    ``mid_step``, ``after_log``, ``during_save``) makes the process die there as ``kill -9``
    would. Unset (always, outside those tests) it does nothing.
    """
    if os.environ.get(KILL_AT_ENV) == f"{name}:{step}":
        logger.warning("%s=%s: killing this process", KILL_AT_ENV, os.environ[KILL_AT_ENV])
        os.kill(os.getpid(), signal.SIGKILL)
