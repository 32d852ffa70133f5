"""``stn-jax canonicalize``: a trained run's spatial transformer over a whole image collection."""

from __future__ import annotations

import argparse
import json
import sys

_PROG = "stn-jax canonicalize"
"""Prefix of the one-line error messages (the format of :mod:`stn_jax.cli`: exit code 2 for bad input)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``canonicalize`` subcommand."""
    p = subparsers.add_parser(
        "canonicalize",
        help="canonicalise a folder / .npz / Parquet of images with a trained model's transformer",
        description=(
            "Run the spatial transformer (and classifier) of a training run over every image of "
            "SRC and write one Parquet row per image to DST (atomic parts + _manifest.json; "
            "undecodable rows go to DST/_rejects/ with a reason). Images are converted to the "
            "model's channels and letterboxed to its input size (aspect preserved, bilinear, "
            "centred on black). Data-parallel over all local devices."))
    p.add_argument("--workdir", required=True, help="training run directory (stn-jax train --workdir)")
    p.add_argument("--input", required=True, metavar="SRC",
                   help="folder of images, .npz with an images array, or Parquet file/directory")
    p.add_argument("--output", required=True, metavar="DST", help="output directory")
    p.add_argument("--batch-size", type=int, default=256, help="input rows per part (default 256)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in DST from its last committed part")
    p.add_argument("--format", default="auto", choices=("auto", "folder", "npz", "parquet"),
                   help="input format (default: from the path)")
    p.add_argument("--image-column", default="image",
                   help="Parquet column with encoded image bytes (default: image)")
    p.add_argument("--id-column", default=None,
                   help="Parquet column used as source id (default: <file>#<row>)")
    p.add_argument("--npz-key", default="images", help="array name inside the .npz (default: images)")
    p.add_argument("--png-dir", default=None, help="also write each canonicalised image as a PNG here")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--transformer-index", type=int, default=0,
                   help="which spatial transformer to use when the model has several (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("Ray Data engine (pip install 'stn_jax[ray]'; docs/canonicalize.md)")
    ray.add_argument("--engine", default="local", choices=("local", "ray"),
                     help="local: this process, every local device (default); ray: a Ray cluster")
    ray.add_argument("--ray-address", default=None,
                     help="cluster to join: 'auto' (a running cluster), 'ray://HOST:10001'; default: "
                          "RAY_ADDRESS, else a new local cluster")
    ray.add_argument("--num-workers", type=int, default=1, help="actors, each loads the run once (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor (default 0)")
    ray.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per actor (default 1)")
    ray.add_argument("--rows-per-shard", type=int, default=None,
                     help="input rows per shard, the unit of work and of --resume (default 8 x batch size)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    from stn_jax.canonicalize.runner import Canonicalizer, run_canonicalize
    from stn_jax.canonicalize.writer import MANIFEST

    if args.batch_size < 1:
        print(f"{_PROG}: error: --batch-size must be positive", file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(args.output, MANIFEST)) and not args.resume:
        print(f"{_PROG}: error: {args.output!r} already holds a canonicalisation run ({MANIFEST}); pass "
              f"--resume to continue it or choose a new output directory", file=sys.stderr)
        return 2
    if args.engine == "ray":
        return _run_ray(args)
    ray_only = [flag for flag, value, default in (
        ("--ray-address", args.ray_address, None), ("--num-workers", args.num_workers, 1),
        ("--gpus-per-worker", args.gpus_per_worker, 0), ("--cpus-per-worker", args.cpus_per_worker, 1),
        ("--rows-per-shard", args.rows_per_shard, None)) if value != default]
    if ray_only:
        print(f"{_PROG}: error: {', '.join(ray_only)} need(s) --engine ray", file=sys.stderr)
        return 2
    try:
        canon = Canonicalizer.from_workdir(args.workdir, step=args.step,
                                           transformer_index=args.transformer_index)
        if not os.path.exists(args.input):
            raise ValueError(f"input {args.input!r} does not exist")
        summary = run_canonicalize(
            canon, args.input, args.output, batch_size=args.batch_size, resume=args.resume,
            png_dir=args.png_dir, progress=not args.no_progress,
            run_info={"workdir": os.path.abspath(args.workdir), "step": args.step,
                      "transformer_index": args.transformer_index},
            format=args.format, image_column=args.image_column, id_column=args.id_column,
            npz_key=args.npz_key)
    except (FileExistsError, ValueError) as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


def _run_ray(args: argparse.Namespace) -> int:
    try:
        from stn_jax.canonicalize.ray_engine import run_canonicalize_ray
    except ImportError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run_canonicalize_ray(
            args.workdir, args.input, args.output, step=args.step,
            transformer_index=args.transformer_index, batch_size=args.batch_size,
            rows_per_shard=args.rows_per_shard, resume=args.resume, png_dir=args.png_dir,
            progress=not args.no_progress, num_workers=args.num_workers,
            gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
            ray_address=args.ray_address, format=args.format, image_column=args.image_column,
            id_column=args.id_column, npz_key=args.npz_key)
    except (FileExistsError, ValueError) as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0
