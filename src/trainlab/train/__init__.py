"""trainlab.train — the pieces a training loop is built from.

Learning-rate schedules are pure ``step -> factor`` functions (``SCHEDULES`` is their
registry, ``build_schedule`` reads configs), ``ReduceOnPlateau`` drops the rate when a metric
stalls, and ``LRController`` applies both to an optimizer. ``EMA`` keeps Polyak/EMA weights
beside the raw ones; ``penalty`` adds L2/L1/elastic-net terms to the loss; the clipping
functions bound gradients by value or global norm. ``save_checkpoint`` / ``load_checkpoint``
write and read crash-safe checkpoints of safetensors and JSON — never pickle. ``Trainer``
runs the loop (``fit`` for your own model and data, ``Callback`` for its events);
``load_run`` reads a run folder back and ``predict`` gives a run's predictions on new inputs.
"""

from .api import Run, fit, load_run, predict
from .averaging import EMA
from .callbacks import Callback, CsvLog, JsonlLog, ProgressBar, Step
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights_file,
    prune_checkpoints,
    save_checkpoint,
)
from .config import Config, describe, dump_toml, fingerprint, load_config
from .plateau import LRController, PlateauState, ReduceOnPlateau
from .regularize import clip_grad_norm_, clip_grad_value_, penalty
from .schedules import (
    MOMENTUM_SCHEDULES,
    SCHEDULES,
    Constant,
    Cosine,
    CosineAnneal,
    Exponential,
    InverseTime,
    LinearAnneal,
    LinearWarmup,
    MomentumSchedule,
    OneCycle,
    OneCycleMomentum,
    Phases,
    Schedule,
    StepDecay,
    build_schedule,
)
from .trainer import FitInterrupted, Interrupted, NonFiniteError, Trainer, TrainingError

__all__ = [
    "EMA",
    "MOMENTUM_SCHEDULES",
    "SCHEDULES",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "Config",
    "Constant",
    "Cosine",
    "CosineAnneal",
    "CsvLog",
    "Exponential",
    "FitInterrupted",
    "Interrupted",
    "InverseTime",
    "JsonlLog",
    "LRController",
    "LinearAnneal",
    "LinearWarmup",
    "MomentumSchedule",
    "NonFiniteError",
    "OneCycle",
    "OneCycleMomentum",
    "Phases",
    "PlateauState",
    "ProgressBar",
    "ReduceOnPlateau",
    "Run",
    "Schedule",
    "Step",
    "StepDecay",
    "Trainer",
    "TrainingError",
    "build_schedule",
    "clip_grad_norm_",
    "clip_grad_value_",
    "describe",
    "dump_toml",
    "fingerprint",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_run",
    "load_weights_file",
    "penalty",
    "predict",
    "prune_checkpoints",
    "save_checkpoint",
]
