"""The training progress bar: it counts completed steps, not dispatched ones, and its ETA
comes from the steady step rate.

JAX dispatches steps asynchronously: the host can queue dozens of steps ahead of the device
and then waits at the next synchronisation (a log line). A bar advanced at dispatch races
ahead and then freezes. :class:`ProgressBar` keeps, for each dispatched step, one scalar of
that step's output (a *marker*); once more than ``lag`` steps are pending it waits for the
oldest marker and counts that step as done. The host therefore stays at most ``lag`` steps
ahead of the device (enough to keep the device busy) and the bar never shows a step that has
not finished.

The ETA is ``remaining steps / steady rate``, the rate counted from the end of the first
completed step (which includes compilation) and leaving out validation and checkpoint time.
Times are seconds of ``time.perf_counter``.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import Any

import jax

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
"""tqdm's layout without its own rate and ETA (they count dispatched steps and compilation)."""


class ProgressBar:
    """A tqdm bar on stderr over the completed steps of one run.

    Args:
      total: the run's last step.
      initial: the step the run starts from (a resumed run's restored step).
      lag: how many dispatched steps may be pending before the bar waits for the oldest.
      overhead_s: seconds spent so far outside training steps (validation, checkpoints), e.g.
        :attr:`stn_jax.train.throughput.Throughput.overhead_s`; left out of the rate.
      clock: seconds as a float (default ``time.perf_counter``).
      bar: a tqdm-like object (default: a new ``tqdm`` on stderr); for tests.
    """

    def __init__(self, *, total: int, initial: int = 0, lag: int = 8,
                 overhead_s: Callable[[], float] = lambda: 0.0,
                 clock: Callable[[], float] = time.perf_counter, bar: Any = None) -> None:
        if not isinstance(lag, int) or lag < 0:
            raise ValueError(f"lag must be a non-negative integer, got {lag!r}")
        if bar is None:
            from tqdm import tqdm  # noqa: PLC0415 (lazy: keeps `stn-jax --help` fast)
            bar = tqdm(total=total, initial=initial, file=sys.stderr, unit="step", dynamic_ncols=True,
                       desc="train", bar_format=BAR_FORMAT)
        self._bar = bar
        self.total, self.lag = int(total), lag
        self._overhead_s, self._clock = overhead_s, clock
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self.done = int(initial)
        """The last step known to have finished."""
        self._start: tuple[float, int, float] | None = None   # (time, step, overhead) at the first completion
        self._metrics = ""
        self._shown_at = -float("inf")

    def dispatched(self, step: int, marker: Any) -> None:
        """Step `step` was dispatched; `marker` is a (cheap, scalar) array of its output."""
        self._pending.append((int(step), marker))
        while len(self._pending) > self.lag:
            self._complete_oldest()

    def drain(self) -> None:
        """Wait for every pending step (cheap right after a log line, which already waited)."""
        while self._pending:
            self._complete_oldest()

    def set_metrics(self, text: str) -> None:
        """Show `text` (e.g. the last logged loss) before the rate and ETA."""
        self._metrics = text
        self._show(self._clock())

    def steps_per_s(self, now: float | None = None) -> float | None:
        """Steady rate: steps completed per second since the first completion, less the
        overhead since then (None before two steps have completed)."""
        if self._start is None or self.done <= self._start[1]:
            return None
        t0, step0, overhead0 = self._start
        now = self._clock() if now is None else now
        seconds = now - t0 - (self._overhead_s() - overhead0)
        return (self.done - step0) / seconds if seconds > 0 else None

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds to the last step at the steady rate (None while the rate is unknown)."""
        rate = self.steps_per_s(now)
        return (self.total - self.done) / rate if rate else None

    def close(self) -> None:
        self._bar.close()

    # ------------------------------------------------------------------ internals
    def _complete_oldest(self) -> None:
        step, marker = self._pending.popleft()
        jax.block_until_ready(marker)
        now = self._clock()
        if self._start is None:
            self._start = (now, step, self._overhead_s())
        if step > self.done:
            self._bar.update(step - self.done)
            self.done = step
        if now - self._shown_at >= 0.5:
            self._show(now)

    def _show(self, now: float) -> None:
        self._shown_at = now
        rate, eta = self.steps_per_s(now), self.eta_s(now)
        timing = "eta ?" if eta is None else f"{rate:.3g} step/s, eta {_interval(eta)}"
        self._bar.set_postfix_str(f"{self._metrics}, {timing}" if self._metrics else timing, refresh=False)


def _interval(seconds: float) -> str:
    """``[H:]MM:SS`` of a non-negative duration."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
