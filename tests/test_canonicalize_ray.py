"""Canonicalisation on Ray Data (``stn_jax.canonicalize.ray_engine``) on a local Ray cluster
started by this module: rows in = rows out + rejects, the same rows as the local engine (PNG
bytes included), the Dataset API inside a user's pipeline, and a worker killed mid-job followed
by a re-run. Shard planning and the shard ledger are tested without Ray.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from _canonicalize_helpers import NoiseDataset, png_bytes, random_digits, train_tiny_run

from stn_jax.canonicalize import (
    OUTPUT_SCHEMA,
    REJECT_SCHEMA,
    Canonicalizer,
    NpzReader,
    ParquetReader,
    read_output,
    run_canonicalize,
)
from stn_jax.canonicalize.ray_engine import (
    DATASET_SCHEMA,
    canonicalize_dataset,
    read_dataset,
    run_canonicalize_ray,
    split_rejects,
)
from stn_jax.canonicalize.shards import Shard, ShardLedger, ShardReader, plan_shards
from stn_jax.cli import main

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module (workers inherit the 8 fake CPU devices of conftest)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), NoiseDataset(), steps=2, batch_size=8, source="test noise")


def _digits(n, seed=0):
    return random_digits(n, *SHAPE[:2], seed=seed)


def _npz_with_rejects(path, n=37):
    images = _digits(n, seed=1).astype(np.float32) / 255
    images[[3, 20]] = np.nan                                 # undecodable: non-finite pixels
    np.savez(path, images=images)
    return n


def _parquet_dir(path, sizes=(9, 14, 6)):
    """Parquet files of PNG bytes (a null, an empty and a corrupt cell among them), ids
    ``<file>#<row>``; returns the total row count."""
    path.mkdir()
    rng = np.random.default_rng(2)
    for k, n in enumerate(sizes):
        cells = [png_bytes(d) for d in rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)]
        if k == 0:
            cells[2] = None
        if k == 1:
            cells[5], cells[11] = b"", b"\x89PNG not really"
        if k == 2:                                          # another size: letterboxed
            cells[0] = png_bytes(np.full((14, 40), 200, np.uint8))
        pq.write_table(pa.table({"image": pa.array(cells, pa.binary())}), path / f"f{k}.parquet",
                       row_group_size=4)
    return sum(sizes)


def _local(workdir, src, out, **options):
    canon = Canonicalizer.from_workdir(workdir)
    run_canonicalize(canon, src, out, batch_size=4, progress=False, **options)
    return read_output(out), read_output(out, rejects=True)


def _check_complete(out, n_in):
    """Rows in = rows out + rejects, every row once, schemas exact, manifest complete."""
    table, rejects = read_output(out), read_output(out, rejects=True)
    assert table.schema.equals(OUTPUT_SCHEMA) and rejects.schema.equals(REJECT_SCHEMA)
    rows = table.column("row").to_pylist() + rejects.column("row").to_pylist()
    assert sorted(rows) == list(range(n_in))                 # no row lost, none twice
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["totals"]["rows_in"] == n_in
    assert manifest["totals"]["rows_written"] + manifest["totals"]["rows_rejected"] == n_in
    for p in manifest["parts"]:
        assert p["stop"] - p["start"] == p["rows"] + p["rejects"]
    assert pq.read_table(out).num_rows == table.num_rows     # a plain read sees the same rows
    return table, rejects


# -- without Ray ------------------------------------------------------------------------------

def test_shards_cut_at_parquet_files_and_cover_every_row(tmp_path):
    n = _parquet_dir(tmp_path / "pq")
    shards = plan_shards(ParquetReader(tmp_path / "pq"), rows_per_shard=4)
    assert shards == [Shard(0, 4), Shard(4, 8), Shard(8, 9), Shard(9, 13), Shard(13, 17),
                      Shard(17, 21), Shard(21, 23), Shard(23, 27), Shard(27, 29)]
    assert shards[-1].stop == n and shards[3].part_name == "part-000000000009-000000000013.parquet"
    np.savez(tmp_path / "x.npz", images=_digits(10))
    reader = NpzReader(tmp_path / "x.npz")
    assert plan_shards(reader, rows_per_shard=4) == [Shard(0, 4), Shard(4, 8), Shard(8, 10)]
    got = list(ShardReader(reader, Shard(4, 8)).iter_batches(3, start=4))
    assert [(b.start, b.ids) for b in got] == [(4, ["images[4]", "images[5]", "images[6]"]),
                                               (7, ["images[7]"])]
    with pytest.raises(ValueError, match="rows_per_shard must be a positive integer"):
        plan_shards(reader, rows_per_shard=0)


def test_ledger_commits_shards_in_any_order_and_resumes_only_the_same_run(tmp_path):
    info = {"input": "x", "rows_per_shard": 4}
    ledger = ShardLedger(tmp_path, input_info=info)
    ledger.record({"name": "b", "start": 4, "stop": 8, "rows": 3, "rejects": 1, "rejects_file": None})
    with pytest.raises(ValueError, match=r"rows \(3\) \+ rejects \(0\) != stop - start \(4\)"):
        ledger.record({"name": "a", "start": 0, "stop": 4, "rows": 3, "rejects": 0, "rejects_file": None})
    with pytest.raises(ValueError, match="already committed"):
        ledger.record({"name": "b", "start": 4, "stop": 8, "rows": 4, "rejects": 0, "rejects_file": None})
    ledger.save()
    with pytest.raises(ValueError, match=r"cover rows \[0, 0\) of 8"):
        ledger.finish(total_rows=8)
    (tmp_path / Shard(0, 4).part_name).write_bytes(b"left by a killed worker")
    with pytest.raises(FileExistsError, match="--resume"):
        ShardLedger(tmp_path, input_info=info)
    with pytest.raises(ValueError, match="cannot resume"):
        ShardLedger(tmp_path, input_info={**info, "rows_per_shard": 8}, resume=True)
    again = ShardLedger(tmp_path, input_info=info, resume=True)
    assert again.committed == {Shard(4, 8)}
    assert not (tmp_path / Shard(0, 4).part_name).exists()    # uncommitted part deleted
    again.record({"name": "a", "start": 0, "stop": 4, "rows": 4, "rejects": 0, "rejects_file": None})
    again.finish(total_rows=8)
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert [p["name"] for p in manifest["parts"]] == ["a", "b"] and manifest["complete"]
    assert manifest["totals"] == {"rows_in": 8, "rows_written": 7, "rows_rejected": 1, "parts": 2}


def test_dataset_schema_is_the_output_schema_plus_reason():
    assert DATASET_SCHEMA.names == OUTPUT_SCHEMA.names + ["reason"]
    for f in OUTPUT_SCHEMA:
        assert DATASET_SCHEMA.field(f.name).type == f.type


@pytest.mark.parametrize("flags, message", [
    (["--engine", "ray", "--num-workers", "0"], "num_workers must be a positive integer; got 0"),
    (["--engine", "ray", "--gpus-per-worker", "-1"], "gpus_per_worker must be a non-negative number"),
    (["--engine", "ray", "--rows-per-shard", "0"], "rows_per_shard must be a positive integer; got 0"),
    (["--num-workers", "2", "--gpus-per-worker", "1"], "--num-workers, --gpus-per-worker need(s) --engine ray"),
])
def test_command_rejects_bad_ray_options(workdir, tmp_path, capsys, flags, message):
    np.savez(tmp_path / "x.npz", images=_digits(3))
    code = main(["canonicalize", "--workdir", str(workdir), "--input", str(tmp_path / "x.npz"),
                 "--output", str(tmp_path / "out"), "--no-progress", *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "_manifest.json").exists()


# -- on the local cluster ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_ray_engine_writes_the_local_engines_rows(cluster, workdir, tmp_path, fmt):
    if fmt == "npz":
        n = _npz_with_rejects(tmp_path / "x.npz")
        src, expect_rejects = tmp_path / "x.npz", 2
    else:
        n = _parquet_dir(tmp_path / "pq")
        src, expect_rejects = tmp_path / "pq", 3
    want, want_rejects = _local(workdir, src, tmp_path / "local")
    if fmt == "npz":                    # through the command, on the cluster this process joined
        code = main(["canonicalize", "--engine", "ray", "--workdir", str(workdir), "--input", str(src),
                     "--output", str(tmp_path / "ray"), "--batch-size", "4", "--rows-per-shard", "8",
                     "--num-workers", "2", "--no-progress"])
        assert code == 0
    else:
        summary = run_canonicalize_ray(workdir, src, tmp_path / "ray", batch_size=4, rows_per_shard=4,
                                       num_workers=2, progress=False)
        assert summary["rows_in"] == n and summary["rows_rejected"] == expect_rejects
        assert summary["shards"] == 9 and summary["shards_skipped"] == 0
    got, got_rejects = _check_complete(tmp_path / "ray", n)
    assert got_rejects.num_rows == expect_rejects
    assert got.equals(want)                                   # row for row, PNG bytes included
    assert got_rejects.equals(want_rejects)
    if fmt == "parquet":
        assert got_rejects.column("source_id").to_pylist() == ["f0.parquet#2", "f1.parquet#5",
                                                               "f1.parquet#11"]


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_dataset_api_inside_a_pipeline(cluster, workdir, tmp_path, fmt):
    if fmt == "npz":                    # images as a tensor column
        n, src = _npz_with_rejects(tmp_path / "x.npz"), tmp_path / "x.npz"
    else:                               # images as encoded bytes
        n, src = _parquet_dir(tmp_path / "pq"), tmp_path / "pq"
    want, want_rejects = _local(workdir, src, tmp_path / "local")
    ds = read_dataset(src, rows_per_shard=8)
    ds = ds.filter(lambda r: True)                              # the user's own stage
    out = canonicalize_dataset(ds, workdir, batch_size=4, num_workers=1).materialize()
    assert out.count() == n                                     # one row per input row
    rows, rejects = split_rejects(out)
    rows.write_parquet(str(tmp_path / "rows"))
    rejects.write_parquet(str(tmp_path / "rejects"))
    got = pq.read_table(tmp_path / "rows").sort_by("row")
    got_rejects = pq.read_table(tmp_path / "rejects").sort_by("row")
    assert got.schema.equals(OUTPUT_SCHEMA) and got_rejects.schema.equals(REJECT_SCHEMA)
    assert got.num_rows + got_rejects.num_rows == n
    assert got.equals(want) and got_rejects.equals(want_rejects)


def test_dataset_api_names_the_missing_columns(cluster, workdir):
    with pytest.raises(ValueError, match=r"no column\(s\) \['image', 'row'\]"):
        canonicalize_dataset(ray.data.from_items([{"source_id": "a", "pixels": b""}]), workdir)


def _workers() -> list[psutil.Process]:
    """The Ray worker processes of this module's cluster that hold a CanonicalizeShards actor."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "CanonicalizeShards" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _parts(out) -> int:
    return len(list(out.glob("part-*.parquet")))


def _wait(condition, what, job):
    while not condition():
        assert job.poll() is None, f"the job ended before {what}: {job.stderr.read().decode()[-3000:]}"
        time.sleep(0.005)


def test_worker_killed_mid_job_then_rerun_gives_the_same_table(cluster, workdir, tmp_path):
    """A worker is SIGKILLed mid-job (Ray restarts it and retries its shard), then the driver is
    SIGKILLed (the job fails); the re-run skips the committed shards and completes the table."""
    n, shard = 1200, 4
    np.savez(tmp_path / "x.npz", images=_digits(n, seed=7))
    want, want_rejects = _local(workdir, tmp_path / "x.npz", tmp_path / "local")
    out = tmp_path / "ray"
    job = subprocess.Popen(
        [sys.executable, "-m", "stn_jax.cli", "canonicalize", "--engine", "ray", "--workdir", str(workdir),
         "--input", str(tmp_path / "x.npz"), "--output", str(out), "--batch-size", "4", "--rows-per-shard",
         str(shard), "--num-workers", "2", "--no-progress",
         "--ray-address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: _parts(out) >= 2 and len(_workers()) == 2, "two workers committed shards", job)
        victim = _workers()[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        before = _parts(out)
        _wait(lambda: _parts(out) >= before + 4, "the job went on after the worker died", job)
        job.send_signal(signal.SIGKILL)                          # and now the job fails
    finally:
        job.kill()
        stderr = job.communicate()[1].decode()
    assert job.returncode == -signal.SIGKILL, stderr[-3000:]
    manifest = json.loads((out / "_manifest.json").read_text())
    committed = len(manifest["parts"])
    assert not manifest["complete"] and committed < n // shard

    summary = run_canonicalize_ray(workdir, tmp_path / "x.npz", out, resume=True, batch_size=4,
                                   rows_per_shard=shard, num_workers=2, progress=False)
    assert summary["shards_skipped"] == committed and summary["shards"] == n // shard
    got, got_rejects = _check_complete(out, n)
    assert got.column("row").to_pylist() == list(range(n))    # every row once, in order
    assert got.equals(want) and got_rejects.equals(want_rejects)
    assert sorted(p.name for p in out.glob("part-*")) == [Shard(s, s + shard).part_name
                                                            for s in range(0, n, shard)]
