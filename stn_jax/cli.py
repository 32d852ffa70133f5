"""The ``stn-jax`` command line: one subcommand per capability.

Each capability module exposes ``register(subparsers)``, which adds its subcommand(s) and sets
``func`` (a callable taking the parsed arguments and returning an exit code) as a default.
Heavy imports happen inside ``func`` so that ``stn-jax --help`` stays fast.

Every expected failure is one line on stderr, ``stn-jax COMMAND: error: MESSAGE``, and a
documented exit code (no traceback; set ``STN_JAX_TRACEBACK=1`` to see one):

====  ==================================================================================
code  meaning
====  ==================================================================================
0     success
1     the command could not finish for a reason outside its arguments: a download that
      no mirror served, permission denied, a full disk, a missing optional package
2     the command line or its inputs are wrong: a usage error, an invalid value, a path
      that does not exist, a missing, corrupt or unexpected input file, no MNIST source
3     ``train``: the loss diverged
4     an unreadable or missing checkpoint (``train --resume``, ``evaluate``, ``canonicalize``)
130   interrupted (Ctrl-C or SIGTERM)
====  ==================================================================================
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

_SUBCOMMAND_MODULES: tuple[str, ...] = (
    # e.g. "stn_jax.train.cli", "stn_jax.data.cli", "stn_jax.canonicalize.cli"
    "stn_jax.canonicalize.cli",
    "stn_jax.train.cli",
    "stn_jax.data.cli",
    "stn_jax.models.cli",
)

EXIT_FAILURE, EXIT_USAGE, EXIT_DIVERGED, EXIT_CHECKPOINT, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
"""The documented exit codes (see the module docstring)."""
ENV_TRACEBACK = "STN_JAX_TRACEBACK"
"""Set (non-empty) to let an expected failure raise with its traceback instead of one line."""

# Expected failures raised by the subcommands' libraries, by (module, class name), with their exit
# codes; looked up in sys.modules, so that classifying an error imports nothing.
_LIBRARY_ERRORS: tuple[tuple[str, str, int], ...] = (
    ("stn_jax.data.download", "DownloadError", EXIT_FAILURE),
    ("stn_jax.train.loop", "TrainingDiverged", EXIT_DIVERGED),
    ("stn_jax.train.checkpoint", "CheckpointError", EXIT_CHECKPOINT),
)
# "The inputs are wrong" (exit 2); any other OSError means that the system refused (exit 1).
_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, NotADirectoryError,
                                                   IsADirectoryError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stn-jax",
        description="Spatial Transformer Networks in JAX: train, evaluate, generate data, canonicalise images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _exit_code(err: BaseException) -> int | None:
    """The documented exit code of an expected failure, None for anything else (a bug)."""
    for module, name, code in _LIBRARY_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return code
    if isinstance(err, _INPUT_ERRORS):
        return EXIT_USAGE
    if isinstance(err, (OSError, ImportError)):
        return EXIT_FAILURE
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``stn-jax`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    prog = f"stn-jax {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        code = _exit_code(err)
        if code is None or os.environ.get(ENV_TRACEBACK):
            raise
        print(f"{prog}: error: {_one_line(err) or type(err).__name__}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
