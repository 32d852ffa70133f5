"""Reproduce the paper's tables with the `stn-jax train` engine.

Each run is one `stn-jax train` subprocess, started in the repository root, writing its own
WORKDIR under ``experiments/results/runs/<table>/<dataset>-<model>[-<transform>]-s<seed>[-<variant>]``
(results.json, config.json, metrics.jsonl, figures; checkpoints are not committed). The workdir
and ``--data-dir`` are passed relative to the repository root, so the committed files hold no
machine paths. A run whose results.json exists is skipped, so the script can be re-run after an
interruption; ``--resume`` is passed so an interrupted run continues from its last checkpoint.
``--jobs N`` runs N at a time; ``--deadline-s S`` stops them all (checkpointed) after S seconds.

A *variant* is a training recipe: ``recipes/<variant>.toml`` next to this file, whose
``[train]`` table holds `stn-jax train` options (the same keys as its flags; such a file also
works as ``stn-jax train --config``). Its options become flags of every run of that variant.

Examples::

    # the reduced-budget CPU plan committed in RESULTS.md
    R="python -m experiments.paper.reproduce --steps 2000 --batch-size 64 --variants adam"
    $R --tables rts tc --headline-seeds 1 2          # headline cells with 3 seeds
    $R --tables r p e addition                       # the rest of Table 1, addition
    $R --tables tc --extra-cells                     # attention transformers on TC
    python -m experiments.paper.reproduce --steps 2000 --batch-size 64 --tables rts tc \
        --variants adam-border adam-nopen adam-fullres --only ...   # ablations (see RESULTS.md)
    python -m experiments.paper.reproduce --steps 20000 --batch-size 64 --tables addition \
        --variants adam --tag 20k                    # a longer budget beside the 2k runs
    # the headline at 512k images with the recipe chosen on validation (recipe_search.py)
    python -m experiments.paper.reproduce --tables rts --variants adam-tuned --steps 4000 \
        --batch-size 128 --tag 512k --headline-seeds 1 2 --only ... -- --eval-every 250
    # full paper budget on an accelerator: several runs at a time keep it busy; stop (with a
    # checkpoint each) after 3 hours, and the same command continues the stopped runs later
    python -m experiments.paper.reproduce --tables table1 tc addition --steps 150000 --batch-size 256 \
        --jobs 6 --deadline-s 10800
    # then build RESULTS.md
    python -m experiments.paper.summarize
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from experiments.paper import paper

ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = ROOT / "experiments" / "results" / "runs"
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe read from ``recipes/<name>.toml``."""

    name: str
    description: str
    options: dict  # `stn-jax train` options, in file order (keys as the flags, without "--")

    @property
    def flags(self) -> list[str]:
        """The options as `stn-jax train` flags, e.g. ``["--optimizer", "adam", "--lr", "0.001"]``."""
        out: list[str] = []
        for key, value in self.options.items():
            if isinstance(value, bool):
                out.append(f"--{key}" if value else f"--no-{key}")
            else:
                out += [f"--{key}", str(value)]
        return out


def load_recipes(directory: Path = RECIPES_DIR) -> dict[str, Recipe]:
    """Every ``*.toml`` recipe in `directory` by name (the file stem), the paper's first."""
    recipes = {}
    for path in sorted(directory.glob("*.toml"), key=lambda p: (p.stem != "paper", p.stem)):
        data = tomllib.loads(path.read_text())
        recipes[path.stem] = Recipe(path.stem, data["description"], dict(data.get("train", {})))
    return recipes


RECIPES = load_recipes()
VARIANTS = {name: recipe.flags for name, recipe in RECIPES.items()}  # variant -> `stn-jax train` flags


# Cells beyond the paper's tables, added with --extra-cells: the attention transformer
# (isotropic scale + translation, 3 parameters) is the natural model of TC's distortion (a
# translated digit in clutter); it runs on the matrix-product sampler (stn_jax.separable).
EXTRA_CELLS = {"tc": (("st-fcn", "attention"), ("st-cnn", "attention"))}


@dataclasses.dataclass(frozen=True)
class Run:
    table: str
    dataset: str
    model: str
    transform: str | None
    seed: int
    variant: str = "paper"
    tag: str = ""

    @property
    def name(self) -> str:
        parts = [self.dataset, self.model] + ([self.transform] if self.transform else [])
        parts.append(f"s{self.seed}")
        if self.variant != "paper":
            parts.append(self.variant)
        if self.tag:
            parts.append(self.tag)
        return "-".join(parts)

    @property
    def workdir(self) -> Path:
        return RUNS_DIR / self.table / self.name

    @property
    def relative_workdir(self) -> str:
        """The workdir relative to the repository root (what the run records)."""
        return Path(os.path.relpath(self.workdir, ROOT)).as_posix()


def plan(tables: list[str], seeds: list[int], variants: list[str],
         headline_seeds: list[int], extra_cells: bool = False, tag: str = "") -> list[Run]:
    """All runs for the requested tables; `headline_seeds` add seeds for CNN vs ST-CNN cells;
    `extra_cells` adds :data:`EXTRA_CELLS`."""
    runs: list[Run] = []
    for table in tables:
        if table in ("table1", "r", "rts", "p", "e"):
            datasets = paper.TABLE1_DATASETS if table == "table1" else (table,)
            cells = [(ds, m, t) for ds in datasets for m, t in paper.TABLE1_CELLS]
            name = "table1"
        elif table == "tc":
            cells = [("tc", m, t) for m, t in paper.TC]
            name = "tc"
        elif table == "addition":
            cells = [("addition", m, t) for m, t in paper.ADDITION]
            name = "addition"
        else:
            raise SystemExit(f"unknown table {table!r}; expected table1, r, rts, p, e, tc, addition")
        if extra_cells:
            cells += [(ds, m, t) for ds in dict.fromkeys(c[0] for c in cells) for m, t in EXTRA_CELLS.get(ds, ())]
        for ds, model, transform in cells:
            cell_seeds = list(seeds)
            if model in ("cnn", "st-cnn") and transform in (None, "affine") and ds in ("rts", "tc"):
                cell_seeds += [s for s in headline_seeds if s not in cell_seeds]
            for variant in variants:
                for seed in cell_seeds:
                    runs.append(Run(name, ds, model, transform, seed, variant, tag))
    return runs


def command(run: Run, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "stn_jax.cli", "train",
           "--dataset", run.dataset, "--model", run.model,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--decay-steps", str(max(1, args.steps // 3)),
           "--seed", str(run.seed), "--workdir", run.relative_workdir, "--resume", "--no-progress"]
    if run.transform:
        cmd += ["--transform", run.transform]
    if args.data_dir:
        cmd += ["--data-dir", os.path.relpath(os.path.abspath(args.data_dir), ROOT)]
    cmd += VARIANTS[run.variant]
    cmd += args.extra
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["rts", "tc"],
                        help="table1 | r | rts | p | e | tc | addition (default: rts tc)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--headline-seeds", nargs="*", type=int, default=[],
                        help="extra seeds for the CNN / ST-CNN(affine) cells on RTS and TC")
    parser.add_argument("--extra-cells", action="store_true",
                        help="also run the cells beyond the paper's tables (EXTRA_CELLS)")
    parser.add_argument("--tag", default="",
                        help="suffix of the run names, e.g. 8k for a longer budget next to the 2k runs")
    parser.add_argument("--variants", nargs="+", default=["paper"], choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR"))
    parser.add_argument("--only", nargs="*", default=None, help="run names to restrict to")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (default 1; more keeps an accelerator busy with small models)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="after this many seconds start no run and stop the running ones with a checkpoint "
                             "(the same command continues them)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: passed to stn-jax train")
    args = parser.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    runs = plan(args.tables, args.seeds, args.variants, args.headline_seeds, args.extra_cells, args.tag)
    if args.only is not None:
        runs = [r for r in runs if r.name in args.only]
    return execute(runs, args, jobs=args.jobs, deadline_s=args.deadline_s)


def execute(runs: list[Run], args: argparse.Namespace, *, jobs: int = 1, deadline_s: float | None = None) -> int:
    """Run `runs` in order, up to `jobs` at a time (on an accelerator one small run leaves the device
    idle between its steps), each one a `stn-jax train` subprocess logging to its ``train.log``.

    `deadline_s`: seconds from now after which no run starts, and the running ones get SIGTERM:
    each saves a checkpoint and stops, so the same command continues them later. Returns 0 when
    every run finished, 1 when one failed, 2 when the deadline stopped or skipped some."""
    if jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {jobs}")
    t0 = time.monotonic()
    past_deadline = (lambda: False) if deadline_s is None else (lambda: time.monotonic() - t0 >= deadline_s)
    pending = list(enumerate(runs))
    running: dict[int, tuple[Run, subprocess.Popen, object, float]] = {}
    failures, stopped = [], []
    stopping = False  # past the deadline: each running run got its one SIGTERM
    while pending or running:
        while pending and len(running) < jobs and not past_deadline():
            i, run = pending.pop(0)
            done = (run.workdir / "results.json").exists()
            cmd = command(run, args)
            print(f"[{i + 1}/{len(runs)}] {run.table}/{run.name}: {'done, skipped' if done else ' '.join(cmd)}",
                  flush=True)
            if done or args.dry_run:
                continue
            run.workdir.mkdir(parents=True, exist_ok=True)
            log = open(run.workdir / "train.log", "a")
            running[i] = (run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log,
                          time.monotonic())
        if past_deadline() and not stopping:  # once: a second SIGTERM would interrupt the checkpointing
            stopping = True
            stopped += [run.name for _, run in pending]
            pending = []
            for _, proc, _, _ in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for i, (run, proc, log, start) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del running[i]
            print(f"    [{i + 1}] {run.name}: exit {code} after {time.monotonic() - start:.0f} s", flush=True)
            if code == 0:
                results = json.loads((run.workdir / "results.json").read_text())
                print(f"    [{i + 1}] {run.name}: test error {results.get('test_error')}", flush=True)
            elif stopping:
                stopped.append(run.name)
            else:
                failures.append(run.name)
        time.sleep(0.2 if running else 0)
    if failures:
        print(f"FAILED runs ({len(failures)}): {', '.join(failures)}", file=sys.stderr)
        return 1
    if stopped:
        print(f"stopped at the deadline ({len(stopped)}; the same command continues them): {', '.join(stopped)}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
