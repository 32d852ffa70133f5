"""``stn-jax models``: print the zoo's architectures and parameter counts."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    p = subparsers.add_parser("models", help="print model summaries (parameter counts) of the zoo")
    p.add_argument("--name", action="append", default=None,
                   help="model name (repeatable); default: all that fit the dataset")
    p.add_argument("--dataset", default="r", help="dataset the models are sized for (default r)")
    p.add_argument("--transform", default="affine", help="transform kind of ST models")
    p.add_argument("--brief", action="store_true", help="one line per model, no layer list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print :func:`stn_jax.models.summary` for the selected models; returns 0."""
    from stn_jax import models
    names = args.name or [n for n in models.MODEL_NAMES
                          if n != "2st-fcn" or args.dataset == "addition"]
    for name in names:
        text = models.summary(name, args.dataset, args.transform)
        print(text.splitlines()[0] if args.brief else text)
    return 0
