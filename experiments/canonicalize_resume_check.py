"""Kill ``stn-jax canonicalize`` with SIGKILL part-way, ``--resume`` it, and compare with a clean run.

    .venv/bin/python experiments/canonicalize_resume_check.py --workdir runs/rts --input runs/rts_test.npz \\
        --json experiments/results/canonicalize_rts_resume.json

Writes to ``--scratch`` (default ``runs/resume_check``): ``killed/`` (killed then resumed) and
``clean/`` (uninterrupted). The comparison is of every committed row and reject, bytes included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def _cmd(args, out, resume=False):
    return [os.path.join(os.path.dirname(sys.executable), "stn-jax"), "canonicalize",
            "--workdir", args.workdir, "--input", args.input, "--output", out,
            "--batch-size", str(args.batch_size), "--no-progress"] + (["--resume"] if resume else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--scratch", default="runs/resume_check")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--kill-after-parts", type=int, default=5,
                   help="SIGKILL once the manifest lists at least this many parts")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from stn_jax.canonicalize import read_output

    shutil.rmtree(args.scratch, ignore_errors=True)
    killed, clean = os.path.join(args.scratch, "killed"), os.path.join(args.scratch, "clean")
    proc = subprocess.Popen(_cmd(args, killed), stdout=subprocess.DEVNULL)
    manifest = os.path.join(killed, "_manifest.json")
    parts_at_kill = 0
    while proc.poll() is None:
        try:
            with open(manifest) as f:
                parts_at_kill = len(json.load(f)["parts"])
        except (OSError, ValueError):
            parts_at_kill = 0
        if parts_at_kill >= args.kill_after_parts:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    rc_killed = proc.wait()
    with open(manifest) as f:
        m = json.load(f)
    committed_at_kill = m["parts"][-1]["stop"] if m["parts"] else 0
    stray = sorted(n for n in os.listdir(killed) if n.startswith("part-"))
    resumed = json.loads(subprocess.run(_cmd(args, killed, resume=True), check=True,
                                        capture_output=True, text=True).stdout)
    full = json.loads(subprocess.run(_cmd(args, clean), check=True, capture_output=True,
                                     text=True).stdout)
    a, b = read_output(killed), read_output(clean)
    ra, rb = read_output(killed, rejects=True), read_output(clean, rejects=True)
    rows = a.column("row").to_pylist()
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "script": "experiments/canonicalize_resume_check.py", "argv": sys.argv[1:],
        "killed_returncode": rc_killed, "rows_committed_at_kill": committed_at_kill,
        "part_files_on_disk_at_kill": len(stray), "parts_in_manifest_at_kill": len(m["parts"]),
        "resumed_from": resumed["resumed_from"], "resumed_summary": resumed, "clean_summary": full,
        "identical_rows": a.equals(b), "identical_rejects": ra.equals(rb),
        "duplicate_rows": len(rows) - len(set(rows)),
        "rows_in_equals_written_plus_rejected": resumed["rows_in"] == a.num_rows + ra.num_rows,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    ok = result["identical_rows"] and result["identical_rejects"] and not result["duplicate_rows"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
