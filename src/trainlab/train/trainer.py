"""The training loop: the lectures' recipe, checkpointed so that a killed run resumes exactly.

One ``Trainer`` owns a run folder::

    config.toml        the fully resolved config
    metrics.jsonl      one JSON object per logged step and per evaluation
    checkpoints/       crash-safe checkpoints (safetensors + JSON), the last k plus the best
    model.safetensors  final raw weights            (at the end)
    ema.safetensors    final averaged weights, if averaging is on
    summary.json       final metrics                (at the end)

Each optimizer step: shuffled mini-batch → forward → loss + explicit penalties → backward →
clipping → non-finite check → step → learning rate of the next step. Every epoch (or
``eval_every`` steps): validation loss and accuracy, for the raw and the averaged weights;
the plateau controller, the keep-best checkpoint and early stopping all read them.
Checkpoints: every ``checkpoint_every`` steps unless the last is younger than
``checkpoint_seconds``, and always at a new best, an early stop and the end; written by a
background thread from copies of the tensors. Everything a step depends on — weights,
optimizer state, batch order position, RNG states, averaged weights, counters,
learning-rate state — is in the checkpoint, so a run killed at any point and resumed from
its last checkpoint ends bit-identical (on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import data as data_lib
from .. import models as models_lib
from ..optim import OPTIMIZERS
from .averaging import EMA
from .checkpoint import (
    CHECKPOINTS_DIR,
    RUN_WEIGHTS_FILE,
    CheckpointWriter,
    latest_checkpoint,
    load_checkpoint,
    load_weights_file,
    prune_checkpoints,
)
from .config import dump_toml, fingerprint
from .plateau import METRIC_MODES, LRController, ReduceOnPlateau, improves
from .regularize import clip_grad_norm_, clip_grad_value_, name_matches, penalty
from .run_folder import CONFIG_FILE, RunFolder
from .schedules import Constant, Schedule
from .state_tree import CheckpointError, rng_state, set_rng_state

MAX_ROLLBACKS = 5
METRICS_FILE = "metrics.jsonl"
#: Weights, gradients and optimizer state take about this many copies of the parameters.
COPIES_PER_PARAMETER = 4


class TrainingError(ValueError):
    """A run that cannot start or continue; the message names the cause and the fix."""


class NonFiniteError(TrainingError):
    """The loss or the gradients became NaN/Inf under ``nonfinite = "raise"``."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped ``fit`` at a step boundary, after a checkpoint was saved."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}; the checkpoint of step {step} is saved. "
            f"Continue with: trainlab train --resume {run_dir}"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def config_changed(run_dir: Path, how: str) -> TrainingError:
    """The refusal of a resume under another config than the run's checkpoints."""
    return TrainingError(
        f"Invalid --resume: {how} change the run in {str(run_dir)!r} (a resumed run must have "
        "the config it started with; undo the change, or start a new run with --run-dir "
        f"and run.init_from={run_dir})"
    )


@dataclass
class Prepared:
    """The data of a run after splitting and normalization."""

    x: Tensor
    y: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int
    feature_shape: tuple[int, ...]


@dataclass
class Progress:
    """The counters and history a checkpoint carries besides tensors."""

    step: int = 0
    epoch: int = 0
    skipped: int = 0
    rollbacks: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None
    bad_evaluations: int = 0
    seconds: float = 0.0  # training time of the steps so far, over every resumed segment
    metrics_bytes: int = 0  # length of metrics.jsonl when the checkpoint was taken
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Train the configured model in ``run_dir``; ``resume=True`` continues its last checkpoint.

    ``run_dir`` is claimed for this process (see :mod:`trainlab.train.run_folder`): a new
    run needs a folder that is new or empty, a resumed one a run folder no other process
    has. ``progress`` is called with a dict after every logged step (the CLI draws its bar
    with it); ``log_every`` is in optimizer steps. ``fit`` turns SIGINT and SIGTERM into a
    checkpoint and :class:`Interrupted` when it runs in the main thread.
    """

    def __init__(
        self,
        config: Any,
        run_dir: str | Path | RunFolder,
        *,
        resume: bool = False,
        progress: Callable[[dict[str, Any]], None] | None = None,
        log_every: int = 10,
    ) -> None:
        self.config = config
        self.run_dir = run_dir.path if isinstance(run_dir, RunFolder) else Path(run_dir)
        self.progress_callback = progress
        self.log_every = log_every
        run = config.run
        if run.threads is not None:
            torch.set_num_threads(run.threads)
        self.device = self._device(run.device)
        seed_everything(run.seed)
        self.data = self._prepare_data()
        self.batches = self._batches()
        self.model = self._model().to(self.device)
        self.optimizer = self._optimizer()
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        exclude = config.penalty.exclude
        self._penalized = [
            p for name, p in self.model.named_parameters() if not name_matches(name, exclude)
        ]
        self.steps_total = self._total_steps()
        self.lr = LRController(self.optimizer, self._schedule(), self._plateau())
        averaging = config.averaging
        self.ema = (
            EMA(self.model, averaging.decay, bias_correction=averaging.bias_correction)
            if averaging.ema
            else None
        )
        self.loss_fn = self._loss()
        self.state = Progress()
        self._fingerprint = fingerprint(config)
        self._metrics_file = self.run_dir / METRICS_FILE
        self._writer = CheckpointWriter()
        self._last_save = -math.inf  # time.monotonic() of the last checkpoint
        self._signal: int | None = None  # a SIGINT/SIGTERM received during fit
        self._started: float | None = None  # perf_counter() at step 0 of this segment
        self._saved_step: int | None = None  # the step of the last checkpoint submitted
        self.resumed_from: Path | None = None  # the checkpoint a resume started from
        if isinstance(run_dir, RunFolder):
            self.folder = run_dir
        elif resume:
            self.folder = RunFolder.claim_existing(self.run_dir)
        else:
            self.folder = RunFolder.claim_new(self.run_dir)
        try:
            self._tensorboard = self._tensorboard_writer() if run.tensorboard else None
            if resume:
                self._resume()
            else:
                self._write_config()
        except BaseException:
            self.folder.release(remove_if_unused=True)
            raise

    def _tensorboard_writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainingError(
                "Invalid run.tensorboard: true, but the tensorboard package is not installed "
                "(pip install tensorboard, or set run.tensorboard=false; metrics.jsonl is "
                "always written)"
            ) from None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    # -- set-up ------------------------------------------------------------------------------
    def _device(self, choice: str) -> torch.device:
        if choice == "cuda" and not torch.cuda.is_available():
            raise TrainingError(
                "Invalid run.device: 'cuda' (no CUDA device is available here; use "
                'run.device="auto" or "cpu")'
            )
        if choice == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(choice)

    def _prepare_data(self) -> Prepared:
        cfg = self.config.data
        ds = data_lib.load(cfg.name, **cfg.options)
        x, y = ds.x, ds.y
        for name, tensor in (("training", x), ("test", ds.x_test)):
            if tensor is not None and not bool(torch.isfinite(tensor).all()):
                raise TrainingError(
                    f"Invalid data: the {name} features of {cfg.name!r} hold NaN or Inf "
                    "values (clean the data before training)"
                )
        seed = self.config.run.seed
        if ds.x_test is None:  # no fixed test split: carve both from the data
            val = test = cfg.val_fraction if cfg.val_fraction > 0 else 0.2
            parts = data_lib.split(
                x, y, (1 - val - test, val, test), stratify=cfg.stratify, seed=seed
            )
            (x, y), (x_val, y_val), (x_test, y_test) = parts.train, parts.val, parts.test
        else:
            x_test, y_test = ds.x_test, ds.y_test
            if cfg.val_fraction > 0:
                (x, y), (x_val, y_val) = data_lib.carve_validation(
                    x, y, cfg.val_fraction, stratify=cfg.stratify, seed=seed
                )
            else:
                x_val, y_val = x[:0], y[:0]
        if cfg.normalize != "none":
            normalizer = data_lib.Normalizer(cfg.normalize).fit(x)  # training split only
            x, x_val, x_test = normalizer(x), normalizer(x_val), normalizer(x_test)
        return Prepared(x, y, x_val, y_val, x_test, y_test, ds.classes, ds.feature_shape)

    def _batches(self) -> data_lib.Batches:
        cfg = self.config.data
        ops = cfg.augmentations()
        return data_lib.Batches(
            self.data.x,
            self.data.y,
            cfg.batch_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=self.config.run.seed,
            augment=data_lib.Compose(ops) if ops else None,
        )

    def _model(self) -> nn.Module:
        with torch.device("meta"):  # shapes only: count the parameters before allocating
            parameters = sum(p.numel() for p in self._build_model().parameters())
        needed, available = parameters * 4 * COPIES_PER_PARAMETER, _memory_bytes()
        if available is not None and needed > available:
            cfg = self.config.model
            raise TrainingError(
                f"Invalid model: {parameters:.3g} parameters (model.hidden={list(cfg.hidden)}, "
                f"model.channels={list(cfg.channels)}) need about {needed / 2**30:.3g} GiB "
                "for weights, gradients and optimizer state, and this machine has "
                f"{available / 2**30:.3g} GiB (use fewer or narrower layers)"
            )
        model = self._build_model()
        cfg = self.config.model
        models_lib.init_(model, cfg.init, **cfg.init_options)
        run = self.config.run
        if run.init_from:
            self._warm_start(model, run.init_from, run.init_skip)
        for name, param in model.named_parameters():
            if name_matches(name, run.freeze):
                param.requires_grad_(False)
        return model

    def _build_model(self) -> nn.Module:
        """The configured architecture, uninitialized (on the current default device)."""
        cfg = self.config.model
        common = dict(activation=cfg.activation, batch_norm=cfg.batch_norm, dropout=cfg.dropout)
        shape = self.data.feature_shape
        if cfg.kind == "cnn":
            model = models_lib.cnn(
                shape,
                cfg.channels,
                self.data.classes,
                kernel_size=cfg.kernel_size,
                hidden=tuple(cfg.hidden),
                global_pool=cfg.global_pool,
                **common,
            )
        else:
            model = models_lib.mlp(shape, tuple(cfg.hidden), self.data.classes, **common)
        return model

    @staticmethod
    def _warm_start(model: nn.Module, source: str, skip: list[str]) -> None:
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

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config.optimizer
        spec = OPTIMIZERS[cfg.name]
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if name_matches(name, cfg.no_decay) else decay).append(param)
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return spec.cls(groups, lr=cfg.lr, backend=cfg.backend, **cfg.options)

    def _total_steps(self) -> int:
        return self.config.run.total_steps(len(self.batches))

    def _schedule(self) -> Schedule:
        return self.config.schedule.schedule() or Constant()

    def _plateau(self) -> ReduceOnPlateau | None:
        return self.config.schedule.reduce_on_plateau()

    def _loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        cfg = self.config.loss
        if cfg.name == "mse":
            classes = self.data.classes

            def mse(logits: Tensor, y: Tensor) -> Tensor:
                target = torch.nn.functional.one_hot(y, classes).to(logits.dtype)
                return torch.nn.functional.mse_loss(logits, target)

            return mse
        smoothing = cfg.label_smoothing
        return lambda logits, y: torch.nn.functional.cross_entropy(
            logits, y, label_smoothing=smoothing
        )

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the configured length; returns the summary (also in summary.json).

        SIGINT (Ctrl-C) or SIGTERM lets the step under way finish, saves a checkpoint and
        raises :class:`Interrupted`; a second Ctrl-C raises ``KeyboardInterrupt`` at once
        (checkpoints are written atomically, so nothing saved is corrupted either way).
        """
        self.folder.acquire()
        try:
            with self._signals_caught():
                return self._fit()
        finally:
            self.folder.release()

    def _fit(self) -> dict[str, Any]:
        self._started = time.perf_counter() - self.state.seconds
        stopped_early = False
        try:
            while self.state.step < self.steps_total and not stopped_early:
                self.model.train()
                for xb, yb in self.batches:
                    self._writer.raise_if_failed()
                    # False: a skipped or rolled-back step, with nothing new to evaluate
                    if self._train_step(xb.to(self.device), yb.to(self.device)):
                        stopped_early = self._after_step()
                    if self._signal is not None:
                        self._stop_for_signal(self._signal)
                    if self.state.step >= self.steps_total or stopped_early:
                        break
                self.state.epoch = self.batches.epoch
        except BaseException:
            # The checkpoint in flight holds a good state: let it reach the disk.
            self._writer.wait(raise_errors=False)
            raise
        self._writer.wait()
        return self._finish(time.perf_counter() - self._started)

    def _after_step(self) -> bool:
        """Evaluation and checkpoints that are due after a step; True: stop early."""
        run, step = self.config.run, self.state.step
        eval_every = run.eval_every or len(self.batches)
        checkpoint_every = run.checkpoint_every or eval_every
        stopped_early = new_best = False
        if step % eval_every == 0 or step == self.steps_total:
            stopped_early = self._evaluate_and_select()
            new_best = self.state.best_checkpoint == f"step-{step:08d}"
        due = step % checkpoint_every == 0 and (
            time.monotonic() - self._last_save >= run.checkpoint_seconds
        )
        if due or new_best or stopped_early or step == self.steps_total:
            self.save(background=True)
        return stopped_early

    @contextlib.contextmanager
    def _signals_caught(self) -> Iterator[None]:
        """Within: SIGINT/SIGTERM ask the loop to stop at the next step boundary."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._signal = signum

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._signal = None

    def _stop_for_signal(self, signum: int) -> None:
        if self._saved_step != self.state.step:
            self.save(background=True)
        self._writer.wait()
        raise Interrupted(signum, self.state.step, self.run_dir)

    def _train_step(self, xb: Tensor, yb: Tensor) -> bool:
        """One optimizer step on (xb, yb); False when non-finite values prevented it."""
        cfg = self.config
        self.lr.step(self.state.step)
        self.optimizer.zero_grad()
        logits = self.model(xb)
        loss = self.loss_fn(logits, yb)
        if cfg.penalty.l1 or cfg.penalty.l2:
            loss = loss + penalty(self._penalized, l2=cfg.penalty.l2, l1=cfg.penalty.l1)
        loss.backward()
        params = [p for p in self._trainable if p.grad is not None]
        if cfg.clip.mode == "norm":  # scales nothing when the norm is not finite
            norms = [clip_grad_norm_(params, cfg.clip.max_norm)]
        else:  # gradients are finite iff their norms are
            norms = list(torch._foreach_norm([p.grad for p in params]))
        # One synchronisation for the loss and all gradients, before value clipping
        # (which would turn ±inf into ±limit).
        finite = bool(torch.isfinite(torch.stack([loss.detach(), *norms])).all())
        if finite and cfg.clip.mode == "value":
            clip_grad_value_(params, cfg.clip.value, count=False)
        if not finite:
            self._nonfinite(loss)
            return False
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.state.step += 1
        if self.state.step % self.log_every == 0 or self.state.step == 1:
            record = {
                "step": self.state.step,
                "epoch": self.batches.epoch,
                "loss": loss.item(),
                "lr": self.optimizer.param_groups[0]["lr"],
                # on the training batch, in train mode (no extra forward pass)
                "accuracy": (logits.detach().argmax(1) == yb).float().mean().item(),
            }
            self._log(record)
        return True

    def _nonfinite(self, loss: Tensor) -> None:
        policy, step = self.config.run.nonfinite, self.state.step
        self.optimizer.zero_grad()
        if policy == "skip":
            self.state.skipped += 1
            self._log({"step": step, "event": "skipped non-finite step"})
            return
        if policy == "rollback":
            if self.state.rollbacks >= MAX_ROLLBACKS:
                raise NonFiniteError(
                    f"Non-finite values again at step {step} after {MAX_ROLLBACKS} rollbacks, "
                    "each cutting the learning rate by 10× (the problem is probably not the "
                    "rate: check the data, the loss and the model's initialization)"
                )
            self._writer.wait()  # the last good checkpoint is on disk before it is read
            last = latest_checkpoint(self.run_dir)
            if last is not None:
                self._restore(load_checkpoint(last))
            self.lr.base_lrs = [lr * 0.1 for lr in self.lr.base_lrs]
            self.state.rollbacks += 1
            self._log({"step": step, "event": "rollback", "to_step": self.state.step})
            # Save the cut rate and the count now, whatever run.checkpoint_seconds says: a
            # later rollback must start from them, not from the checkpoint restored here.
            self.save(background=True)
            return
        self._writer.wait()  # the last good checkpoint is complete before the run stops
        raise NonFiniteError(
            f"Non-finite {'loss' if not bool(torch.isfinite(loss)) else 'gradient'} at "
            f"step {step} (loss {loss.item()}). The learning rate "
            f"({self.optimizer.param_groups[0]['lr']:.3g}) is probably too high: lower "
            'optimizer.lr, or set run.nonfinite="rollback" to restore the last checkpoint '
            "and continue with a 10× smaller rate. Checkpoints already saved are kept."
        )

    # -- evaluation and selection --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss and accuracy on (x, y) in eval mode, in batches."""
        if len(x) == 0:
            return {"loss": math.nan, "accuracy": math.nan}
        was = self.model.training
        self.model.eval()
        total_loss, correct = 0.0, 0
        for start in range(0, len(x), 1024):
            xb, yb = (
                x[start : start + 1024].to(self.device),
                y[start : start + 1024].to(self.device),
            )
            logits = self.model(xb)
            total_loss += self.loss_fn(logits, yb).item() * len(xb)
            correct += int((logits.argmax(1) == yb).sum())
        self.model.train(was)
        return {"loss": total_loss / len(x), "accuracy": correct / len(x)}

    def _evaluate_and_select(self) -> bool:
        """Evaluate on validation; plateau, keep-best and early stopping. True: stop."""
        val = self.evaluate(self.data.x_val, self.data.y_val)
        record = {"step": self.state.step, "epoch": self.batches.epoch}
        record.update({f"val_{k}": v for k, v in val.items()})
        if self.ema is not None and self.ema.num_updates > 0:
            with self.ema.swapped(self.model):
                ema_val = self.evaluate(self.data.x_val, self.data.y_val)
            record.update({f"ema_val_{k}": v for k, v in ema_val.items()})
        self._log(record)
        self.state.history.append(record)
        plateau = self.config.schedule.plateau
        if plateau:
            self.lr.report(record[plateau.get("metric", "val_loss")], self.state.step)
        return self._select(record)

    def _select(self, record: dict[str, Any]) -> bool:
        run = self.config.run
        key = run.keep_best_by or ("val_loss" if run.early_stopping else None)
        if key is None or math.isnan(record[key]):
            return False
        if improves(record[key], self.state.best_metric, METRIC_MODES[key], 0.0, rel=False):
            self.state.best_metric = record[key]
            self.state.bad_evaluations = 0
            self.state.best_checkpoint = f"step-{self.state.step:08d}"
            return False
        self.state.bad_evaluations += 1
        stop = run.early_stopping
        return bool(stop) and self.state.bad_evaluations >= stop["patience"]

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, *, background: bool = False) -> Path:
        """Checkpoint everything the next step depends on, then prune old checkpoints.

        With ``background=True`` (as ``fit`` does) the tensors are copied now and the files
        written by a background thread while training goes on; the checkpoint is complete
        once the next save, a rollback or the end of ``fit`` has waited for it.
        """
        name = f"step-{self.state.step:08d}"
        self._last_save = time.monotonic()
        self._saved_step = self.state.step
        if self._started is not None:
            self.state.seconds = time.perf_counter() - self._started
        self.state.metrics_bytes = _size(self._metrics_file)
        state = {
            "config_fingerprint": self._fingerprint,
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "batches": self.batches.state_dict(),
            "rng": rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "progress": {k: v for k, v in vars(self.state).items()},
        }
        best, keep_last, run_dir = (
            self.state.best_checkpoint,
            self.config.run.keep_last,
            self.run_dir,
        )

        def prune() -> None:
            kept = best if best and (run_dir / CHECKPOINTS_DIR / best).exists() else None
            prune_checkpoints(run_dir, keep_last, kept)

        path = self._writer.submit(
            run_dir,
            name,
            weights=self.model.state_dict(),
            state=state,
            metrics={"step": self.state.step},
            then=prune,
        )
        if not background:
            self._writer.wait()
        return path

    def _write_config(self) -> None:
        """The resolved config as ``config.toml``, written to a temporary file and renamed."""
        temp = self.run_dir / f".{CONFIG_FILE}.tmp"
        temp.write_text(dump_toml(self.config))
        os.replace(temp, self.run_dir / CONFIG_FILE)

    def _resume(self) -> None:
        """Continue from the last complete checkpoint, or from the start when there is none.

        A run killed before its first checkpoint was complete has nothing to continue from,
        so it starts over (the seed makes it the same run). ``metrics.jsonl`` is cut back to
        its length at the checkpoint: the records of steps done after it, which are done
        again now, would otherwise appear twice.
        """
        last = latest_checkpoint(self.run_dir)
        cut: int | None = 0  # no checkpoint: the run starts over with an empty log
        if last is not None:
            checkpoint = load_checkpoint(last)
            saved = checkpoint.state.get("config_fingerprint")
            if saved is not None and saved != self._fingerprint:
                raise config_changed(self.run_dir, f"the settings in its {CONFIG_FILE}")
            self._restore(checkpoint)
            self.resumed_from = last
            # checkpoints of earlier trainlab versions do not say: keep the whole log
            known = "metrics_bytes" in checkpoint.state.get("progress", {})
            cut = self.state.metrics_bytes if known else None
        if cut is not None and _size(self._metrics_file) > cut:
            os.truncate(self._metrics_file, cut)
        self._log({"step": self.state.step, "event": "resumed", "from": last and last.name})

    def _restore(self, checkpoint: Any) -> None:
        state = checkpoint.state
        try:
            self.model.load_state_dict(checkpoint.weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self._check_optimizer_state()
            self.lr.load_state_dict(state["lr"])
            self.batches.load_state_dict(state["batches"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            self.state = Progress(**state["progress"])
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
            detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise CheckpointError(
                f"Cannot resume from {checkpoint.path}: it does not fit this run's model, "
                f"optimizer or counters ({type(error).__name__}: {detail}). Fix: resume from "
                "another checkpoint of the run (delete this one), or start a new run"
            ) from None

    def _check_optimizer_state(self) -> None:
        """Every per-parameter state tensor has its parameter's shape (or is a scalar)."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                for key, value in self.optimizer.state.get(param, {}).items():
                    shaped = isinstance(value, Tensor) and value.dim() > 0
                    if shaped and value.shape != param.shape:
                        raise ValueError(
                            f"optimizer state {key!r} has shape {tuple(value.shape)}, "
                            f"its parameter {tuple(param.shape)}"
                        )

    def _finish(self, seconds: float) -> dict[str, Any]:
        import safetensors.torch

        if self.config.run.early_stopping and self.config.run.early_stopping.get("restore_best"):
            best = self.state.best_checkpoint
            if best and (self.run_dir / CHECKPOINTS_DIR / best).exists():
                self.model.load_state_dict(
                    load_checkpoint(self.run_dir / CHECKPOINTS_DIR / best).weights
                )
        train = self.evaluate(self.data.x, self.data.y)
        val = self.evaluate(self.data.x_val, self.data.y_val)
        test = self.evaluate(self.data.x_test, self.data.y_test)
        summary: dict[str, Any] = {
            "steps": self.state.step,
            "epochs": round(self.state.step / len(self.batches), 2),
            "seconds": seconds,
            "train_accuracy": train["accuracy"],
            "val_accuracy": val["accuracy"],
            "test_accuracy": test["accuracy"],
            "train_loss": train["loss"],
            "val_loss": val["loss"],
            "test_loss": test["loss"],
            "generalization_gap": train["accuracy"] - test["accuracy"],
            "skipped_steps": self.state.skipped,
            "rollbacks": self.state.rollbacks,
        }
        weights = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        safetensors.torch.save_file(weights, str(self.run_dir / RUN_WEIGHTS_FILE))
        if self.ema is not None and self.ema.num_updates > 0:
            with self.ema.swapped(self.model):
                summary["ema_test_accuracy"] = self.evaluate(self.data.x_test, self.data.y_test)[
                    "accuracy"
                ]
            ema = {k: v.detach().contiguous().cpu() for k, v in self.ema.weights().items()}
            safetensors.torch.save_file(ema, str(self.run_dir / "ema.safetensors"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _log(self, record: dict[str, Any]) -> None:
        with open(self._metrics_file, "a") as file:
            file.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])
        if self.progress_callback is not None and "loss" in record:
            self.progress_callback({**record, "total_steps": self.steps_total})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
