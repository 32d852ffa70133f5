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
