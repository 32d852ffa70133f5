"""Training throughput: our ST-CNN on RTS (stn_jax engine) vs the same model and loop in PyTorch.

Same architecture (the zoo's ``st-cnn`` / ``rts`` / ``affine``: localization conv5x5(20)-pool-
conv5x5(20)-pool-dense20-regression6 -> affine grid_sample -> avgpool2 -> conv9x9(16)-pool-
conv7x7(64)-pool-dense10), same batch, same optimiser (SGD, momentum 0.9, lr 0.01, localization
lr x0.1), same input data, in the same process on the same device (CPU here).

Measured (images/s, median of interleaved repeats, each ``--steps`` steps after warm-up):
  jax_engine   the engine's jitted step (make_train_fn): batch generated *on device* by the RTS
               generator inside the step (what `stn-jax train` runs);
  jax_step     the pure train_step on one fixed pre-made batch (model + optimiser only);
  torch_step   the PyTorch equivalent on the same fixed batch.

    python -m experiments.benchmarks.bench_train --out experiments/results/MACHINE/bench_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime

import jax
import jax.numpy as jnp
import numpy as np


def torch_model(torch):
    nn, F = torch.nn, torch.nn.functional

    class STCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc1 = nn.Conv2d(1, 20, 5, padding=2)
            self.loc2 = nn.Conv2d(20, 20, 5, padding=2)
            self.loc_fc = nn.Linear(20 * 11 * 11, 20)
            self.reg = nn.Linear(20, 6)
            nn.init.zeros_(self.reg.weight)
            with torch.no_grad():
                self.reg.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
            self.c1 = nn.Conv2d(1, 16, 9, padding=4)
            self.c2 = nn.Conv2d(16, 64, 7, padding=3)
            self.fc = nn.Linear(64 * 6 * 6, 10)

        def forward(self, x):                      # x (N, 1, 42, 42)
            h = F.relu(F.max_pool2d(self.loc1(x), 2, ceil_mode=True))
            h = F.relu(F.max_pool2d(self.loc2(h), 2, ceil_mode=True))
            h = F.relu(self.loc_fc(h.flatten(1)))
            theta = self.reg(h).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            y = F.avg_pool2d(y, 2)
            y = F.relu(F.max_pool2d(self.c1(y), 2, ceil_mode=True))
            y = F.relu(F.max_pool2d(self.c2(y), 2, ceil_mode=True))
            return self.fc(y.flatten(1))

    return STCNN()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--out", default="runs/bench_train.json",
                        help="result JSON (commit it under experiments/results/<machine>/)")
    args = parser.parse_args()

    import torch

    from stn_jax.data import load_mnist, make_dataset
    from stn_jax.models import count_params, create_model
    from stn_jax.train import TrainConfig, create_state, make_optimizer, parallel, train_step
    from stn_jax.train.loop import _accum_zeros, make_train_fn

    source = "idx" if os.path.isdir(args.data_dir) else "sample"
    mnist = load_mnist(source, data_dir=args.data_dir if source == "idx" else None)
    dataset = make_dataset("rts", mnist)
    config = TrainConfig(dataset="rts", model="st-cnn", transform="affine", batch_size=args.batch_size,
                         lr=0.01, momentum=0.9, loc_lr_mult=0.1)
    model = create_model("st-cnn", dataset="rts", transform="affine")
    mesh = parallel.make_mesh()
    params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 42, 42, 1)), train=False))(jax.random.PRNGKey(0))["params"]
    tx = make_optimizer(config, params)
    state0 = parallel.replicate(create_state(model, params, tx), mesh)

    engine = make_train_fn(config, dataset, mesh)
    data_key, dropout_key = parallel.replicate((jax.random.PRNGKey(1), jax.random.PRNGKey(2)), mesh)
    images, labels = jax.jit(dataset.train_batch, static_argnums=1)(jax.random.PRNGKey(3), args.batch_size)
    images, labels = jax.block_until_ready((images, labels))
    step = jax.jit(train_step, donate_argnums=0)

    tmodel = torch_model(torch)
    loc = [p for n, p in tmodel.named_parameters() if n.startswith(("loc", "reg"))]
    rest = [p for n, p in tmodel.named_parameters() if not n.startswith(("loc", "reg"))]
    opt = torch.optim.SGD([{"params": rest, "lr": 0.01}, {"params": loc, "lr": 0.001}], lr=0.01, momentum=0.9)
    tx_images = torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())
    tx_labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
    n_torch = sum(p.numel() for p in tmodel.parameters())
    n_jax = count_params({"params": params})
    assert n_torch == n_jax, (n_torch, n_jax)

    def run_engine(n):
        s, a = jax.tree.map(jnp.copy, state0), parallel.replicate(_accum_zeros(), mesh)
        s, a = engine(s, a, data_key, dropout_key)          # compile/warm-up
        jax.block_until_ready(a)
        t = time.perf_counter()
        for _ in range(n):
            s, a = engine(s, a, data_key, dropout_key)
        jax.block_until_ready(a)
        return n * args.batch_size / (time.perf_counter() - t)

    def run_step(n):
        s = jax.tree.map(jnp.copy, state0)
        key = jax.random.PRNGKey(0)
        s, m = step(s, images, labels, key)
        jax.block_until_ready(m)
        t = time.perf_counter()
        for _ in range(n):
            s, m = step(s, images, labels, key)
        jax.block_until_ready(m)
        return n * args.batch_size / (time.perf_counter() - t)

    def run_torch(n):
        def one():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(tx_images), tx_labels)
            loss.backward()
            opt.step()
        one()
        t = time.perf_counter()
        for _ in range(n):
            one()
        return n * args.batch_size / (time.perf_counter() - t)

    rates = {"jax_engine": [], "jax_step": [], "torch_step": []}
    for r in range(args.repeats):
        for name, fn in (("jax_engine", run_engine), ("jax_step", run_step), ("torch_step", run_torch)):
            rates[name].append(fn(args.steps))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "training throughput, ST-CNN (affine) on RTS 42x42, SGD momentum 0.9, loc lr x0.1",
        "batch_size": args.batch_size, "steps_per_repeat": args.steps, "repeats": args.repeats,
        "params": n_jax, "mnist_source": mnist.source,
        "images_per_s_median": med, "images_per_s_all": rates,
        "ratio_jax_engine_vs_torch": med["jax_engine"] / med["torch_step"],
        "ratio_jax_step_vs_torch": med["jax_step"] / med["torch_step"],
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": len(os.sched_getaffinity(0)), "load_average_at_end": os.getloadavg(),
                    "jax_devices": [str(d) for d in jax.devices()]},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                     "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "the machine is shared (2 cores, several concurrent jobs); see load_average_at_end",
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("images_per_s_median", "ratio_jax_engine_vs_torch",
                                              "ratio_jax_step_vs_torch")}, indent=2))


if __name__ == "__main__":
    main()
