"""`stn-jax train` / `stn-jax evaluate` end to end on tiny in-memory MNIST (a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import stn_jax.data
from stn_jax import cli
from stn_jax.data import MNIST


def _tiny_mnist() -> MNIST:
    rng = np.random.default_rng(0)
    def split(n):
        labels = (np.arange(n) % 10).astype(np.int32)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):   # a bar whose position encodes the class, plus noise
            images[i, 4:24, 2 + 2 * c:4 + 2 * c] = 255
        images = np.maximum(images, rng.integers(0, 40, images.shape).astype(np.uint8))
        return images, labels
    tr, trl = split(60)
    te, tel = split(20)
    return MNIST(tr, trl, te, tel, source="sample", is_sample=True)


@pytest.fixture
def tiny_mnist(monkeypatch):
    calls = []

    def fake_load(source="auto", **kwargs):
        calls.append(source)
        return _tiny_mnist()
    monkeypatch.setattr(stn_jax.data, "load_mnist", fake_load)
    return calls


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--model", "--transform", "--steps", "--batch-size", "--lr", "--data-dir",
                 "--workdir", "--resume", "--seed", "--config", "--loc-lr-mult", "--clip-norm",
                 "--identity-penalty", "--schedule", "--optimizer", "--checkpoint-every"):
        assert flag in text


def test_invalid_combination_fails_before_compiling(tmp_path, capsys, tiny_mnist):
    code = cli.main(["train", "--dataset", "rts", "--model", "2st-fcn", "--workdir", str(tmp_path / "w")])
    assert code == 2
    assert "2st-fcn" in capsys.readouterr().err
    assert tiny_mnist == []                       # nothing was loaded, so nothing compiled
    assert not (tmp_path / "w").exists()


def test_uneven_batch_fails_clearly(tmp_path, capsys, tiny_mnist):
    code = cli.main(["train", "--batch-size", "12", "--workdir", str(tmp_path / "w")])
    assert code == 2
    assert "does not divide evenly over 8 devices" in capsys.readouterr().err
    assert tiny_mnist == []


def test_train_and_evaluate_end_to_end(tmp_path, capsys, tiny_mnist):
    workdir = tmp_path / "run"
    (tmp_path / "opts.toml").write_text('[train]\nlog-every = 2\ncheckpoint-every = 2\neval-batch-size = 16\n')
    code = cli.main(["train", "--dataset", "r", "--model", "st-cnn", "--transform", "affine", "--steps", "4",
                     "--batch-size", "16", "--lr", "0.01", "--seed", "1", "--validation-size", "10",
                     "--workdir", str(workdir), "--config", str(tmp_path / "opts.toml"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test error:" in out and "SAMPLE" in out
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 4 and results["test_count"] == 20 and results["data"]["is_sample"] is True
    assert results["config"]["log_every"] == 2 and results["config"]["model"] == "st-cnn"
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
    for name in ("learning_curves.png", "transformers.png"):
        assert (workdir / "figures" / name).stat().st_size > 1000
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    assert evaluation["step"] == 4
    assert evaluation["test_error"] == pytest.approx(results["test_error"])
