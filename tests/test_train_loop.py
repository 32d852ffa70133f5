"""The training loop: exact resume, Ctrl-C, NaN stop, corrupt checkpoints, load_run/evaluate, CLI."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from _train_helpers import CLASSES, SHAPE, TinyDataset, TinySTN, is_loc

from stn_jax.train import CheckpointError, TrainConfig, TrainingDiverged, evaluate, load_run, train
from stn_jax.train.checkpoint import Checkpointer
from stn_jax.train.metrics import WALL_CLOCK_FIELDS, read_metrics
from stn_jax.train.runs import read_config


def _config(workdir: pathlib.Path, **changes) -> TrainConfig:
    base = TrainConfig(steps=12, batch_size=16, lr=0.1, log_every=3, checkpoint_every=4, eval_every=4,
                       keep_checkpoints=2, workdir=str(workdir), progress=False, figures=False,
                       eval_batch_size=8)
    return base.replace(**changes)


def _train(config: TrainConfig, **kwargs):
    return train(config, model=TinySTN(), dataset=TinyDataset(), is_localization=is_loc, **kwargs)


def _comparable(path: pathlib.Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_FIELDS} for r in read_metrics(path)]


def _checkpoint_elapsed(workdir: pathlib.Path, step: int) -> float:
    checkpointer = Checkpointer(workdir / "checkpoints")
    try:
        return checkpointer.read_meta(step)["elapsed_s"]
    finally:
        checkpointer.close()


class _Crash(Exception):
    pass


def _crash_at(step: int, exc: type[BaseException] = _Crash):
    def callback(s: int) -> None:
        if s == step:
            raise exc()
    return callback


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The runs below compile the same step functions; a persistent cache avoids recompiling."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for name, value in old.items():
        jax.config.update(name, value)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    results = _train(_config(workdir))
    return workdir, results


def test_run_writes_outputs(reference_run):
    workdir, results = reference_run
    assert results["steps"] == 12 and results["devices"] == 8 and results["batch_size"] == 16
    assert results["total_wall_time_s"] == pytest.approx(results["wall_time_s"], abs=0.05)   # one segment
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["test_error"] == pytest.approx(results["test_error"])
    assert saved["data"] == {"source": "custom", "is_sample": False, "dataset": "tiny"}
    records = read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [3, 6, 9, 12]
    assert [r["step"] for r in records if r["split"] == "val"] == [4, 8, 12]
    assert records[-1]["split"] == "test"
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert json.loads((workdir / "config.json").read_text())["steps"] == 12
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [8, 12]


def test_crash_then_resume_reproduces_uninterrupted_metrics(reference_run, tmp_path):
    ref_dir, ref_results = reference_run
    config = _config(tmp_path)
    with pytest.raises(_Crash):            # killed after step 10: last checkpoint is step 8
        _train(config, callbacks=[_crash_at(10)])
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")) == 9
    results = _train(config.replace(resume=True))
    assert results["start_step"] == 8
    assert _comparable(tmp_path / "metrics.jsonl") == _comparable(ref_dir / "metrics.jsonl")
    assert results["test_loss"] == pytest.approx(ref_results["test_loss"], rel=1e-6)
    a, b = load_run(tmp_path, model=TinySTN(), input_shape=SHAPE, num_classes=CLASSES), \
        load_run(ref_dir, model=TinySTN(), input_shape=SHAPE, num_classes=CLASSES)
    assert a.step == b.step == 12
    for x, y in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_ctrl_c_saves_checkpoint_and_resume_continues(tmp_path):
    config = _config(tmp_path, steps=6, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        _train(config, callbacks=[_crash_at(3, KeyboardInterrupt)])
    assert (tmp_path / "checkpoints" / "3").is_dir()
    first_segment_s = _checkpoint_elapsed(tmp_path, 3)
    assert first_segment_s > 0
    results = _train(config.replace(resume=True))
    assert results["start_step"] == 3 and results["steps"] == 6
    # the whole run's time is the interrupted segment's plus this one's
    assert results["total_wall_time_s"] == pytest.approx(first_segment_s + results["wall_time_s"], abs=0.05)


def test_resume_from_checkpoint_without_elapsed_time_reports_total_as_unknown(tmp_path, monkeypatch):
    config = _config(tmp_path, steps=6, checkpoint_every=100)
    with monkeypatch.context() as patch:   # a checkpoint written before the elapsed time was recorded
        patch.setattr("stn_jax.train.loop._Run.elapsed_s", lambda self: None)
        with pytest.raises(KeyboardInterrupt):
            _train(config, callbacks=[_crash_at(3, KeyboardInterrupt)])
    results = _train(config.replace(resume=True))
    assert results["start_step"] == 3 and results["total_wall_time_s"] is None
    assert results["wall_time_s"] > 0


def test_fresh_run_refuses_existing_checkpoints(reference_run):
    workdir, _ = reference_run
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        _train(_config(workdir))


def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    # the step schedule multiplies the lr by 1e30 at step 6: the loss becomes non-finite soon after
    config = _config(tmp_path, momentum=0.0, decay_steps=6, decay_factor=1e30, log_every=1, steps=20)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or gradient at step \d+.*Last good checkpoint"):
        _train(config)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) <= 8
    run = load_run(tmp_path, model=TinySTN(), input_shape=SHAPE, num_classes=CLASSES)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(run.variables))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(r["loss"]) for r in records)


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    config = _config(tmp_path, steps=4, eval_every=100)
    _train(config)
    data_files = [p for p in (tmp_path / "checkpoints" / "4" / "state").rglob("*") if p.is_file()]
    assert data_files
    for p in data_files:
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"checkpoints/4 is corrupt"):
        _train(config.replace(resume=True, steps=8))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(tmp_path, model=TinySTN(), input_shape=SHAPE, num_classes=CLASSES)


def test_evaluate_rescores_checkpoint(reference_run):
    workdir, results = reference_run
    out = evaluate(workdir, model=TinySTN(), dataset=TinyDataset())
    assert out["step"] == 12
    assert out["test_error"] == pytest.approx(results["test_error"])
    assert out["test_loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    assert json.loads((workdir / "evaluation.json").read_text())["step"] == 12


def test_read_config_of_a_run_older_than_the_architecture_option(tmp_path):
    values = {k: v for k, v in TrainConfig(model="cnn").to_dict().items() if k != "architecture"}
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert read_config(tmp_path).architecture == "padded"  # its checkpoints hold the earlier zoo's model
    (tmp_path / "config.json").write_text(json.dumps({**values, "architecture": "paper"}))
    assert read_config(tmp_path).architecture == "paper"


def test_read_config_of_a_run_older_than_the_conv_option(tmp_path):
    values = {k: v for k, v in TrainConfig(model="cnn").to_dict().items() if k != "conv"}
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert read_config(tmp_path).conv == "xla"  # it ran XLA's convolutions
    (tmp_path / "config.json").write_text(json.dumps({**values, "conv": "im2col"}))
    assert read_config(tmp_path).conv == "im2col"
