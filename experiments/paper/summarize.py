"""Build RESULTS.md from every ``results.json`` under ``experiments/results/runs/``.

For each cell (table, dataset, model, transform, recipe) it reports our mean +- spread
(standard deviation over seeds, or the single value), the paper's number, the gap, and
the budget, device, versions, wall time and the command that reproduces it. Every number
in RESULTS.md comes from a committed results.json; nothing is typed in by hand.

    python -m experiments.paper.summarize   # writes RESULTS.md and README.md's results section
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import math
import re
import statistics
import sys
from pathlib import Path

from experiments.paper import paper
from experiments.paper.reproduce import RECIPES as _RECIPES
from experiments.paper.reproduce import ROOT, RUNS_DIR
from stn_jax.data.datasets import DEFAULT_VALIDATION_SIZE
from stn_jax.train.config import TrainConfig

HERE = Path(__file__).resolve().parent
TABLE_TITLES = {
    "table1": "Table 1: distorted MNIST (R, RTS, P, E)",
    "tc": "Translated + cluttered MNIST, 60x60 (TC)",
    "addition": "MNIST addition (two 42x42 channels, 19 classes)",
}


RECIPE_KEYS = sorted({key.replace("-", "_") for recipe in _RECIPES.values() for key in recipe.options})
"""Every `stn-jax train` option that some recipe sets (config.json spelling)."""
_ENGINE_DEFAULTS = TrainConfig().to_dict()


def recipe_settings(name: str) -> dict:
    """Recipe `name`'s value of every option in :data:`RECIPE_KEYS` (the engine's default where it sets none)."""
    options = {key.replace("-", "_"): value for key, value in _RECIPES[name].options.items()}
    return {key: options.get(key, _ENGINE_DEFAULTS[key]) for key in RECIPE_KEYS}


_RECIPE_SETTINGS = {name: recipe_settings(name) for name in _RECIPES}


def recipe_of(config: dict) -> str:
    """The `experiments/paper/reproduce.py` recipe a run's config follows: the one whose settings all
    equal the config's (options missing from an older config take the engine's default); ``custom``
    when none does, so a run trained with other options is never shown under a recipe's name."""
    for name, settings in _RECIPE_SETTINGS.items():
        if all(config.get(key, _ENGINE_DEFAULTS[key]) == value for key, value in settings.items()):
            return name
    return "custom"


def architecture_of(config: dict) -> str:
    """The zoo architecture a run used: for CNN classifiers its ``architecture`` (runs made before
    the option existed used ``padded``); for FCN classifiers ``width <h>`` when ``fcn_width``
    overrode the budget-matched widths, else ""."""
    if config["model"] in ("cnn", "st-cnn"):
        return config.get("architecture", "padded")
    return f"width {config['fcn_width']}" if config.get("fcn_width") else ""


MIN_IMAGES = 500_000
"""Training images (about 9 passes over the 55,000 training digits) below which no run counts as converged."""
CONVERGENCE_RULE = ("a run counts as *converged* when it trained on at least "
                    f"{MIN_IMAGES:,} images and its final validation error no longer moves: either (a) within the "
                    "run, its validation error at the end differs from its validation error at half the budget "
                    "(the evaluation nearest that step) by less than 5% (relative; 5% of the accuracy instead for "
                    "errors above 50%, where 5% of the error would be several points) or by less than one standard "
                    "error of the final validation estimate, sqrt(p(1-p)/n) over its n validation images (a change "
                    "within measurement noise); or (b) across budgets, the same cell and seed trained with the same "
                    "recipe on a quarter to half as many images (the longest such run) ended at a validation error "
                    "that this run's does not undercut by that same tolerance or more (doubling the budget no longer "
                    "helps; a longer run that ends higher is no sign of further progress, so (b) is one-sided). "
                    "Either way, (c) no longer run of the same cell and seed with the same recipe (any number of "
                    "images) may have ended below this run's final validation error by that tolerance or more: "
                    "such a run shows that more training still helped, whatever (a) or (b) say. "
                    "A cell is "
                    "converged when every seed is. "
                    "(a) spans the whole second half, not only the last quarter, because a schedule that decays the "
                    "learning rate flattens the last quarter of any run; for the same reason a cosine schedule "
                    "rarely passes (a), and (b) compares the end points of complete schedules")


def validation_count(run: dict) -> int:
    """Validation images behind a run's validation error (the data layer's default when unset)."""
    return run["results"].get("config", {}).get("validation_size") or DEFAULT_VALIDATION_SIZE


def _tolerance(before: float, end: float, n: int) -> float:
    """The rule's tolerance: 5% of error `before` (of the accuracy ``1 - before`` when that is
    smaller), or one standard error of error `end` over n images."""
    return max(0.05 * min(before, 1 - before), math.sqrt(end * (1 - end) / n))


def _within_tolerance(before: float, end: float, n: int) -> bool:
    """True when error `end` differs from `before` by less than the tolerance."""
    return abs(end - before) < _tolerance(before, end, n)


def _not_improved(before: float, end: float, n: int) -> bool:
    """True unless error `end` is lower than `before` by the tolerance or more."""
    return before - end < _tolerance(before, end, n)


def device_of(results: dict) -> str:
    """What a run trained on, e.g. ``1× cpu`` or ``1× NVIDIA H200`` (devices × jax's device kind)."""
    return f"{results.get('devices')}× {results.get('device_kind')}"


def images_seen(run: dict) -> int:
    return run["results"]["steps"] * run["results"]["batch_size"]


def converged_within_run(run: dict) -> bool | None:
    """Part (a) of :data:`CONVERGENCE_RULE` (None without at least two validation points)."""
    val = read_metrics(run["dir"], "val")
    if len(val) < 2:
        return None
    steps = run["results"]["steps"]
    half = min(val[:-1], key=lambda r: abs(r["step"] - 0.5 * steps))["error"]
    return _within_tolerance(half, val[-1]["error"], validation_count(run))


def final_validation_error(run: dict) -> float | None:
    """A run's last validation error (a fraction), or None when it logged none."""
    val = read_metrics(run["dir"], "val")
    return val[-1]["error"] if val else None


def converged_across_budgets(run: dict) -> bool | None:
    """Part (b) of :data:`CONVERGENCE_RULE`: compares the final validation error with that of
    ``run["half_budget_run"]`` (set by :func:`load_runs`; None when there is no such run)."""
    shorter = run.get("half_budget_run")
    if shorter is None:
        return None
    end, end_short = final_validation_error(run), final_validation_error(shorter)
    if end is None or end_short is None:
        return None
    return _not_improved(end_short, end, validation_count(run))


def improved_by_longer_run(run: dict) -> dict | None:
    """Part (c) of :data:`CONVERGENCE_RULE`: the first of ``run["longer_runs"]`` (set by
    :func:`load_runs`) whose final validation error is below this run's by the tolerance or more,
    or None."""
    end = final_validation_error(run)
    if end is None:
        return None
    for longer in run.get("longer_runs", []):
        end_long = final_validation_error(longer)
        if end_long is not None and not _not_improved(end, end_long, validation_count(longer)):
            return longer
    return None


def converged(run: dict) -> bool | None:
    """:data:`CONVERGENCE_RULE` for one run (None when neither (a) nor (b) can be evaluated)."""
    checks = [converged_within_run(run), converged_across_budgets(run)]
    if all(check is None for check in checks):
        return None
    return images_seen(run) >= MIN_IMAGES and any(checks) and improved_by_longer_run(run) is None


def link_runs_across_budgets(runs: list[dict]) -> None:
    """Sets ``run["half_budget_run"]`` to the longest run of the same cell and seed (table, dataset,
    model, transform, recipe, architecture, distortion, seed) with a quarter to half of `run`'s
    training images (None if there is none), and ``run["longer_runs"]`` to those with more images
    than `run`, shortest first."""
    def identity(r: dict) -> tuple:
        return (r["table"], r["dataset"], r["model"], r["transform"], r["recipe"], r.get("architecture", ""),
                r.get("distortion", ""), r["seed"])

    for run in runs:
        same = [r for r in runs if identity(r) == identity(run)]
        shorter = [r for r in same if 2 * images_seen(r) <= images_seen(run) <= 4 * images_seen(r)]
        run["half_budget_run"] = max(shorter, key=images_seen, default=None)
        run["longer_runs"] = sorted((r for r in same if images_seen(r) > images_seen(run)), key=images_seen)


def cell_converged(group: list[dict]) -> bool:
    return all(converged(run) for run in group)


def load_runs() -> list[dict]:
    runs = []
    for path in sorted(RUNS_DIR.glob("*/*/results.json")):
        r = json.loads(path.read_text())
        cfg = r["config"]
        recipe = recipe_of(cfg)
        transform = None if cfg["model"] in ("fcn", "cnn") else cfg["transform"]
        runs.append({"table": path.parent.parent.name, "name": path.parent.name, "dir": path.parent,
                     "dataset": cfg["dataset"], "model": cfg["model"], "transform": transform,
                     "recipe": recipe, "architecture": architecture_of(cfg),
                     "seed": cfg["seed"], "budget": (r["steps"], r["batch_size"]),
                     "device": device_of(r), "distortion": cfg.get("distortion") or "", "results": r})
    link_runs_across_budgets(runs)
    return runs


def _fmt_err(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def read_metrics(run_dir: Path, split: str) -> list[dict]:
    """The ``metrics.jsonl`` records of one split ("train", "val", "test") of a run, in order."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in rows if r.get("split") == split]


_RESUMED_FROM = re.compile(r"^resuming from .* \(step (\d+)\)$", re.MULTILINE)


def run_wall_time_s(run: dict) -> float | None:
    """Wall seconds a run took over all its segments (a run continued with ``--resume`` has one
    segment per call of ``stn-jax train``); None when that cannot be told.

    ``total_wall_time_s`` of results.json when it holds one. Runs resumed before that was
    recorded: the last segment's ``wall_time_s`` plus, for each earlier segment, the span from
    its first to its last metrics.jsonl record (segments split at the steps train.log says were
    resumed from), which leaves out each earlier segment's start-up before its first record.
    """
    results = run["results"]
    if results.get("total_wall_time_s") is not None:
        return results["total_wall_time_s"]
    if not results.get("start_step"):
        return results.get("wall_time_s")
    log = run["dir"] / "train.log"
    if not log.exists():
        return None
    bounds = [0, *sorted(int(step) for step in _RESUMED_FROM.findall(log.read_text()))]
    if bounds[-1] != results["start_step"]:
        return None
    records = [r for split in ("train", "val") for r in read_metrics(run["dir"], split) if "time" in r]
    total = results.get("wall_time_s") or 0.0
    for start, end in itertools.pairwise(bounds):
        times = [r["time"] for r in records if start < r["step"] <= end]
        if not times:
            return None
        total += max(times) - min(times)
    return total


def _convergence(group: list[dict]) -> str:
    """Mean validation error (%) at the evaluation nearest half the budget and at the end:
    a run still improving at its end was stopped by its budget, not converged."""
    halves, ends = [], []
    for run in group:
        val = read_metrics(run["dir"], "val")
        if len(val) < 2:
            return "–"
        half = min(val, key=lambda r: abs(r["step"] - run["results"]["steps"] / 2))
        halves.append(100 * half["error"])
        ends.append(100 * val[-1]["error"])
    return f"{statistics.mean(halves):.1f} → {statistics.mean(ends):.1f}"


def _convergence_flag(group: list[dict]) -> str:
    """"yes" / "no" / "–" for a cell; with the mean final validation error (%) of this cell's runs
    and of the longer runs that improved on them (part (c) of the rule) if any, else of the
    half-budget runs and this cell's runs when every seed has one (part (b))."""
    flags = [converged(run) for run in group]
    flag = "yes" if all(flags) else ("–" if any(f is None for f in flags) else "no")
    improved = [(run, longer) for run in group if (longer := improved_by_longer_run(run))]
    if improved:
        before, end = (statistics.mean(100 * final_validation_error(r) for r in runs)
                       for runs in zip(*improved, strict=True))
        images = sorted({f"{images_seen(longer) / 1e6:.2f}" for _, longer in improved}, key=float)
        return f"{flag} (a longer run improved on it: {before:.2f} → {end:.2f} at {'/'.join(images)}M images)"
    shorter = [run.get("half_budget_run") for run in group]
    if not all(shorter) or any(final_validation_error(r) is None for r in shorter):
        return flag
    finals = [[100 * final_validation_error(r) for r in pair] for pair in zip(shorter, group, strict=True)]
    before, end = (statistics.mean(values) for values in zip(*finals, strict=True))
    images = statistics.mean(images_seen(r) for r in shorter)
    return f"{flag} (after {images / 1e6:.2f}M images: {before:.2f} → {end:.2f})"


def _label(model: str, transform: str | None, architecture: str = "") -> str:
    names = {"fcn": "FCN", "cnn": "CNN", "st-fcn": "ST-FCN", "st-cnn": "ST-CNN", "2st-fcn": "2×ST-FCN"}
    short = {"affine": "Aff", "projective": "Proj", "tps": "TPS", "attention": "Att"}
    if architecture == "padded":
        arch = " (padded)"
    elif architecture.startswith("width "):
        arch = f" (2×{architecture.removeprefix('width ')})"
    else:
        arch = ""
    return names[model] + (f" {short[transform]}" if transform else "") + arch


RECIPES = {name: recipe.description for name, recipe in _RECIPES.items()}  # from experiments/paper/recipes/*.toml
HEADLINE = (("rts", "Table 1 RTS"), ("tc", "TC"))
HEADLINE_HEADER = ("| dataset | recipe (CNN / ST-CNN) | CNN | ST-CNN (affine) | ST − CNN | paper CNN / ST-CNN "
                   "| steps × batch (CNN / ST-CNN) | seeds (CNN / ST-CNN) | device |",
                   "|---|---|---|---|---|---|---|---|---|")
DATASET_ORDER = (*paper.TABLE1_DATASETS, "tc", "addition")  # the paper's column order
CNN_RECIPE = {"adam-border": "adam", "adam-fullres": "adam", "adam-nopen": "adam",
              "adam-tuned-fullres": "adam-tuned", "adam-tuned-loc01": "adam-tuned",
              "adam-tuned-locfull": "adam-tuned", "adam-tuned-nopen": "adam-tuned",
              "adam-tuned-lr3e-3-locfull": "adam-tuned-lr3e-3"}
"""ST-CNN recipe -> the recipe of the CNN it is compared with, where the two differ (otherwise the
same recipe): these recipes change only the transformer, which the CNN does not have. A recipe
that changes the optimizer (``adam-tuned-lr3e-3``) is compared with CNNs trained with it, because
the CNN's best learning rate moves with the budget too (3e-3 beat 1e-2 on the CNN's validation
error at 512k images, although 1e-2 won at 128k)."""


def cnn_recipe(recipe: str) -> str:
    """The recipe of the CNN that an ST-CNN trained with `recipe` is compared with."""
    return CNN_RECIPE.get(recipe, recipe)


def group_cells(runs: list[dict]) -> dict[tuple, list[dict]]:
    """(table, dataset, model, transform, recipe, (steps, batch), architecture, device) -> the runs (one
    per seed). Runs on different devices are different cells: their seeds are separate trainings.
    Runs on other distortion parameters than the paper's are no cells (:func:`_distortion_studies`)."""
    cells: dict[tuple, list[dict]] = collections.defaultdict(list)
    for run in runs:
        if run.get("distortion"):
            continue
        key = (run["table"], run["dataset"], run["model"], run["transform"], run["recipe"], run["budget"],
               run.get("architecture", ""), run.get("device", device_of(run["results"])))
        cells[key].append(run)
    return cells


def _headline_runs(cells: dict[tuple, list[dict]], table: str, ds: str, model: str, transform: str | None,
                   recipe: str, arch: str, device: str) -> tuple[list[dict], list[int]] | None:
    """The runs of one model on one device that the headline shows, one per seed, by seed: each
    seed's converged run with the most images (a converged error no longer depends on the budget,
    which is what the rule tests, so seeds may converge at different budgets); and the seeds that
    have runs of this model but no converged one yet. None when no seed has converged."""
    runs = [run for key, group in cells.items()
            if key[:5] == (table, ds, model, transform, recipe) and key[6:] == (arch, device) for run in group]
    longest: dict[int, dict] = {}
    for run in runs:
        if converged(run) and (run["seed"] not in longest or images_seen(run) > images_seen(longest[run["seed"]])):
            longest[run["seed"]] = run
    if not longest:
        return None
    return [longest[seed] for seed in sorted(longest)], sorted({run["seed"] for run in runs} - longest.keys())


def _seeds_text(seeds: list[int]) -> str:
    """"seed 1" or "seeds 0,2"."""
    return f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"


def _headline_budget(runs: list[dict]) -> str:
    """"4,000 × 256", or "4,000 × 256 (seeds 1,2), 8,000 × 256 (seed 0)" when the seeds' budgets differ."""
    seeds_by_budget: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for run in runs:
        seeds_by_budget[run["budget"]].append(run["seed"])
    if len(seeds_by_budget) == 1:
        (steps, batch), = seeds_by_budget
        return f"{steps:,} × {batch}"
    return ", ".join(f"{steps:,} × {batch} ({_seeds_text(seeds)})"
                     for (steps, batch), seeds in sorted(seeds_by_budget.items(), key=lambda kv: kv[0][0] * kv[0][1]))


def headline(cells: dict[tuple, list[dict]]) -> list[str]:
    """ST-CNN (affine) vs CNN on RTS and TC: one row per dataset, recipe and architecture in which
    both models have a converged run (the CNN has no transformer, so a transformer-only recipe such
    as ``adam-border`` is paired with the ``adam`` CNN). Each model shows every seed's converged run
    with the most images (:func:`_headline_runs`): a converged error no longer depends on the
    budget, and models and seeds converge at different budgets."""
    rows = []
    pairs = sorted({(key[0], key[1], key[4], key[6], key[7]) for key in cells
                    if key[1] in dict(HEADLINE) and key[2:4] == ("st-cnn", "affine")},
                   key=lambda p: (p[1] != "rts", p[2], p[3], p[4]))
    for table, ds, recipe, arch, device in pairs:
        st = _headline_runs(cells, table, ds, "st-cnn", "affine", recipe, arch, device)
        cnn = _headline_runs(cells, table, ds, "cnn", None, cnn_recipe(recipe), arch, device)
        if st is None or cnn is None:
            continue
        values, means, seeds, budgets = {}, {}, [], []
        for name, (grp, pending) in (("CNN", cnn), ("ST-CNN", st)):
            errs = [g["results"]["test_error_pct"] for g in grp]
            seeds.append(",".join(str(g["seed"]) for g in grp)
                         + (f" (not converged yet: {_seeds_text(pending)})" if pending else ""))
            budgets.append(_headline_budget(grp))
            means[name] = statistics.mean(errs)
            values[name] = (f"{_fmt_err(errs)} ({', '.join(f'{e:.2f}' for e in errs)})",
                            paper.paper_error(ds, "st-cnn" if name == "ST-CNN" else "cnn", "affine"))
        recipes = recipe if cnn_recipe(recipe) == recipe else f"{cnn_recipe(recipe)} / {recipe}"
        rows.append(f"| {dict(HEADLINE)[ds]} | {recipes} | {values['CNN'][0]} | {values['ST-CNN'][0]} | "
                    f"{means['ST-CNN'] - means['CNN']:+.2f} | {values['CNN'][1]} / {values['ST-CNN'][1]} | "
                    f"{' / '.join(budgets)} | {' / '.join(seeds)} | {device} |")
    if not rows:
        return ["## Headline: ST-CNN vs CNN (RTS and TC)", "",
                "No converged pair of CNN and ST-CNN cells is committed yet (convergence rule below); the "
                "reduced-budget comparisons are in the budget section.", ""]
    return ["## Headline: ST-CNN vs CNN (RTS and TC)", "",
            "Converged runs only. Mean ± standard deviation over seeds of the % test error (per-seed values "
            "in brackets); ST − CNN is the difference of the means. For every seed, each model shows its "
            "converged run with the most images, so budgets can differ between the models and between seeds; "
            "seeds that have runs but no converged run yet are named in the seeds column.", "",
            *HEADLINE_HEADER, *rows, "",
            "![ST-CNN vs CNN](experiments/results/headline.png)", ""]


def build(runs: list[dict] | None = None) -> str:
    """RESULTS.md's generated part from `runs` (default: every committed run)."""
    runs = load_runs() if runs is None else runs
    cells = group_cells(runs)
    out = ["# Results: reproducing Jaderberg et al. (2015)", "",
           "Generated by `python -m experiments.paper.summarize` from the committed `results.json` files under "
           "`experiments/results/runs/` (one directory per run, with its config, metrics and figures). "
           "Errors are % on each dataset's fixed test set (10,000 distorted MNIST test digits, generated "
           "once from a fixed seed, identical for every model). ± is the standard deviation over seeds.",
           "", f"**Budget.** The paper trains {paper.PAPER_BUDGET}. Every run below states its own "
           "budget; runs with fewer steps are *reduced-budget* runs and are not expected to reach the "
           "paper's error — the column `gap` is ours minus the paper's.", "",
           f"**Convergence.** {CONVERGENCE_RULE}. Only converged runs appear in the headline and the README, "
           "and only converged cells in the main tables; the others are listed in the budget section.", "",
           "**Times.** *train time / run* is a run's wall time, summed over its segments when it was stopped and "
           "continued with `--resume`, averaged over the cell's seeds; *images/s* is the steady-state training "
           "speed of each run's last segment, averaged over seeds.", "",
           "**Architectures.** Rows marked *(padded)* use the earlier zoo (`--architecture padded`: 'SAME' convs, "
           "full-resolution localization input, second conv capped at 64 filters); the others use the paper's "
           "(the default, see docs/flax.md).", "",
           "**Recipes.** " + "; ".join(f"`{k}` = {v}" for k, v in RECIPES.items()
                                       if any(r["recipe"] == k for r in runs)) + ".", ""]
    out += headline(cells)
    sections = (("", lambda group: cell_converged(group)),
                ("Budget runs (not converged)", lambda group: not cell_converged(group)))
    for heading, keep in sections:
        chosen = {k: g for k, g in cells.items() if keep(g)}
        if heading and chosen:
            out += [f"## {heading}", "",
                    "Cells whose validation error was still moving at the end of their budget (convergence rule "
                    "above). They compare models at equal reduced budget; they do not measure the models' final "
                    "error.", ""]
        for table in ("table1", "tc", "addition"):
            out += _table(chosen, table, level="###" if heading else "##")
    out += _distortion_studies([r for r in runs if r.get("distortion")])
    if runs:
        r0 = runs[0]["results"]
        out += ["## Environment and reproduction", "",
                f"- jax {r0.get('jax_version')}, flax {r0.get('flax_version')}, optax {r0.get('optax_version')}, "
                f"Python {r0.get('python')}, platform {r0.get('platform')} ({r0.get('cpu_count')} CPU cores visible)"
                + _machine_and_dates(runs) + ".",
                "- Each run directory holds `config.json` (every option), `train.log`, `metrics.jsonl` "
                "(training, validation and test curves) and `figures/` (learning curves; for ST models "
                "`transformers.png`, what each transformer does to test digits).",
                "- Re-run any single cell exactly (same seed, same data, same error): "
                "`stn-jax train --config experiments/results/runs/<table>/<run>/config.json --workdir runs/<run>` "
                "(checked: `rts-fcn-s0-adam` re-ran to the identical 34.19 %).",
                "- Reproduce a table: `python -m experiments.paper.reproduce --tables rts tc --steps N --batch-size B "
                "[--headline-seeds 1 2]`, then `python -m experiments.paper.summarize`. Recipes: "
                "`experiments/paper/recipes/<recipe>.toml`.",
                "- On an accelerator, `make headline-accelerator HEADLINE_S=<seconds>` trains the headline cells "
                "(RTS at 4M images, TC at 2M and 1M, 3 seeds each, six runs at a time, then the TC ST-CNN at 4M, "
                "then the full-resolution localization input of `adam-tuned-lr3e-3-locfull` at 2M, 1M and 4M) "
                "until that deadline; the same command continues runs the deadline stopped. Its runs end in `-acc` "
                "and form their own cells (column *device*).", ""]
    return "\n".join(out)


MODEL_ORDER = ["fcn", "cnn", "st-fcn", "st-cnn", "2st-fcn"]
"""The order of the models in every table."""


def _table_order(ds: str, model: str, transform: str | None) -> tuple:
    """Where a row goes in a table: the paper's dataset order, then the model, then the transform."""
    return (DATASET_ORDER.index(ds) if ds in DATASET_ORDER else len(DATASET_ORDER), MODEL_ORDER.index(model),
            str(transform))


def _table(cells: dict[tuple, list[dict]], table: str, *, level: str) -> list[str]:
    """One markdown table of `cells` belonging to `table` (empty if there are none)."""
    keys = sorted((k for k in cells if k[0] == table),
                  key=lambda k: (*_table_order(*k[1:4]), k[6], k[7], k[5], k[4]))
    if not keys:
        return []
    out = [f"{level} {TABLE_TITLES[table]}", "",
           "| dataset | model | recipe | ours (% err) | paper | gap | val err at ½ → end | converged | "
           "steps × batch (images) | seeds | device | train time / run | images/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        _, ds, model, transform, recipe, _, arch, device = key
        group = cells[key]
        errs = [g["results"]["test_error_pct"] for g in group]
        ref = paper.paper_error(ds, model, transform)
        gap = f"{statistics.mean(errs) - ref:+.2f}" if ref is not None else "–"
        budgets = sorted({(g["results"]["steps"], g["results"]["batch_size"]) for g in group})
        budget = ", ".join(f"{s:,} × {b} ({s * b / 1e6:.2f}M)" for s, b in budgets)
        seeds = ",".join(str(g["seed"]) for g in sorted(group, key=lambda g: g["seed"]))
        times = [run_wall_time_s(g) for g in group]
        time_text = "–" if None in times else f"{statistics.mean(times) / 60:.1f} min"
        ips = [g["results"].get("images_per_s") for g in group if g["results"].get("images_per_s")]
        sample = " (SAMPLE data)" if any(g["results"].get("data", {}).get("is_sample") for g in group) else ""
        ips_text = f"{statistics.mean(ips):,.0f}" if ips else "–"
        conv = _convergence_flag(group)
        out.append(f"| {ds.upper()} | {_label(model, transform, arch)} | {recipe} | {_fmt_err(errs)}{sample} | "
                   f"{ref if ref is not None else '–'} | {gap} | {_convergence(group)} | {conv} | {budget} | "
                   f"{seeds} | {device} | {time_text} | {ips_text} |")
    return [*out, ""]


def _distortion_studies(runs: list[dict]) -> list[str]:
    """A table of the runs trained on other distortion parameters than the paper's (``--distortion``);
    they are no cells of the paper's tables (their test sets differ)."""
    if not runs:
        return []
    out = ["## Distortion studies", "",
           "Runs whose data used other distortion parameters than the paper's (`stn-jax train --distortion`; "
           "training, validation and test data alike, so their test sets differ from the tables'). Each is "
           "one seed; *converged* applies the rule above (part (b) compares runs with the same parameters).", "",
           "| dataset | model | distortion | recipe | ours (% err) | val err at ½ → end | converged | "
           "steps × batch (images) | device | run |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (DATASET_ORDER.index(r["dataset"]), r["model"], r["distortion"],
                                           images_seen(r), r["seed"])):
        steps, batch = run["budget"]
        flag = {True: "yes", False: "no", None: "–"}[converged(run)]
        out.append(f"| {run['dataset'].upper()} | {_label(run['model'], run['transform'], run['architecture'])} | "
                   f"`{run['distortion']}` | {run['recipe']} | {run['results']['test_error_pct']:.2f} | "
                   f"{_convergence([run])} | {flag} | {steps:,} × {batch} ({steps * batch / 1e6:.2f}M) | "
                   f"{run['device']} | `{run['table']}/{run['name']}` |")
    return [*out, ""]


def _machine(results: dict) -> str:
    """"2-core x86_64", or "16-core x86_64 with 1× NVIDIA H200" for a run on an accelerator."""
    host = f"{results.get('cpu_count')}-core {results.get('machine')}"
    return host if results.get("platform", "cpu") == "cpu" else f"{host} with {device_of(results)}"


def _machine_and_dates(runs: list[dict]) -> str:
    """", on a 2-core x86_64 machine, runs dated 2026-11-22 to 2026-12-02 (UTC)": the machines
    the runs report and the dates of their last ``metrics.jsonl`` records."""
    machines = sorted({_machine(r["results"]) for r in runs if r["results"].get("machine")})
    dates = []
    for run in runs:
        times = [row["time"] for split in ("train", "val", "test") for row in read_metrics(run["dir"], split)
                 if "time" in row]
        if times:
            dates.append(datetime.datetime.fromtimestamp(max(times), datetime.UTC).date().isoformat())
    text = f", on a {' / '.join(machines)} machine" if machines else ""
    if dates:
        span = min(dates) if min(dates) == max(dates) else f"{min(dates)} to {max(dates)}"
        text += f", runs dated {span} (UTC)"
    return text


README_SECTION = ("<!-- section:results -->", "<!-- /section:results -->")


def readme_section(cells: dict[tuple, list[dict]]) -> str:
    """The README's results section, generated like RESULTS.md: converged runs only. Like the headline,
    each (dataset, model, recipe, architecture, device) row shows every seed's converged run with the
    most images (:func:`_headline_runs`) and names the seeds that have not converged yet."""
    table = [line for line in headline(cells) if line.startswith("| ") and line not in HEADLINE_HEADER]
    rows = sorted({(k[0], k[1], k[2], k[3], k[4], k[6], k[7]) for k in cells},
                  key=lambda r: (*_table_order(*r[1:4]), r[4], r[5], r[6]))
    converged_rows, recipes = [], set()
    for table_name, ds, model, transform, recipe, arch, device in rows:
        shown = _headline_runs(cells, table_name, ds, model, transform, recipe, arch, device)
        if shown is None:
            continue
        group, pending = shown
        recipes.add(recipe)
        errs = [g["results"]["test_error_pct"] for g in group]
        ref = paper.paper_error(ds, model, transform)
        gap = f"{statistics.mean(errs) - ref:+.2f}" if ref is not None else "–"
        seeds = ",".join(str(g["seed"]) for g in group) + (f" (not yet: {_seeds_text(pending)})" if pending else "")
        converged_rows.append(f"| {ds.upper()} | {_label(model, transform, arch)} | {recipe} | {_fmt_err(errs)} | "
                              f"{ref if ref is not None else '–'} | {gap} | {_headline_budget(group)} | {seeds} | "
                              f"{device} |")
    text = ["Reproduction of the paper's tables with our engine (`experiments/paper/reproduce.py`, summarised by",
            "`experiments/paper/summarize.py` into [RESULTS.md](RESULTS.md), which has every cell, the paper's number,",
            "the gap, budgets, the convergence rule and commands). Only *converged* runs are shown here.", ""]
    if table:
        text += ["**Headline: ST-CNN vs CNN**, % test error, mean ± sd over seeds:", "",
                 *HEADLINE_HEADER, *table, "",
                 "![ST-CNN vs CNN learning curves](experiments/results/headline.png)", ""]
    else:
        text += ["**Headline: ST-CNN vs CNN.** No converged pair is committed yet; RESULTS.md lists the "
                 "reduced-budget comparisons in its budget section.", ""]
    if converged_rows:
        text += ["Converged runs (% test error, mean ± sd over the seeds with a converged run, each seed's "
                 "converged run with the most images; gap = ours minus the paper's):", "",
                 "| dataset | model | recipe | ours | paper | gap | steps × batch | seeds | device |",
                 "|---|---|---|---|---|---|---|---|---|", *converged_rows, ""]
    if recipes:
        text += ["Recipes: " + "; ".join(f"`{k}` = {v}" for k, v in RECIPES.items() if k in recipes) + ".", ""]
    return "\n".join(text)


def update_readme(section: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = README_SECTION
    i, j = text.index(start) + len(start), text.index(end)
    readme.write_text(text[:i] + "\n" + section.rstrip("\n") + "\n" + text[j:])


def main() -> int:
    runs = load_runs()
    text = build(runs)
    notes = HERE / "RESULTS-notes.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    (ROOT / "RESULTS.md").write_text(text)
    update_readme(readme_section(group_cells(runs)))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
