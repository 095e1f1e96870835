"""``trainlab.fit``: the trainer for your own model and data; ``trainlab.load_run``: runs back;
``trainlab.predict``: a run's or a model's predictions on new inputs.

::

    import torch, trainlab

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    summary = trainlab.fit(model, (x, y), val=(x_val, y_val), epochs=5, lr=3e-3)
    run = trainlab.load_run(summary["run_dir"], model=model)   # weights, config, metrics
    probabilities = run.predict(x_new)

``fit`` takes any ``nn.Module``; data as ``(x, y)`` tensors or NumPy arrays, a map-style
``Dataset`` or a ``DataLoader``; classification (integer labels) or regression (float
targets); a trainlab or torch optimizer and schedule. Every other setting is a key of the
config (``trainlab train --help`` lists them) given by its name when the name is unique —
``batch_size``, ``eval_every``, ``clip``… — or as ``settings={"clip.mode": "norm"}``. The
run folder, checkpoints, exact resume, signals and non-finite policies are those of
``trainlab train``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .. import data as data_lib
from .build import (
    LOSSES,
    TASKS,
    Parts,
    architecture,
    build_optimizer,
    check_fits_in_memory,
    make_loss,
    prepared_data,
)
from .callbacks import Callback, ProgressBar
from .checkpoint import (
    CHECKPOINTS_DIR,
    RUN_WEIGHTS_FILE,
    latest_checkpoint,
    load_checkpoint,
    load_weights_file,
)
from .config import Config, config_keys, load_config, synonym
from .errors import TrainingError
from .evaluation import predict as predict_batches
from .run_folder import (
    CONFIG_FILE,
    LOCK_FILE,
    RunFolder,
    RunFolderError,
    check_is_run,
    default_stem,
)
from .runs import MetricsLog, read_record, read_run_text, read_seeds, read_summary
from .schedules import Schedule
from .sources import EVAL_BATCH, as_pair, first_batch, input_batches, size, training_batches
from .state_tree import rng_state, set_rng_state
from .trainer import (
    EMA_WEIGHTS_FILE,
    RUN_FILE,
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
#: Settings that ``fit`` takes as keyword arguments of its own: its ``optimizer`` and ``loss``.
_OWN_KEYWORDS = {"optimizer.name": "optimizer", "loss.name": "loss"}
#: Where an unknown setting's message points: the list of ``fit``'s keywords and settings.
_FIT_HELP = "see help(trainlab.fit)"
SPLITS = ("train", "val", "test")


def fit(
    model: nn.Module,
    train: Any,
    *,
    val: Any = None,
    test: Any = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    epochs: int | None = None,
    seed: int | None = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = None,
    optimizer: str | torch.optim.Optimizer | Callable[..., Any] | None = None,
    schedule: Any = None,
    task: str | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``train`` and return the summary, as in ``summary.json``.

    Args:
        model: any ``nn.Module``: built, initialized and on its device by you.
        train: ``(x, y)`` tensors or NumPy arrays (anything ``torch.as_tensor`` takes:
            floating point becomes the model's dtype, integers int64), a map-style
            ``Dataset`` or a ``DataLoader`` yielding ``(x, y)``. Tensors, arrays and
            Datasets resume mid-epoch exactly; a ``DataLoader`` of
            your own resumes exactly when its sampler has ``state_dict``/``load_state_dict``
            (``trainlab.data.loader``), otherwise at the start of the next epoch.
        val: validation data, in any form ``train`` takes (default: None).
        test: test data, in any form ``train`` takes (default: None).
        run_dir: the run folder (default: a new ``runs/<model class>-<time>``). When it
            already holds a run (a script run twice), the new run goes to a fresh numbered
            folder beside it, ``<run_dir>-2``, ``-3``, …, announced in one line on stderr
            and returned as the summary's ``"run_dir"``.
        resume: continue the run in ``run_dir`` from its last checkpoint (call ``fit``
            with the same model, data and settings). The first Ctrl-C saves a checkpoint
            and raises [`FitInterrupted`][trainlab.train.FitInterrupted], a
            ``KeyboardInterrupt``; ``resume=True`` then continues where it stopped.
        overwrite: replace the run in ``run_dir``: its files are deleted when the new run
            starts (a folder of files trainlab did not create is refused).
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
        progress: show progress (default: True): a live tqdm bar on a terminal or in a
            notebook, a plain line now and then in a log file; False prints nothing.
        settings: config keys as ``"section.key"``, for names that are not unique, and the
            optimizer's keywords as ``{"optimizer.options": {"weight_decay": 0.01}}`` (every
            key and its default: the configuration reference of the documentation).
        options: config keys by their name (``lr``, ``batch_size``, ``eval_every``, ...).
    """
    tree = _settings_tree(settings or {}, options, epochs, seed, optimizer, loss)
    config = Config.from_dict(tree)
    run = config.run
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    seed_everything(run.seed)
    if resume and overwrite:
        raise TrainingError(
            "Invalid arguments: resume=True and overwrite=True (resume continues the run in "
            "run_dir, overwrite replaces it: pass one of them)"
        )
    parts = _parts(model, train, val, test, config, loss, optimizer, schedule, task)
    old_run = None  # overwrite=True: where the replaced run waits until the new one starts
    if run_dir is None:
        if resume:
            raise TrainingError("Invalid resume: True without run_dir (pass the run folder)")
        folder = RunFolder.claim_unique("runs", default_stem(type(model).__name__.lower()))
    elif overwrite:
        folder, old_run = replace_run_folder(run_dir)
    else:
        folder = claim_run_folder(run_dir, resume=resume)
    bar: list[Callback] = [ProgressBar()] if progress else []
    try:
        trainer = Trainer(config, folder, resume=resume, callbacks=[*bar, *callbacks], parts=parts)
    except BaseException as error:
        try:
            if old_run is not None:  # the new run did not start: the old one comes back
                _restore_run(old_run, folder.path, error)
        finally:
            folder.release(remove_if_unused=True)  # the folder claimed above: give it back
        raise
    if old_run is not None:
        shutil.rmtree(old_run)
    return trainer.fit()


def claim_run_folder(run_dir: str | Path, *, resume: bool) -> RunFolder:
    """The folder a run of ``fit`` trains in, claimed for this process.

    ``resume``: the run in ``run_dir``. Otherwise ``run_dir`` when it is new or empty, else
    the first free numbered folder beside it — what Lightning users expect of a script run
    twice. Each numbered folder is created by ``mkdir`` without ``exist_ok``
    (`RunFolder.claim_unique`), so two scripts started at once never share one.
    """
    path = Path(run_dir)
    if resume:
        if not (path / CONFIG_FILE).is_file():
            raise TrainingError(
                f"Invalid resume: True, but {str(path)!r} holds no run to continue (no "
                f"{CONFIG_FILE}; drop resume=True to start a new run there, or pass the folder "
                "of the run to continue)"
            )
        return RunFolder.claim_existing(path)
    if path.is_dir() and not _contents(path):
        try:
            return RunFolder.claim_new(path)
        except RunFolderError:
            pass  # another process claimed it meanwhile: number this run's folder
    folder = RunFolder.claim_unique(path.parent, path.name)
    if folder.path != path:
        what = "already holds a run" if (path / CONFIG_FILE).is_file() else "is taken"
        print(
            f"trainlab: {str(path)!r} {what}; this run goes to {str(folder.path)!r} "
            f"(resume=True continues {str(path)!r}, overwrite=True replaces it)",
            file=sys.stderr,
        )
    return folder


def _contents(path: Path) -> list[str]:
    """What a folder holds besides a lock file (nothing when it is missing)."""
    if not path.is_dir():
        return [path.name] if path.exists() else []
    return sorted(child.name for child in path.iterdir() if child.name != LOCK_FILE)


def replace_run_folder(run_dir: str | Path) -> tuple[RunFolder, Path | None]:
    """``run_dir`` claimed and emptied of its run for ``overwrite=True``, and where the old
    run's files went (None when there was none): only a run folder is emptied.

    The old files are moved to a hidden folder beside it, a rename on the same disk; ``fit``
    deletes them once the new run has started, or moves them back when it cannot start, so
    a refused setting never costs the old run.
    """
    path = Path(run_dir)
    contents = _contents(path)
    if not contents:
        return claim_run_folder(path, resume=False), None
    if not (path / CONFIG_FILE).is_file():
        shown = ", ".join(contents[:5]) + (f" and {len(contents) - 5} more" if contents[5:] else "")
        raise TrainingError(
            f"Invalid overwrite: True, but {str(path)!r} holds files trainlab did not create "
            f"({shown}; overwrite replaces only a run: choose another run_dir)"
        )
    folder = RunFolder.claim_existing(path)  # refused while another process trains there
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-", dir=path.parent))
    _move_contents(path, aside, skip=LOCK_FILE)
    return folder, aside


def _restore_run(old_run: Path, path: Path, error: BaseException) -> None:
    """The replaced run moved back from ``old_run`` into ``path`` when the new run failed to
    start with ``error``; what that start wrote there (a run that never began) goes first.

    Raises:
        TrainingError: the move failed; chained to ``error``, naming both folders.
    """
    try:
        for child in path.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        _move_contents(old_run, path)
        old_run.rmdir()
    except OSError as restore_error:
        cause = str(error) or type(error).__name__  # Ctrl-C's KeyboardInterrupt has no text
        raise TrainingError(
            f"Invalid overwrite: the new run could not start ({cause}), and the old run's "
            f"files stay in {str(old_run)!r} because they could not be moved back to "
            f"{str(path)!r} ({restore_error}): move them back by hand, or delete them"
        ) from error


def _move_contents(source: Path, target: Path, skip: str = "") -> None:
    """Every entry of ``source`` (but ``skip``) renamed into ``target``."""
    for child in source.iterdir():
        if child.name != skip:
            child.rename(target / child.name)


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
        if not _fit_takes(key):
            raise TrainingError(
                f"Invalid setting: {key!r} (fit takes your model and data; the settings of "
                f"[{section}] do not apply, except {', '.join(_DATA_KEYS)} of [data])"
            )
        tree.setdefault(section, {})[name] = value

    for key, value in settings.items():
        if key not in config_keys():
            hint = _did_you_mean(str(key), short, in_settings=True)
            raise TrainingError(f"Invalid setting: {key!r} (unknown; {hint}{_FIT_HELP})")
        put(key, value)
    for name, value in options.items():
        if name not in short:
            hint = _did_you_mean(name, short, in_settings=False)
            raise TrainingError(f"Invalid option: {name!r} (unknown; {hint}{_FIT_HELP})")
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


def _fit_takes(key: str) -> bool:
    """Whether ``fit`` takes the setting ``key`` ("section.name"): not [model], nor [data]
    but its batching, since the model and the data are the user's."""
    section, _, name = key.partition(".")
    return section in API_SECTIONS and (section != "data" or name.split(".")[0] in _DATA_KEYS)


def _short_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for key in config_keys():
        if _fit_takes(key):
            names.setdefault(key.split(".")[1], []).append(key)
    return names


def _did_you_mean(name: str, short: dict[str, list[str]], *, in_settings: bool) -> str:
    """ "did you mean ...? " for an unknown setting, spelled as ``fit`` takes it (a keyword,
    or a key of ``settings`` when ``in_settings``); "" when there is no good guess.

    Another library's name (`config.synonym`) comes first: spelling alone guesses wrong
    ("weight_decay" is closest to no_decay, "learning_rate" to optimizer.name). A synonym of
    a setting ``fit`` does not take ("dropout" is [model]'s: the model is yours) gets none.
    """
    meant = synonym(name.rpartition(".")[2])
    if meant is None:
        known = config_keys() if in_settings else [n for n, keys in short.items() if len(keys) == 1]
        close = difflib.get_close_matches(name, known, n=1)
        return f"did you mean {close[0]!r}? " if close else ""
    if not _fit_takes(meant):
        return ""
    section, _, key = meant.partition(".")
    if key.startswith("options."):  # a keyword of the optimizer: "wd" is its weight_decay
        table = f"{{{section + '.options'!r}: {{{key.partition('.')[2]!r}: ...}}}}"
        return f"did you mean {table if in_settings else 'settings=' + table}? "
    if in_settings:
        return f"did you mean {meant!r}? "
    if meant in _OWN_KEYWORDS:
        return f"did you mean {_OWN_KEYWORDS[meant]!r}? "
    if short.get(key) == [meant]:
        return f"did you mean {key!r}? "
    return f"did you mean settings={{{meant!r}: ...}}? "


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
    dtype = _float_dtype(model)
    train, val, test = (
        _as_data(name, data, dtype) for name, data in zip(SPLITS, (train, val, test))
    )
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
    guessed = task is None
    task = _task(task, yb)
    device = next(model.parameters()).device
    outputs = _probe(model, xb.to(device))
    if guessed and task == "regression":
        _check_not_a_classifier(outputs, yb)
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


def _as_data(name: str, data: Any, float_dtype: torch.dtype) -> Any:
    """A split as the trainer takes it: Datasets and DataLoaders as they are, pairs of
    arrays as tensors (`trainlab.train.sources.as_pair`)."""
    if data is None or isinstance(data, (Dataset, DataLoader)):
        return data
    return as_pair(name, data, float_dtype)


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype that arrays of floats become: the model's (float32 unless you changed it)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _check_not_a_classifier(outputs: Tensor, targets: Tensor) -> None:
    """Float targets of one number an example for a model of several outputs: class labels
    stored as floats (NumPy and pandas often do), not regression targets."""
    if outputs.dim() != 2 or outputs.shape[1] < 2 or targets.shape == outputs.shape:
        return
    classes = outputs.shape[1]
    raise TrainingError(
        f"Invalid targets: {targets.dtype} labels for a model with {classes} outputs, as a "
        f"classifier gives (class labels must be integers 0..{classes - 1}: pass y.long(), "
        "or y.astype('int64') for NumPy; for real-valued targets pass task='regression' with "
        f"targets of shape (N, {classes}), or give the model one output)"
    )


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
    # a trainlab train run's input normalization, fitted once: it loads the whole dataset
    _normalize: Callable[[Tensor], Tensor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def predict(self, inputs: Any, *, batch_size: int = EVAL_BATCH) -> Tensor:
        """The run's predictions on ``inputs``: see [`predict`][trainlab.train.predict]."""
        return predict(self, inputs, batch_size=batch_size)


WEIGHTS = ("raw", "ema", "best", "swa")


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
    about = _read_about(path / RUN_FILE) or {"source": "config"}
    summary = _read_summary(path)
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


def _read_about(path: Path) -> dict[str, Any] | None:
    """``run.json``, read within its bound (None when missing: a run of trainlab 0.1).

    Damage is an error, not a warning: it says how to rebuild the run — the user's model
    (``source``) or an architecture of trainlab's, with its task, classes and input shape —
    and a guess would load the weights into a model they do not fit, or give wrong answers.
    """
    if not path.exists():
        return None
    try:
        about = read_record(path)
    except ValueError as error:
        raise TrainingError(f"Invalid run file: {error}") from None
    if not isinstance(about, dict):
        raise TrainingError(
            f"Invalid run file: {path} holds a JSON {type(about).__name__}, not an object (it "
            "says how the run was trained: restore it from a copy of the run, or train again)"
        )
    return about


def _read_summary(path: Path) -> dict[str, Any]:
    """``summary.json``'s numbers ({} before the run finishes); the weights do not need
    them, so a damaged file warns, as a damaged metrics.jsonl does, and the run loads."""
    summary, problem = read_summary(path)
    if problem is not None:
        warnings.warn(f"{problem}; Run.summary is empty", stacklevel=3)
    return summary or {}


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; the weights do not need them, so a damaged log
    warns and keeps the records before the damage (a cut-short last line is skipped)."""
    records: list[dict[str, Any]] = []
    try:
        records.extend(MetricsLog(path))
    except ValueError as error:
        warnings.warn(
            f"{error}; Run.metrics holds the {len(records)} record(s) before it", stacklevel=3
        )
    return records


def _read_toml(path: Path) -> dict[str, Any]:
    """A ``trainlab.fit`` run's ``config.toml`` (the sections it used), read within its bound."""
    try:
        return tomllib.loads(read_run_text(path))
    except tomllib.TOMLDecodeError as error:
        raise TrainingError(f"Invalid run file: {path} is not valid TOML ({error})") from None
    except ValueError as error:  # unreadable, too large or not UTF-8
        raise TrainingError(f"Invalid run file: {error}") from None
    except RecursionError:
        raise TrainingError(
            f"Invalid run file: {path} is nested deeper than the TOML reader's recursion limit "
            "(a run's config is a few flat tables: restore it from a copy of the run)"
        ) from None


# --- predictions on new inputs -----------------------------------------------------------------


def predict(
    run_or_model: Run | nn.Module | str | Path,
    inputs: Any,
    *,
    batch_size: int = EVAL_BATCH,
    task: str | None = None,
) -> Tensor:
    """Class probabilities or regression outputs of a run's model (or any model) on ``inputs``.

    The model runs in eval mode (dropout off, batch norm's running statistics), without
    gradients, ``batch_size`` examples at a time, on its own device; its mode is restored
    afterwards. A run of ``trainlab train`` normalized its data (``data.normalize``), so
    ``inputs`` are normalized with the statistics of its training split, as in training and
    ``trainlab evaluate`` (the dataset is loaded to recompute them). A run of
    ``trainlab.fit`` trained on your data as you gave it: pass inputs prepared the same way.

    Args:
        run_or_model: a [`Run`][trainlab.train.Run] (`load_run`; for a run of
            ``trainlab.fit``, loaded with ``model=``), a run folder of ``trainlab train``,
            or an ``nn.Module``.
        inputs: the examples: a tensor, a NumPy array or anything ``torch.as_tensor`` takes
            (floats become the model's dtype), a Dataset of ``x`` or ``(x, y)`` items, or a
            DataLoader of such batches (in its order).
        batch_size: examples per forward pass (default: 1024).
        task: ``"classification"`` or ``"regression"``, for a model; a run knows its own
            (default: None).

    Returns:
        A CPU tensor: for classification softmax(logits), shape ``(N, classes)``, rows
        summing to 1 (``.argmax(1)`` is the predicted class); for regression the model's
        outputs. ``.numpy()`` gives NumPy.
    """
    if isinstance(run_or_model, (str, Path)):
        run_or_model = load_run(run_or_model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"Invalid batch_size: {batch_size!r} (must be an integer >= 1)")
    if isinstance(run_or_model, Run):
        model, task, normalize = _run_predictor(run_or_model, task)
    elif isinstance(run_or_model, nn.Module):
        model, normalize = run_or_model, None
        if task not in TASKS:
            raise TrainingError(
                f"Invalid task: {task!r} for a model (predict needs task='classification' for "
                "class probabilities or task='regression' for the outputs; a run knows its own)"
            )
    else:
        raise TrainingError(
            f"Invalid run_or_model: a {type(run_or_model).__name__} (must be a run of "
            "trainlab.load_run, a run folder or a torch.nn.Module)"
        )
    batches = input_batches(inputs, batch_size, _float_dtype(model))
    if normalize is not None:
        batches = map(normalize, batches)
    device = next(model.parameters(), torch.empty(0)).device
    return predict_batches(model, batches, task, device)


def _run_predictor(run: Run, task: str | None) -> tuple[nn.Module, str, Any]:
    """A run's model, task and input normalization (None for a run of ``trainlab.fit``)."""
    if run.model is None:
        raise TrainingError(
            f"Invalid run: {str(run.path)!r} was trained with trainlab.fit, and predict needs "
            f"its model (load it with trainlab.load_run({str(run.path)!r}, model=YourModel()))"
        )
    own = run.about.get("task", "classification")
    if task is not None and task != own:
        raise TrainingError(
            f"Invalid task: {task!r} for a {own} run (leave task out: a run knows its own)"
        )
    if run.about.get("source") == "python":
        return run.model, own, None
    if run._normalize is None:
        run._normalize = _normalizer(run)
    return run.model, own, run._normalize


def _normalizer(run: Run) -> Callable[[Tensor], Tensor]:
    """``x → x̂``: the feature-shape check and the normalization of a ``trainlab train``
    run, with statistics of its training split only (`trainlab.data.Normalizer`)."""
    config = run.config
    shape = tuple(run.about["feature_shape"])
    scale = None
    if config.data.normalize != "none":
        raw = dataclasses.replace(config, data=dataclasses.replace(config.data, normalize="none"))
        scale = data_lib.Normalizer(config.data.normalize).fit(prepared_data(raw)["train"][0])

    def normalize(x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != shape:
            raise TrainingError(
                f"Invalid inputs: examples of shape {tuple(x.shape[1:])}, but the run's model "
                f"takes {shape} (pass raw examples of {config.data.name!r}'s shape)"
            )
        return x if scale is None else scale(x)

    return normalize


__all__ = ["API_SECTIONS", "SWA_WEIGHTS_FILE", "WEIGHTS", "Run", "fit", "load_run", "predict"]
