"""Throughput of bulk canonicalisation (``stn_jax.canonicalize``) on this machine.

Cases (each: a Parquet file of encoded images -> ``run_canonicalize`` -> Parquet parts):

- ``28x28 png -> st-cnn r``: real MNIST test digits as 28x28 greyscale PNGs through an ST-CNN for
  the R dataset (input 28x28x1, no resize).
- ``224x224 jpeg -> st-cnn 224x224x3``: 224x224 RGB JPEGs (MNIST digits upscaled, tinted and noised)
  through the same ST-CNN architecture initialised at 224x224x3 (no resize; the model is the cost).
- ``224x224 jpeg -> st-cnn rts``: the same JPEGs letterboxed to an RTS ST-CNN (42x42x1; decode
  and resize are the cost).

Per case it reports the end-to-end rate of a full run after a warm-up run (compilation excluded)
and the rates of the stages on their own: read + decode + resize, the jitted model
(``Canonicalizer.apply``), and PNG encoding + Parquet writing. Models are identity-initialised
(throughput does not depend on the weights).

    python -m experiments.benchmarks.bench_canonicalize --out experiments/results/MACHINE/bench_canonicalize.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from experiments.benchmarks import record as record_lib


def _mnist_digits(n: int, data_dir: str | None) -> np.ndarray:
    from stn_jax.data import load_mnist

    mnist = load_mnist("auto", data_dir=data_dir)
    return np.asarray(mnist.test_images[:n]), mnist.source


def _encode(arrays, fmt: str, **kw) -> list[bytes]:
    from PIL import Image

    out = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    return out


def _rgb224(digits: np.ndarray, seed: int = 0) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((len(digits), 224, 224, 3), np.uint8)
    for i, d in enumerate(digits):
        big = np.asarray(Image.fromarray(d).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        img = big[..., None] * tint + rng.normal(0, 12, (224, 224, 3)).astype(np.float32)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _write_parquet(path: str, blobs: list[bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [f"img{i}" for i in range(len(blobs))],
                             "image": pa.array(blobs, pa.binary())}), path, row_group_size=1024)


def _canonicalizer(dataset: str, input_shape):
    import jax

    from stn_jax.canonicalize import Canonicalizer
    from stn_jax.models import create_model

    model = create_model("st-cnn", dataset=dataset, transform="affine")
    x = np.zeros((1,) + tuple(input_shape), np.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    return Canonicalizer.from_model(model, variables, input_shape=input_shape)


def _bench_case(name, canon, parquet, batch_size, tmp, repeats_apply=5):
    from stn_jax.canonicalize import ParquetReader, canonicalize_batches, decode_image, run_canonicalize
    from stn_jax.canonicalize.writer import PartWriter

    reader = ParquetReader(parquet, id_column="id")
    n = len(reader)
    # warm-up: compile on one batch
    next(iter(canonicalize_batches(canon, reader, batch_size=batch_size)))
    # end to end
    t0 = time.perf_counter()
    summary = run_canonicalize(canon, reader, os.path.join(tmp, name), batch_size=batch_size,
                               progress=False)
    e2e = time.perf_counter() - t0
    assert summary["rows_written"] == n, summary
    # stage: read + decode (+ resize)
    t0 = time.perf_counter()
    decoded = []
    for raw in reader.iter_batches(batch_size):
        decoded.append(np.stack([decode_image(p, canon.input_shape) for p in raw.payloads]))
    t_decode = time.perf_counter() - t0
    # stage: jitted model on a full padded batch (median of repeats over the whole set)
    batch = np.zeros((canon.padded_size(batch_size),) + canon.input_shape, np.float32)
    times = []
    for _ in range(repeats_apply):
        t0 = time.perf_counter()
        for d in decoded:
            batch[:len(d)] = d
            out = canon.apply(batch)
        times.append(time.perf_counter() - t0)
    t_apply = float(np.median(times))
    # stage: PNG encode + Parquet write
    w = PartWriter(os.path.join(tmp, name + "-write"), input_info={"bench": name})
    t0 = time.perf_counter()
    lo = 0
    for d in decoded:
        k = len(d)
        w.write_part(start=lo, stop=lo + k, rows=np.arange(lo, lo + k), source_ids=[""] * k,
                     images=out["warped"][:k], transform="affine",
                     params=out["params"][:k], predictions=out["probs"][:k].argmax(-1),
                     confidences=out["probs"][:k].max(-1), rejects=[])
        lo += k
    t_write = time.perf_counter() - t0
    return {"case": name, "images": n, "batch_size": batch_size, "input_shape": list(canon.input_shape),
            "end_to_end_images_per_s": n / e2e, "end_to_end_s": e2e,
            "decode_images_per_s": n / t_decode, "model_images_per_s": n / t_apply,
            "write_images_per_s": n / t_write, "parts": summary["parts"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_canonicalize.json",
                   help="result JSON (commit it under experiments/results/<machine>/)")
    p.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    p.add_argument("--n28", type=int, default=4096, help="28x28 images")
    p.add_argument("--n224", type=int, default=256, help="224x224 images")
    p.add_argument("--batch-28", type=int, default=256)
    p.add_argument("--batch-224", type=int, default=32)
    args = p.parse_args(argv)

    import flax
    import jax
    import PIL
    import pyarrow

    load_before = os.getloadavg()
    digits, source = _mnist_digits(max(args.n28, args.n224), args.data_dir if os.path.isdir(
        args.data_dir) else None)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pq28 = os.path.join(tmp, "mnist28.parquet")
        _write_parquet(pq28, _encode(digits[:args.n28], "PNG"))
        pq224 = os.path.join(tmp, "rgb224.parquet")
        _write_parquet(pq224, _encode(_rgb224(digits[:args.n224]), "JPEG", quality=90))
        cases = [
            ("28x28 png -> st-cnn r (28x28x1)", _canonicalizer("r", (28, 28, 1)), pq28, args.batch_28),
            ("224x224 jpeg -> st-cnn (224x224x3)", _canonicalizer("r", (224, 224, 3)), pq224,
             args.batch_224),
            ("224x224 jpeg -> st-cnn rts (42x42x1, letterboxed)", _canonicalizer("rts", (42, 42, 1)),
             pq224, args.batch_224),
        ]
        for name, canon, path, bs in cases:
            r = _bench_case(name, canon, path, bs, tmp)
            print(json.dumps(r), flush=True)
            results.append(r)
    record = {
        "script": "experiments/benchmarks/bench_canonicalize.py", "argv": sys.argv[1:],
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": record_lib.machine(load_before),
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                     "flax": flax.__version__, "pyarrow": pyarrow.__version__, "pillow": PIL.__version__},
        "data": {"mnist_source": source, "note": "224x224 images: MNIST digits upscaled, tinted, "
                 "Gaussian noise sigma 12, JPEG quality 90"},
        "models": "identity-initialised zoo st-cnn (throughput does not depend on the weights)",
        "results": results,
    }
    record_lib.write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
