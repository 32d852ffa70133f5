"""Training throughput (images per second) that leaves out compilation, validation and checkpoints.

The meter starts when the first step of a run (or of a resumed run) has finished: that step
includes compilation. From then on it counts steps in *windows* (from one log line to the
next) and subtracts the time spent in validation and checkpointing (:meth:`Throughput.overhead`).
All times are seconds of ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax


class Throughput:
    """Images-per-second meter of one training run.

    Args:
      batch_size: global batch size (images per step).
      clock: seconds as a float (default ``time.perf_counter``).

    Use: call :meth:`step_done` after every dispatched step, wrap validation and checkpointing
    in ``with meter.overhead():``, read :meth:`window_rate` at each log line and call
    :meth:`stop` after the last step; then :attr:`train_time_s` and :attr:`images_per_s`
    describe the steady state.
    """

    def __init__(self, batch_size: int, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.batch_size = int(batch_size)
        self._clock = clock
        self._window_start = clock()
        self._window_steps = 0
        self._window_overhead = 0.0
        self._first_time: float | None = None
        self._first_step = 0
        self._end_time = 0.0
        self._end_step = 0
        self.overhead_s = 0.0
        """Seconds spent in :meth:`overhead` blocks since the first step finished."""

    def step_done(self, step: int, outputs: Any) -> None:
        """Count step `step`; after the first one, wait for `outputs` and start the clock."""
        self._window_steps += 1
        if self._first_time is None:
            jax.block_until_ready(outputs)
            self._first_time = self._clock()
            self._first_step = step
            self._window_start, self._window_steps = self._first_time, 0

    @contextlib.contextmanager
    def overhead(self) -> Iterator[None]:
        """Time the block and leave it out of the training time (validation, checkpointing)."""
        start = self._clock()
        yield
        spent = self._clock() - start
        self._window_overhead += spent
        self.overhead_s += spent

    def window_rate(self) -> float:
        """Images per second since the previous call (NaN without a timed step); starts a new window."""
        now = self._clock()
        rate = float("nan")
        if self._window_steps:
            rate = self._window_steps * self.batch_size / max(now - self._window_start - self._window_overhead, 1e-9)
        self._window_start, self._window_steps, self._window_overhead = now, 0, 0.0
        return rate

    def stop(self, step: int) -> None:
        """The run ended after step `step` (call once its results are ready)."""
        self._end_time = self._clock()
        self._end_step = step

    @property
    def train_time_s(self) -> float:
        """Seconds from the end of the first step to :meth:`stop`, less the overhead (0 if no step ran)."""
        if self._first_time is None:
            return 0.0
        return self._end_time - self._first_time - self.overhead_s

    @property
    def images_per_s(self) -> float | None:
        """Steady-state images per second over the timed steps (None when there were none)."""
        timed_steps = self._end_step - self._first_step if self._first_time is not None else 0
        train_s = self.train_time_s
        return timed_steps * self.batch_size / train_s if train_s > 0 and timed_steps else None
