"""End-to-end bulk canonicalisation with a stand-in model: folder / npz / Parquet round trips,
row accounting, rejects, atomic parts, resume after an interruption and after a real SIGKILL."""

import io
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _canonicalize_helpers import png_bytes, random_digits
from PIL import Image

import stn_jax
from stn_jax.canonicalize import (
    OUTPUT_SCHEMA,
    REJECT_SCHEMA,
    Canonicalizer,
    NpzReader,
    canonicalize_batches,
    decode_png,
    read_output,
    run_canonicalize,
)
from stn_jax.canonicalize import writer as writer_mod

SHAPE = (8, 8, 1)


def standin(theta=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), *, classes=3):
    """A stand-in model: a fixed affine warp (identity by default) and a linear classifier."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(int(np.prod(SHAPE)), classes)), jnp.float32)
    variables = {"theta": jnp.asarray(theta, jnp.float32), "w": w}

    def apply_fn(v, images):
        theta = jnp.broadcast_to(v["theta"], (images.shape[0], 2, 3))
        warped = stn_jax.warp(images, theta)
        return {"warped": warped, "params": theta.reshape(-1, 6),
                "logits": images.reshape(images.shape[0], -1) @ v["w"]}

    return Canonicalizer(apply_fn, variables, input_shape=SHAPE, transform="affine"), variables


def _digits(n, seed=0):
    return random_digits(n, *SHAPE[:2], seed=seed)


def test_canonicalizer_is_data_parallel_and_pads():
    canon, v = standin()
    assert canon.num_devices == len(jax.local_devices()) == 8      # conftest fakes 8 CPU devices
    images = _digits(5).astype(np.float32)[..., None] / 255
    out = canon.apply(images)
    assert out["warped"].shape == (5,) + SHAPE and out["params"].shape == (5, 6)
    np.testing.assert_allclose(out["warped"], images, atol=1e-6)
    ref = jax.nn.softmax(images.reshape(5, -1) @ np.asarray(v["w"]))
    np.testing.assert_allclose(out["probs"], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"images must be \(B, 8, 8, 1\)"):
        canon.apply(np.zeros((2, 9, 8, 1), np.float32))
    with pytest.raises(ValueError, match="input_shape"):
        Canonicalizer(lambda v, x: {}, {}, input_shape=(8, 8), transform="affine")


def test_python_api_iterates_batches_and_accounts_every_row(tmp_path):
    digits = _digits(7)
    payload = np.concatenate([digits.astype(np.float32) / 255, np.full((1, 8, 8), np.nan, np.float32)])
    np.savez(tmp_path / "x.npz", images=payload)
    canon, _ = standin()
    batches = list(canonicalize_batches(canon, tmp_path / "x.npz", batch_size=3))
    assert [(b.start, b.stop) for b in batches] == [(0, 3), (3, 6), (6, 8)]
    assert sum(len(b.rows) + len(b.rejects) for b in batches) == 8
    rows = np.concatenate([b.rows for b in batches])
    np.testing.assert_array_equal(rows, np.arange(7))
    imgs = np.concatenate([b.images for b in batches])
    np.testing.assert_allclose(imgs[..., 0], digits / np.float32(255), atol=1e-6)
    assert batches[-1].rejects[0].row == 7 and "NaN" in batches[-1].rejects[0].reason
    assert batches[0].predictions.dtype == np.int32 and batches[0].confidences.shape == (3,)
    # starting part-way
    later = list(canonicalize_batches(canon, NpzReader(tmp_path / "x.npz"), batch_size=3, start=4,
                                      prefetch=0))
    assert [b.start for b in later] == [4, 7] and later[0].source_ids[0] == "images[4]"


def test_nonfinite_model_output_is_rejected(tmp_path):
    np.savez(tmp_path / "x.npz", images=_digits(3))
    canon, _ = standin(theta=((np.nan, 0, 0), (0, 1, 0)))
    (b,) = canonicalize_batches(canon, tmp_path / "x.npz", batch_size=4)
    assert len(b.rows) == 0 and [r.row for r in b.rejects] == [0, 1, 2]
    assert all("not finite" in r.reason for r in b.rejects)


def _check_output(out, n_in, expect_rejects=0):
    table = read_output(out)
    rejects = read_output(out, rejects=True)
    assert table.schema.equals(OUTPUT_SCHEMA) and rejects.schema.equals(REJECT_SCHEMA)
    assert table.num_rows + rejects.num_rows == n_in
    assert rejects.num_rows == expect_rejects
    manifest = json.load(open(os.path.join(out, "_manifest.json")))
    assert manifest["complete"]
    for p in manifest["parts"]:
        assert p["stop"] - p["start"] == p["rows"] + p["rejects"]
    # a plain pyarrow read of the directory sees exactly the committed rows, documented schema
    plain = pq.read_table(out)
    assert plain.num_rows == table.num_rows
    assert sorted(table.column("row").to_pylist() + rejects.column("row").to_pylist()) == list(range(n_in))
    return table, rejects


def test_folder_round_trip_with_rejects(tmp_path):
    digits = _digits(9)
    src = tmp_path / "src"
    src.mkdir()
    for i, d in enumerate(digits):
        (src / f"{i:02d}.png").write_bytes(png_bytes(d))
    (src / "03.png").write_bytes(b"")                       # empty
    (src / "05.png").write_bytes(b"\x89PNG garbage")        # corrupt
    big = np.zeros((16, 32), np.uint8)                     # other size: letterboxed
    big[:, 8:24] = 255
    (src / "10.png").write_bytes(png_bytes(big))
    canon, _ = standin()
    summary = run_canonicalize(canon, src, tmp_path / "out", batch_size=4, progress=False,
                               png_dir=tmp_path / "pngs")
    assert summary["rows_in"] == 10 and summary["rows_written"] == 8 and summary["rows_rejected"] == 2
    assert summary["parts"] == 3 and summary["devices"] == 8
    table, rejects = _check_output(tmp_path / "out", 10, expect_rejects=2)
    assert rejects.to_pydict()["source_id"] == ["03.png", "05.png"]
    reasons = rejects.to_pydict()["reason"]
    assert "empty" in reasons[0] and "undecodable" in reasons[1]
    d = table.to_pydict()
    assert d["source_id"][:3] == ["00.png", "01.png", "02.png"]
    assert set(d["transform"]) == {"affine"} and d["params"][0] == [1, 0, 0, 0, 1, 0]
    for sid, png in zip(d["source_id"][:-1], d["image_png"][:-1], strict=False):  # identity warp: exact
        i = int(sid[:2])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), digits[i])
    letterboxed = decode_png(d["image_png"][-1])[:, :, 0]
    assert letterboxed[2:6, 3:5].min() > 0.99                  # 16x32 -> 4x8, rows 2..5
    assert letterboxed[:2].max() == 0.0 and letterboxed[6:].max() == 0.0
    assert sorted(os.listdir(tmp_path / "pngs")) == [f"{r:08d}.png" for r in d["row"]]
    assert all(0 <= p < 3 for p in d["prediction"]) and all(0 < c <= 1 for c in d["confidence"])


def test_npz_and_parquet_round_trip_agree(tmp_path):
    digits = _digits(11, seed=3)
    np.savez_compressed(tmp_path / "x.npz", images=digits)
    pngs = [png_bytes(d) for d in digits]
    pngs[4] = None                                          # a null cell
    pq.write_table(pa.table({"id": [f"k{i}" for i in range(11)], "bytes": pngs}),
                   tmp_path / "x.parquet", row_group_size=4)
    canon, _ = standin(theta=((0.5, 0, 0.25), (0, 0.5, 0)))  # a real warp this time
    run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "o1", batch_size=4, progress=False)
    run_canonicalize(canon, tmp_path / "x.parquet", tmp_path / "o2", batch_size=5, progress=False,
                     image_column="bytes", id_column="id")
    t1, _ = _check_output(tmp_path / "o1", 11)
    t2, r2 = _check_output(tmp_path / "o2", 11, expect_rejects=1)
    assert r2.to_pydict() == {"row": [4], "source_id": ["k4"], "reason": ["missing image (null)"]}
    keep = [i for i in range(11) if i != 4]
    a, b = t1.to_pydict(), t2.to_pydict()
    assert [a["image_png"][i] for i in keep] == b["image_png"]
    assert [a["prediction"][i] for i in keep] == b["prediction"]
    assert a["params"][0] == pytest.approx([0.5, 0, 0.25, 0, 0.5, 0])
    expect = np.asarray(stn_jax.warp(digits[:, :, :, None].astype(np.float32) / 255,
                                     np.broadcast_to(np.float32([[0.5, 0, 0.25], [0, 0.5, 0]]),
                                                     (11, 2, 3))))
    got = np.stack([decode_png(p) for p in a["image_png"]])
    np.testing.assert_allclose(got, expect, atol=0.5 / 255 + 1e-6)


def test_output_dir_guard_and_resume_fingerprint(tmp_path):
    np.savez(tmp_path / "x.npz", images=_digits(3))
    np.savez(tmp_path / "y.npz", images=_digits(4))
    canon, _ = standin()
    run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "o", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        run_canonicalize(canon, tmp_path / "y.npz", tmp_path / "o", progress=False, resume=True)
    again = run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "o", progress=False, resume=True)
    assert again["resumed_from"] == 3 and again["rows_in"] == 3 and again["rows_written"] == 3


class _Crash(RuntimeError):
    pass


def _all_rows(out):
    t, r = read_output(out), read_output(out, rejects=True)
    return t.to_pydict(), r.to_pydict()


@pytest.mark.parametrize("where", ["reader", "before_manifest"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, where):
    data = _digits(23, seed=5).astype(np.float32) / 255
    data[[2, 17]] = np.nan                                  # two rejects
    np.savez(tmp_path / "x.npz", images=data)
    canon, _ = standin(theta=((0.9, 0.1, 0.0), (-0.1, 0.9, 0.05)))
    ref = run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "ref", batch_size=4, progress=False)

    if where == "reader":                       # input stream dies while reading rows 12..15
        orig = NpzReader.iter_batches

        def dying(self, batch_size, *, start=0):
            for b in orig(self, batch_size, start=start):
                if b.start >= 12:
                    raise _Crash("disk went away")
                yield b
        monkeypatch.setattr(NpzReader, "iter_batches", dying)
    else:                                       # crash after part 3 hit disk, before its ledger entry
        orig = writer_mod.PartWriter._write_manifest
        calls = {"n": 0}

        def dying(self):
            calls["n"] += 1
            if calls["n"] == 4:
                raise _Crash("power cut")
            orig(self)
        monkeypatch.setattr(writer_mod.PartWriter, "_write_manifest", dying)
    with pytest.raises(_Crash):
        run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "out", batch_size=4, progress=False)
    monkeypatch.undo()
    manifest = json.load(open(tmp_path / "out" / "_manifest.json"))
    assert not manifest["complete"] and manifest["parts"][-1]["stop"] == 12
    if where == "before_manifest":
        assert os.path.exists(tmp_path / "out" / "part-00003.parquet")   # orphan on disk
    resumed = run_canonicalize(canon, tmp_path / "x.npz", tmp_path / "out", batch_size=4,
                               progress=False, resume=True)
    assert resumed["resumed_from"] == 12
    assert {k: resumed[k] for k in ("rows_in", "rows_written", "rows_rejected", "parts")} == \
        {k: ref[k] for k in ("rows_in", "rows_written", "rows_rejected", "parts")} == \
        {"rows_in": 23, "rows_written": 21, "rows_rejected": 2, "parts": 6}
    assert _all_rows(tmp_path / "out") == _all_rows(tmp_path / "ref")
    assert pq.read_table(tmp_path / "out").num_rows == 21


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_canonicalize_run import standin
    from stn_jax.canonicalize import run_canonicalize, writer
    kill_at = int(sys.argv[3])
    orig, calls = writer.PartWriter._write_manifest, [0]
    def write_manifest(self):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)          # a real, uncatchable kill
        orig(self)
    writer.PartWriter._write_manifest = write_manifest
    canon, _ = standin(theta=((0.8, 0.0, 0.1), (0.0, 0.8, -0.1)))
    run_canonicalize(canon, sys.argv[1], sys.argv[2], batch_size=5, progress=False,
                     resume=os.path.exists(os.path.join(sys.argv[2], "_manifest.json")))
""")


def test_sigkilled_run_resumes_to_identical_output(tmp_path):
    np.savez(tmp_path / "x.npz", images=_digits(27, seed=9))
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = dict(os.environ)                       # same 8 fake devices as this process

    def run(out, kill_at):
        return subprocess.run([sys.executable, str(script), str(tmp_path / "x.npz"), str(out),
                               str(kill_at)], env=env, capture_output=True, text=True)

    killed = run(tmp_path / "out", 3)            # dies while committing part 2 (rows 10..14)
    assert killed.returncode == -9, killed.stderr
    assert json.load(open(tmp_path / "out" / "_manifest.json"))["parts"][-1]["stop"] == 10
    resumed = run(tmp_path / "out", 0)
    assert resumed.returncode == 0, resumed.stderr
    clean = run(tmp_path / "ref", 0)             # the same program, uninterrupted
    assert clean.returncode == 0, clean.stderr
    a, b = _all_rows(tmp_path / "out"), _all_rows(tmp_path / "ref")
    assert a[0]["row"] == list(range(27))
    for col in a[0]:
        assert a[0][col] == b[0][col], (col, killed.stderr[-2000:], resumed.stderr[-2000:])
    assert a == b


def test_atomic_write_keeps_the_old_file_and_no_temporary_when_writing_fails(tmp_path):
    path = tmp_path / "part.bin"
    writer_mod._atomic_write_bytes(str(path), b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        writer_mod._atomic_write(str(path), fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.bin"]
    writer_mod._atomic_write_table(str(path), pa.table({"x": [1, 2]}))
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]
