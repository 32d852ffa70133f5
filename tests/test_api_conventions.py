"""Conventions of the public functional API, checked for every public function.

In the style of dm-pix's ``api_test.py``: every option (a parameter with a default) is
keyword-only; arguments have one spelling across the package and one order (image first, then
the geometry, then sizes; options ``mode``, ``padding_mode``, ``align_corners`` in that order);
a shared option has the same default everywhere; every public module lists its API in
``__all__``. Each checker is also run on signatures that break its rule, so that it can fail.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest

import stn_jax
from stn_jax import grids, nnx, sampling, separable, transforms, warping

PUBLIC_MODULES = (stn_jax, sampling, grids, warping, separable, transforms)

# Spellings that have a canonical name in this package.
CANONICAL = {
    "out_size": "size", "output_size": "size", "out_shape": "size", "shape": "size",
    "img": "image", "images": "image", "input": "image",
    "interpolation": "mode", "interp": "mode", "method": "mode",
    "padding": "padding_mode", "pad_mode": "padding_mode", "border_mode": "padding_mode",
    "align_corner": "align_corners", "aligned_corners": "align_corners", "corners": "align_corners",
    "thetas": "theta", "affine": "theta", "rng": "key",
}

# Relative order of the arguments a function takes (missing ones are skipped).
ORDER = {"image": 0,
         "grid": 1, "theta": 1, "homography": 1, "displacements": 1, "matrix": 1, "coords": 1,
         "params": 1, "scale": 1, "translation": 1,
         "in_size": 2, "size": 3,
         "mode": 4, "padding_mode": 5, "align_corners": 6}


def public_functions() -> Iterator[tuple[str, Callable]]:
    """(qualified name, function) for every function and public method in the public ``__all__``s."""
    seen = set()
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            candidates = []
            if inspect.isfunction(obj):
                candidates.append(obj)
            elif inspect.isclass(obj):
                candidates += [m for n, m in vars(obj).items()
                               if inspect.isfunction(m) and not n.startswith("_")]
            for fn in candidates:
                if id(fn) not in seen:
                    seen.add(id(fn))
                    yield f"{fn.__module__}.{fn.__qualname__}", fn


FUNCTIONS = dict(public_functions())


def _parameters(fn: Callable) -> list[inspect.Parameter]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return params


def positional_options(fn: Callable) -> list[str]:
    return [p.name for p in _parameters(fn)
            if p.default is not inspect.Parameter.empty and p.kind is not p.KEYWORD_ONLY]


def non_canonical_names(fn: Callable) -> list[str]:
    return [f"{p.name} (use {CANONICAL[p.name]})" for p in _parameters(fn) if p.name in CANONICAL]


def order_violations(fn: Callable) -> list[str]:
    names = [p.name for p in _parameters(fn)]
    problems = []
    if "image" in names and names.index("image") != 0:
        problems.append("image is not the first argument")
    ranked = [(ORDER[n], n) for n in names if n in ORDER]
    problems += [f"{b} before {a}" for (ra, a), (rb, b) in zip(ranked, ranked[1:], strict=False) if rb < ra]
    return problems


def test_the_walk_sees_the_api():
    for name in ("stn_jax.sampling.grid_sample", "stn_jax.warping.warp",
                 "stn_jax.separable.axis_aligned_warp", "stn_jax.transforms.pixel_affine_to_theta",
                 "stn_jax.transforms.rotation_params", "stn_jax.transforms.Transform.grid",
                 "stn_jax._src.dispatch.sampler_implementation"):
        assert name in FUNCTIONS
    assert len(FUNCTIONS) >= 30


def test_the_checkers_flag_the_old_signatures():
    def warp(image, theta, size=None, *, mode="bilinear", padding_mode="zeros", align_corners=False):
        pass

    def rotation_params(angle, scale=1.0, tx=0.0, ty=0.0):
        pass

    def pixel_affine_to_theta(matrix, in_size, out_size=None, *, align_corners=False):
        pass

    def shuffled(grid, image, *, align_corners=False, mode="bilinear"):
        pass

    assert positional_options(warp) == ["size"]
    assert positional_options(rotation_params) == ["scale", "tx", "ty"]
    assert positional_options(pixel_affine_to_theta) == ["out_size"]
    assert non_canonical_names(pixel_affine_to_theta) == ["out_size (use size)"]
    assert order_violations(shuffled) == ["image is not the first argument", "image before grid",
                                          "mode before align_corners"]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_options_are_keyword_only(name):
    assert positional_options(FUNCTIONS[name]) == [], (
        "options (arguments with a default) must be keyword-only: prefer f(x, *, opt=1)")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_argument_names_are_canonical(name):
    assert non_canonical_names(FUNCTIONS[name]) == []


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_argument_order(name):
    assert order_violations(FUNCTIONS[name]) == []


@pytest.mark.parametrize("option", ["mode", "padding_mode", "align_corners", "size"])
def test_a_shared_option_has_one_default(option):
    defaults = {}
    for name, fn in FUNCTIONS.items():
        for p in _parameters(fn):
            if p.name == option and p.default is not inspect.Parameter.empty:
                defaults.setdefault(repr(p.default), []).append(name)
    assert len(defaults) == 1, f"{option} has different defaults: {defaults}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_lists_the_public_api(module):
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    assert sorted(module.__all__) == sorted(n for n in module.__all__ if hasattr(module, n))
    defined_here = {name for name, obj in vars(module).items()
                    if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                    and getattr(obj, "__module__", None) == module.__name__}
    assert defined_here <= set(module.__all__), f"missing from __all__: {defined_here - set(module.__all__)}"


def test_top_level_exports_the_override():
    assert stn_jax.sampler_implementation is sampling.sampler_implementation
    assert stn_jax.current_sampler_implementation is sampling.current_sampler_implementation
    assert {"sampler_implementation", "current_sampler_implementation", "grid_sample",
            "warp"} <= set(stn_jax.__all__)


NNX_CONSTRUCTORS = {name: getattr(nnx, name).__init__ for name in nnx.__all__
                    if inspect.isclass(getattr(nnx, name)) and "__init__" in vars(getattr(nnx, name))}


def test_the_walk_sees_the_nnx_modules():
    assert {"LocalizationMLP", "LocalizationCNN", "SpatialTransformer",
            "ParallelSpatialTransformers", "SeriesSpatialTransformers"} <= set(NNX_CONSTRUCTORS)


@pytest.mark.parametrize("name", sorted(NNX_CONSTRUCTORS))
def test_nnx_module_options_are_keyword_only(name):
    """NNX modules take their shape positionally and every option by keyword, like Linen's fields."""
    assert positional_options(NNX_CONSTRUCTORS[name]) == []
