"""Convolution implementations of the zoo's CNN classifiers: XLA's vs im2col (same sums).

Two levels, both measured in the same run, interleaved:

* layer: forward + gradient (input and kernel) of each classifier conv of the paper
  architecture's CNN and ST-CNN on RTS and TC (batch ``--batch-size``), with
  ``lax.conv_general_dilated`` and with :func:`stn_jax.models.conv.im2col_conv_general_dilated`
  (the CNN's first conv needs only the kernel gradient: its input is the data);
* engine: images/s of the training engine's jitted step (``stn-jax train``'s, data generated on
  the device) for ``cnn`` and ``st-cnn`` (affine) on RTS and TC with ``conv="xla"`` and
  ``conv="im2col"``, recipe ``adam-tuned``'s optimiser.

    python -m experiments.benchmarks.bench_conv --out experiments/results/MACHINE/bench_conv.json

Prints each ratio (im2col speed over XLA's) and writes the JSON with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from experiments.benchmarks.bench_train import ab_engine_row, engine_loop, load_benchmark_mnist, machine_record
from stn_jax.models.conv import im2col_conv_general_dilated

# (label, input side, in channels, out channels, kernel, input needs a gradient)
_LAYERS = (
    ("rts cnn conv1", 42, 1, 16, 9, False),
    ("rts cnn conv2", 17, 16, 212, 7, True),
    ("rts st-cnn conv1", 21, 1, 16, 9, True),
    ("rts st-cnn conv2", 7, 16, 0, 7, True),
    ("tc cnn conv1", 60, 1, 16, 9, False),
    ("tc cnn conv2", 26, 16, 267, 7, True),
    ("tc st-cnn conv1", 30, 1, 16, 9, True),
    ("tc st-cnn conv2", 11, 16, 0, 7, True),
)


def _widths(model: str, dataset: str) -> tuple[int, int]:
    from stn_jax.models import default_widths
    return default_widths(model, dataset, "affine")["features"]


def _time_ms(fn: Any, *args: Any, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def layer_times(batch: int, reps: int) -> list[dict[str, Any]]:
    """Median ms of forward and of forward + gradients, per layer and implementation."""
    dn = ("NHWC", "HWIO", "NHWC")
    impls = {"xla": lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn),
             "im2col": lambda x, w: im2col_conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)}
    rows = []
    for label, side, c_in, c_out, k, input_grad in _LAYERS:
        dataset, model = label.split()[:2]
        c_out = c_out or _widths(model, dataset)[1]
        x = jax.random.normal(jax.random.PRNGKey(0), (batch, side, side, c_in))
        w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (k, k, c_in, c_out))
        row: dict[str, Any] = {"layer": label, "input": [batch, side, side, c_in],
                               "kernel": [k, k, c_in, c_out], "input_gradient": input_grad}
        for name, conv in impls.items():
            loss = lambda x, w, conv=conv: jnp.sum(jnp.tanh(conv(x, w)))  # noqa: E731
            grad = jax.jit(jax.grad(loss, argnums=(0, 1) if input_grad else 1))
            row[f"{name}_forward_ms"] = _time_ms(jax.jit(loss), x, w, reps=reps)
            row[f"{name}_train_ms"] = _time_ms(grad, x, w, reps=reps)
        row["train_speedup"] = row["xla_train_ms"] / row["im2col_train_ms"]
        print(f"{label:18s} {row['kernel']}: forward+grad xla {row['xla_train_ms']:.1f} ms, "
              f"im2col {row['im2col_train_ms']:.1f} ms ({row['train_speedup']:.2f}x)", flush=True)
        rows.append(row)
    return rows


def engine_rates(mnist: Any, batch: int, steps: dict[str, int], repeats: int) -> list[dict[str, Any]]:
    """Median engine images/s per (dataset, model) and implementation."""
    from stn_jax.data import make_dataset
    from stn_jax.train import TrainConfig, make_mesh

    rows = []
    for dataset_name in ("rts", "tc"):
        dataset = make_dataset(dataset_name, mnist)
        for model in ("cnn", "st-cnn"):
            loops = []
            for conv in ("xla", "im2col"):
                config = TrainConfig(dataset=dataset_name, model=model, conv=conv, batch_size=batch,
                                     optimizer="adam", lr=0.01, schedule="cosine", warmup_steps=200,
                                     clip_norm=1.0, loc_lr_mult=1.0, identity_penalty=0.01)
                loop = engine_loop(config, dataset, make_mesh(), name=conv)
                loop.run(1)
                loops.append(loop)
            row = ab_engine_row(loops, steps=steps[f"{dataset_name} {model}"], repeats=repeats,
                                dataset=dataset_name, model=model)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--layer-reps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved engine repeats")
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--out", default="runs/bench_conv.json",
                        help="result JSON (commit it under experiments/results/<machine>/)")
    args = parser.parse_args()

    mnist = load_benchmark_mnist(args.data_dir)
    layers = layer_times(args.batch_size, args.layer_reps)
    steps = {"rts cnn": 10, "rts st-cnn": 30, "tc cnn": 4, "tc st-cnn": 10}
    engine = engine_rates(mnist, args.batch_size, steps, args.repeats)
    result = {
        "benchmark": "CNN classifier convolutions: XLA's vs im2col (patches @ kernel)",
        "batch_size": args.batch_size, "mnist_source": mnist.source,
        "layers": layers, "engine": engine,
        "machine": machine_record(),
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
