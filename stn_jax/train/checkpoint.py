"""Checkpoints with ``orbax.checkpoint.CheckpointManager``.

Layout: ``WORKDIR/checkpoints/<step>/{state,meta}``. Orbax writes each checkpoint into a
temporary directory and renames it when complete, so a checkpoint directory either holds a
whole checkpoint or does not exist (atomic). ``state`` is the pytree
``{"params", "opt_state", "step", "accum"}``; ``meta`` is JSON (step, config, data, the
wall time ``time`` of the save and ``elapsed_s``, the run's wall seconds so far over all segments).
Saves are synchronous so that "saved" means "on disk" (runs exit right after Ctrl-C).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from stn_jax.train.steps import TrainState


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the model being restored."""


def checkpoint_tree(state: TrainState, accum: dict[str, Any]) -> dict[str, Any]:
    """The pytree a checkpoint's ``state`` item holds: ``{"params", "opt_state", "step", "accum"}``."""
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "accum": accum}


class Checkpointer:
    """Save/restore training checkpoints in `directory`, keeping the last `keep`."""

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "meta"))

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree: Any, meta: dict[str, Any]) -> None:
        """Write checkpoint `step` (overwriting nothing: an existing step is left as is)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                         meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def restore(self, target: Any, *, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint `step` (default: latest) into the structure/sharding of `target`.

        Raises:
          CheckpointError: no checkpoint exists, or it cannot be read (corrupt, truncated,
            or saved from a different model/optimizer).
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
            step = steps[-1]
        else:
            self._require(step)
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                                else ocp.utils.to_shape_dtype_struct(x), target)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as err:  # orbax/tensorstore raise many types; name the file instead
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt or does not match this model/"
                f"optimizer ({type(err).__name__}: {str(err)[:300]}). Delete that step directory to "
                f"resume from an earlier checkpoint, or start a fresh workdir.") from err
        return restored["state"], dict(restored["meta"] or {})

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON ``meta`` item of checkpoint `step` alone (step, config, data, time, elapsed_s)."""
        self._require(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})

    def _require(self, step: int) -> None:
        steps = self.all_steps()
        if step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; available: {steps}")

    def close(self) -> None:
        self._manager.close()
