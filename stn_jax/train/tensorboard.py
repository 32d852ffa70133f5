"""TensorBoard event files of a training run (``WORKDIR/tensorboard/``), written with tensorboardX.

Scalars mirror metrics.jsonl: a record ``{"step": s, "split": "train", "loss": ...}`` becomes
the scalar ``train/loss`` at step ``s`` (every finite number of the record except ``step`` and
``time``). Images: at each validation, models with spatial transformers get the transformer
panel as two strips, ``transformers/input`` (the first validation images side by side) and
``transformers/<i>_<kind>`` (what transformer ``i`` produced from them), grayscale, channel 0.

Only process 0 writes; the other processes hold a disabled log. The training loop closes the
log on every way out (end, Ctrl-C, divergence), so an interrupted run keeps its events. A resumed run opens a new event file whose
``purge_step`` tells TensorBoard to hide the old file's events from the restored step on.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import jax
import numpy as np

from stn_jax.models import inspect_transformers
from stn_jax.train.reporting import log_message

EVENTS_GLOB = "events.out.tfevents.*"
"""The file names tensorboardX gives event files."""


class TensorBoardLog:
    """Scalar and image summaries of one run.

    Args:
      logdir: the directory of the event files (``WORKDIR/tensorboard``).
      enabled: False (``--no-tensorboard``, or a process other than 0) makes every method a no-op.
      start_step: the step the run starts from; 0 deletes old event files in `logdir` (as a
        fresh run deletes metrics.jsonl), a positive step purges later events of earlier files.
      panel_size: how many images the transformer strips show.
    """

    def __init__(self, logdir: str | pathlib.Path, *, enabled: bool, start_step: int = 0,
                 panel_size: int = 8) -> None:
        self.logdir = pathlib.Path(logdir)
        self.panel_size = int(panel_size)
        self._panel = True
        self._writer: Any = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter  # noqa: PLC0415 (lazy: keeps `stn-jax --help` fast)

        if start_step == 0 and self.logdir.is_dir():
            for old in self.logdir.glob(EVENTS_GLOB):
                old.unlink()
        self.logdir.mkdir(parents=True, exist_ok=True)
        # events reach the file through a queue and a thread that flushes every `flush_secs`;
        # close() (on every way out of the run) writes what is still queued
        self._writer = SummaryWriter(str(self.logdir), purge_step=start_step or None, flush_secs=5)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def record(self, rec: dict[str, Any]) -> None:
        """Write the numbers of a metrics.jsonl record as scalars ``<split>/<name>`` at its step."""
        if self._writer is None:
            return
        step, split = int(rec["step"]), rec["split"]
        for name, value in rec.items():
            if name in ("step", "time", "split") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(f"{split}/{name}", float(value), step)

    def transformer_panel(self, step: int, model: Any, params: Any, images: np.ndarray) -> None:
        """Write the input strip and one output strip per transformer (nothing for models
        without transformers, or models :func:`stn_jax.models.inspect_transformers` cannot run).

        Args:
          step: the optimisation step of `params`.
          model, params: the Linen model and its (replicated) parameters.
          images: (N, H, W, C) float32 in [0, 1]; the first ``panel_size`` are shown.
        """
        if self._writer is None or not self._panel:
            return
        x = np.asarray(images[: self.panel_size], np.float32)
        try:
            transformers = inspect_transformers(model, {"params": jax.device_get(params)}, x)
        except Exception as err:  # a custom model the zoo cannot inspect: no panel, as in write_figures
            log_message(f"tensorboard: no transformer panel ({type(err).__name__}: {err})")
            transformers = []
        if not transformers:
            self._panel = False   # never look again: the model has no transformer
            return
        self._writer.add_image("transformers/input", strip(x), step, dataformats="HW")
        for i, t in enumerate(transformers):
            self._writer.add_image(f"transformers/{i}_{t['kind']}", strip(np.asarray(t["warped"])), step,
                                   dataformats="HW")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def strip(images: np.ndarray, *, gap: int = 2) -> np.ndarray:
    """(N, H, W, C) images -> one (H, N * (W + gap) - gap) float image of channel 0, clipped to [0, 1]."""
    images = np.clip(np.asarray(images, np.float32)[..., 0], 0.0, 1.0)
    n, h, w = images.shape
    out = np.ones((h, n * (w + gap) - gap), np.float32)
    for i in range(n):
        out[:, i * (w + gap): i * (w + gap) + w] = images[i]
    return out
