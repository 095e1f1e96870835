"""Everything a run needs, built from a config through the registries, or checked from Python.

`Parts` is what the trainer trains and measures: the model, the optimizer, the
training batches, the evaluation data, the loss and the task. ``from_config`` builds it
from a `trainlab.train.config.Config` through ``DATASETS``, ``MODELS``,
``INIT_SCHEMES``, ``OPTIMIZERS`` and ``LOSSES``; ``trainlab.fit`` builds it from the user's
own model and data. Either way the trainer, the run folder and the checkpoints are the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as data_lib
from .. import models as models_lib
from ..optim import OPTIMIZERS
from .checkpoint import load_weights_file
from .errors import TrainingError
from .regularize import name_matches
from .sources import LoaderBatches, training_batches

#: Weights, gradients and optimizer state take about this many copies of the parameters.
COPIES_PER_PARAMETER = 4
TASKS = ("classification", "regression")


@dataclass
class Parts:
    """What a run trains and measures.

    ``train`` yields ``(x, y)`` batches and resumes (``Batches`` or ``LoaderBatches``);
    ``val``/``test`` are ``(x, y)`` tensors, a ``Dataset``, a ``DataLoader`` or None.
    ``schedule`` is a trainlab ``step -> factor`` schedule (applied by ``LRController``)
    or None; ``scheduler`` a torch ``lr_scheduler`` stepped after every optimizer step, as
    torch's own loops do (at most one of the two). ``classes`` is None for regression.
    ``about`` describes the run for ``run.json`` (plain JSON values).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train: data_lib.Batches | LoaderBatches
    val: Any
    test: Any
    loss: Callable[[Tensor, Tensor], Tensor]
    task: str
    classes: int | None = None
    schedule: Callable[[int], float] | None = None
    scheduler: Any = None
    about: dict[str, Any] = field(default_factory=dict)


# --- losses ---------------------------------------------------------------------------------


def make_loss(
    name: str, task: str, classes: int | None, label_smoothing: float = 0.0
) -> Callable[[Tensor, Tensor], Tensor]:
    """The data loss ``name`` for ``task`` (``LOSSES`` lists the names)."""
    if name not in LOSSES:
        raise TrainingError(f"Invalid loss: {name!r} (must be one of {', '.join(LOSSES)})")
    if name == "cross_entropy":
        if task != "classification":
            raise TrainingError(
                "Invalid loss: 'cross_entropy' on regression targets (float y); use 'mse', "
                "'huber' or 'l1', or pass integer class labels for classification"
            )
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    distance = LOSSES[name]
    if task == "classification":  # against one-hot targets, as the lectures' SVM/MSE examples
        width = classes

        def one_hot_loss(out: Tensor, y: Tensor) -> Tensor:
            return distance(out, F.one_hot(y, width).to(out.dtype))

        return one_hot_loss

    def regression_loss(out: Tensor, y: Tensor) -> Tensor:
        return distance(out.reshape(y.shape) if out.numel() == y.numel() else out, y)

    return regression_loss


#: Data losses by name: cross-entropy for classes; distances for regression (or one-hot).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor] | None] = {
    "cross_entropy": None,
    "mse": F.mse_loss,
    "huber": F.huber_loss,
    "l1": F.l1_loss,
}


def needs_closure(optimizer: Any) -> bool:
    """Full-batch methods (L-BFGS, Newton, torch's LBFGS) re-evaluate the loss in ``step``."""
    closure_classes = tuple(spec.cls for spec in OPTIMIZERS.values() if spec.closure)
    return isinstance(optimizer, (*closure_classes, torch.optim.LBFGS))


# --- from a config --------------------------------------------------------------------------


def choose_device(choice: str) -> torch.device:
    """``run.device``: "cpu", "cuda" (refused without a GPU) or "auto" (cuda when present)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "Invalid run.device: 'cuda' (no CUDA device is available here; use "
            'run.device="auto" or "cpu")'
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def from_config(config: Any, device: torch.device) -> Parts:
    """The parts the config describes, built through the registries."""
    x, y, x_val, y_val, x_test, y_test, ds = _prepare_data(config)
    cfg = config.data
    ops = cfg.augmentations()
    full_batch = OPTIMIZERS[config.optimizer.name].closure  # L-BFGS, Newton: all at once
    batches = data_lib.Batches(
        x,
        y,
        len(x) if full_batch else cfg.batch_size,
        shuffle="none" if full_batch else cfg.shuffle,
        drop_last=cfg.drop_last,
        seed=config.run.seed,
        augment=data_lib.Compose(ops) if ops else None,
    )
    model = build_model(config, ds.feature_shape, ds.classes).to(device)
    optimizer = build_optimizer(config, model)
    loss = make_loss(config.loss.name, "classification", ds.classes, config.loss.label_smoothing)
    return Parts(
        model=model,
        optimizer=optimizer,
        train=batches,
        val=(x_val, y_val),
        test=(x_test, y_test),
        loss=loss,
        task="classification",
        classes=ds.classes,
        schedule=config.schedule.schedule(),
        about={
            "source": "config",
            "feature_shape": list(ds.feature_shape),
            "classes": ds.classes,
            "task": "classification",
        },
    )


def prepared_data(config: Any) -> dict[str, tuple[Tensor, Tensor]]:
    """The train/val/test splits of a config's data, split and normalized as in training."""
    x, y, x_val, y_val, x_test, y_test, _ = _prepare_data(config)
    return {"train": (x, y), "val": (x_val, y_val), "test": (x_test, y_test)}


def target_data(config: Any, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dataset ``name``'s test split (all of it when it has none), normalized with the
    statistics of the run's training split, as ``{"<name> test": (x, y)}``."""
    ds = data_lib.load(name, **(options or {}))
    x, y = (ds.x_test, ds.y_test) if ds.x_test is not None else (ds.x, ds.y)
    train = _prepare_data(config, normalize=False)
    if tuple(x.shape[1:]) != tuple(train[0].shape[1:]):
        raise TrainingError(
            f"Invalid --data: {name!r} has examples of shape {tuple(x.shape[1:])}, the run's "
            f"model takes {tuple(train[0].shape[1:])} (pass a dataset of the same shape)"
        )
    if config.data.normalize != "none":
        x = data_lib.Normalizer(config.data.normalize).fit(train[0])(x)
    return {f"{name} test": (x, y)}


def _prepare_data(config: Any, normalize: bool = True) -> tuple[Any, ...]:
    cfg = config.data
    ds = data_lib.load(cfg.name, **cfg.options)
    x, y = ds.x, ds.y
    for name, tensor in (("training", x), ("test", ds.x_test)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"Invalid data: the {name} features of {cfg.name!r} hold NaN or Inf "
                "values (clean the data before training)"
            )
    seed = config.run.seed
    test_fraction = getattr(cfg, "test_fraction", None)
    if ds.x_test is None:  # no fixed test split: carve both from the data
        val = cfg.val_fraction if cfg.val_fraction > 0 else 0.2
        test = val if test_fraction is None else test_fraction
        parts = data_lib.split(x, y, (1 - val - test, val, test), stratify=cfg.stratify, seed=seed)
        (x, y), (x_val, y_val), (x_test, y_test) = parts.train, parts.val, parts.test
    else:
        if test_fraction is not None:
            raise TrainingError(
                f"Invalid data.test_fraction: {test_fraction} ({cfg.name!r} comes with its own "
                "test split; leave data.test_fraction unset)"
            )
        x_test, y_test = ds.x_test, ds.y_test
        if cfg.val_fraction > 0:
            (x, y), (x_val, y_val) = data_lib.carve_validation(
                x, y, cfg.val_fraction, stratify=cfg.stratify, seed=seed
            )
        else:
            x_val, y_val = x[:0], y[:0]
    if normalize and cfg.normalize != "none":
        normalizer = data_lib.Normalizer(cfg.normalize).fit(x)  # training split only
        x, x_val, x_test = normalizer(x), normalizer(x_val), normalizer(x_test)
    return x, y, x_val, y_val, x_test, y_test, ds


def architecture(config: Any, feature_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The configured ``MODELS`` entry, uninitialized, on the default device.

    The builder gets every ``[model]`` setting its signature names (``hidden``,
    ``channels``, ``activation``, ...), so a new entry in ``MODELS`` needs no code here.
    """
    cfg = config.model
    builder = models_lib.MODELS[cfg.kind]
    accepted = inspect.signature(builder).parameters
    options = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name in accepted and f.name != "classes"
    }
    return builder(tuple(feature_shape), classes=classes, **options)


def build_model(config: Any, feature_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The configured network, sized before it is allocated, initialized, warm-started."""
    with torch.device("meta"):  # shapes only: count the parameters before allocating
        parameters = sum(
            p.numel() for p in architecture(config, feature_shape, classes).parameters()
        )
    check_fits_in_memory(parameters, config.model)
    model = architecture(config, feature_shape, classes)
    cfg, run = config.model, config.run
    models_lib.init_(model, cfg.init, **cfg.init_options)
    if run.init_from:
        warm_start(model, run.init_from, run.init_skip)
    for name, param in model.named_parameters():
        if name_matches(name, run.freeze):
            param.requires_grad_(False)
    return model


def check_fits_in_memory(parameters: int, cfg: Any = None) -> None:
    """Refuse a model whose training state would not fit in this machine's memory."""
    needed, available = parameters * 4 * COPIES_PER_PARAMETER, memory_bytes()
    if available is None or needed <= available:
        return
    shape = (
        f" (model.hidden={list(cfg.hidden)}, model.channels={list(cfg.channels)})"
        if cfg is not None
        else ""
    )
    raise TrainingError(
        f"Invalid model: {parameters:.3g} parameters{shape} need about {needed / 2**30:.3g} GiB "
        "for weights, gradients and optimizer state, and this machine has "
        f"{available / 2**30:.3g} GiB (use fewer or narrower layers)"
    )


def memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def warm_start(model: nn.Module, source: str, skip: tuple[str, ...]) -> None:
    """Load ``source``'s weights into ``model``, all but the names matching ``skip``."""
    weights = load_weights_file(Path(source))
    own = model.state_dict()
    loaded = {k: v for k, v in weights.items() if not name_matches(k, skip)}
    for key, value in loaded.items():
        if key not in own:
            raise TrainingError(
                f"Invalid run.init_from: {source!r} has weight {key!r}, which this model "
                "lacks (same architecture needed; list the layers to leave out in "
                'run.init_skip, e.g. ["head.*"])'
            )
        if own[key].shape != value.shape:
            raise TrainingError(
                f"Invalid run.init_from: {key!r} has shape {tuple(value.shape)} in "
                f"{source!r} but {tuple(own[key].shape)} here (leave it out with "
                "run.init_skip, e.g. the classifier when the class count differs)"
            )
    model.load_state_dict(loaded, strict=False)


def build_optimizer(config: Any, model: nn.Module) -> torch.optim.Optimizer:
    """The configured ``OPTIMIZERS`` entry; the ``no_decay`` parameters in a group of their own."""
    cfg = config.optimizer
    spec = OPTIMIZERS[cfg.name]
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name_matches(name, cfg.no_decay) else decay).append(param)
    if not decay and not no_decay:
        raise TrainingError(
            "Invalid model: it has no trainable parameters (every parameter is frozen by "
            "run.freeze, or requires_grad is False; train at least one)"
        )
    if spec.closure:  # full-batch methods take one group and no backend
        return spec.cls(decay + no_decay, lr=cfg.lr, **cfg.options)
    groups = [{"params": decay}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return spec.cls(groups, lr=cfg.lr, backend=cfg.backend, **cfg.options)


__all__ = [
    "LOSSES",
    "TASKS",
    "Parts",
    "TrainingError",
    "architecture",
    "build_model",
    "build_optimizer",
    "check_fits_in_memory",
    "choose_device",
    "from_config",
    "make_loss",
    "needs_closure",
    "prepared_data",
    "training_batches",
    "warm_start",
]
