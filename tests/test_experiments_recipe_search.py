"""experiments/paper/recipe_search.py: candidate commands and the validation-only ranking."""

from __future__ import annotations

import argparse
import json

from experiments.paper import recipe_search


def _args() -> argparse.Namespace:
    return argparse.Namespace(steps=800, batch_size=128, seed=0, transform="affine", data_dir=None)


def test_command_applies_overrides_after_the_base_recipe():
    cmd = recipe_search.command("rts", "st-cnn", "adam-lr3e-3-warm-loc1", _args())
    assert cmd[cmd.index("--lr", cmd.index("--lr") + 1) + 1] == "0.003"  # the override comes last, so it wins
    assert cmd[cmd.index("--loc-lr-mult") + 1] == "1.0"
    assert cmd[cmd.index("--transform") + 1] == "affine"
    assert cmd[cmd.index("--workdir") + 1] == "experiments/results/recipe_search/rts-st-cnn-adam-lr3e-3-warm-loc1-800x128"
    assert "--transform" not in recipe_search.command("rts", "cnn", "adam", _args())


def test_rank_picks_the_lowest_final_validation_error_of_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_search, "SEARCH_DIR", tmp_path)
    for cand, errors, last in (("adam", [0.2, 0.05], 800), ("adam-lr3e-3-warm", [0.1, 0.03], 800),
                               ("adam-lr1e-2-warm", [0.1, 0.01], 400)):  # the last one is unfinished
        wd = recipe_search.workdir("rts", "cnn", cand, 800, 128)
        wd.mkdir(parents=True)
        rows = [{"step": last // 2, "split": "val", "error": errors[0]},
                {"step": last, "split": "val", "error": errors[1]},
                {"step": last, "split": "test", "error": 0.0}]  # the test error never decides
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = recipe_search.rank("rts", ["cnn"], list(recipe_search.CANDIDATES), 800, 128)["cnn"]
    assert out["winner"] == "adam-lr3e-3-warm"
    assert out["candidates"]["adam"] == {"final_val_error_pct": 5.0, "best_val_error_pct": 5.0, "steps_evaluated": 800}
    assert "adam-lr3e-3-warm-loc1" not in out["candidates"]
