"""Kill ``stn-jax canonicalize`` with SIGKILL from outside part-way through, ``--resume`` it, and
compare with an uninterrupted run: the same rows and rejects, bytes included, and no duplicates.

Unlike ``test_canonicalize_run.test_sigkilled_run_resumes_to_identical_output`` (which kills at a
chosen point inside the library), this runs the real command on a real (1-step) training run and
kills it at whatever moment the poller sees enough committed parts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _canonicalize_helpers import NoiseDataset, train_tiny_run

from stn_jax.canonicalize import read_output

ROWS, BATCH, KILL_AFTER_PARTS = 1200, 6, 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), NoiseDataset(), steps=1, batch_size=8, source="test noise")


def _command(workdir, src, out, *, resume=False):
    return [sys.executable, "-m", "stn_jax.cli", "canonicalize", "--workdir", str(workdir),
            "--input", str(src), "--output", str(out), "--batch-size", str(BATCH), "--no-progress",
            *(["--resume"] if resume else [])]


def _committed_parts(out) -> int:
    try:
        return len(json.loads((out / "_manifest.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkilled_command_resumes_to_identical_output(workdir, tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (ROWS, 28, 28), dtype=np.uint8)
    images[5] = 0                                               # a blank image is still a row
    np.savez(tmp_path / "x.npz", images=images)
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    proc = subprocess.Popen(_command(workdir, tmp_path / "x.npz", killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    while proc.poll() is None and _committed_parts(killed) < KILL_AFTER_PARTS:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]   # killed before it finished
    manifest = json.loads((killed / "_manifest.json").read_text())
    committed = manifest["parts"][-1]["stop"]
    assert not manifest["complete"] and KILL_AFTER_PARTS * BATCH <= committed < ROWS

    resumed = subprocess.run(_command(workdir, tmp_path / "x.npz", killed, resume=True),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from"] == committed
    reference = subprocess.run(_command(workdir, tmp_path / "x.npz", clean), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]

    a, b = read_output(killed), read_output(clean)
    assert a.column("row").to_pylist() == list(range(ROWS))     # every row once, in order
    assert a.equals(b)                                          # identical, PNG bytes included
    assert read_output(killed, rejects=True).equals(read_output(clean, rejects=True))
    assert summary["rows_in"] == json.loads(reference.stdout)["rows_in"] == ROWS
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())
