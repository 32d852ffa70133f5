"""2x2 max-pooling of the zoo's CNNs: flax's ``max_pool`` (``lax.reduce_window``) vs
:func:`stn_jax.pooling.max_pool_2x2` (a reshape; the same values and gradients, bit for bit).

Two levels, both measured in the same run, interleaved:

* layer: forward + input gradient of every max-pool the CNN and the ST-CNN (affine) run on RTS
  and TC (classifier and localization net; the shapes are read off the models themselves),
  batch ``--batch-size``;
* engine: images/s of the training engine's jitted step (``stn-jax train``'s, data generated on
  the device) for the same four models, once with the package's pooling and once with flax's
  ``max_pool`` put in its place, recipe ``adam-tuned``'s optimiser.

    python -m experiments.benchmarks.bench_pool --out experiments/results/MACHINE/bench_pool.json

Prints each speed-up (reshape over ``reduce_window``) and writes the JSON with the machine and
versions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.benchmarks import record
from experiments.benchmarks.bench_train import engine_loop, interleaved_rates, load_benchmark_mnist
from stn_jax.pooling import max_pool_2x2

MODELS = (("rts", "cnn"), ("rts", "st-cnn"), ("tc", "cnn"), ("tc", "st-cnn"))
# every module that calls max_pool_2x2 from its own namespace
_CALLERS = ("stn_jax.models.zoo", "stn_jax.linen")


def reduce_window_pool(x: jax.Array) -> jax.Array:
    """flax's 2x2 max-pool, stride 2, 'SAME' padding: what the package computed before."""
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


@contextlib.contextmanager
def pooling(fn: Callable[[jax.Array], jax.Array]) -> Iterator[None]:
    """Models traced inside this context pool with ``fn``."""
    with contextlib.ExitStack() as stack:
        for module in _CALLERS:
            stack.enter_context(mock.patch(f"{module}.max_pool_2x2", fn))
        yield


def pool_shapes(dataset: str, model: str, batch: int) -> list[tuple[int, ...]]:
    """Input shapes of the model's max-pools, in call order (localization net first)."""
    from stn_jax.models import DATASET_SPECS, create_model

    shapes: list[tuple[int, ...]] = []

    def recorder(x: jax.Array) -> jax.Array:
        shapes.append(tuple(x.shape))
        return max_pool_2x2(x)

    net = create_model(model, dataset=dataset)
    images = jnp.zeros((batch, *DATASET_SPECS[dataset].input_shape), jnp.float32)
    with pooling(recorder):
        jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), images, train=False))
    return shapes


def _time_ms(fn: Any, x: jax.Array, *, reps: int) -> float:
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def layer_times(batch: int, reps: int) -> list[dict[str, Any]]:
    """Median ms of forward + input gradient per pool and implementation."""
    impls = {"reduce_window": reduce_window_pool, "reshape": max_pool_2x2}
    rows = []
    for dataset, model in MODELS:
        for i, shape in enumerate(pool_shapes(dataset, model, batch)):
            x = jax.random.normal(jax.random.PRNGKey(i), shape)
            row: dict[str, Any] = {"dataset": dataset, "model": model, "pool": i, "input": list(shape)}
            for name, pool in impls.items():
                grad = jax.jit(jax.grad(lambda x, pool=pool: jnp.sum(jnp.tanh(pool(x)))))
                row[f"{name}_train_ms"] = _time_ms(grad, x, reps=reps)
            row["speedup"] = row["reduce_window_train_ms"] / row["reshape_train_ms"]
            print(f"{dataset} {model} pool {i} {shape}: reduce_window {row['reduce_window_train_ms']:.1f} ms, "
                  f"reshape {row['reshape_train_ms']:.1f} ms ({row['speedup']:.2f}x)", flush=True)
            rows.append(row)
    return rows


def engine_rates(mnist: Any, batch: int, steps: dict[str, int], repeats: int) -> list[dict[str, Any]]:
    """Median engine images/s per (dataset, model) and pooling."""
    from stn_jax.data import make_dataset
    from stn_jax.train import TrainConfig, make_mesh

    rows = []
    for dataset_name, model in MODELS:
        dataset = make_dataset(dataset_name, mnist)
        config = TrainConfig(dataset=dataset_name, model=model, batch_size=batch, optimizer="adam",
                             lr=0.01, schedule="cosine", warmup_steps=200, clip_norm=1.0,
                             loc_lr_mult=1.0, identity_penalty=0.01)
        loops = []
        for name, pool in (("reduce_window", reduce_window_pool), ("reshape", max_pool_2x2)):
            with pooling(pool):  # the step is traced and compiled by its first call
                loop = engine_loop(config, dataset, make_mesh(), name=name)
                loop.run(1)
            loops.append(loop)
        n = steps[f"{dataset_name} {model}"]
        rates = interleaved_rates(loops, steps=n, repeats=repeats)
        med = {k: statistics.median(v) for k, v in rates.items()}
        row = {"dataset": dataset_name, "model": model, "steps_per_repeat": n,
               "images_per_s_median": med, "images_per_s_all": rates,
               "speedup": med["reshape"] / med["reduce_window"]}
        print(f"engine {dataset_name} {model}: reduce_window {med['reduce_window']:,.0f} img/s, reshape "
              f"{med['reshape']:,.0f} img/s ({row['speedup']:.2f}x)", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--layer-reps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved engine repeats")
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--out", default="runs/bench_pool.json",
                        help="result JSON (commit it under experiments/results/<machine>/)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    mnist = load_benchmark_mnist(args.data_dir)
    layers = layer_times(args.batch_size, args.layer_reps)
    steps = {"rts cnn": 10, "rts st-cnn": 30, "tc cnn": 4, "tc st-cnn": 10}
    engine = engine_rates(mnist, args.batch_size, steps, args.repeats)
    record.write(args.out, {
        "benchmark": "CNN max-pooling: flax max_pool (reduce_window) vs stn_jax.pooling.max_pool_2x2 (reshape)",
        "batch_size": args.batch_size, "mnist_source": mnist.source,
        "layers": layers, "engine": engine,
        "machine": record.machine(load_before),
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    })


if __name__ == "__main__":
    main()
