"""experiments/paper/reproduce.py: recipes from TOML, run names, and the commands it starts."""

from __future__ import annotations

import argparse

import pytest

from experiments.paper import reproduce
from stn_jax.train import TrainConfig

_ADAM = ["--optimizer", "adam", "--lr", "0.001", "--schedule", "cosine", "--clip-norm", "1.0",
         "--identity-penalty", "0.01"]
_TUNED = ["--optimizer", "adam", "--lr", "0.01", "--warmup-steps", "200", "--schedule", "cosine",
          "--clip-norm", "1.0", "--identity-penalty", "0.01", "--loc-lr-mult", "1.0"]


def test_recipes_are_the_published_flag_lists():
    assert reproduce.VARIANTS == {
        "paper": [],
        "adam": _ADAM,
        "adam-border": _ADAM + ["--padding-mode", "border"],
        "adam-fullres": _ADAM + ["--st-pool", "1"],
        "adam-nopen": _ADAM[:-1] + ["0"],
        "adam-tuned": _TUNED,
        "adam-tuned-fullres": _TUNED[:-1] + ["0.1", "--st-pool", "1"],
        "adam-tuned-loc01": _TUNED[:-1] + ["0.1"],
        "adam-tuned-locfull": _TUNED[:-1] + ["0.1", "--loc-downsample", "1"],
        "adam-tuned-lr3e-3": _TUNED[:3] + ["0.003"] + _TUNED[4:],
        "adam-tuned-lr3e-3-locfull": _TUNED[:3] + ["0.003"] + _TUNED[4:] + ["--loc-downsample", "1"],
        "adam-tuned-nopen": _TUNED[:-3] + ["0", "--loc-lr-mult", "1.0"],
    }
    assert list(reproduce.RECIPES)[0] == "paper"
    assert all(r.description for r in reproduce.RECIPES.values())


@pytest.mark.parametrize("name", sorted(reproduce.RECIPES))
def test_each_recipe_is_a_valid_train_config_file(name):
    """A recipe file also works as ``stn-jax train --config`` and sets exactly its options."""
    config = TrainConfig.from_file(reproduce.RECIPES_DIR / f"{name}.toml", dataset="rts", model="st-cnn")
    config.validate()
    for key, value in reproduce.RECIPES[name].options.items():
        assert getattr(config, key.replace("-", "_")) == value


def test_plan_names_and_relative_command():
    runs = reproduce.plan(["rts"], [0], ["adam-fullres"], headline_seeds=[1], extra_cells=False, tag="8k")
    names = [r.name for r in runs]
    assert "rts-fcn-s0-adam-fullres-8k" in names
    assert "rts-st-cnn-affine-s1-adam-fullres-8k" in names and "rts-st-fcn-tps-s1-adam-fullres-8k" not in names
    run = next(r for r in runs if r.name == "rts-st-cnn-affine-s0-adam-fullres-8k")
    assert run.workdir == reproduce.RUNS_DIR / "table1" / run.name
    args = argparse.Namespace(steps=300, batch_size=64, data_dir=str(reproduce.ROOT.parent / "shared" / "data"),
                              extra=["--log-every", "10"])
    cmd = reproduce.command(run, args)
    assert cmd[1:] == ["-m", "stn_jax.cli", "train", "--dataset", "rts", "--model", "st-cnn",
                       "--steps", "300", "--batch-size", "64", "--decay-steps", "100", "--seed", "0",
                       "--workdir", f"experiments/results/runs/table1/{run.name}", "--resume", "--no-progress",
                       "--transform", "affine", "--data-dir", "../shared/data",
                       *_ADAM, "--st-pool", "1", "--log-every", "10"]


_FAKE_TRAIN = """
import json, pathlib, signal, sys, time
workdir = pathlib.Path(sys.argv[1])
def on_term(*_):  # like stn-jax train: checkpoint (here: 1 s, counting the signals), then exit 3
    with open(workdir / "sigterms", "a") as f:
        f.write("x")
    time.sleep(1.0)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
(workdir / "started").write_text(str(time.monotonic()))
time.sleep(float(sys.argv[2]))
(workdir / "results.json").write_text(json.dumps({"test_error": 0.5}))
"""


def _fake_runs(monkeypatch, tmp_path, sleep_s: float, n: int) -> list:
    """`n` runs whose command is a stand-in for `stn-jax train` that sleeps `sleep_s` seconds."""
    monkeypatch.setattr(reproduce, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(reproduce, "command",
                        lambda run, args: [reproduce.sys.executable, "-c", _FAKE_TRAIN, str(run.workdir), str(sleep_s)])
    return [reproduce.Run("table1", "rts", "cnn", None, seed) for seed in range(n)]


def test_execute_runs_jobs_concurrently_and_skips_finished(monkeypatch, tmp_path):
    runs = _fake_runs(monkeypatch, tmp_path, 1.0, 3)
    args = argparse.Namespace(dry_run=False)
    assert reproduce.execute(runs, args, jobs=3) == 0
    starts = sorted(float((r.workdir / "started").read_text()) for r in runs)
    assert starts[-1] - starts[0] < 1.0  # all three started before the first finished
    (runs[0].workdir / "started").unlink()
    assert reproduce.execute(runs, args, jobs=1) == 0
    assert not (runs[0].workdir / "started").exists()  # done runs are skipped


def test_execute_deadline_stops_running_and_skips_pending(monkeypatch, tmp_path, capsys):
    runs = _fake_runs(monkeypatch, tmp_path, 60.0, 2)
    assert reproduce.execute(runs, argparse.Namespace(dry_run=False), jobs=1, deadline_s=2.0) == 2
    assert (runs[0].workdir / "started").exists() and not (runs[0].workdir / "results.json").exists()
    assert (runs[0].workdir / "sigterms").read_text() == "x"  # one SIGTERM, never one during the checkpoint
    assert not runs[1].workdir.exists()
    err = capsys.readouterr().err
    assert "stopped at the deadline (2" in err and runs[1].name in err


def test_execute_rejects_zero_jobs():
    with pytest.raises(SystemExit, match="--jobs"):
        reproduce.execute([], argparse.Namespace(dry_run=False), jobs=0)
