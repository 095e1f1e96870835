"""``trainlab.fit``: the trainer for your own model and data; ``trainlab.load_run``: runs back.

::

    import torch, trainlab

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    summary = trainlab.fit(model, (x, y), val=(x_val, y_val), epochs=5, lr=3e-3)
    run = trainlab.load_run(summary["run_dir"], model=model)   # weights, config, metrics

``fit`` takes any ``nn.Module``; data as ``(x, y)`` tensors, a map-style ``Dataset`` or a
``DataLoader``; classification (integer labels) or regression (float targets); a trainlab
or torch optimizer and schedule. Every other setting is a key of the config (``trainlab
train --help`` lists them) given by its name when the name is unique — ``batch_size``,
``eval_every``, ``clip``… — or as ``settings={"clip.mode": "norm"}``. The run folder,
checkpoints, exact resume, signals and non-finite policies are those of ``trainlab train``.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .. import data as data_lib
from .build import LOSSES, Parts, architecture, build_optimizer, check_fits_in_memory, make_loss
from .callbacks import Callback
from .checkpoint import (
    CHECKPOINTS_DIR,
    RUN_WEIGHTS_FILE,
    latest_checkpoint,
    load_checkpoint,
    load_weights_file,
)
from .config import Config, config_keys, load_config
from .errors import TrainingError
from .run_folder import CONFIG_FILE, RunFolder, check_is_run, default_stem
from .runs import read_seeds
from .schedules import Schedule
from .sources import check_pair, first_batch, size, training_batches
from .state_tree import rng_state, set_rng_state
from .trainer import (
    EMA_WEIGHTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    SWA_WEIGHTS_FILE,
    Trainer,
    seed_everything,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Sections that apply to a run of the user's own model and data ([data] only for batching).
API_SECTIONS = (
    "data",
    "optimizer",
    "loss",
    "penalty",
    "schedule",
    "clip",
    "averaging",
    "diagnostics",
    "run",
)
_DATA_KEYS = ("batch_size", "shuffle", "drop_last")


def fit(
    model: nn.Module,
    train: Any,
    *,
    val: Any = None,
    test: Any = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    epochs: int | None = None,
    seed: int | None = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = None,
    optimizer: str | torch.optim.Optimizer | Callable[..., Any] | None = None,
    schedule: Any = None,
    task: str | None = None,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``train`` and return the summary, as in ``summary.json``.

    Args:
        model: any ``nn.Module``: built, initialized and on its device by you.
        train: ``(x, y)`` tensors, a map-style ``Dataset`` or a ``DataLoader`` yielding
            ``(x, y)``. Tensors and Datasets resume mid-epoch exactly; a ``DataLoader`` of
            your own resumes exactly when its sampler has ``state_dict``/``load_state_dict``
            (``trainlab.data.loader``), otherwise at the start of the next epoch.
        val: validation data, in any form ``train`` takes (default: None).
        test: test data, in any form ``train`` takes (default: None).
        run_dir: the run folder (default: a new ``runs/<model class>-<time>``).
        resume: continue the run in ``run_dir`` from its last checkpoint (call ``fit``
            with the same model, data and settings).
        callbacks: `trainlab.train.callbacks.Callback` instances.
        epochs: the setting ``run.epochs`` (default: its value in ``settings``).
        seed: the setting ``run.seed`` (default: its value in ``settings``).
        loss: a name of ``LOSSES`` (``"cross_entropy"``, ``"mse"``, ``"huber"``,
            ``"l1"``) or a callable ``loss(outputs, targets)`` → scalar tensor (default:
            cross-entropy for classification, MSE for regression).
        optimizer: a name of ``trainlab.optim.OPTIMIZERS`` (with ``lr=`` and
            ``settings={"optimizer.options": {...}}``), an optimizer over the model's
            parameters (trainlab or ``torch.optim``), or a callable ``params → optimizer``
            (default: AdamW, lr 1e-3, no decay for biases and norms).
        schedule: a trainlab schedule (``trainlab.train.OneCycle(total=...)``), a torch
            ``lr_scheduler`` built on ``optimizer``, or a callable ``optimizer →
            lr_scheduler`` (default: the ``schedule`` settings, a constant rate).
        task: ``"classification"`` or ``"regression"`` (default: integer targets classify,
            floating-point targets regress).
        progress: show the live progress bar.
        settings: config keys as ``"section.key"``, for names that are not unique.
        options: config keys by their name (``lr``, ``batch_size``, ``eval_every``, ...).
    """
    tree = _settings_tree(settings or {}, options, epochs, seed, optimizer, loss)
    config = Config.from_dict(tree)
    run = config.run
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    seed_everything(run.seed)
    parts = _parts(model, train, val, test, config, loss, optimizer, schedule, task)
    if run_dir is None:
        if resume:
            raise TrainingError("Invalid resume: True without run_dir (pass the run folder)")
        run_dir = RunFolder.claim_unique("runs", default_stem(type(model).__name__.lower()))
    bar: list[Callback] = []
    if progress:
        from .callbacks import ProgressBar

        bar = [ProgressBar()]
    try:
        trainer = Trainer(config, run_dir, resume=resume, callbacks=[*bar, *callbacks], parts=parts)
    except BaseException:
        if isinstance(run_dir, RunFolder):  # the folder claimed above, unused: give it back
            run_dir.release(remove_if_unused=True)
        raise
    return trainer.fit()


def _settings_tree(
    settings: dict[str, Any],
    options: dict[str, Any],
    epochs: int | None,
    seed: int | None,
    optimizer: Any,
    loss: Any,
) -> dict[str, dict[str, Any]]:
    """The config tree of ``fit``'s settings: dotted keys and unique short names."""
    short = _short_names()
    tree: dict[str, dict[str, Any]] = {}

    def put(key: str, value: Any) -> None:
        section, _, name = key.partition(".")
        if section not in API_SECTIONS or (section == "data" and name not in _DATA_KEYS):
            raise TrainingError(
                f"Invalid setting: {key!r} (fit takes your model and data; the settings of "
                f"[{section}] do not apply, except {', '.join(_DATA_KEYS)} of [data])"
            )
        tree.setdefault(section, {})[name] = value

    for key, value in settings.items():
        if key not in config_keys():
            close = difflib.get_close_matches(str(key), config_keys(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TrainingError(
                f"Invalid setting: {key!r} (unknown; {hint}see trainlab train --help)"
            )
        put(key, value)
    for name, value in options.items():
        if name not in short:
            known = [n for n, keys in short.items() if len(keys) == 1]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TrainingError(
                f"Invalid option: {name!r} (unknown; {hint}see trainlab train --help)"
            )
        if len(short[name]) > 1:
            raise TrainingError(
                f"Invalid option: {name!r} names {' and '.join(short[name])} (pass it as "
                f"settings={{{short[name][0]!r}: ...}})"
            )
        put(short[name][0], value)
    for key, value in (("run.epochs", epochs), ("run.seed", seed)):
        if value is not None:
            put(key, value)
    if isinstance(optimizer, str):
        put("optimizer.name", optimizer)
    if isinstance(loss, str) and loss != "cross_entropy":
        put("loss.name", loss)  # checked against LOSSES when the loss is built
    return tree


def _short_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for key in config_keys():
        section, name = key.split(".")
        if section in API_SECTIONS and (section != "data" or name in _DATA_KEYS):
            names.setdefault(name, []).append(key)
    return names


def _parts(
    model: Any,
    train: Any,
    val: Any,
    test: Any,
    config: Config,
    loss: Any,
    optimizer: Any,
    schedule: Any,
    task: str | None,
) -> Parts:
    """Check the user's objects and turn them into the trainer's parts."""
    if not isinstance(model, nn.Module):
        raise TrainingError(f"Invalid model: a {type(model).__name__} (must be a torch.nn.Module)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainingError(
            f"Invalid model: {type(model).__name__} has no trainable parameters (every "
            "parameter has requires_grad=False; unfreeze at least one)"
        )
    check_fits_in_memory(sum(p.numel() for p in trainable))
    for name, data in (("val", val), ("test", test)):
        if data is not None and not isinstance(data, (Dataset, DataLoader)):
            check_pair(name, data)
    cfg = config.data
    batches = training_batches(
        train,
        batch_size=cfg.batch_size,
        shuffle=cfg.shuffle,
        seed=config.run.seed,
        drop_last=cfg.drop_last,
    )
    rng = rng_state()  # a shuffling DataLoader draws its order from the global generator
    xb, yb = first_batch(train, "train")
    set_rng_state(rng)
    task = _task(task, yb)
    device = next(model.parameters()).device
    outputs = _probe(model, xb.to(device))
    classes = None
    if task == "classification":
        in_memory = train if not isinstance(train, (Dataset, DataLoader)) else (xb, yb)
        classes = _check_labels(outputs, in_memory, val, test)
    loss_fn = _loss(loss, config, task, classes)
    _check_loss(loss_fn, outputs, yb.to(device))
    opt = _optimizer(optimizer, config, model)
    trainlab_schedule, scheduler = _schedule(schedule, config, opt)
    loss_name = (
        loss if isinstance(loss, str) or loss is None else getattr(loss, "__name__", "custom")
    )
    # config.toml holds the settings that apply: not [model], [data] only for batching, and
    # not [optimizer] when the optimizer is the user's own object
    own_optimizer = not (optimizer is None or isinstance(optimizer, str))
    sections = [
        *(f"data.{key}" for key in _DATA_KEYS),
        *(s for s in API_SECTIONS if s != "data" and not (own_optimizer and s == "optimizer")),
    ]
    return Parts(
        model=model,
        optimizer=opt,
        train=batches,
        val=val,
        test=test,
        loss=loss_fn,
        task=task,
        classes=classes,
        schedule=trainlab_schedule,
        scheduler=scheduler,
        about={
            "source": "python",
            "model": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "task": task,
            "classes": classes,
            "loss": loss_name or ("cross_entropy" if task == "classification" else "mse"),
            "optimizer": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "scheduler": None if scheduler is None else type(scheduler).__qualname__,
            "examples": {"train": size(train), "val": size(val), "test": size(test)},
            "sections": sections,
        },
    )


def _task(task: str | None, targets: Tensor) -> str:
    if task is None:
        if targets.dtype == torch.bool:
            raise TrainingError(
                "Invalid targets: bool tensor (use integer class labels, y.long(), for "
                "classification or floats, y.float(), for regression)"
            )
        return "regression" if targets.is_floating_point() else "classification"
    if task not in ("classification", "regression"):
        raise TrainingError(f"Invalid task: {task!r} (must be 'classification' or 'regression')")
    if task == "classification" and targets.is_floating_point():
        raise TrainingError(
            f"Invalid targets: {targets.dtype} labels for classification (class labels must "
            "be integers 0..C-1: pass y.long(), or task='regression' for real-valued targets)"
        )
    return task


@torch.no_grad()
def _probe(model: nn.Module, xb: Tensor) -> Tensor:
    """The model's outputs on the first batch, in eval mode, leaving RNG and model alone."""
    rng, was = rng_state(), model.training
    model.eval()
    try:
        return model(xb)
    except Exception as error:
        raise TrainingError(
            f"Invalid model: its forward pass fails on the first training batch of shape "
            f"{tuple(xb.shape)} ({type(error).__name__}: {error}) (check that the model's "
            "input size matches the data)"
        ) from error
    finally:
        model.train(was)
        set_rng_state(rng)


def _check_labels(outputs: Tensor, *datas: Any) -> int:
    """The class count: the model's outputs; every tensor label within 0..C-1."""
    if outputs.dim() != 2:
        raise TrainingError(
            f"Invalid model: its outputs have shape {tuple(outputs.shape)} (classification "
            "needs (batch, classes) logits)"
        )
    classes = outputs.shape[1]
    for data in datas:
        if data is None or isinstance(data, (Dataset, DataLoader)):
            continue
        y = data[1]
        if y.is_floating_point():
            raise TrainingError(
                f"Invalid targets: {y.dtype} labels for classification (pass y.long(), or "
                "task='regression' for real-valued targets)"
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise TrainingError(
                f"Invalid targets: labels from {low} to {high}, but the model gives {classes} "
                f"outputs (labels must be 0..{classes - 1}: give the model {high + 1} "
                "outputs, or remap the labels)"
            )
    return classes


def _loss(loss: Any, config: Config, task: str, classes: int | None) -> Callable[..., Tensor]:
    if loss is None or isinstance(loss, str):
        name = loss or ("cross_entropy" if task == "classification" else "mse")
        if name not in LOSSES:
            close = difflib.get_close_matches(name, list(LOSSES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TrainingError(
                f"Invalid loss: {name!r} (unknown; {hint}allowed: {', '.join(LOSSES)})"
            )
        return make_loss(name, task, classes, config.loss.label_smoothing)
    if not callable(loss):
        raise TrainingError(f"Invalid loss: {loss!r} (must be a name or a callable)")
    return loss


def _check_loss(loss: Callable[..., Tensor], outputs: Tensor, targets: Tensor) -> None:
    """The loss at step 0 is one finite number (checked on the first batch, in eval mode)."""
    try:
        value = loss(outputs, targets)
    except Exception as error:
        raise TrainingError(
            f"Invalid loss: it fails on the first batch ({type(error).__name__}: {error}) "
            f"(outputs {tuple(outputs.shape)}, targets {tuple(targets.shape)} of "
            f"{targets.dtype}: check the loss against the model's outputs)"
        ) from error
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise TrainingError(
            f"Invalid loss: it returns {shape} on the first batch (must be a scalar tensor: "
            "reduce it with .mean())"
        )
    if not math.isfinite(value.item()):
        raise TrainingError(
            f"Invalid loss: {value.item()} at step 0, before any update (check the data "
            "for NaN/Inf and the loss for log(0) or division by zero)"
        )


def _optimizer(optimizer: Any, config: Config, model: nn.Module) -> torch.optim.Optimizer:
    if optimizer is None or isinstance(optimizer, str):  # the config checked the name
        return build_optimizer(config, model)
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(model.parameters())
    else:
        raise TrainingError(
            f"Invalid optimizer: {optimizer!r} (a name, an optimizer or a callable)"
        )
    if not isinstance(opt, torch.optim.Optimizer):
        raise TrainingError(
            f"Invalid optimizer: the callable returned a {type(opt).__name__} (must return a "
            "torch.optim.Optimizer over the parameters it is given)"
        )
    own = {id(p) for p in model.parameters()}
    foreign = [p for g in opt.param_groups for p in g["params"] if id(p) not in own]
    if foreign:
        raise TrainingError(
            f"Invalid optimizer: it holds {len(foreign)} parameters that are not the model's "
            "(build it over model.parameters() of the model passed to fit)"
        )
    return opt


def _schedule(schedule: Any, config: Config, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(trainlab schedule, torch scheduler): at most one of the two."""
    if schedule is None:
        return config.schedule.schedule(), None
    if isinstance(schedule, Schedule):
        return schedule, None
    schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    scheduler = schedule
    if not isinstance(schedule, schedulers) and callable(schedule):
        scheduler = schedule(optimizer)
    if not isinstance(scheduler, schedulers):
        raise TrainingError(
            f"Invalid schedule: {schedule!r} (a trainlab schedule, a torch lr_scheduler, or a "
            "callable optimizer → lr_scheduler)"
        )
    if scheduler.optimizer is not optimizer:
        raise TrainingError(
            "Invalid schedule: the lr_scheduler drives another optimizer (build it on the "
            "optimizer passed to fit, or pass a callable optimizer → lr_scheduler)"
        )
    return None, scheduler


# --- runs you can load back -------------------------------------------------------------------


@dataclass
class Run:
    """A run folder read back: its config, summary, metrics, description and model."""

    path: Path
    config: Any
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    about: dict[str, Any]
    model: nn.Module | None
    weights: str


WEIGHTS = ("raw", "ema", "best", "swa")
#: The longest metrics.jsonl read back; a run logs kilobytes per thousand steps.
MAX_METRICS_BYTES = 256 << 20


def load_run(path: str | Path, *, model: nn.Module | None = None, weights: str = "raw") -> Run:
    """Read the run in ``path``: config, summary, metrics, and the model with its weights.

    Args:
        path: a run folder (of ``trainlab train`` or ``trainlab.fit``).
        model: for runs of ``trainlab.fit``, your model (its architecture); the weights
            are loaded into it. For config runs it is rebuilt when not given.
        weights: ``"raw"`` (``model.safetensors``; the last checkpoint while the run has
            not finished), ``"ema"`` (``ema.safetensors``), ``"best"`` (the checkpoint
            picked by ``run.keep_best_by``) or ``"swa"`` (``swa.safetensors``, the
            stochastic weight average of a run with ``averaging.swa_start``).
    """
    path = Path(path)
    check_is_run("run folder", path)
    seeds = read_seeds(path)
    if seeds is not None:
        raise TrainingError(
            f"Invalid run folder: {path} is a seeds run of {len(seeds.seeds)} members, not one "
            f"run (load a member, trainlab.load_run({str(seeds.members[0])!r}), or average "
            f"their predictions with trainlab.ensemble([{str(path)!r}]))"
        )
    if weights not in WEIGHTS:
        raise TrainingError(f"Invalid weights: {weights!r} (must be one of {', '.join(WEIGHTS)})")
    about = _read_json(path / RUN_FILE) or {"source": "config"}
    summary = _read_json(path / SUMMARY_FILE) or {}
    metrics = _read_metrics(path / "metrics.jsonl")
    if about.get("source") == "python":
        config = _read_toml(path / CONFIG_FILE)
        if model is not None:
            model.load_state_dict(_weights(path, weights))
    else:
        config = load_config(path / CONFIG_FILE)
        shape, classes = _shape_and_classes(config, about)
        about = {**about, "feature_shape": list(shape), "classes": classes}
        if model is None:
            model = architecture(config, shape, classes)
        model.load_state_dict(_weights(path, weights))
    return Run(path, config, summary, metrics, about, model, weights)


def _shape_and_classes(config: Config, about: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    if "feature_shape" in about and "classes" in about:
        return tuple(about["feature_shape"]), int(about["classes"])
    ds = data_lib.load(config.data.name, **config.data.options)  # a run of trainlab 0.1
    return ds.feature_shape, ds.classes


def _weights(path: Path, which: str) -> dict[str, Tensor]:
    if which == "ema":
        if not (path / EMA_WEIGHTS_FILE).is_file():
            raise TrainingError(
                f"Invalid weights: 'ema', but {path} has no {EMA_WEIGHTS_FILE} (the run kept no "
                "averaged weights, averaging.ema=false, or has not finished)"
            )
        return load_weights_file(path / EMA_WEIGHTS_FILE)
    if which == "swa":
        if not (path / SWA_WEIGHTS_FILE).is_file():
            raise TrainingError(
                f"Invalid weights: 'swa', but {path} has no {SWA_WEIGHTS_FILE} (the run kept no "
                "stochastic weight average: train with averaging.swa_start set, and let the "
                "run finish)"
            )
        return load_weights_file(path / SWA_WEIGHTS_FILE)
    if which == "best":
        last = latest_checkpoint(path)
        best = last and load_checkpoint(last).state["progress"].get("best_checkpoint")
        if not best or not (path / CHECKPOINTS_DIR / best).is_dir():
            raise TrainingError(
                f"Invalid weights: 'best', but {path} kept no best checkpoint (run.keep_best_by "
                "was none, or no evaluation has happened yet)"
            )
        return load_checkpoint(path / CHECKPOINTS_DIR / best).weights
    if (path / RUN_WEIGHTS_FILE).is_file():
        return load_weights_file(path / RUN_WEIGHTS_FILE)
    last = latest_checkpoint(path)
    if last is None:
        raise TrainingError(f"Invalid run folder: {path} has no weights yet (no checkpoint)")
    return load_checkpoint(last).weights


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TrainingError(f"Invalid run file: {path} is not valid JSON ({error})") from None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise TrainingError(
            f"Invalid run file: {path} has {path.stat().st_size:,} bytes (more than "
            f"{MAX_METRICS_BYTES:,}; read it line by line yourself)"
        )
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise TrainingError(f"Invalid run file: {path} line {number} is not JSON") from None
    return records


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise TrainingError(f"Invalid run file: {path} is not valid TOML ({error})") from None


__all__ = ["API_SECTIONS", "SWA_WEIGHTS_FILE", "WEIGHTS", "Run", "fit", "load_run"]
