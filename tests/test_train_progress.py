"""The progress bar counts completed steps and takes its ETA from the steady rate."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from _train_helpers import TinyDataset, TinySTN, is_loc

from stn_jax.train import TrainConfig, train
from stn_jax.train.progress import ProgressBar


class _FakeBar:
    def __init__(self):
        self.n, self.postfix, self.closed = 0, "", False

    def update(self, k):
        self.n += k

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        self.closed = True


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_bar_trails_dispatch_by_at_most_lag_steps():
    bar = _FakeBar()
    progress = ProgressBar(total=10, lag=2, bar=bar)
    for step in range(1, 6):
        progress.dispatched(step, jnp.asarray(step))
        assert progress.done == max(step - 2, 0) == bar.n
    progress.drain()
    assert progress.done == bar.n == 5
    progress.close()
    assert bar.closed


def test_a_resumed_run_counts_from_its_restored_step():
    bar = _FakeBar()
    progress = ProgressBar(total=10, initial=6, lag=0, bar=bar)
    progress.dispatched(7, jnp.asarray(7))
    assert progress.done == 7 and bar.n == 1


def test_eta_uses_the_steady_rate_without_compilation_or_overhead():
    clock, overhead, bar = _Clock(), [0.0], _FakeBar()
    progress = ProgressBar(total=100, lag=0, overhead_s=lambda: overhead[0], clock=clock, bar=bar)
    clock.now = 30.0                       # the first step (with compilation) ends at t = 30 s
    progress.dispatched(1, jnp.asarray(1))
    assert progress.steps_per_s() is None and progress.eta_s() is None
    for step in range(2, 12):              # then 10 steps at 0.5 s each ...
        clock.now += 0.5
        progress.dispatched(step, jnp.asarray(step))
    overhead[0] += 7.0                     # ... and a 7 s validation
    clock.now += 7.0
    assert progress.steps_per_s() == pytest.approx(2.0)
    assert progress.eta_s() == pytest.approx(89 / 2.0)
    progress.set_metrics("loss=0.1")
    assert bar.postfix == "loss=0.1, 2 step/s, eta 00:44"


def test_lag_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="lag"):
        ProgressBar(total=3, lag=-1, bar=_FakeBar())


def test_a_run_with_the_bar_ends_at_its_last_step(tmp_path, capsys):
    config = TrainConfig(steps=12, batch_size=16, log_every=5, checkpoint_every=100, eval_every=100,
                         workdir=str(tmp_path), progress=True, figures=False, tensorboard=False)
    train(config, model=TinySTN(), dataset=TinyDataset(), is_localization=is_loc)
    err = capsys.readouterr().err
    assert "12/12" in err and "step/s, eta" in err
