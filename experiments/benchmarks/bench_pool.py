"""2x2 max-pooling of the zoo's CNNs: flax's ``max_pool`` (``lax.reduce_window``) vs
:func:`stn_jax.pooling.max_pool_2x2` (a reshape; the same values and gradients, bit for bit).

Measured: images/s of the training engine's jitted step (``stn-jax train``'s, data generated on
the device) for the CNN and the ST-CNN (affine) on RTS and TC, once with the package's pooling
and once with flax's ``max_pool`` put in its place, interleaved, recipe ``adam-tuned``'s
optimiser. Only whole steps are timed: a pool's gradient timed alone is several times faster as a
reshape on XLA:CPU, but inside a CNN's step, where XLA fuses it with its neighbours, much of that
gain disappears.

    python -m experiments.benchmarks.bench_pool --out experiments/results/MACHINE/bench_pool.json

Prints each speed-up (reshape over ``reduce_window``) and writes the JSON with the machine and
versions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import flax.linen as nn
import jax

from experiments.benchmarks import record
from experiments.benchmarks.bench_train import ab_engine_row, engine_loop, load_benchmark_mnist
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
        row = ab_engine_row(loops, steps=steps[f"{dataset_name} {model}"], repeats=repeats,
                            dataset=dataset_name, model=model)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved engine repeats")
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--out", default="runs/bench_pool.json",
                        help="result JSON (commit it under experiments/results/<machine>/)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    mnist = load_benchmark_mnist(args.data_dir)
    steps = {"rts cnn": 10, "rts st-cnn": 30, "tc cnn": 4, "tc st-cnn": 10}
    engine = engine_rates(mnist, args.batch_size, steps, args.repeats)
    record.write(args.out, {
        "benchmark": "CNN max-pooling: flax max_pool (reduce_window) vs stn_jax.pooling.max_pool_2x2 (reshape)",
        "batch_size": args.batch_size, "mnist_source": mnist.source,
        "engine": engine,
        "machine": record.machine(load_before),
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    })


if __name__ == "__main__":
    main()
