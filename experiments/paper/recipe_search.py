"""Choose a training recipe on the validation split: short runs of each candidate, ranked by validation error.

Each candidate is a recipe (``recipes/<name>.toml``) plus optional `stn-jax train` overrides. Every
(model, candidate) pair trains once for ``--steps`` x ``--batch-size`` into
``experiments/results/recipe_search/<dataset>-<model>-<candidate>-<steps>x<batch>/`` (``--resume``
continues an interrupted one, a finished one is skipped). The ranking uses the *validation* error at
the end of each run, never the test error, so the test sets stay untouched by the choice;
``recipe_search-<dataset>-<steps>x<batch>.json`` beside the runs records every candidate's curve end and the winner per model.

    python -m experiments.paper.recipe_search --dataset rts --models st-cnn cnn --steps 1000 \\
        --batch-size 128 --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.paper.reproduce import RECIPES, ROOT
from experiments.paper.summarize import read_metrics

SEARCH_DIR = ROOT / "experiments" / "results" / "recipe_search"

CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "adam": ("adam", []),
    "adam-lr3e-3-warm": ("adam", ["--lr", "0.003", "--warmup-steps", "200"]),
    "adam-lr3e-3-warm-loc1": ("adam", ["--lr", "0.003", "--warmup-steps", "200", "--loc-lr-mult", "1.0"]),
    "adam-lr1e-2-warm": ("adam", ["--lr", "0.01", "--warmup-steps", "200"]),
    "adam-lr1e-2-warm-loc1": ("adam", ["--lr", "0.01", "--warmup-steps", "200", "--loc-lr-mult", "1.0"]),
    "adam-lr3e-4": ("adam", ["--lr", "0.0003"]),
    "adam-lr1e-4": ("adam", ["--lr", "0.0001"]),
    "paper": ("paper", []),
}
"""Candidate name -> (base recipe, `stn-jax train` overrides of that recipe)."""


def workdir(dataset: str, model: str, candidate: str, steps: int, batch_size: int) -> Path:
    return SEARCH_DIR / f"{dataset}-{model}-{candidate}-{steps}x{batch_size}"


def command(dataset: str, model: str, candidate: str, args: argparse.Namespace) -> list[str]:
    base, overrides = CANDIDATES[candidate]
    wd = workdir(dataset, model, candidate, args.steps, args.batch_size)
    cmd = [sys.executable, "-m", "stn_jax.cli", "train", "--dataset", dataset, "--model", model,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--eval-every", str(max(1, args.steps // 8)), "--checkpoint-every", str(max(1, args.steps // 4)),
           "--workdir", Path(os.path.relpath(wd, ROOT)).as_posix(), "--resume", "--no-progress", "--no-figures"]
    if model.startswith("st-"):
        cmd += ["--transform", args.transform]
    if args.data_dir:
        cmd += ["--data-dir", os.path.relpath(os.path.abspath(args.data_dir), ROOT)]
    return cmd + RECIPES[base].flags + overrides


def rank(dataset: str, models: list[str], candidates: list[str], steps: int, batch_size: int) -> dict:
    """Per model: each finished candidate's final and best validation error (%), and the winner
    (lowest final validation error)."""
    out: dict = {}
    for model in models:
        rows = {}
        for cand in candidates:
            val = read_metrics(workdir(dataset, model, cand, steps, batch_size), "val")
            if val:
                rows[cand] = {"final_val_error_pct": round(100 * val[-1]["error"], 2),
                              "best_val_error_pct": round(100 * min(r["error"] for r in val), 2),
                              "steps_evaluated": val[-1]["step"]}
        finished = {c: r for c, r in rows.items() if r["steps_evaluated"] == steps}
        winner = min(finished, key=lambda c: finished[c]["final_val_error_pct"]) if finished else None
        out[model] = {"candidates": rows, "winner": winner}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="rts")
    parser.add_argument("--models", nargs="+", default=["st-cnn", "cnn"])
    parser.add_argument("--transform", default="affine")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the current ranking only")
    args = parser.parse_args(argv)
    for model in args.models:
        for cand in args.candidates:
            wd = workdir(args.dataset, model, cand, args.steps, args.batch_size)
            cmd = command(args.dataset, model, cand, args)
            done = (wd / "results.json").exists()
            print(f"{model} / {cand}: {'done, skipped' if done else ' '.join(cmd)}", flush=True)
            if done or args.dry_run:
                continue
            wd.mkdir(parents=True, exist_ok=True)
            start = time.time()
            with open(wd / "train.log", "a") as log:
                code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            print(f"    exit {code} after {time.time() - start:.0f} s", flush=True)
    ranking = rank(args.dataset, args.models, args.candidates, args.steps, args.batch_size)
    print(json.dumps(ranking, indent=2))
    if not args.dry_run:
        write_summary(args, ranking)
    return 0


def write_summary(args: argparse.Namespace, ranking: dict) -> Path:
    """Record `ranking` in ``recipe_search-<dataset>-<steps>x<batch>.json``, keeping the models that
    earlier invocations ranked (one invocation per model family is the usual way to run it)."""
    path = SEARCH_DIR / f"recipe_search-{args.dataset}-{args.steps}x{args.batch_size}.json"
    summary = json.loads(path.read_text()) if path.exists() else {"models": {}, "candidates": {}}
    summary.update({"dataset": args.dataset, "transform": args.transform, "steps": args.steps,
                    "batch_size": args.batch_size, "seed": args.seed,
                    "selection": "lowest final validation error"})
    summary["candidates"].update({c: {"recipe": CANDIDATES[c][0], "overrides": CANDIDATES[c][1]}
                                  for c in args.candidates})
    summary["models"].update(ranking)
    SEARCH_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
