"""The paper's distorted-MNIST generators, as pure jittable per-example functions.

Every distortion is a frozen (hashable) dataclass whose fields are its parameters (defaults:
the paper's appendix, see the design guide) and whose ``__call__(key, digits)`` maps

- ``key``: a PRNG key (one per example), and
- ``digits``: float32 (m, 28, 28, 1) in [0, 1], the ``m = num_digits`` source digits of the
  example (the first is *the* digit; TC uses the others for clutter, addition as the 2nd digit),

to one float32 image of ``output_shape`` (H, W, C) in [0, 1]. ``label(labels (m,))`` gives the
example's class. Use ``jax.vmap`` over (keys, digits) for a batch; the same key always gives
the same image. Warps use the project's own grids and :func:`stn_jax.grid_sample` (bilinear,
zero padding, ``align_corners=False``).

Geometry convention: a *similarity placement* puts the digit, rotated by ``angle`` and scaled by
``scale`` about its centre, with its centre at offset ``t`` pixels from the canvas centre.
In pixel units measured from the image centres, an output point ``q`` samples the source at
``R(angle) (q - t) / scale``.

Keep-inside rule (RTS, addition, TC): the digit's *content box* — the central ``content_size``
x ``content_size`` square of the 28x28 frame (20 for MNIST, whose digits are normalised into a
20x20 box) — stays inside the canvas: after rotation and scaling its half-extent per axis is
``h = scale * content_size / 2 * (|cos| + |sin|)``, and each component of ``t`` is drawn
uniformly from ``[-(H/2 - h), H/2 - h]`` (0 when ``h >= H/2``). TC does not rotate or scale and
keeps the whole 28x28 frame inside, with integer pixel offsets (placed exactly by
:func:`paste`, not resampled).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp

from stn_jax import grids
from stn_jax.sampling import grid_sample

DIGIT_SIZE = 28


def similarity_theta(angle: jax.Array, scale: jax.Array, offset: jax.Array,
                     in_size: tuple[int, int], out_size: tuple[int, int]) -> jax.Array:
    """(2, 3) ``theta`` (for ``affine_grid`` with ``align_corners=False``) of a similarity placement.

    Args:
      angle: rotation in radians (scalar).
      scale: magnification of the digit (scalar; > 1 makes it larger).
      offset: (2,) ``(tx, ty)`` in output pixels: where the source centre lands, from the canvas centre.
      in_size, out_size: ``(H, W)`` of the source and the output.
    """
    c, s = jnp.cos(angle), jnp.sin(angle)
    rot = jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])]) / scale
    to_norm_in = jnp.asarray([2.0 / in_size[1], 2.0 / in_size[0]], jnp.float32)
    from_norm_out = jnp.asarray([out_size[1] / 2.0, out_size[0] / 2.0], jnp.float32)
    a = to_norm_in[:, None] * rot * from_norm_out[None, :]
    b = -to_norm_in * (rot @ offset)
    return jnp.concatenate([a, b[:, None]], axis=1)


def _warp(image: jax.Array, grid: jax.Array) -> jax.Array:
    """Sample one (H, W, C) image on one (Ho, Wo, 2) grid; clip rounding to [0, 1]."""
    return jnp.clip(grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
                    0.0, 1.0)


def _place(image: jax.Array, theta: jax.Array, out_size: tuple[int, int]) -> jax.Array:
    return _warp(image, grids.affine_grid(theta, out_size, align_corners=False))


def _uniform(key: jax.Array, low: float, high: float, shape: tuple[int, ...] = ()) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, low, high)


def _check_digits(digits: jax.Array, m: int, name: str) -> None:
    if digits.shape != (m, DIGIT_SIZE, DIGIT_SIZE, 1):
        raise ValueError(f"{name} expects digits of shape ({m}, 28, 28, 1) per example; got {digits.shape}")


class _OneDigitLabel:
    """Defaults shared by the distortions whose label is their first source digit's: one digit,
    10 classes, a 28x28x1 output (subclasses with a canvas override ``output_shape``)."""

    num_digits = 1
    num_classes = 10

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (DIGIT_SIZE, DIGIT_SIZE, 1)

    def label(self, labels: jax.Array) -> jax.Array:
        return labels[0]


@dataclasses.dataclass(frozen=True)
class Rotation(_OneDigitLabel):
    """R: rotation uniform in ``[-max_angle, max_angle]`` degrees about the centre, 28x28 out."""

    max_angle: float = 90.0
    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "Rotation")
        angle = _uniform(key, -1.0, 1.0) * math.radians(self.max_angle)
        theta = similarity_theta(angle, jnp.float32(1.0), jnp.zeros(2), (28, 28), (28, 28))
        return _place(digits[0], theta, (28, 28))


@dataclasses.dataclass(frozen=True)
class RotateTranslateScale(_OneDigitLabel):
    """RTS: rotation in ``+-max_angle`` degrees, scale in ``scale_range``, random placement in a
    ``canvas`` x ``canvas`` image keeping the content box inside (module docstring).
    ``translate=False`` centres the digit."""

    max_angle: float = 45.0
    scale_range: tuple[float, float] = (0.7, 1.2)
    canvas: int = 42
    content_size: float = 20.0
    translate: bool = True

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.canvas, self.canvas, 1)

    def place(self, key: jax.Array, digit: jax.Array) -> jax.Array:
        """One (28, 28, 1) digit -> (canvas, canvas, 1)."""
        k_angle, k_scale, k_pos = jax.random.split(key, 3)
        angle = _uniform(k_angle, -1.0, 1.0) * math.radians(self.max_angle)
        scale = _uniform(k_scale, *self.scale_range)
        half = scale * self.content_size / 2 * (jnp.abs(jnp.cos(angle)) + jnp.abs(jnp.sin(angle)))
        room = jnp.maximum(self.canvas / 2 - half, 0.0) * float(self.translate)
        offset = _uniform(k_pos, -1.0, 1.0, (2,)) * room
        theta = similarity_theta(angle, scale, offset, (28, 28), (self.canvas, self.canvas))
        return _place(digit, theta, (self.canvas, self.canvas))

    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "RotateTranslateScale")
        return self.place(key, digits[0])


@dataclasses.dataclass(frozen=True)
class Projective(_OneDigitLabel):
    """P: shrink by a scale in ``scale_range`` about the centre, then move each image corner by
    isotropic Gaussian noise of ``sigma`` pixels; the homography maps the moved corners back to
    the source corners. 28x28 out.

    With sigma = 5 px about 1.5% of the draws make a non-convex quadrilateral, which no
    homography of the square can produce (part of the image folds over the horizon), and a few
    more are nearly degenerate (the digit collapses to a sliver). A draw is accepted when every
    corner's edge cross product is at least ``min_corner_ratio`` times the undistorted square's
    (about 5.5% rejected at 0.2); rejected draws are redrawn up to ``tries`` times, then the
    noise is dropped."""

    scale_range: tuple[float, float] = (0.75, 1.0)
    sigma: float = 5.0
    min_corner_ratio: float = 0.2
    tries: int = 8
    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "Projective")
        k_scale, k_noise = jax.random.split(key)
        src = jnp.asarray([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], jnp.float32)
        scale = _uniform(k_scale, *self.scale_range)
        noise = jax.random.normal(k_noise, (self.tries, 4, 2), jnp.float32) * (self.sigma * 2 / DIGIT_SIZE)
        quads = src * scale + noise
        ok = jax.vmap(functools.partial(is_convex, min_cross=self.min_corner_ratio * 4 * scale**2))(quads)
        # Rejection sampling: the first convex draw; the undistorted scaled square if none is.
        dst = jnp.where(ok.any(), quads[jnp.argmax(ok)], src * scale)
        homography = homography_from_points(dst, src)
        return _warp(digits[0], grids.projective_grid(homography, (28, 28), align_corners=False))


def is_convex(quad: jax.Array, *, min_cross: float | jax.Array = 0.0) -> jax.Array:
    """Whether the (4, 2) polygon (corners in order) is strictly convex (no fold, no crossing),
    with every corner's edge cross product at least ``min_cross`` in magnitude."""
    edges = jnp.roll(quad, -1, axis=0) - quad
    nxt = jnp.roll(edges, -1, axis=0)
    cross = edges[:, 0] * nxt[:, 1] - edges[:, 1] * nxt[:, 0]
    return jnp.all(cross > min_cross) | jnp.all(cross < -min_cross)


def homography_from_points(src: jax.Array, dst: jax.Array) -> jax.Array:
    """(3, 3) homography ``H`` (``h33 = 1``) with ``H [src_k, 1] ~ [dst_k, 1]`` for 4 point pairs (4, 2)."""
    x, y = src[:, 0], src[:, 1]
    u, v = dst[:, 0], dst[:, 1]
    zero, one = jnp.zeros_like(x), jnp.ones_like(x)
    rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=1)
    rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=1)
    a = jnp.concatenate([rows_u, rows_v])
    h = jnp.linalg.solve(a, jnp.concatenate([u, v]))
    return jnp.concatenate([h, jnp.ones((1,), h.dtype)]).reshape(3, 3)


@dataclasses.dataclass(frozen=True)
class Elastic(_OneDigitLabel):
    """E: thin-plate-spline warp whose ``control_grid`` lattice of control points (4x4 = 16) is
    moved by isotropic Gaussian noise of ``sigma`` pixels. 28x28 out."""

    sigma: float = 1.5
    control_grid: tuple[int, int] = (4, 4)
    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "Elastic")
        k = self.control_grid[0] * self.control_grid[1]
        disp = jax.random.normal(key, (k, 2), jnp.float32) * (self.sigma * 2 / DIGIT_SIZE)
        grid = grids.tps_grid(disp, (28, 28), control_grid=self.control_grid, align_corners=False)
        return _warp(digits[0], grid)


@dataclasses.dataclass(frozen=True)
class TranslatedCluttered(_OneDigitLabel):
    """TC: the digit at a random integer position in a ``canvas`` x ``canvas`` image (the whole
    28x28 frame inside), plus ``num_clutter`` ``clutter_size`` x ``clutter_size`` crops of the
    other digits of the example at random places, composited by maximum.

    Each crop's top-left corner in its 28x28 source is drawn from ``[crop_margin,
    28 - crop_margin - clutter_size]`` (the default 4 keeps crops within the 20x20 content box,
    where the ink is); its place in the canvas is uniform over all in-canvas positions.
    ``translate=False`` centres the digit."""

    canvas: int = 60
    num_clutter: int = 6
    clutter_size: int = 6
    crop_margin: int = 4
    translate: bool = True

    @property
    def num_digits(self) -> int:
        return 1 + self.num_clutter

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.canvas, self.canvas, 1)

    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "TranslatedCluttered")
        if self.canvas < DIGIT_SIZE or (self.canvas - DIGIT_SIZE) % 2:
            raise ValueError(f"TC canvas must be >= 28 and even (integer placement); got {self.canvas}")
        c = self.clutter_size
        hi = DIGIT_SIZE - self.crop_margin - c
        if self.num_clutter and hi < self.crop_margin:
            raise ValueError(f"clutter_size {c} with crop_margin {self.crop_margin} does not fit in 28x28")
        k_pos, k_crop, k_place = jax.random.split(key, 3)
        room = (self.canvas - DIGIT_SIZE) // 2 * int(self.translate)
        top_left = (self.canvas - DIGIT_SIZE) // 2 + jax.random.randint(k_pos, (2,), -room, room + 1)
        out = paste(digits[0, ..., 0], top_left, self.canvas)
        if self.num_clutter:
            crops = jax.random.randint(k_crop, (self.num_clutter, 2), self.crop_margin, hi + 1)
            places = jax.random.randint(k_place, (self.num_clutter, 2), 0, self.canvas - c + 1)
            patches = jax.vmap(lambda d, rc: jax.lax.dynamic_slice(d[..., 0], (rc[0], rc[1]), (c, c)))(
                digits[1:], crops)
            layers = jax.vmap(functools.partial(paste, canvas=self.canvas, method="matmul"))(patches, places)
            out = jnp.maximum(out, layers.max(axis=0))
        return out[..., None]


def paste(patch: jax.Array, top_left: jax.Array, canvas: int, *, method: str = "window") -> jax.Array:
    """Place a (h, w) ``patch`` with its top-left pixel at integer ``top_left`` (row, col) in a
    zero ``canvas`` x ``canvas`` image (parts outside are cut off). Exact: no resampling.

    Two formulations, both much faster under ``vmap`` on CPU than the scatter that a batched
    ``dynamic_update_slice`` becomes:

    - ``"window"``: read a ``canvas``-sized window (``dynamic_slice``) of the zero-padded patch,
      a gather of contiguous rows; best for large patches (the digit).
    - ``"matmul"``: two one-hot selection matmuls ``Ey @ patch @ Ex^T``; best for small patches
      (clutter), whose padded copy would dwarf them.
    """
    h, w = patch.shape
    if method == "window":
        padded = jnp.pad(patch, ((canvas, canvas), (canvas, canvas)))
        top_left = jnp.clip(top_left, -h, canvas)
        return jax.lax.dynamic_slice(padded, (canvas - top_left[0], canvas - top_left[1]), (canvas, canvas))
    if method == "matmul":
        rows = jnp.arange(canvas)[:, None] - top_left[0] == jnp.arange(h)[None, :]
        cols = jnp.arange(canvas)[:, None] - top_left[1] == jnp.arange(w)[None, :]
        hi = jax.lax.Precision.HIGHEST
        return jnp.matmul(rows.astype(patch.dtype),
                          jnp.matmul(patch, cols.astype(patch.dtype).T, precision=hi), precision=hi)
    raise ValueError(f"method must be 'window' or 'matmul'; got {method!r}")


@dataclasses.dataclass(frozen=True)
class Addition(RotateTranslateScale):
    """Addition: two digits, each independently RTS-placed into its own ``canvas`` x ``canvas``
    channel (same parameters as :class:`RotateTranslateScale`); label = sum (19 classes)."""

    num_digits = 2
    num_classes = 19

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.canvas, self.canvas, 2)

    def label(self, labels: jax.Array) -> jax.Array:
        return labels[0] + labels[1]

    def __call__(self, key: jax.Array, digits: jax.Array) -> jax.Array:
        _check_digits(digits, self.num_digits, "Addition")
        k0, k1 = jax.random.split(key)
        return jnp.concatenate([self.place(k0, digits[0]), self.place(k1, digits[1])], axis=-1)


Distortion = Rotation | RotateTranslateScale | Projective | Elastic | TranslatedCluttered | Addition

DISTORTIONS: dict[str, type] = {
    "r": Rotation, "rts": RotateTranslateScale, "p": Projective, "e": Elastic,
    "tc": TranslatedCluttered, "addition": Addition,
}
"""Dataset name -> distortion class (construct with keyword overrides of its fields)."""


def get_distortion(name: str, **overrides) -> Distortion:
    """The distortion of dataset ``name`` with the paper's defaults, fields overridden by keyword.

    Raises:
      ValueError: unknown name or field (the message lists the valid ones).
    """
    if name not in DISTORTIONS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {tuple(DISTORTIONS)}")
    cls = DISTORTIONS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for dataset {name!r}; valid: {sorted(fields)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return cls(**overrides)


def parse_overrides(name: str, text: str) -> dict[str, float | int | bool | tuple]:
    """Distortion parameters of dataset `name` from text such as ``"sigma=3"`` or
    ``"scale_range=0.8:1.2,max_angle=30"``: comma-separated ``key=value`` pairs, each key a field of
    the dataset's distortion class, each value converted to that field's type (a number, ``true`` /
    ``false``, or a pair written ``lo:hi`` or ``[lo,hi]``). Empty text gives ``{}`` (the paper's
    parameters). ``stn-jax train --distortion`` and ``stn-jax data --option`` read their text with it.

    Raises:
      ValueError: unknown dataset or key, a pair without ``=``, or a value that is not of the
        field's type, negative or not finite, or a range with lo > hi (the message names the key
        and what was expected).
    """
    if name not in DISTORTIONS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {tuple(DISTORTIONS)}")
    defaults = {f.name: f.default for f in dataclasses.fields(DISTORTIONS[name])}
    out: dict[str, float | int | bool | tuple] = {}
    text = text.strip(" ,")
    for item in (part.strip() for part in re.split(r",(?=\s*[A-Za-z_][\w-]*\s*=)", text) if text):
        key, sep, value = (part.strip() for part in item.partition("="))
        key = key.replace("-", "_")
        if not sep:
            raise ValueError(f"distortion option {item!r} must be key=value, e.g. sigma=3")
        if key not in defaults:
            raise ValueError(f"unknown distortion option {key!r} for dataset {name!r}; valid: {sorted(defaults)}")
        out[key] = _convert_override(key, value, defaults[key])
    return out


def _convert_override(key: str, text: str, default: Any) -> float | int | bool | tuple:
    """`text` as a value of the type of `default` (see :func:`parse_overrides`)."""
    if isinstance(default, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"distortion option {key}={text!r}: expected true or false")
    if isinstance(default, tuple):
        parts = re.split(r"[:,]", text.strip("[]() "))
        expected = f"a range lo:hi of {type(default[0]).__name__}s, e.g. " + ":".join(str(d) for d in default)
        if len(parts) != len(default):
            raise ValueError(f"distortion option {key}={text!r}: expected {expected}")
        values = tuple(_number(key, part, type(d), expected) for part, d in zip(parts, default, strict=True))
        if values[0] > values[-1]:
            raise ValueError(f"distortion option {key}={text!r}: expected lo <= hi")
        return values
    return _number(key, text, type(default), f"a non-negative {type(default).__name__}, e.g. {default}")


def _number(key: str, text: str, kind: type, expected: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"distortion option {key}={text!r}: expected {expected}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"distortion option {key}={text!r}: expected {expected}")
    return value


def distort_batch(distortion: Distortion, key: jax.Array, digits: jax.Array) -> jax.Array:
    """Convenience: (B, m, 28, 28, 1) float digits -> (B, H, W, C), one key split per example."""
    keys = jax.random.split(key, digits.shape[0])
    return jax.vmap(distortion)(keys, digits)

