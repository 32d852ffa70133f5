"""The training loop: restore or start, step, act periodically, report.

:func:`train` is four named pieces: ``_restore_or_start`` builds (or restores) the run,
``_Run.step`` runs one data-parallel step, ``_Run.periodic`` logs, validates, checkpoints and
advances the progress bar, and ``_final_report`` scores the test set and writes results.json.
The throughput meter is :class:`stn_jax.train.throughput.Throughput`.

Exact resumption by construction: the batch of step ``s`` is
``dataset.train_batch(fold_in(data_key, s), batch_size)`` generated on device inside the
jitted step, dropout uses ``fold_in(dropout_key, s)``, and the metric accumulators are part
of the checkpoint. A resumed run therefore writes the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from stn_jax.models import transform_penalty
from stn_jax.train import parallel
from stn_jax.train.checkpoint import Checkpointer, checkpoint_tree
from stn_jax.train.config import TrainConfig
from stn_jax.train.evaluation import evaluate_arrays, make_eval_fn
from stn_jax.train.inputs import resolve_inputs
from stn_jax.train.metrics import MetricsLog, read_metrics
from stn_jax.train.optim import PathPredicate, make_optimizer, make_schedule
from stn_jax.train.progress import ProgressBar
from stn_jax.train.reporting import figure_title, log_message, run_results, write_figures, write_json
from stn_jax.train.steps import TrainState, accumulate, create_state, init_accumulators, train_step
from stn_jax.train.tensorboard import TensorBoardLog
from stn_jax.train.throughput import Throughput


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/inf; the run stopped without saving that state."""


def make_train_fn(config: TrainConfig, dataset: Any, mesh: jax.sharding.Mesh, *,
                  penalty_fn: Callable[[Any], jax.Array] | None = None) -> Callable[..., Any]:
    """Jitted ``(state, accum, data_key, dropout_key) -> (state, accum)``: one data-parallel step.

    The global batch is generated on device and split along the mesh's batch axis; the
    step's metrics are added to `accum` (:func:`stn_jax.train.steps.accumulate`).
    """
    batch_size = config.batch_size
    weight = config.identity_penalty

    def fn(state: TrainState, accum: dict[str, jax.Array], data_key: jax.Array, dropout_key: jax.Array):
        step = state.step
        images, labels = dataset.train_batch(jax.random.fold_in(data_key, step), batch_size)
        images, labels = parallel.constrain_batch((images, labels), mesh)
        new_state, metrics = train_step(state, images, labels, jax.random.fold_in(dropout_key, step),
                                        penalty_weight=weight, penalty_fn=penalty_fn)
        return new_state, accumulate(accum, metrics, step)

    rep = parallel.replicated(mesh)
    # no buffer donation: a Ctrl-C that lands while a step is being dispatched must still find
    # the previous state alive to checkpoint it
    return jax.jit(fn, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep))


def train(config: TrainConfig, *, model: Any = None, dataset: Any = None, data_info: dict[str, Any] | None = None,
          is_localization: PathPredicate | None = None,
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
      KeyboardInterrupt: re-raised after a checkpoint of the current step was saved (several
        processes: :class:`~stn_jax.train.parallel.Preempted` after a SIGTERM to any of them).
    """
    started = time.perf_counter()
    parallel.maybe_initialize_distributed()
    config.validate()
    mesh = parallel.make_mesh()
    parallel.check_batch(config.batch_size, mesh)
    _refuse_existing_checkpoints(config)
    model, dataset, info = resolve_inputs(config, model=model, dataset=dataset, data_info=data_info)
    if config.identity_penalty > 0 and penalty_fn is None:
        penalty_fn = transform_penalty
    run = _restore_or_start(config, mesh, model, dataset, info, is_localization=is_localization,
                            started=started)
    run.prepare(penalty_fn=penalty_fn)
    try:
        while run.step_count < config.steps:
            run.step(callbacks)
            run.periodic()
            parallel.check_preemption(run.step_count)
    except KeyboardInterrupt as interrupt:
        run.interrupted(interrupt)
        raise
    except BaseException:
        run.tb.close()   # its events are queued until the writer closes
        raise
    finally:
        run.close_progress()
    run.finish()
    return _final_report(run)


# ---------------------------------------------------------------------------- restore or start
def _refuse_existing_checkpoints(config: TrainConfig) -> None:
    """A fresh run (no ``resume``) must not mix its checkpoints with another run's."""
    ckpt_dir = pathlib.Path(config.workdir) / "checkpoints"
    if not config.resume and ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise ValueError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue that run or "
                         f"choose another --workdir")


def _root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(init_key, dropout_key, data_key)`` of a run."""
    init_key, dropout_key, data_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return init_key, dropout_key, data_key


def _init_params(model: Any, input_shape: Sequence[int], key: jax.Array, mesh: jax.sharding.Mesh) -> Any:
    """The model's initial parameters, replicated on `mesh` (stateless models only)."""
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    init = jax.jit(lambda k: model.init(k, dummy, train=False), out_shardings=parallel.replicated(mesh))
    variables = init(key)
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ValueError(f"model has variable collections {extra} besides 'params'; the engine trains "
                         f"stateless models only")
    return variables["params"]


def _restore_or_start(config: TrainConfig, mesh: jax.sharding.Mesh, model: Any, dataset: Any,
                      info: dict[str, Any], *, is_localization: PathPredicate | None, started: float) -> _Run:
    """A run at step 0, or at the latest checkpoint's step when `config.resume` finds one.

    `started` is the ``time.perf_counter()`` at which this call of :func:`train` began.

    Process 0 creates the workdir (with ``figures/``) and writes ``config.json``; a fresh start
    deletes an old metrics.jsonl, a resume truncates it to the restored step.
    """
    workdir = pathlib.Path(config.workdir)
    if jax.process_index() == 0:
        (workdir / "figures").mkdir(parents=True, exist_ok=True)
    input_shape = tuple(int(s) for s in dataset.input_shape)
    init_key, dropout_key, data_key = _root_keys(config.seed)
    params = _init_params(model, input_shape, init_key, mesh)
    tx = make_optimizer(config, params, is_localization=is_localization)
    run = _Run(config=config, mesh=mesh, model=model, dataset=dataset, info=info, workdir=workdir,
               state=parallel.replicate(create_state(model, params, tx), mesh),
               keys=(data_key, dropout_key), started=started)
    if config.resume and run.checkpointer.latest_step() is not None:
        run.restore()
    else:
        if config.resume:
            log_message(f"--resume: no checkpoint in {run.ckpt_dir}; starting from step 0")
        if jax.process_index() == 0 and run.log.path.exists():
            run.log.path.unlink()
    if jax.process_index() == 0:
        write_json(workdir / "config.json", config.to_dict())
    return run


# ---------------------------------------------------------------------------- the run
class _Run:
    """One call of :func:`train`: its state, accumulators, outputs and periodic actions."""

    def __init__(self, *, config: TrainConfig, mesh: jax.sharding.Mesh, model: Any, dataset: Any,
                 info: dict[str, Any], workdir: pathlib.Path, state: TrainState,
                 keys: tuple[jax.Array, jax.Array], started: float) -> None:
        self.config, self.mesh, self.model, self.dataset, self.info = config, mesh, model, dataset, info
        self.workdir = workdir
        self.ckpt_dir = workdir / "checkpoints"
        self.state = state
        self.accum = parallel.replicate(init_accumulators(), mesh)
        self.checkpointer = Checkpointer(self.ckpt_dir, keep=config.keep_checkpoints)
        self.log = MetricsLog(workdir / "metrics.jsonl")
        self.keys = keys
        self.start_step = self.step_count = 0
        self.started = started
        self.earlier_time_s: float | None = 0.0
        """Wall seconds of the segments before this one (a resumed run; None: a checkpoint
        written before this was recorded)."""
        self.bar: ProgressBar | None = None

    def elapsed_s(self) -> float | None:
        """Wall seconds of all segments so far: this call of :func:`train` plus the earlier ones
        (None when an earlier segment's time is unknown)."""
        now = time.perf_counter() - self.started
        return None if self.earlier_time_s is None else self.earlier_time_s + now

    def restore(self) -> None:
        """Continue from the latest checkpoint: state, accumulators, step; truncate the log."""
        tree, meta = self.checkpointer.restore(checkpoint_tree(self.state, self.accum))
        self.earlier_time_s = meta.get("elapsed_s")
        self.state = self.state.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"])
        self.accum = tree["accum"]
        self.start_step = self.step_count = int(tree["step"])
        if jax.process_index() == 0:
            self.log.truncate_after(self.start_step)
        log_message(f"resuming from {self.ckpt_dir / str(self.start_step)} (step {self.start_step})")

    def prepare(self, *, penalty_fn: Callable[[Any], jax.Array] | None) -> None:
        """Build the step and evaluation functions, the validation set, the meter and the bar."""
        config = self.config
        self.train_fn = make_train_fn(config, self.dataset, self.mesh, penalty_fn=penalty_fn)
        self.eval_fn = make_eval_fn(self.model.apply, self.mesh)
        val_set = self.dataset.validation_set() if hasattr(self.dataset, "validation_set") else None
        self.val_set = None if val_set is not None and len(val_set[0]) == 0 else val_set
        self.eval_every = config.eval_every or max(config.steps // 10, 1)
        self.keys = parallel.replicate(self.keys, self.mesh)
        self.meter = Throughput(config.batch_size)
        if config.progress and jax.process_index() == 0:
            self.bar = ProgressBar(total=config.steps, initial=self.start_step,
                                   overhead_s=lambda: self.meter.overhead_s)
        self.tb = TensorBoardLog(self.workdir / "tensorboard", start_step=self.start_step,
                                 enabled=config.tensorboard and jax.process_index() == 0)

    # ------------------------------------------------------------------ the step
    def step(self, callbacks: Sequence[Callable[[int], None]]) -> None:
        """Dispatch one training step, run the callbacks, feed the throughput meter."""
        self.state, self.accum = self.train_fn(self.state, self.accum, *self.keys)
        self.step_count += 1
        for callback in callbacks:
            callback(self.step_count)
        self.meter.step_done(self.step_count, self.accum)

    # ------------------------------------------------------------------ periodic actions
    def periodic(self) -> None:
        """Log, validate and checkpoint when due (always after the last step); advance the bar."""
        step, config = self.step_count, self.config
        last = step == config.steps
        if step % config.log_every == 0 or last:
            self.log_train()
        if self.val_set is not None and (step % self.eval_every == 0 or last):
            with self.meter.overhead():
                self.validate()
        if step % config.checkpoint_every == 0 or last:
            with self.meter.overhead():
                self.check_finite()
                self.save(step)
        if self.bar is not None:   # counts completed steps: waits for the step `lag` steps back
            self.bar.dispatched(step, self.state.step)
            if step % config.log_every == 0 or last:
                self.bar.drain()   # the log line already waited for every step

    def log_train(self) -> None:
        """Append the averaged training metrics since the last log line; reset the sums."""
        self.check_finite()
        a = jax.device_get(self.accum)
        n = max(float(a["steps"]), 1.0)
        ips = self.meter.window_rate()
        rec = {"step": self.step_count, "split": "train", "loss": float(a["loss"]) / n,
               "ce": float(a["ce"]) / n, "error": 1.0 - float(a["correct"]) / max(float(a["count"]), 1.0),
               "grad_norm": float(a["grad_norm"]) / n, "lr": float(make_schedule(self.config)(int(self.state.step))),
               "images_per_s": ips, "time": time.time()}
        if jax.process_index() == 0:
            self.log.append(rec)
            self.tb.record(rec)
        if self.bar is not None:
            self.bar.set_metrics(f"loss={rec['loss']:.4f}, err={100 * rec['error']:.1f}%, img_s={ips:,.0f}")
        self.accum = parallel.replicate(init_accumulators(), self.mesh)

    def validate(self) -> None:
        """Score the validation set and append it to the metrics log."""
        v = evaluate_arrays(self.eval_fn, self.state.params, *self.val_set, self.mesh,
                            batch_size=self.config.eval_batch_size)
        if jax.process_index() == 0:
            rec = {"step": self.step_count, "split": "val", "loss": v["loss"], "error": v["error"], "time": time.time()}
            self.log.append(rec)
            self.tb.record(rec)
            self.tb.transformer_panel(self.step_count, self.model, self.state.params, self.val_set[0])

    def check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if any step since the last log line was non-finite."""
        if float(self.accum["bad"]):
            first = int(self.accum["first_bad"])
            latest = self.checkpointer.latest_step()
            where = f"{self.ckpt_dir / str(latest)} (step {latest})" if latest is not None else "none was written"
            raise TrainingDiverged(
                f"non-finite loss or gradient at step {first} (detected at step {self.step_count}); the run "
                f"stopped without saving that state. Last good checkpoint: {where}. Lower --lr, use "
                f"--clip-norm, a smaller --loc-lr-mult or --identity-penalty.")

    def save(self, step: int) -> None:
        """Checkpoint `step` unless a non-finite step is pending."""
        if float(self.accum["bad"]):
            return  # never checkpoint after a non-finite step
        meta = {"step": step, "config": self.config.to_dict(), "data": self.info, "time": time.time(),
                "elapsed_s": self.elapsed_s()}
        self.checkpointer.save(step, checkpoint_tree(self.state, self.accum), meta)

    # ------------------------------------------------------------------ ending
    def interrupted(self, interrupt: KeyboardInterrupt) -> None:
        """Ctrl-C / SIGTERM: checkpoint the current step (if it is finite) so --resume continues.

        Several processes checkpoint together, so only at the step they agreed on after a
        SIGTERM (:class:`~stn_jax.train.parallel.Preempted`); a Ctrl-C that reached some of
        them at different steps saves nothing (a collective save would wait forever).
        """
        self.close_progress()
        self.tb.close()
        if jax.process_count() > 1 and not isinstance(interrupt, parallel.Preempted):
            log_message(f"interrupted: no checkpoint written (stop a multi-process run with SIGTERM to "
                        f"checkpoint); --resume continues from the latest one in {self.ckpt_dir}")
            return
        jax.block_until_ready(self.state)
        done = int(self.state.step)
        if not float(self.accum["bad"]):
            self.save(done)
            log_message(f"interrupted: checkpoint saved at step {done} in {self.ckpt_dir}; continue with --resume")

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self) -> None:
        """Wait for the last step, stop the meter, close the checkpointer."""
        jax.block_until_ready(self.state)
        self.meter.stop(self.step_count)
        self.checkpointer.close()


# ---------------------------------------------------------------------------- final report
def _final_report(run: _Run) -> dict[str, Any]:
    """Score the test set; write the test record, figures and results.json; return the results."""
    config = run.config
    test_images, test_labels = run.dataset.test_set()
    t_eval = time.perf_counter()
    test = evaluate_arrays(run.eval_fn, run.state.params, test_images, test_labels, run.mesh,
                           batch_size=config.eval_batch_size)
    eval_s = time.perf_counter() - t_eval
    results = run_results(config, test=test, steps=run.step_count, start_step=run.start_step,
                          wall_time_s=time.perf_counter() - run.started, total_wall_time_s=run.elapsed_s(),
                          eval_time_s=eval_s, meter=run.meter,
                          params=run.state.params, info=run.info, mesh=run.mesh)
    last_val = [r for r in read_metrics(run.log.path) if r.get("split") == "val"]
    if last_val:
        results["val_error"] = last_val[-1]["error"]
    if config.figures and jax.process_index() == 0:
        host_variables = {"params": jax.device_get(run.state.params)}   # process 0 runs the model alone
        results["figures"] = write_figures(run.workdir, run.model, host_variables, test_images, test_labels,
                                           run.log.read(), run.info, title=figure_title(config))
    if jax.process_index() == 0:
        rec = {"step": run.step_count, "split": "test", "loss": test["loss"], "error": test["error"], "time": time.time()}
        run.log.append(rec)
        run.tb.record(rec)
        run.tb.close()
        write_json(run.workdir / "results.json", results, default=str)
    return results
