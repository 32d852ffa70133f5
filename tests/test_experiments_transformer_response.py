"""experiments/paper/transformer_response.py: decomposition, placement and the response slopes."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.paper import transformer_response as tr
from stn_jax.data.distortions import similarity_theta


def _digits(n: int = 3) -> np.ndarray:
    """Small off-centre blobs (N, 28, 28, 1) in [0, 1]."""
    rng = np.random.default_rng(0)
    digits = np.zeros((n, 28, 28, 1), np.float32)
    for i in range(n):
        r, c = rng.integers(9, 16, size=2)
        digits[i, r:r + 5, c:c + 3, 0] = 1.0
    return digits


def test_decompose_affine_recovers_rotation_scale_translation():
    phi, scale, t = np.radians(30.0), 0.6, np.array([0.2, -0.1])
    a = scale * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    parts = tr.decompose_affine(np.concatenate([a, t[:, None]], axis=1)[None])
    np.testing.assert_allclose(parts["rotation_deg"], [30.0], atol=1e-9)
    np.testing.assert_allclose(parts["scale"], [0.6], atol=1e-9)
    np.testing.assert_allclose(parts["translation"], [t], atol=1e-12)


def test_the_transformer_that_undoes_a_placement_has_the_opposite_rotation():
    """The documented sign: a grid that turns a digit placed at +a upright rotates by -a."""
    placement = np.asarray(similarity_theta(np.float32(np.radians(20.0)), np.float32(1.25),
                                            np.zeros(2, np.float32), (42, 42), (42, 42)))
    undo = np.linalg.inv(placement[:, :2])
    parts = tr.decompose_affine(np.concatenate([undo, np.zeros((2, 1))], axis=1)[None])
    np.testing.assert_allclose(parts["rotation_deg"], [-20.0], atol=1e-4)
    np.testing.assert_allclose(parts["scale"], [1.25], atol=1e-5)


def test_decompose_affine_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        tr.decompose_affine(np.zeros((2, 6)))


def test_place_digits_at_rest_on_the_digit_canvas_is_the_identity():
    digits = _digits()
    placed = tr.place_digits(digits, angle_deg=0.0, scale=1.0, offset_px=0.0, canvas=28)
    np.testing.assert_allclose(placed, digits, atol=1e-6)


def test_place_digits_offset_moves_the_ink():
    digits = _digits()

    def centroid_x(images):
        w = images[..., 0]
        return (w * np.arange(w.shape[2])[None, None, :]).sum((1, 2)) / w.sum((1, 2))

    at_rest = tr.place_digits(digits, angle_deg=0.0, scale=1.0, offset_px=0.0, canvas=42)
    moved = tr.place_digits(digits, angle_deg=0.0, scale=1.0, offset_px=5.0, canvas=42)
    np.testing.assert_allclose(centroid_x(moved) - centroid_x(at_rest), 5.0, atol=1e-3)


def test_slope():
    assert tr.slope([0, 1, 2], [1, -1, -3]) == pytest.approx(-2.0)


def _centroid_follower(images: np.ndarray) -> np.ndarray:
    """A 'transformer' that centres a fixed half-size region on the ink and never rotates."""
    w = images[..., 0]
    h, width = w.shape[1:]
    cx = (w * np.arange(width)[None, None, :]).sum((1, 2)) / w.sum((1, 2))
    tx = (cx + 0.5) * 2 / width - 1
    theta = np.zeros((images.shape[0], 2, 3))
    theta[:, 0, 0] = theta[:, 1, 1] = 0.5
    theta[:, 0, 2] = tx
    return theta


def test_response_slopes_of_a_fixed_and_a_following_transformer():
    digits = _digits()
    identity = tr.response(lambda x: np.tile(np.eye(2, 3), (x.shape[0], 1, 1)), digits, canvas=42)
    assert {k: v["slope"] for k, v in identity.items()} == pytest.approx(
        {"digit_angle_deg": 0.0, "digit_scale": 0.0, "digit_offset_px": 0.0}, abs=1e-9)
    assert [row["digit_angle_deg"] for row in identity["digit_angle_deg"]["rows"]] == list(tr.ANGLES_DEG)

    follower = tr.response(_centroid_follower, digits, canvas=42)
    assert follower["digit_offset_px"]["slope"] == pytest.approx(1.0, abs=0.01)
    assert follower["digit_angle_deg"]["slope"] == pytest.approx(0.0, abs=1e-9)
    assert follower["digit_scale"]["rows"][0]["scale"] == pytest.approx(0.5)


def test_response_records_the_error_of_each_setting_and_needs_no_transformer():
    """A 'classifier' that is right only when the ink sits where it sits at rest: 0% error at offset
    0, 100% at +-6 px; a model without a transformer gets rows without slopes."""
    digits, labels = _digits(), np.arange(3)
    at_rest = tr.place_digits(digits, angle_deg=0.0, scale=1.0, offset_px=0.0, canvas=42)

    def classify(images):
        moved = np.abs(images - at_rest).reshape(len(images), -1).max(axis=1) > 0.5
        return np.where(moved, -1, labels)

    report = tr.response(None, digits, canvas=42, classify=classify, labels=labels)
    errors = {row["digit_offset_px"]: row["error_pct"] for row in report["digit_offset_px"]["rows"]}
    assert errors[0.0] == 0.0 and errors[6.0] == errors[-6.0] == 100.0
    assert all("slope" not in sweep and "rotation_deg" not in sweep["rows"][0] for sweep in report.values())
    with pytest.raises(ValueError, match="together"):
        tr.response(None, digits, canvas=42, classify=classify)
    with pytest.raises(ValueError, match="nothing to measure"):
        tr.response(None, digits, canvas=42)


def test_shared_forward_runs_the_model_once_per_set_of_images_in_batches():
    calls = []

    def forward(images):
        calls.append(len(images))
        return images[:, 0, 0, 0].astype(int), np.tile(np.eye(2, 3), (len(images), 1, 1))

    thetas_of, classify = tr._shared_forward(forward, batch=4)
    images = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    assert thetas_of(images).shape == (10, 2, 3)
    np.testing.assert_array_equal(classify(images), np.arange(10))
    assert calls == [4, 4, 2]
    classify(images.copy())                     # a new set of images runs the model again
    assert calls == [4, 4, 2, 4, 4, 2]
