"""The training engine: config, optax optimisers, pure steps, mesh data parallelism,
orbax checkpoints, metrics, the loop, evaluation, run loading and reporting.

>>> from stn_jax.train import TrainConfig, train
>>> results = train(TrainConfig(dataset="rts", model="st-cnn", steps=2000, workdir="runs/rts"))  # doctest: +SKIP
"""

from stn_jax.train.checkpoint import CheckpointError
from stn_jax.train.checkpoint import Checkpointer
from stn_jax.train.config import TrainConfig
from stn_jax.train.evaluation import evaluate
from stn_jax.train.evaluation import evaluate_arrays
from stn_jax.train.loop import TrainingDiverged
from stn_jax.train.loop import train
from stn_jax.train.optim import make_optimizer
from stn_jax.train.optim import make_schedule
from stn_jax.train.parallel import make_mesh
from stn_jax.train.runs import LoadedRun
from stn_jax.train.runs import load_run
from stn_jax.train.steps import TrainState
from stn_jax.train.steps import create_state
from stn_jax.train.steps import eval_step
from stn_jax.train.steps import train_step

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "LoadedRun",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "create_state",
    "eval_step",
    "evaluate",
    "evaluate_arrays",
    "load_run",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "train",
    "train_step",
]
