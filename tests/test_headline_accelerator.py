"""experiments/paper/headline_accelerator.sh: the runs it asks reproduce.py for, in order."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "paper" / "headline_accelerator.sh"


def test_script_plans_the_headline_cells_in_priority_order(tmp_path):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    result = subprocess.run(["bash", str(SCRIPT), "100", "data/mnist"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 8
    tags = [line.split("--tag ")[1].split()[0] for line in lines]
    assert tags == ["4m-acc", "2m-acc", "2m-acc", "1m-acc", "4m-acc", "2m-acc", "1m-acc", "4m-acc"]  # the RTS/TC 2M calls overlap
    first = lines[0].split()
    assert first[first.index("--steps") + 1] == "32000" and first[first.index("--jobs") + 1] == "6"
    only = first[first.index("--only") + 1:first.index("--jobs")]
    assert only == [f"rts-{m}-s{s}-adam-tuned-lr3e-3-4m-acc" for m in ("cnn", "st-cnn-affine") for s in (0, 1, 2)]
    assert 0 < float(first[first.index("--deadline-s") + 1]) <= 100
    assert first[first.index("--data-dir") + 1] == "data/mnist" and first[-3:] == ["--checkpoint-every", "4000",
                                                                                   "--no-tensorboard"]
    tc = [line.split() for line in lines if "--tables tc" in line and "locfull" not in line]
    assert [t[t.index("--steps") + 1] for t in tc] == ["16000", "8000", "32000"]
    assert all(len(t[t.index("--only") + 1:t.index("--jobs")]) == 6 for t in tc[:2])
    assert tc[2][tc[2].index("--only") + 1:tc[2].index("--jobs")] == [
        f"tc-st-cnn-affine-s{s}-adam-tuned-lr3e-3-4m-acc" for s in (0, 1, 2)]
    rts2 = next(line.split() for line in lines if "--tables rts" in line and "2m-acc" in line)
    assert rts2[rts2.index("--only") + 1:rts2.index("--jobs")] == [
        "rts-cnn-s1-adam-tuned-lr3e-3-2m-acc", "rts-cnn-s2-adam-tuned-lr3e-3-2m-acc"]
    locfull = [line.split() for line in lines if "locfull" in line]
    assert [t[t.index("--variants") + 1] for t in locfull] == ["adam-tuned-lr3e-3-locfull"] * 3
    assert [t[t.index("--steps") + 1] for t in locfull] == ["16000", "8000", "32000"]
    assert all(t.count("--variants") == 1 for t in (line.split() for line in lines))
    assert locfull[0][locfull[0].index("--only") + 1:locfull[0].index("--jobs")] == [
        f"tc-st-cnn-affine-s{s}-adam-tuned-lr3e-3-locfull-2m-acc" for s in (0, 1, 2)]
    assert locfull[2][locfull[2].index("--only") + 1:locfull[2].index("--jobs")] == [
        f"tc-st-cnn-affine-s{s}-adam-tuned-lr3e-3-locfull-4m-acc" for s in (0, 1, 2)]
