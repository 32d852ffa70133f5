"""Training throughput: our ST-CNN on RTS (stn_jax engine) vs the same model and loop in PyTorch.

Same architecture (the zoo's ``st-cnn`` / ``rts`` / ``affine``; ``--architecture paper``, the
default: localization conv5x5(20)-pool-conv5x5(20)-pool-dense20-regression6 on a 2x average-
pooled input -> affine grid_sample of the full input -> avgpool2 -> 'VALID' conv9x9(16)-pool-
conv7x7(c2)-pool-dense10, widths from :func:`stn_jax.models.default_widths`; ``padded``: the
earlier zoo with 'SAME' convs and a full-resolution localization input), same batch, same
optimiser (SGD, momentum 0.9, lr 0.01, localization lr x0.1), same input data, in the same
process. PyTorch runs on CUDA when JAX's default backend is a GPU and this torch build has CUDA.

Measured (images/s, median of interleaved repeats, each ``--steps`` steps after warm-up):
  jax_engine   the engine's jitted step (make_train_fn): batch generated *on device* by the RTS
               generator inside the step (what `stn-jax train` runs);
  jax_step     the pure train_step on one fixed pre-made batch (model + optimiser only);
  torch_step   the PyTorch equivalent on the same fixed batch.

    python -m experiments.benchmarks.bench_train --out experiments/results/MACHINE/bench_train.json

The pieces (:func:`torch_model`, :func:`engine_loop`, :func:`step_loop`, :func:`torch_loop`,
:func:`interleaved_rates`) are reused by ``experiments.benchmarks.gpu_check``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BENCHMARK = "training throughput, ST-CNN (affine) on RTS 42x42, SGD momentum 0.9, loc lr x0.1"


@dataclasses.dataclass
class Loop:
    """A training loop to time.

    Attributes:
      name: label in the results (e.g. ``"jax_engine"``).
      batch_size: global images per step.
      run: ``run(n)`` runs ``n`` steps, waits until they are done and returns the seconds taken.
        The first call includes compilation (JAX) or autotuning (PyTorch).
    """

    name: str
    batch_size: int
    run: Callable[[int], float]


def _ceil_pool(n: int, times: int) -> int:
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


def _classifier_map(n: int, padding: str) -> int:
    """Spatial size after conv 9 -> ceil max-pool 2 -> conv 7 -> ceil max-pool 2."""
    for k in (9, 7):
        n = math.ceil((n - k + 1 if padding == "VALID" else n) / 2)
    return n


def torch_model(torch: Any, *, architecture: str = "paper", dataset: str = "rts") -> Any:
    """The zoo's ST-CNN (affine) for `dataset` as a ``torch.nn.Module`` on NCHW float32 input.

    Mirrors :func:`stn_jax.models.create_model` layer by layer (same parameter count; checked
    by the callers): ``architecture="paper"`` localizes on a 2x average-pooled copy of the input
    with 'SAME' 5x5 convs and classifies with unpadded ('VALID') 9x9/7x7 convs;
    ``"padded"`` is the earlier zoo ('SAME' everywhere, full-resolution localization input).
    Max-pools round up (``ceil_mode``), as the zoo's 'SAME' max-pools do. The regression layer
    starts at zero weights and the identity bias.
    """
    from stn_jax.models import DATASET_SPECS, default_widths
    from stn_jax.models.zoo import LOC_DOWNSAMPLE

    nn, F = torch.nn, torch.nn.functional
    spec = DATASET_SPECS[dataset]
    h, w, c = spec.input_shape
    paper = architecture == "paper"
    c1, c2 = default_widths("st-cnn", dataset, "affine", architecture=architecture)["features"]
    loc_factor = LOC_DOWNSAMPLE if paper else 1
    padding = "VALID" if paper else "SAME"
    loc_flat = 20 * _ceil_pool(h // loc_factor, 2) * _ceil_pool(w // loc_factor, 2)
    cls_flat = c2 * _classifier_map(h // spec.st_pool, padding) * _classifier_map(w // spec.st_pool, padding)

    class STCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc1 = nn.Conv2d(c, 20, 5, padding=2)
            self.loc2 = nn.Conv2d(20, 20, 5, padding=2)
            self.loc_fc = nn.Linear(loc_flat, 20)
            self.reg = nn.Linear(20, 6)
            nn.init.zeros_(self.reg.weight)
            with torch.no_grad():
                self.reg.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
            self.c1 = nn.Conv2d(c, c1, 9, padding=0 if paper else 4)
            self.c2 = nn.Conv2d(c1, c2, 7, padding=0 if paper else 3)
            self.fc = nn.Linear(cls_flat, spec.num_classes)

        def forward(self, x):                      # x (N, C, H, W)
            h = F.avg_pool2d(x, loc_factor) if loc_factor > 1 else x
            h = F.relu(F.max_pool2d(self.loc1(h), 2, ceil_mode=True))
            h = F.relu(F.max_pool2d(self.loc2(h), 2, ceil_mode=True))
            h = F.relu(self.loc_fc(h.flatten(1)))
            theta = self.reg(h).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if spec.st_pool > 1:
                y = F.avg_pool2d(y, spec.st_pool)
            y = F.relu(F.max_pool2d(self.c1(y), 2, ceil_mode=True))
            y = F.relu(F.max_pool2d(self.c2(y), 2, ceil_mode=True))
            return self.fc(y.flatten(1))

    return STCNN()


def torch_loop(torch: Any, images: Any, labels: Any, *, architecture: str = "paper", device: str = "cpu",
               lr: float = 0.01, momentum: float = 0.9, loc_lr_mult: float = 0.1,
               name: str = "torch_step") -> tuple[Loop, int]:
    """PyTorch SGD steps of :func:`torch_model` on one fixed batch.

    Args:
      images: (N, H, W, C) float32 array (converted to NCHW on `device`).
      labels: (N,) int class indices.
      device: ``"cpu"`` or ``"cuda"`` (synchronised before the clock stops).

    Returns:
      ``(loop, parameter_count)``.
    """
    model = torch_model(torch, architecture=architecture).to(device)
    loc = [p for n, p in model.named_parameters() if n.startswith(("loc", "reg"))]
    rest = [p for n, p in model.named_parameters() if not n.startswith(("loc", "reg"))]
    opt = torch.optim.SGD([{"params": rest, "lr": lr}, {"params": loc, "lr": lr * loc_lr_mult}],
                          lr=lr, momentum=momentum)
    x = torch.from_numpy(np.asarray(images, np.float32).transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(np.asarray(labels).astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def one():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def run(n: int) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(n):
            one()
        sync()
        return time.perf_counter() - t

    return Loop(name, int(x.shape[0]), run), sum(p.numel() for p in model.parameters())


def init_state(config: Any, mesh: jax.sharding.Mesh) -> tuple[Any, Any]:
    """``(model, state)``: the zoo model of `config` and its fresh train state, replicated on `mesh`."""
    from stn_jax.models import DATASET_SPECS, create_model
    from stn_jax.train import create_state, make_optimizer, parallel

    model = create_model(config.model, dataset=config.dataset, **config.model_options())
    shape = (1, *DATASET_SPECS[config.dataset].input_shape)
    params = jax.jit(lambda k: model.init(k, jnp.zeros(shape), train=False))(jax.random.PRNGKey(0))["params"]
    tx = make_optimizer(config, params)
    return model, parallel.replicate(create_state(model, params, tx), mesh)


def engine_loop(config: Any, dataset: Any, mesh: jax.sharding.Mesh, *, name: str = "jax_engine") -> Loop:
    """The training engine's jitted step (:func:`stn_jax.train.loop.make_train_fn`) on `mesh`:
    each step draws a fresh batch of ``config.batch_size`` (global) on the devices."""
    from stn_jax.train import parallel
    from stn_jax.train.loop import make_train_fn
    from stn_jax.train.steps import init_accumulators

    _, state = init_state(config, mesh)
    engine = make_train_fn(config, dataset, mesh)
    keys = parallel.replicate((jax.random.PRNGKey(1), jax.random.PRNGKey(2)), mesh)
    carry = {"state": state, "accum": parallel.replicate(init_accumulators(), mesh)}

    def run(n: int) -> float:
        s, a = carry["state"], carry["accum"]
        t = time.perf_counter()
        for _ in range(n):
            s, a = engine(s, a, *keys)
        jax.block_until_ready(a)
        carry.update(state=s, accum=a)
        return time.perf_counter() - t

    return Loop(name, config.batch_size, run)


def step_loop(config: Any, images: jax.Array, labels: jax.Array, *, name: str = "jax_step") -> Loop:
    """The pure :func:`stn_jax.train.train_step` (jitted, state donated) on one fixed batch on
    the default device."""
    from stn_jax.train import make_mesh, train_step

    _, state = init_state(config, make_mesh(devices=jax.local_devices()[:1]))
    step = jax.jit(train_step, donate_argnums=0)
    key = jax.random.PRNGKey(0)
    carry = {"state": state}

    def run(n: int) -> float:
        s = carry["state"]
        t = time.perf_counter()
        m = None
        for _ in range(n):
            s, m = step(s, images, labels, key)
        jax.block_until_ready(m)
        carry["state"] = s
        return time.perf_counter() - t

    return Loop(name, int(images.shape[0]), run)


def interleaved_rates(loops: Sequence[Loop], *, steps: int | dict[str, int], repeats: int,
                      on_repeat: Callable[[int, dict[str, list[float]]], None] | None = None
                      ) -> dict[str, list[float]]:
    """Images/s of each loop: `repeats` rounds, each running every loop for its `steps` steps in
    turn (``steps`` one count for all or per loop name). Call each loop once before (warm-up)."""
    rates: dict[str, list[float]] = {loop.name: [] for loop in loops}
    for r in range(repeats):
        for loop in loops:
            n = steps if isinstance(steps, int) else steps[loop.name]
            rates[loop.name].append(n * loop.batch_size / loop.run(n))
        if on_repeat is not None:
            on_repeat(r, rates)
    return rates


def ab_engine_row(loops: Sequence[Loop], *, steps: int, repeats: int, dataset: str, model: str
                  ) -> dict[str, Any]:
    """Interleaved images/s of two engine loops (baseline first, candidate second) on one
    (dataset, model): medians, all repeats and the candidate's speed-up over the baseline; printed."""
    base, cand = (loop.name for loop in loops)
    rates = interleaved_rates(loops, steps=steps, repeats=repeats)
    med = {k: statistics.median(v) for k, v in rates.items()}
    row = {"dataset": dataset, "model": model, "steps_per_repeat": steps,
           "images_per_s_median": med, "images_per_s_all": rates, "speedup": med[cand] / med[base]}
    print(f"engine {dataset} {model}: {base} {med[base]:,.0f} img/s, {cand} {med[cand]:,.0f} img/s "
          f"({row['speedup']:.2f}x)", flush=True)
    return row


def load_benchmark_mnist(data_dir: str) -> Any:
    """MNIST from the IDX files in `data_dir` when it exists, else the bundled 5,000-digit sample."""
    from stn_jax.data import load_mnist

    source = "idx" if os.path.isdir(data_dir) else "sample"
    return load_mnist(source, data_dir=data_dir if source == "idx" else None)


def machine_record() -> dict[str, Any]:
    """Platform, processor, visible CPUs, load average now and JAX devices, for a result JSON."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": len(os.sched_getaffinity(0)), "load_average_at_end": os.getloadavg(),
            "jax_devices": [str(d) for d in jax.devices()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--architecture", choices=("paper", "padded"), default="paper",
                        help="zoo architecture of both models (the committed cpu-2core-x86_64 results used padded)")
    parser.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--out", default="runs/bench_train.json",
                        help="result JSON (commit it under experiments/results/<machine>/)")
    args = parser.parse_args()

    import torch

    from stn_jax.data import make_dataset
    from stn_jax.models import count_params
    from stn_jax.train import TrainConfig, make_mesh

    mnist = load_benchmark_mnist(args.data_dir)
    dataset = make_dataset("rts", mnist)
    config = TrainConfig(dataset="rts", model="st-cnn", transform="affine", architecture=args.architecture,
                         batch_size=args.batch_size, lr=0.01, momentum=0.9, loc_lr_mult=0.1)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    images, labels = jax.jit(dataset.train_batch, static_argnums=1)(jax.random.PRNGKey(3), args.batch_size)
    images, labels = jax.block_until_ready((images, labels))
    loops = [engine_loop(config, dataset, make_mesh()), step_loop(config, images, labels)]
    tloop, n_torch = torch_loop(torch, images, labels, architecture=args.architecture, device=device)
    loops.append(tloop)
    n_jax = count_params({"params": init_state(config, make_mesh())[1].params})
    assert n_torch == n_jax, (n_torch, n_jax)
    for loop in loops:
        loop.run(1)                                          # compile / warm-up

    def report(r: int, rates: dict[str, list[float]]) -> None:
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in rates.items()), flush=True)

    rates = interleaved_rates(loops, steps=args.steps, repeats=args.repeats, on_repeat=report)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": BENCHMARK, "architecture": args.architecture,
        "batch_size": args.batch_size, "steps_per_repeat": args.steps, "repeats": args.repeats,
        "params": n_jax, "mnist_source": mnist.source, "torch_device": device,
        "images_per_s_median": med, "images_per_s_all": rates,
        "ratio_jax_engine_vs_torch": med["jax_engine"] / med["torch_step"],
        "ratio_jax_step_vs_torch": med["jax_step"] / med["torch_step"],
        "machine": machine_record(),
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
