"""Does a learned affine transformer undo the distortion? Its response to known placements.

A trained ST model (a ``stn-jax train`` workdir with checkpoints) sees undistorted MNIST test
digits placed on its input canvas by a similarity with a *known* rotation, scale or offset (the
geometry of the RTS generator, :func:`stn_jax.data.distortions.similarity_theta`), one factor swept
at a time with the others at rest (angle 0, scale 1, offset 0). For each setting the script reports
the mean of the first transformer's learned rotation, scale and horizontal translation over
``--count`` digits (:func:`decompose_affine`), and for each sweep the least-squares slope of the
response against the cause:

- rotation: learned rotation (degrees) against the digit's angle. A transformer that turns every
  digit upright samples along the rotated digit: slope -1 (our sign convention: the sampling
  grid's rotation is the negative of the placement's); 0 means it ignores the rotation.
- scale: log of the sampled region's linear scale, sqrt|det A|, against the log of the digit's
  scale. 1 means the region grows with the digit (scale normalised); 0 means a fixed zoom.
- translation: the grid's horizontal translation against the digit's offset, both in normalised
  input coordinates (pixels * 2 / width). 1 means the sampled region follows the digit.

Each setting also records the model's ``error_pct`` on those digits (models without a transformer
get only these), so the sweeps show which factor of the distortion costs accuracy.

    python -m experiments.paper.transformer_response experiments/results/runs/table1/rts-st-cnn-affine-s0-adam-tuned-2m \
        --data-dir ../shared/data/mnist --out experiments/results/MACHINE/transformer_response_rts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ANGLES_DEG = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)
SCALES = (0.7, 0.85, 1.0, 1.2)
OFFSETS_PX = (-6.0, -3.0, 0.0, 3.0, 6.0)


def decompose_affine(theta: np.ndarray) -> dict[str, np.ndarray]:
    """Rotation, scale and translation of affine ``theta`` (N, 2, 3) (``affine_grid`` convention).

    Returns ``rotation_deg`` (N,): the angle of the closest rotation to ``A = theta[:, :, :2]``,
    ``atan2(A10 - A01, A00 + A11)`` in degrees; ``scale`` (N,): ``sqrt|det A|``, the linear size of
    the sampled region relative to the whole input (1: the whole frame, 0.5: half its width); and
    ``translation`` (N, 2): ``theta[:, :, 2]``, the sampled region's centre in normalised input
    coordinates (x, y).
    """
    theta = np.asarray(theta, np.float64)
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3); got {theta.shape}")
    a = theta[:, :, :2]
    return {"rotation_deg": np.degrees(np.arctan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1])),
            "scale": np.sqrt(np.abs(np.linalg.det(a))),
            "translation": theta[:, :, 2]}


def place_digits(digits: np.ndarray, *, angle_deg: float, scale: float, offset_px: float,
                 canvas: int) -> np.ndarray:
    """Digits (N, 28, 28, 1) in [0, 1] placed on a ``canvas`` square as the RTS generator places
    them: rotated by ``angle_deg`` degrees, scaled by ``scale``, centred ``offset_px`` pixels right
    of the canvas centre. Returns (N, canvas, canvas, 1) float32."""
    import jax
    import jax.numpy as jnp

    from stn_jax import grids, sampling
    from stn_jax.data.distortions import DIGIT_SIZE, similarity_theta

    theta = similarity_theta(jnp.float32(np.radians(angle_deg)), jnp.float32(scale),
                             jnp.asarray([offset_px, 0.0], jnp.float32), (DIGIT_SIZE, DIGIT_SIZE),
                             (canvas, canvas))
    grid = grids.affine_grid(theta, (canvas, canvas), align_corners=False)
    place = jax.vmap(lambda d: sampling.grid_sample(d, grid, align_corners=False))
    return np.asarray(place(jnp.asarray(digits, jnp.float32)))


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y against x."""
    return float(np.polyfit(np.asarray(x, np.float64), np.asarray(y, np.float64), 1)[0])


def response(thetas_of, digits: np.ndarray, *, canvas: int, classify=None,
             labels: np.ndarray | None = None) -> dict:
    """The three sweeps.

    ``thetas_of(images (N, canvas, canvas, 1)) -> theta (N, 2, 3)``, or None for a model without a
    transformer (no response, no slopes). With ``classify(images) -> predicted classes (N,)`` and the
    digits' ``labels`` (N,), each setting also records the model's ``error_pct`` on those digits, so
    that the sweeps show which factor of the distortion costs accuracy.
    """
    if (classify is None) != (labels is None):
        raise ValueError("classify and labels go together: pass both or neither")
    if thetas_of is None and classify is None:
        raise ValueError("nothing to measure: pass thetas_of, classify (with labels), or both")

    def measure(**placement) -> dict[str, float]:
        images = place_digits(digits, canvas=canvas, **placement)
        row = {}
        if thetas_of is not None:
            parts = decompose_affine(thetas_of(images))
            row.update(rotation_deg=float(parts["rotation_deg"].mean()), scale=float(parts["scale"].mean()),
                       translation_x=float(parts["translation"][:, 0].mean()))
        if classify is not None:
            row["error_pct"] = 100.0 * float(np.mean(np.asarray(classify(images)) != np.asarray(labels)))
        return row

    rest = {"angle_deg": 0.0, "scale": 1.0, "offset_px": 0.0}
    sweeps = {"angle_deg": ANGLES_DEG, "scale": SCALES, "offset_px": OFFSETS_PX}
    report = {}
    for name, values in sweeps.items():
        rows = [{f"digit_{name}": v, **measure(**{**rest, name: v})} for v in values]
        report[f"digit_{name}"] = {"rows": rows}
        if thetas_of is None:
            continue
        if name == "angle_deg":
            fit = slope(list(values), [r["rotation_deg"] for r in rows])
        elif name == "scale":
            fit = slope(np.log(values).tolist(), [float(np.log(r["scale"])) for r in rows])
        else:
            fit = slope([2 * v / canvas for v in values], [r["translation_x"] for r in rows])
        report[f"digit_{name}"]["slope"] = fit
    return report


def _classes_and_thetas(logits, records) -> tuple:
    """Predicted classes (N,) and the first transformer's theta (N, 2, 3), or None without one."""
    return logits.argmax(-1), (records[0]["params"].reshape(-1, 2, 3) if records else None)


def _shared_forward(forward, *, batch: int = 500):
    """``thetas_of`` and ``classify`` callbacks for :func:`response` that share one pass of
    ``forward(images) -> (classes, thetas or None)`` per set of images (run in batches)."""
    last: dict = {}

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if last.get("images") is not images:
            outs = [forward(images[i:i + batch]) for i in range(0, len(images), batch)]
            thetas = None if outs[0][1] is None else np.concatenate([np.asarray(t) for _, t in outs])
            last.update(images=images, result=(np.concatenate([np.asarray(c) for c, _ in outs]), thetas))
        return last["result"]

    return (lambda images: run(images)[1]), (lambda images: run(images)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training workdirs (with checkpoints/): affine ST models, or "
                        "models without a transformer (errors only)")
    parser.add_argument("--data-dir", required=True, help="directory of the four MNIST IDX files")
    parser.add_argument("--count", type=int, default=500, help="test digits per setting")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import jax

    from stn_jax.data import load_mnist
    from stn_jax.data.distortions import get_distortion
    from stn_jax.models import apply_and_inspect
    from stn_jax.train import load_run

    mnist = load_mnist(source="idx", data_dir=args.data_dir)
    digits = np.asarray(mnist.test_images[: args.count], np.float32)[..., None] / 255.0
    labels = np.asarray(mnist.test_labels[: args.count])
    report = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        canvas = get_distortion(run.config.dataset).output_shape[0]
        _, found = apply_and_inspect(run.model, run.variables, np.zeros((1, canvas, canvas, 1), np.float32))
        if found and found[0]["kind"] != "affine":
            raise ValueError(f"{run_dir}: its first spatial transformer must be affine; found {found[0]['kind']!r}")
        forward = jax.jit(lambda x, run=run: _classes_and_thetas(*apply_and_inspect(run.model, run.variables, x)))
        thetas_of, classify = _shared_forward(forward)
        result = response(thetas_of if found else None, digits, canvas=canvas, classify=classify, labels=labels)
        report[Path(run_dir).name] = {"step": run.step, "dataset": run.config.dataset, "model": run.config.model,
                                      "canvas": canvas, "digits": int(digits.shape[0]), **result}
        print(Path(run_dir).name, {k: {"slope": round(v["slope"], 3) if "slope" in v else None,
                                       "error_pct": [round(r["error_pct"], 2) for r in v["rows"]]}
                                   for k, v in result.items()})
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
