"""One command that measures the library on an accelerator in a few minutes (``make gpu-check``).

    python -m experiments.benchmarks.gpu_check                 # on a GPU/TPU machine, ~7 min
    python -m experiments.benchmarks.gpu_check --dry-run       # anywhere: tiny sizes, same code paths

Four sections, each with its own share of ``--budget-s`` (default 420 s, so the whole run ends
within 8 minutes on one GPU; a section gets its weight's share of what is left when it starts,
and one that runs out of time skips its remaining items and says so):

1. ``sampler``: forward and forward+backward of ``grid_sample`` (with ``affine_grid``) and
   ``warp`` against PyTorch's ``affine_grid`` + ``grid_sample`` in the same process (CUDA when
   this torch build has it, else CPU), on 256x28x28x1, 256x60x60x1, 32x224x224x3, 64x224x224x3
   and 32x224x224x3 in bfloat16, with the achieved bandwidth of the minimal traffic as a
   fraction of the device's peak (:data:`PEAK_GBS`, or ``--peak-gbs``). Goals: forward <= 1.0x
   PyTorch's time and >= 50% of peak bandwidth.
2. ``scatter_add``: the image gradient (a scatter-add) of warps where many outputs hit each
   input pixel (theta scale 1/8: the output shows an eighth of the input per axis, so about 64
   output points land in each input pixel's bilinear window), and of a one-to-one warp as a
   control, under the XLA flag settings of :data:`SCATTER_SETTINGS`. XLA reads its flags once,
   when the backend starts, so every setting runs in its own subprocess of this script; these
   run first, before this process touches the accelerator (a TPU admits one process at a
   time). Compared: ``warp`` (the default kernel), ``warp`` on the generic per-tap kernel, the
   deterministic matrix-product path ``axis_aligned_warp``, ``warp`` jitted with the per-call
   compiler option ``xla_gpu_ftz``, and PyTorch. Gives a ``recommendation``.
3. ``training``: images/s of the paper's ST-CNN on RTS (``stn_jax.models.create_model``) in
   the training engine's step (batch generated on device) on one device and data-parallel on
   all local devices (``--batch-size`` per device), the pure ``train_step`` on a fixed batch,
   and the same model in PyTorch (``experiments.benchmarks.bench_train.torch_model``).
4. ``convergence``: ``stn_jax.train.train`` of the RTS ST-CNN with the ``adam`` recipe
   (``experiments/paper/recipes/adam.toml``) for as many steps as the remaining budget allows at
   the throughput measured in section 3, and its test error. MNIST comes from ``--data-dir``
   (default ``../shared/data/mnist`` when it exists, else ``stn_jax.data.load_mnist("auto")``).

Outputs: ``experiments/results/<machine>/gpu_check.json`` and ``gpu_check.md`` (``--out`` to
choose the folder), ``<machine>`` named after the device, e.g. ``gpu-1xh200-x86_64`` (see
:func:`machine_label`). The exit status is 1 when a section failed (its error is in the files).

``--dry-run``: tiny sizes (a minute on a laptop CPU), the same code paths and output files,
written under ``--out`` (default ``build/gpu_check_dry_run``), never into ``experiments/results``;
MNIST is a 700-digit slice of the offline sample (no network). ``tests/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = time.monotonic()
"""The budget counts from here (this module's import, before jax and torch are imported)."""

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("sampler", "scatter_add", "training", "convergence")
RUN_ORDER = ("scatter_add", "sampler", "training", "convergence")
"""scatter_add first: its subprocesses must start the accelerator before this process does."""
WEIGHTS = {"scatter_add": 2.5, "sampler": 2.5, "training": 2.0, "convergence": 3.0}
"""Relative time shares of the sections."""
RESERVE_S = 5.0
"""Seconds kept back from the sections for writing the outputs."""
DRY_RUN_OUT = "build/gpu_check_dry_run"

PEAK_GBS: tuple[tuple[str, float], ...] = (
    # (lower-case substring of jax's device_kind, peak memory bandwidth of one JAX device in GB/s,
    # vendor data sheets); first match wins, so specific names come before general ones
    ("gh200", 4000.0), ("h200", 4800.0), ("h100 pcie", 2000.0), ("h100 nvl", 3900.0), ("h100", 3350.0),
    ("h800", 3350.0), ("b200", 8000.0), ("a100-pcie-40gb", 1555.0), ("a100-pcie", 1935.0),
    ("a100-sxm4-80gb", 2039.0), ("a100 80gb", 2039.0), ("a100", 1555.0), ("a10g", 600.0), ("a10", 600.0),
    ("l40s", 864.0), ("l40", 864.0), ("l4", 300.0), ("t4", 320.0), ("v100", 900.0),
    ("rtx 4090", 1008.0), ("rtx 3090", 936.0),
    ("tpu v6 lite", 1640.0), ("tpu v6e", 1640.0), ("tpu v5 lite", 819.0), ("tpu v5e", 819.0),
    ("tpu v5p", 2765.0), ("tpu v5", 2765.0), ("tpu v4", 1200.0),
    ("tpu v3", 450.0), ("tpu v2", 350.0),   # per JAX device = one TensorCore (half a chip)
)
"""Known peak memory bandwidth per JAX device; other devices report ``"unknown"``."""

FWD_BANDWIDTH_GOAL = 0.5
FWD_TORCH_RATIO_GOAL = 1.0

SCATTER_SETTINGS = {
    "default": "",
    "ftz": "--xla_gpu_ftz=true",
    "ftz_atomics": "--xla_backend_extra_options=-nvptx-allow-ftz-atomics",
    "deterministic": "--xla_gpu_deterministic_ops=true",
}
"""Scatter-add section: setting name -> XLA flag appended to ``XLA_FLAGS`` in its subprocess."""
FTZ_WORTH_IT = 1.5
"""A flag is recommended only if it makes the many-to-one image gradient this much faster."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of a run: the real one or the dry run's."""

    sampler: tuple[tuple[str, tuple[int, int, int, int], str], ...]
    scatter: tuple[tuple[str, tuple[int, int, int, int], str], ...]
    max_reps: int
    train_repeats: int
    train_max_steps: int
    converge_steps: tuple[int, int]
    converge_overhead_s: float


REAL = Sizes(
    sampler=(("256x28x28x1", (256, 28, 28, 1), "float32"), ("256x60x60x1", (256, 60, 60, 1), "float32"),
             ("32x224x224x3", (32, 224, 224, 3), "float32"), ("64x224x224x3", (64, 224, 224, 3), "float32"),
             ("32x224x224x3 bf16", (32, 224, 224, 3), "bfloat16")),
    scatter=(("256x60x60x1 many-to-one", (256, 60, 60, 1), "many"),
             ("32x224x224x3 many-to-one", (32, 224, 224, 3), "many"),
             ("32x224x224x3 one-to-one", (32, 224, 224, 3), "one")),
    max_reps=50, train_repeats=3, train_max_steps=500, converge_steps=(50, 100_000), converge_overhead_s=15.0)
DRY = Sizes(
    sampler=(("4x12x12x1", (4, 12, 12, 1), "float32"), ("4x20x20x1", (4, 20, 20, 1), "float32"),
             ("2x24x24x3", (2, 24, 24, 3), "float32"), ("4x24x24x3", (4, 24, 24, 3), "float32"),
             ("2x24x24x3 bf16", (2, 24, 24, 3), "bfloat16")),
    scatter=(("2x16x16x3 many-to-one", (2, 16, 16, 3), "many"), ("2x16x16x3 one-to-one", (2, 16, 16, 3), "one")),
    max_reps=2, train_repeats=1, train_max_steps=2, converge_steps=(2, 3), converge_overhead_s=0.0)


# ----------------------------------------------------------------------------- small helpers


def left_s(deadline: float) -> float:
    return deadline - time.monotonic()


def peak_bandwidth(device_kind: str, override: float | None) -> tuple[float | None, str]:
    """``(GB/s or None, where it came from)`` for a JAX ``device_kind``."""
    if override:
        return float(override), "--peak-gbs"
    kind = device_kind.lower()
    for pattern, gbs in PEAK_GBS:
        if pattern in kind:
            return gbs, f"table entry {pattern!r}"
    return None, "unknown"


def machine_label(platform_name: str, device_kind: str, count: int, *, cpu_count: int | None = None,
                  arch: str | None = None) -> str:
    """``<device>-<cores or chips>-<arch>`` as in ``experiments/results/README.md``:
    ``cpu-2core-x86_64``, ``gpu-1xh200-x86_64``, ``tpu-4xv5-lite-x86_64``."""
    arch = arch or platform.machine()
    if platform_name == "cpu":
        return f"cpu-{cpu_count or os.cpu_count()}core-{arch}"
    slug = re.sub(r"^(nvidia|tesla|tpu)[ -]+", "", device_kind.strip().lower())
    slug = re.sub(r"[^a-z0-9]+", "-", slug).strip("-") or "unknown"
    return f"{platform_name}-{count}x{slug}-{arch}"


def repo_relative(text: str) -> str:
    """`text` with absolute paths inside the repository written relative to it and the home
    folder as ``~`` (result files name no machine paths)."""
    return text.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".").replace(str(Path.home()), "~")


def portable_argv(argv: list[str]) -> list[str]:
    """`argv` with absolute paths (also in ``--opt=/path``) rewritten relative to the repository."""
    def one(token: str) -> str:
        key, eq, value = token.rpartition("=") if token.startswith("--") and "=" in token else ("", "", token)
        return key + eq + (os.path.relpath(value, ROOT) if os.path.isabs(value) else value)

    return [one(t) for t in argv]


def timed(cands: dict[str, Callable[[], Any]], deadline: float, *, max_reps: int) -> tuple[dict[str, Any], int]:
    """Interleaved median times (``bench_sampler.time_interleaved``) with as many reps as fit
    before `deadline` (at least 1, at most `max_reps`); the first pass compiles and estimates."""
    from experiments.benchmarks.bench_sampler import time_interleaved

    pause_s = 0.02
    estimate = time_interleaved(cands, 1, warmup=1, pause_s=pause_s)
    per_rep = sum(2 * v["median_ms"] / 1e3 + pause_s for v in estimate.values())
    reps = max(1, min(max_reps, int(left_s(deadline) / max(per_rep, 1e-6))))
    return time_interleaved(cands, reps, warmup=0, pause_s=pause_s), reps


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``{"status": "ok", **fn()}``, or ``{"status": "error", ...}`` with the exception, so that one
    failing item does not lose the others' measurements (``fn()`` may set its own status)."""
    try:
        return {"status": "ok", **fn()}
    except Exception as e:   # noqa: BLE001
        return {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                "traceback": repo_relative(traceback.format_exc()[-4000:])}


def device_info() -> dict[str, Any]:
    """The JAX backend and devices of this process (starts the backend)."""
    import jax
    import jaxlib

    devices = jax.devices()
    return {"platform": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def torch_device(choice: str, jax_platform: str) -> str:
    """Where PyTorch runs: ``choice`` unless ``"auto"``; auto is CUDA when available."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--torch-device cuda, but this torch build has no CUDA device")
    if choice != "auto":
        return choice
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass
class Context:
    """What the sections share: options, sizes, the device and the lazily loaded data."""

    args: argparse.Namespace
    sizes: Sizes
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    torch_device: str = "cpu"
    peak_gbs: float | None = None
    engine_rate: float | None = None
    engine_compile_s: float | None = None
    _data: tuple[Any, dict[str, Any]] | None = None

    def dataset(self) -> tuple[Any, dict[str, Any]]:
        """``(RTS DistortedDataset, provenance)`` built once."""
        if self._data is None:
            self._data = load_rts(self.args.data_dir, dry_run=self.args.dry_run)
        return self._data


def load_rts(data_dir: str | None, *, dry_run: bool) -> tuple[Any, dict[str, Any]]:
    """The RTS dataset: IDX files from `data_dir` when it exists, else ``load_mnist("auto")``;
    in a dry run a 700-digit slice of the offline sample (500 train, 200 test)."""
    from stn_jax.data import MNIST, load_mnist, make_dataset

    if dry_run:
        full = load_mnist("sample")
        mnist = MNIST(full.train_images[::8], full.train_labels[::8], full.test_images[::5],
                      full.test_labels[::5], source="sample", is_sample=True)
    elif data_dir and os.path.isdir(data_dir):
        mnist = load_mnist("idx", data_dir=data_dir)
    else:
        mnist = load_mnist("auto")
    info = {"source": mnist.source, "is_sample": bool(mnist.is_sample), "train_digits": len(mnist.train_labels),
            "test_digits": len(mnist.test_labels),
            "data_dir": os.path.relpath(os.path.abspath(data_dir), ROOT) if mnist.source == "idx" and data_dir else None}
    return make_dataset("rts", mnist), info


# ----------------------------------------------------------------------------- 1. sampler


def run_sampler(ctx: Context, deadline: float) -> dict[str, Any]:
    """Section 1: grid_sample / warp vs PyTorch, time, ratio and bandwidth per problem."""
    import torch

    from experiments.benchmarks.bench_sampler import build_candidates, min_traffic_bytes

    impls = [s for s in ctx.args.impls.split(",") if s]
    problems, out = ctx.sizes.sampler, {}
    for i, (label, shape, dtype) in enumerate(problems):
        if left_s(deadline) <= 0:
            out[label] = {"status": "skipped", "reason": "section budget spent"}
            continue
        problem_deadline = time.monotonic() + left_s(deadline) / (len(problems) - i)

        def measure(shape=shape, dtype=dtype, problem_deadline=problem_deadline) -> dict[str, Any]:
            cands = build_candidates(shape, impls, with_map_coordinates=False,
                                     torch_threads=(torch.get_num_threads(),), torch_device=ctx.torch_device,
                                     dtype=dtype)
            times, reps = timed(cands, problem_deadline, max_reps=ctx.sizes.max_reps)
            traffic = min_traffic_bytes(shape, 2 if dtype == "bfloat16" else 4)
            torch_name = next(k for k in times if k.startswith("torch[")).rsplit(" ", 1)[0]
            rows: dict[str, Any] = {}
            for name in dict.fromkeys(k.rsplit(" ", 1)[0] for k in times):
                rows[name] = {}
                for kind in ("fwd", "fwd+bwd"):
                    ms = times[f"{name} {kind}"]["median_ms"]
                    gbs = traffic[kind] / ms / 1e6
                    rows[name][kind] = {**times[f"{name} {kind}"],
                                        "vs_torch": ms / times[f"{torch_name} {kind}"]["median_ms"],
                                        "GBps": gbs, "peak_fraction": gbs / ctx.peak_gbs if ctx.peak_gbs else None}
            return {"shape": list(shape), "dtype": dtype, "reps": reps, "torch": torch_name, "min_bytes": traffic,
                    "candidates": rows}

        out[label] = guarded(measure)
    failed = [k for k, v in out.items() if v["status"] == "error"]
    result = {"problems": out, "impls": impls, "goals": sampler_goals(out)}
    if failed:
        result.update(status="error", error=f"problem(s) {failed} failed; see problems")
    return result


def sampler_goals(problems: dict[str, Any]) -> dict[str, Any]:
    """Per problem and JAX candidate: forward <= 1.0x PyTorch, forward >= 50% of peak bandwidth
    (None when the peak is unknown)."""
    goals = {}
    for label, p in problems.items():
        if p.get("status") != "ok":
            continue
        for name, row in p["candidates"].items():
            if name.startswith("torch"):
                continue
            fwd = row["fwd"]
            goals[f"{label} {name}"] = {
                "fwd_vs_torch": fwd["vs_torch"], "fwd_le_torch": fwd["vs_torch"] <= FWD_TORCH_RATIO_GOAL,
                "fwd_peak_fraction": fwd["peak_fraction"],
                "fwd_ge_half_peak": None if fwd["peak_fraction"] is None else fwd["peak_fraction"] >= FWD_BANDWIDTH_GOAL}
    return goals


# ----------------------------------------------------------------------------- 2. scatter-add


def scatter_candidates(shape: tuple[int, int, int, int], kind: str, *, setting: str, torch_device: str | None
                       ) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Image-gradient callables (each blocks) of one scatter-add problem, and build errors.

    ``kind="many"``: theta ``[[1/8, 0, tx], [0, 1/8, ty]]`` (|t| <= 0.5); ``"one"``: scales
    0.7-1.2 per axis, |t| <= 0.2. The gradient is that of ``vdot(out, cotangent)`` w.r.t. the
    image; all candidates are checked to agree (relative max error 1e-4).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import stn_jax

    n, h, w, c = shape
    rng = np.random.default_rng(0)
    img = rng.random(shape, dtype=np.float32)
    ct = rng.standard_normal(shape, dtype=np.float32)
    if kind == "many":
        scale, shift = np.full((n, 2), 0.125, np.float32), rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
    else:
        scale, shift = rng.uniform(0.7, 1.2, (n, 2)).astype(np.float32), rng.uniform(-0.2, 0.2, (n, 2)).astype(np.float32)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale[:, 0], scale[:, 1], shift
    j_img, j_ct, j_theta, j_scale, j_shift = (jnp.asarray(a) for a in (img, ct, theta, scale, shift))

    def generic(im):
        with stn_jax.sampler_implementation("generic"):
            return stn_jax.warp(im, j_theta)

    fns: dict[str, tuple[Callable[[Any], Any], dict[str, Any]]] = {
        "warp": (lambda im: stn_jax.warp(im, j_theta), {}),
        "warp[generic]": (generic, {}),
        "axis_aligned_warp": (lambda im: stn_jax.axis_aligned_warp(im, j_scale, j_shift), {}),
    }
    if setting == "default":
        fns["warp[jit xla_gpu_ftz]"] = (lambda im: stn_jax.warp(im, j_theta), {"compiler_options": {"xla_gpu_ftz": True}})
    cands, errors, results = {}, {}, {}
    for name, (fn, options) in fns.items():
        try:
            grad = jax.jit(jax.grad(lambda im, fn=fn: jnp.vdot(fn(im), j_ct)), **options)
            results[name] = np.asarray(grad(j_img))
            cands[name] = lambda grad=grad: jax.block_until_ready(grad(j_img))
        except Exception as e:   # noqa: BLE001 -- an unsupported option must not end the section
            errors[name] = f"{type(e).__name__}: {e}"[:500]
    if torch_device is not None:
        import torch
        import torch.nn.functional as F

        t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2))).to(torch_device)
        t_ct = torch.from_numpy(np.ascontiguousarray(ct.transpose(0, 3, 1, 2))).to(torch_device)
        t_grid = F.affine_grid(torch.from_numpy(theta).to(torch_device), (n, c, h, w), align_corners=False)
        sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

        def torch_grad():
            a = t_img.detach().requires_grad_(True)
            F.grid_sample(a, t_grid, mode="bilinear", padding_mode="zeros", align_corners=False).backward(t_ct)
            sync()
            return a.grad

        results["torch"] = torch_grad().cpu().numpy().transpose(0, 2, 3, 1)
        cands["torch"] = torch_grad
    ref = results["warp"]
    for name, got in results.items():
        err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12))
        assert err < 1e-4, (name, err)
    return cands, errors


def repeatable(fn: Callable[[], Any]) -> bool:
    """Whether two calls give bitwise-equal results."""
    import numpy as np

    def host(x: Any) -> Any:
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    return bool(np.array_equal(host(fn()), host(fn())))


def scatter_child(setting: str, budget_s: float, *, dry_run: bool, torch_choice: str) -> dict[str, Any]:
    """One scatter-add setting, in its own process (XLA_FLAGS already set by the parent)."""
    deadline = T0 + budget_s
    info = device_info()
    sizes = DRY if dry_run else REAL
    tdev = torch_device(torch_choice, info["platform"]) if setting == "default" else None
    problems = {}
    for i, (label, shape, kind) in enumerate(sizes.scatter):
        if left_s(deadline) <= 0:
            problems[label] = {"status": "skipped", "reason": "budget spent"}
            continue
        problem_deadline = time.monotonic() + left_s(deadline) / (len(sizes.scatter) - i)

        def measure(shape=shape, kind=kind, problem_deadline=problem_deadline) -> dict[str, Any]:
            cands, errors = scatter_candidates(shape, kind, setting=setting, torch_device=tdev)
            times, reps = timed(cands, problem_deadline, max_reps=sizes.max_reps)
            return {"shape": list(shape), "kind": kind, "reps": reps, "times": times,
                    "bitwise_repeatable": {k: repeatable(fn) for k, fn in cands.items()},
                    "candidate_errors": errors}

        problems[label] = {"kind": kind, **guarded(measure)}
    return {"setting": setting, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "device": info,
            "torch_device": tdev, "problems": problems, "elapsed_s": time.monotonic() - T0}


def run_child(setting: str, budget_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`scatter_child` for `setting` in a subprocess; its result or why there is none."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), SCATTER_SETTINGS[setting]) if f)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, "-m", "experiments.benchmarks.gpu_check", "--scatter-child", setting,
               "--child-budget-s", f"{budget_s:.1f}", "--child-out", str(out), "--torch-device", args.torch_device]
        cmd += ["--dry-run"] if args.dry_run else []
        t = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget_s + 30)
        except subprocess.TimeoutExpired:
            return {"status": "error", "error": f"timed out after {budget_s + 30:.0f} s", "flag": SCATTER_SETTINGS[setting]}
        if proc.returncode != 0 or not out.exists():
            return {"status": "error", "returncode": proc.returncode, "flag": SCATTER_SETTINGS[setting],
                    "error": repo_relative(proc.stderr[-3000:])}
        result = json.loads(out.read_text())
    return {"status": "ok", "flag": SCATTER_SETTINGS[setting], "wall_s": time.monotonic() - t, **result}


def run_scatter_add(ctx: Context, deadline: float) -> dict[str, Any]:
    """Section 2: one subprocess per XLA flag setting, then the recommendation."""
    settings = {}
    names = list(SCATTER_SETTINGS)
    for i, name in enumerate(names):
        if left_s(deadline) <= 5:
            settings[name] = {"status": "skipped", "reason": "section budget spent"}
            continue
        settings[name] = run_child(name, left_s(deadline) / (len(names) - i), ctx.args)
    result = {"settings": settings, "recommendation": recommend(settings),
              "failed_settings": [k for k, v in settings.items() if v["status"] == "error"]}
    default = settings["default"]
    if default["status"] == "error" or any(p["status"] == "error" for p in default.get("problems", {}).values()):
        # a flag this jaxlib rejects is a finding; the default setting failing is a bug
        result["status"] = "error"
        result["error"] = "the default setting failed; see settings.default"
    return result


def _geomean_ms(setting: dict[str, Any], cand: str) -> float | None:
    """Geometric mean of `cand`'s median ms over the many-to-one problems of one setting."""
    values = [p["times"][cand]["median_ms"] for p in setting.get("problems", {}).values()
              if p.get("status") == "ok" and p["kind"] == "many" and cand in p["times"]]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def recommend(settings: dict[str, Any]) -> dict[str, Any]:
    """Which scatter-add route the library should take by default, from the many-to-one times.

    ``xla_flags``: a flag worth setting (it speeds the default kernel up at least
    :data:`FTZ_WORTH_IT` x), else ``""``. ``gpu_kernel``: ``"generic"`` if the per-tap kernel's
    gradient is at least 10% faster than the window kernel's, else ``"window"``.
    ``axis_aligned``: ``"separable"`` if ``axis_aligned_warp``'s gradient is faster than the
    gather path's, else ``"gather"``. Ratios > 1 mean "faster than the default ``warp``".
    ``library_change``: the values of the GPU choices in ``stn_jax._src.dispatch`` (``GPU_KERNEL``,
    ``GPU_MAX_DENSE_MACS_PER_OUTPUT``) that follow from them.
    """
    def t(setting: str, cand: str) -> float | None:
        s = settings.get(setting, {})
        return _geomean_ms(s, cand) if s.get("status") == "ok" else None

    base = t("default", "warp")
    platform_name = settings.get("default", {}).get("device", {}).get("platform")
    if base is None:
        return {"platform": platform_name, "summary": "no default-setting measurement; no recommendation"}

    def speedup(other: float | None) -> float | None:
        return None if other is None else base / other

    ratios = {"ftz_speedup": speedup(t("ftz", "warp")), "ftz_atomics_speedup": speedup(t("ftz_atomics", "warp")),
              "jit_ftz_option_speedup": speedup(t("default", "warp[jit xla_gpu_ftz]")),
              "deterministic_ops_speedup": speedup(t("deterministic", "warp")),
              "generic_kernel_speedup": speedup(t("default", "warp[generic]")),
              "axis_aligned_speedup": speedup(t("default", "axis_aligned_warp")),
              "torch_speedup": speedup(t("default", "torch"))}
    flags = [(ratios[k], SCATTER_SETTINGS[s]) for k, s in (("ftz_speedup", "ftz"), ("ftz_atomics_speedup", "ftz_atomics"))
             if ratios[k] is not None and ratios[k] >= FTZ_WORTH_IT]
    xla_flags = max(flags)[1] if flags else ""
    kernel = "generic" if (ratios["generic_kernel_speedup"] or 0) >= 1.1 else "window"
    axis = "separable" if (ratios["axis_aligned_speedup"] or 0) > 1.0 else "gather"
    summary = (f"On {platform_name}, many-to-one image gradient: default kernel {base:.3g} ms; "
               + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None) + ". "
               + (f"Set XLA_FLAGS={xla_flags} (f32 scatter-add is otherwise a slow loop). " if xla_flags
                  else "No XLA flag is needed. ")
               + f"Default kernel: {kernel}; axis-aligned warps: {axis}.")
    if platform_name != "gpu":
        summary += " (Not a GPU: the XLA GPU flags are no-ops here; do not act on this.)"
    # the many-to-one problems are same-size warps of 60x60 and 224x224 (120 and 448 multiply-adds
    # per output value on the matrix-product path)
    change = (f"stn_jax/_src/dispatch.py: GPU_KERNEL = {kernel!r}; GPU_MAX_DENSE_MACS_PER_OUTPUT = "
              f"{'MAX_DENSE_MACS_PER_OUTPUT (448)' if axis == 'separable' else '0'}")
    return {"platform": platform_name, "ratios": ratios, "xla_flags": xla_flags, "gpu_kernel": kernel,
            "axis_aligned": axis, "library_change": change, "summary": summary}


# ----------------------------------------------------------------------------- 3. training


def train_config(batch_size: int, **options: Any) -> Any:
    """The paper's RTS ST-CNN (affine) run configuration (SGD unless `options` say otherwise)."""
    from stn_jax.train import TrainConfig

    base = dict(dataset="rts", model="st-cnn", transform="affine", batch_size=batch_size, lr=0.01,
                momentum=0.9, loc_lr_mult=0.1)
    return TrainConfig(**{**base, **options})


def run_training(ctx: Context, deadline: float) -> dict[str, Any]:
    """Section 3: images/s of the engine (1 device, all devices), the pure step and PyTorch."""
    import jax
    import numpy as np
    import torch

    from experiments.benchmarks.bench_train import engine_loop, init_state, interleaved_rates, step_loop, torch_loop
    from stn_jax.models import count_params
    from stn_jax.train import make_mesh

    dataset, _ = ctx.dataset()
    batch = ctx.args.batch_size
    config = train_config(batch)
    devices = jax.local_devices()
    loops = [engine_loop(config, dataset, make_mesh(devices=devices[:1]), name="jax_engine[1]")]
    if len(devices) > 1:
        loops.append(engine_loop(config.replace(batch_size=batch * len(devices)), dataset, make_mesh(devices=devices),
                                 name=f"jax_engine[{len(devices)}]"))
    images, labels = jax.jit(dataset.train_batch, static_argnums=1)(jax.random.PRNGKey(3), batch)
    loops.append(step_loop(config, images, labels))
    tloop, n_torch = torch_loop(torch, np.asarray(images), np.asarray(labels), device=ctx.torch_device)
    loops.append(tloop)
    n_jax = count_params({"params": init_state(config, make_mesh(devices=devices[:1]))[1].params})
    if n_torch != n_jax:
        raise AssertionError(f"the PyTorch model has {n_torch} parameters, the zoo's {n_jax}")
    compile_s = {loop.name: loop.run(1) for loop in loops}
    step_s = {loop.name: loop.run(2) / 2 for loop in loops}
    per_loop = max(left_s(deadline), 0.0) / (ctx.sizes.train_repeats * len(loops))
    steps = {k: max(1, min(ctx.sizes.train_max_steps, int(per_loop / max(v, 1e-6)))) for k, v in step_s.items()}
    rates = interleaved_rates(loops, steps=steps, repeats=ctx.sizes.train_repeats)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    ctx.engine_rate, ctx.engine_compile_s = med["jax_engine[1]"], compile_s["jax_engine[1]"]
    scaling: dict[str, Any] = {"devices": len(devices), "per_device_batch": batch}
    if len(devices) > 1:
        speedup = med[f"jax_engine[{len(devices)}]"] / med["jax_engine[1]"]
        scaling.update(speedup=speedup, efficiency=speedup / len(devices))
    else:
        scaling["note"] = "one local device: nothing to scale"
    return {"batch_size": batch, "params": n_jax, "torch_device": ctx.torch_device, "compile_s": compile_s,
            "steps_per_repeat": steps, "repeats": ctx.sizes.train_repeats, "images_per_s_median": med,
            "images_per_s_all": rates,
            "vs_torch": {k: v / med["torch_step"] for k, v in med.items() if k != "torch_step"},
            "scaling": scaling}


# ----------------------------------------------------------------------------- 4. convergence


def adam_recipe() -> dict[str, Any]:
    """The ``adam`` recipe's training options (``experiments/paper/recipes/adam.toml``)."""
    from experiments.paper.reproduce import load_recipes

    return {k.replace("-", "_"): v for k, v in load_recipes()["adam"].options.items()}


def run_convergence(ctx: Context, deadline: float) -> dict[str, Any]:
    """Section 4: the adam recipe for as many steps as fit before `deadline`, and its test error."""
    import jax

    from experiments.benchmarks.bench_train import engine_loop
    from stn_jax.train import make_mesh, train
    from stn_jax.train.metrics import read_metrics

    dataset, info = ctx.dataset()
    batch = ctx.args.batch_size
    if ctx.engine_rate is None:           # section 3 did not run: measure the step here
        loop = engine_loop(train_config(batch), dataset, make_mesh(devices=jax.local_devices()[:1]))
        ctx.engine_compile_s = loop.run(1)
        ctx.engine_rate = 3 * batch / loop.run(3)
    overhead = 2 * ctx.engine_compile_s + ctx.sizes.converge_overhead_s
    planned = int(max(left_s(deadline) - overhead, 0.0) * 0.9 * ctx.engine_rate / batch)
    lo, hi = ctx.sizes.converge_steps
    steps = max(lo, min(hi, planned))
    recipe = adam_recipe()
    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(batch, **recipe).replace(
            steps=steps, workdir=tmp, progress=False, figures=False, eval_every=steps,
            log_every=max(1, steps // 20), checkpoint_every=steps, seed=0)
        results = train(config, dataset=dataset, data_info=info)
        curve = [{k: r[k] for k in ("step", "split", "loss", "error") if k in r}
                 for r in read_metrics(Path(tmp) / "metrics.jsonl")]
    keep = ("test_error", "test_error_pct", "test_loss", "test_count", "val_error", "steps", "batch_size",
            "wall_time_s", "train_time_s", "eval_time_s", "images_per_s", "param_count")
    return {"recipe": "adam", "recipe_options": recipe, "planned_steps": planned, "step_bounds": [lo, hi],
            **{k: results[k] for k in keep if k in results}, "data": info, "curve": curve}


# ----------------------------------------------------------------------------- the run


RUNNERS = {"sampler": run_sampler, "scatter_add": run_scatter_add, "training": run_training,
           "convergence": run_convergence}


def init_backend(ctx: Context) -> None:
    """Start JAX's backend and run one convolution before torch is imported, so JAX loads its
    own cuDNN first when both frameworks ship one; fill ``ctx.info``, torch device and peak."""
    import jax
    import jax.numpy as jnp

    t = time.monotonic()
    ctx.info = device_info()
    x = jnp.ones((1, 8, 8, 1), jnp.float32)
    k = jnp.ones((3, 3, 1, 1), jnp.float32)
    jax.block_until_ready(jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, k))
    ctx.info["backend_init_s"] = time.monotonic() - t
    ctx.torch_device = torch_device(ctx.args.torch_device, ctx.info["platform"])
    if ctx.torch_device == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True     # PyTorch at its best on fixed shapes
    ctx.peak_gbs, ctx.info["peak_gbs_source"] = peak_bandwidth(ctx.info["device_kind"], ctx.args.peak_gbs)
    ctx.info["peak_gbs"] = ctx.peak_gbs


def run_sections(ctx: Context, selected: list[str]) -> dict[str, Any]:
    """Every selected section in :data:`RUN_ORDER`, each within its share of the budget."""
    out: dict[str, Any] = {s: {"status": "skipped", "reason": "not selected"} for s in SECTIONS}
    total_deadline = T0 + ctx.args.budget_s - RESERVE_S
    pending = [s for s in RUN_ORDER if s in selected]
    while pending:
        name = pending[0]
        if name != "scatter_add" and not ctx.info:
            init_backend(ctx)
        share = WEIGHTS[name] / sum(WEIGHTS[s] for s in pending)
        deadline = time.monotonic() + max(left_s(total_deadline), 0.0) * share
        t = time.monotonic()
        print(f"[gpu_check] {name}: {max(deadline - t, 0):.0f} s budget", file=sys.stderr, flush=True)
        result = guarded(lambda name=name, deadline=deadline: RUNNERS[name](ctx, deadline))
        result.update(budget_s=deadline - t, elapsed_s=time.monotonic() - t)
        out[name] = result
        print(f"[gpu_check] {name}: {result['status']} in {result['elapsed_s']:.1f} s", file=sys.stderr, flush=True)
        pending.pop(0)
    if not ctx.info:
        init_backend(ctx)
    return out


def meta(ctx: Context, argv: list[str]) -> dict[str, Any]:
    import jax

    m: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m experiments.benchmarks.gpu_check " + " ".join(portable_argv(argv)),
        "dry_run": ctx.args.dry_run, "budget_s": ctx.args.budget_s, "elapsed_s": time.monotonic() - T0,
        "device": ctx.info, "torch_device": ctx.torch_device, "python": platform.python_version(),
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "system": platform.system()},
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }
    try:
        import torch

        m["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cudnn_benchmark": torch.backends.cudnn.benchmark,
                      "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                      "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                      "threads": torch.get_num_threads()}
    except ImportError:
        m["torch"] = None
    try:
        m["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        m["git_commit"] = None
    return m


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def to_markdown(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s result."""
    m = result["meta"]
    d = m["device"]
    lines = [f"# GPU/TPU check: {result['machine']}{' (dry run)' if m['dry_run'] else ''}", "",
             f"{m['date_utc']}; {d.get('device_count')} x {d.get('device_kind')} ({d.get('platform')}), "
             f"jax {d.get('jax')}, torch {(m['torch'] or {}).get('version')} on {m['torch_device']}; peak bandwidth "
             f"{_fmt(d.get('peak_gbs'), '.0f')} GB/s ({d.get('peak_gbs_source')}). Command: `{m['command']}`; "
             f"{m['elapsed_s']:.0f} s of a {m['budget_s']:.0f} s budget.", ""]
    status = ", ".join(f"{s} {result[s]['status']} ({result[s].get('elapsed_s', 0):.0f} s)" for s in SECTIONS)
    lines += [f"Sections: {status}.", ""]
    s = result["sampler"]
    if "problems" in s:
        lines += ["## 1. Sampler vs PyTorch", "",
                  "Median ms (ratio to PyTorch; achieved GB/s of the minimal traffic; % of peak).", "",
                  "| problem | candidate | fwd ms | fwd vs torch | fwd GB/s | fwd % peak | fwd+bwd ms | fwd+bwd vs torch | fwd+bwd GB/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, p in s["problems"].items():
            if p["status"] != "ok":
                why = p.get("reason") or p.get("error", "")
                lines.append(f"| {label} | {p['status']}: {why[:200]} | | | | | | | |")
                continue
            for name, row in p["candidates"].items():
                f, b = row["fwd"], row["fwd+bwd"]
                pct = None if f["peak_fraction"] is None else 100 * f["peak_fraction"]
                lines.append(f"| {label} ({p['reps']} reps) | {name} | {f['median_ms']:.3f} | {f['vs_torch']:.2f}x | "
                             f"{f['GBps']:.3g} | {_fmt(pct, '.3g')} | {b['median_ms']:.3f} | {b['vs_torch']:.2f}x | "
                             f"{b['GBps']:.3g} |")
        met = [g for g in s["goals"].values()]
        lines += ["", f"Goals (forward <= {FWD_TORCH_RATIO_GOAL}x PyTorch; >= {FWD_BANDWIDTH_GOAL:.0%} of peak): "
                  f"{sum(g['fwd_le_torch'] for g in met)}/{len(met)} rows within the time goal, "
                  + (f"{sum(bool(g['fwd_ge_half_peak']) for g in met)}/{len(met)} within the bandwidth goal."
                     if all(g["fwd_ge_half_peak"] is not None for g in met) else "bandwidth goal: peak unknown."), ""]
    s = result["scatter_add"]
    if "settings" in s:
        lines += ["## 2. Scatter-add (image gradient)", "", "Median ms per XLA flag setting.", ""]
        for name, st in s["settings"].items():
            if st["status"] != "ok":
                lines += [f"- `{name}` ({st.get('flag') or 'no flag'}): {st['status']}: "
                          f"{str(st.get('error', st.get('reason', '')))[-300:].strip()}"]
                continue
            for label, p in st["problems"].items():
                if p["status"] != "ok":
                    lines.append(f"- `{name}`, {label}: {p['status']}: {(p.get('reason') or p.get('error', ''))[:200]}")
                    continue
                cells = ", ".join(f"{k} {v['median_ms']:.3f}{'' if p['bitwise_repeatable'][k] else ' (not repeatable)'}"
                                  for k, v in p["times"].items())
                lines.append(f"- `{name}` ({st['flag'] or 'no flag'}), {label}: {cells}")
        lines += ["", f"**Recommendation:** {s['recommendation'].get('summary')}", ""]
    s = result["training"]
    if s["status"] == "ok":
        lines += ["## 3. Training throughput (ST-CNN, RTS)", "",
                  f"Batch {s['batch_size']} per device, {s['params']:,} parameters, PyTorch on {s['torch_device']}.", "",
                  "| loop | images/s | vs PyTorch |", "|---|---|---|"]
        for k, v in s["images_per_s_median"].items():
            lines.append(f"| {k} | {v:,.0f} | {s['vs_torch'].get(k, 1.0):.2f}x |")
        sc = s["scaling"]
        lines += ["", f"Data-parallel scaling: {sc['devices']} device(s); "
                  + (f"speedup {sc['speedup']:.2f}x, efficiency {sc['efficiency']:.0%}." if "speedup" in sc else sc["note"] + "."),
                  ""]
    s = result["convergence"]
    if s["status"] == "ok":
        lines += ["## 4. Convergence (adam recipe, RTS ST-CNN)", "",
                  f"{s['steps']} steps x {s['batch_size']} ({s['data']['source']} MNIST"
                  f"{', SAMPLE' if s['data']['is_sample'] else ''}): **test error {s['test_error_pct']:.2f}%** "
                  f"on {s['test_count']} digits; {s['train_time_s']:.0f} s training at {s['images_per_s']:,.0f} images/s.", ""]
    for name in SECTIONS:
        if result[name]["status"] == "error":
            lines += [f"**{name} failed:** `{result[name]['error'][:300]}`", ""]
    return "\n".join(lines)


def output_dir(args: argparse.Namespace, machine: str) -> Path:
    """Where the two files go; a dry run never writes under ``experiments/results``."""
    results = (ROOT / "experiments" / "results").resolve()
    if args.dry_run:
        out = Path(args.out or ROOT / DRY_RUN_OUT).resolve()
        if out == results or results in out.parents:
            raise SystemExit(f"--dry-run never writes under experiments/results (got --out {args.out})")
        return out
    return Path(args.out).resolve() if args.out else results / machine


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, same code paths and outputs (CPU is fine)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--out", default=None, help="output folder (default experiments/results/<machine>; "
                                                f"dry run: {DRY_RUN_OUT})")
    ap.add_argument("--machine", default=None, help="results folder name (default: from the device, see machine_label)")
    ap.add_argument("--peak-gbs", type=float, default=None, help="peak memory bandwidth of one device, GB/s")
    ap.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where PyTorch runs (auto: CUDA when this torch build has it)")
    ap.add_argument("--impls", default="auto", help="stn_jax sampler implementations timed in section 1")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch per device (default 256; dry run 8)")
    default_data = "../shared/data/mnist" if os.path.isdir("../shared/data/mnist") else None
    ap.add_argument("--data-dir", default=default_data, help="MNIST IDX folder (default ../shared/data/mnist "
                                                             "when it exists, else stn_jax.data.load_mnist('auto'))")
    ap.add_argument("--scatter-child", choices=tuple(SCATTER_SETTINGS), help=argparse.SUPPRESS)
    ap.add_argument("--child-budget-s", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 8 if args.dry_run else 256
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; expected some of {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # room for torch and the subprocesses
    args = parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if args.dry_run and "xla_force_host_platform_device_count" not in flags:
        # two CPU devices, so the dry run also takes the data-parallel path of section 3
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()
    if args.scatter_child:
        result = scatter_child(args.scatter_child, args.child_budget_s, dry_run=args.dry_run,
                               torch_choice=args.torch_device)
        Path(args.child_out).write_text(json.dumps(result, indent=1))
        return 0
    ctx = Context(args=args, sizes=DRY if args.dry_run else REAL)
    if args.dry_run:
        output_dir(args, "")                     # refuse a forbidden --out before spending any time
    sections = run_sections(ctx, [s for s in args.sections.split(",") if s])
    machine = args.machine or machine_label(ctx.info["platform"], ctx.info["device_kind"], ctx.info["device_count"])
    result = {"machine": machine, "meta": meta(ctx, argv), **sections}
    out = output_dir(args, machine)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(to_markdown(result))
    print(f"[gpu_check] wrote {repo_relative(str(out))}/gpu_check.json and gpu_check.md "
          f"({time.monotonic() - T0:.0f} s)", file=sys.stderr)
    return 1 if any(sections[s]["status"] == "error" for s in SECTIONS) else 0


if __name__ == "__main__":
    sys.exit(main())
