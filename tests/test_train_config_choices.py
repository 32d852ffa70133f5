"""`TrainConfig` and `stn-jax train` take every choice list from the module that owns it."""

from __future__ import annotations

import argparse

import pytest

import stn_jax.data
import stn_jax.data.sources
import stn_jax.models
import stn_jax.sampling
import stn_jax.transforms
from stn_jax.train import config as config_module
from stn_jax.train import optim
from stn_jax.train.cli import add_train_arguments
from stn_jax.train.config import CHOICES, TrainConfig

OWNERS = {
    "dataset": stn_jax.data.DATASETS,
    "model": stn_jax.models.MODEL_NAMES,
    "architecture": stn_jax.models.ARCHITECTURES,
    "conv": stn_jax.models.CONV_IMPLS,
    "transform": stn_jax.transforms.TRANSFORM_KINDS,
    "padding_mode": stn_jax.sampling.PADDING_MODES,
    "data_source": stn_jax.data.sources.SOURCES,
    "optimizer": optim.OPTIMIZERS,
    "schedule": optim.SCHEDULES,
}


@pytest.mark.parametrize("option", sorted(OWNERS))
def test_config_choices_are_the_owning_modules_objects(option):
    assert CHOICES[option] is OWNERS[option]


def test_module_level_names_are_the_owning_modules_objects():
    assert config_module.DATASETS is stn_jax.data.DATASETS
    assert config_module.MODELS is stn_jax.models.MODEL_NAMES
    assert config_module.TRANSFORMS is stn_jax.transforms.TRANSFORM_KINDS
    assert config_module.PADDING_MODES is stn_jax.sampling.PADDING_MODES
    assert config_module.MNIST_SOURCES is stn_jax.data.sources.SOURCES
    assert config_module.OPTIMIZERS is optim.OPTIMIZERS
    assert config_module.SCHEDULES is optim.SCHEDULES


def test_every_choice_option_is_a_config_field_with_a_valid_default():
    defaults = TrainConfig()
    assert set(CHOICES) == set(OWNERS)
    for option, choices in CHOICES.items():
        assert getattr(defaults, option) in choices


@pytest.mark.parametrize("option", sorted(OWNERS))
def test_validate_accepts_each_owned_choice_and_rejects_others(option):
    for value in CHOICES[option]:
        changes = {option: value}
        if option == "model" and value == "2st-fcn":
            changes["dataset"] = "addition"
        TrainConfig(**changes).validate()
    with pytest.raises(ValueError, match=f"{option} must be one of"):
        TrainConfig(**{option: "no-such-choice"}).validate()


@pytest.mark.parametrize("option", sorted(OWNERS))
def test_cli_offers_exactly_the_owned_choices(option, capsys):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    flag = "--" + option.replace("_", "-")
    for value in OWNERS[option]:
        assert getattr(parser.parse_args([flag, value]), option) == value
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([flag, "no-such-choice"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
