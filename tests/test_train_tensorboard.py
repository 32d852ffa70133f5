"""TensorBoard events of a training run, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from _train_helpers import TinyDataset, TinySTN, is_loc
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stn_jax.data
from stn_jax import cli
from stn_jax.data import MNIST
from stn_jax.train import TrainConfig, train
from stn_jax.train.metrics import read_metrics
from stn_jax.train.tensorboard import EVENTS_GLOB, strip


def _config(workdir: pathlib.Path, **changes) -> TrainConfig:
    base = TrainConfig(steps=8, batch_size=16, lr=0.1, log_every=2, checkpoint_every=4, eval_every=4,
                       workdir=str(workdir), progress=False, figures=False, eval_batch_size=8)
    return base.replace(**changes)


def _train(config: TrainConfig, **kwargs):
    return train(config, model=TinySTN(), dataset=TinyDataset(), is_localization=is_loc, **kwargs)


def _events(workdir: pathlib.Path) -> EventAccumulator:
    acc = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _scalars_from_metrics(workdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard scalars: tag ``split/name`` -> [(step, value)]."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for rec in read_metrics(workdir / "metrics.jsonl"):
        for name, value in rec.items():
            # metrics.jsonl writes a NaN (images/s of a window without a timed step) as "nan"
            if name not in ("step", "split", "time") and isinstance(value, float | int) and math.isfinite(value):
                expected.setdefault(f"{rec['split']}/{name}", []).append((rec["step"], value))
    return expected


def _assert_events_match_metrics(workdir: pathlib.Path) -> EventAccumulator:
    acc = _events(workdir)
    expected = _scalars_from_metrics(workdir)
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6, err_msg=tag)
    return acc


def test_scalars_and_panels_match_the_metrics_log(tmp_path):
    _train(_config(tmp_path))
    acc = _assert_events_match_metrics(tmp_path)
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/error", "train/lr", "train/grad_norm", "train/images_per_s",
                "val/loss", "val/error", "test/loss", "test/error"):
        assert tag in tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
    # the transformer panel at each validation (steps 4 and 8): inputs and the attention output
    assert sorted(acc.Tags()["images"]) == ["transformers/0_attention", "transformers/input"]
    shown = acc.Images("transformers/input")
    assert [e.step for e in shown] == [4, 8]
    assert (shown[0].height, shown[0].width) == (8, 8 * 8 + 7 * 2)


def test_resume_hides_the_events_after_the_restored_step(tmp_path):
    def crash(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _train(_config(tmp_path, checkpoint_every=100), callbacks=[crash])   # checkpoint at step 6 (Ctrl-C)
    _train(_config(tmp_path, resume=True))
    assert len(list((tmp_path / "tensorboard").glob(EVENTS_GLOB))) == 2
    acc = _assert_events_match_metrics(tmp_path)
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]


def test_a_fresh_run_replaces_old_events(tmp_path):
    _train(_config(tmp_path, steps=4))
    (tmp_path / "checkpoints").rename(tmp_path / "old-checkpoints")
    _train(_config(tmp_path, steps=2))
    assert len(list((tmp_path / "tensorboard").glob(EVENTS_GLOB))) == 1
    acc = _assert_events_match_metrics(tmp_path)
    assert [e.step for e in acc.Scalars("train/loss")] == [2]


def test_no_tensorboard_writes_none(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    digits = lambda n: (rng.integers(0, 255, (n, 28, 28)).astype(np.uint8), (np.arange(n) % 10).astype(np.int32))
    monkeypatch.setattr(stn_jax.data, "load_mnist",
                        lambda source="auto", **kwargs: MNIST(*digits(40), *digits(10), source="sample", is_sample=True))
    workdir = tmp_path / "run"
    code = cli.main(["train", "--dataset", "rts", "--model", "fcn", "--steps", "2", "--batch-size", "8",
                     "--log-every", "1", "--eval-batch-size", "10", "--workdir", str(workdir), "--no-progress",
                     "--no-figures", "--no-tensorboard"])
    assert code == 0
    assert (workdir / "metrics.jsonl").is_file()
    assert not (workdir / "tensorboard").exists()


def test_strip_lays_images_side_by_side():
    images = np.stack([np.full((3, 2, 1), 0.25), np.full((3, 2, 1), 2.0)])
    out = strip(images, gap=1)
    assert out.shape == (3, 5)
    np.testing.assert_array_equal(out[:, :2], 0.25)
    np.testing.assert_array_equal(out[:, 2], 1.0)
    np.testing.assert_array_equal(out[:, 3:], 1.0)   # clipped to [0, 1]
