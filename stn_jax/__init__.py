"""stn_jax: Spatial Transformer Networks for JAX and Flax.

The functional core (PyTorch ``grid_sample``/``affine_grid`` conventions, channels-last):

>>> import jax.numpy as jnp, stn_jax
>>> theta = jnp.array([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])   # zoom in 2x
>>> out = stn_jax.warp(jnp.ones((1, 28, 28, 1)), theta)
"""

from stn_jax.grids import affine_grid
from stn_jax.grids import identity_grid
from stn_jax.grids import normalized_to_pixel
from stn_jax.grids import pixel_to_normalized
from stn_jax.grids import projective_grid
from stn_jax.grids import tps_control_points
from stn_jax.grids import tps_grid
from stn_jax.sampling import current_sampler_implementation
from stn_jax.sampling import grid_sample
from stn_jax.sampling import sampler_implementation
from stn_jax.separable import axis_aligned_warp
from stn_jax.transforms import TRANSFORM_KINDS
from stn_jax.transforms import Transform
from stn_jax.transforms import compose_affine
from stn_jax.transforms import get_transform
from stn_jax.transforms import invert_affine
from stn_jax.transforms import pixel_affine_to_theta
from stn_jax.transforms import rotation_params
from stn_jax.warping import warp

__version__ = "0.1.0"

__all__ = [
    "TRANSFORM_KINDS",
    "Transform",
    "affine_grid",
    "axis_aligned_warp",
    "compose_affine",
    "current_sampler_implementation",
    "get_transform",
    "grid_sample",
    "identity_grid",
    "invert_affine",
    "normalized_to_pixel",
    "pixel_affine_to_theta",
    "pixel_to_normalized",
    "projective_grid",
    "rotation_params",
    "sampler_implementation",
    "tps_control_points",
    "tps_grid",
    "warp",
]
