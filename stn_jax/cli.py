"""The ``stn-jax`` command line: one subcommand per capability.

Each capability module exposes ``register(subparsers)``, which adds its subcommand(s) and sets
``func`` (a callable taking the parsed arguments and returning an exit code) as a default.
Heavy imports happen inside ``func`` so that ``stn-jax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMAND_MODULES: tuple[str, ...] = (
    # e.g. "stn_jax.train.cli", "stn_jax.data.cli", "stn_jax.canonicalize.cli"
    "stn_jax.canonicalize.cli",
    "stn_jax.train.cli",
    "stn_jax.data.cli",
    "stn_jax.models.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stn-jax",
        description="Spatial Transformer Networks in JAX: train, evaluate, generate data, canonicalise images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
