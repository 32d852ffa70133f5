"""experiments/paper/clutter_ink.py: ink statistics of TC clutter crops per crop margin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.paper import clutter_ink


def _box_digits(n: int = 50) -> np.ndarray:
    """uint8 (n, 28, 28) digits whose ink fills exactly the central 20x20 content box."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = 255
    return images


def test_crops_inside_the_content_box_always_hold_ink_and_whole_frame_crops_less():
    inside = clutter_ink.crop_statistics(_box_digits(), margin=4, size=6, count=2000, seed=0)
    assert inside == {"fraction_with_stroke": 1.0, "mean_ink": 36.0}
    anywhere = clutter_ink.crop_statistics(_box_digits(), margin=0, size=6, count=2000, seed=0)
    assert anywhere["fraction_with_stroke"] == 1.0          # every 6x6 crop still overlaps the box
    assert 20.0 < anywhere["mean_ink"] < 36.0


def test_ink_outside_the_content_box_is_reached_only_with_a_smaller_margin():
    ring = np.full((50, 28, 28), 255, np.uint8)
    ring[:, 4:24, 4:24] = 0
    assert clutter_ink.crop_statistics(ring, margin=4, size=6, count=2000, seed=0)["fraction_with_stroke"] == 0.0
    assert clutter_ink.crop_statistics(ring, margin=0, size=6, count=2000, seed=0)["fraction_with_stroke"] > 0.2


def test_a_crop_that_does_not_fit_is_a_value_error():
    with pytest.raises(ValueError, match="does not fit"):
        clutter_ink.crop_statistics(_box_digits(), margin=12, size=6, count=10, seed=0)


def test_main_writes_one_entry_per_margin(tmp_path, monkeypatch):
    class FakeMNIST:
        train_images = _box_digits()

    monkeypatch.setattr("stn_jax.data.load_mnist", lambda **kwargs: FakeMNIST)
    out = tmp_path / "ink.json"
    assert clutter_ink.main(["--data-dir", "x", "--margins", "4", "0", "--count", "100", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["margins"]) == {"4", "0"} and report["count"] == 100
