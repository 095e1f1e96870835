"""The training loop: the lectures' recipe, checkpointed so that a killed run resumes exactly.

One ``Trainer`` owns a run folder::

    run.lock           the OS lock of the process training in it, and its PID
    config.toml        the fully resolved config
    run.json           what was trained: where the model and data came from, the task
    metrics.jsonl      one JSON object per logged step, per evaluation and per event
    metrics.csv        the same training and evaluation records as a table
    checkpoints/       crash-safe checkpoints (safetensors + JSON), the last k plus the best
    model.safetensors  final raw weights            (at the end)
    ema.safetensors    final EMA weights, if averaging.ema is on
    swa.safetensors    final SWA weights with recomputed BatchNorm statistics, if SWA is on
    snapshots/         cycle-<k>.safetensors: the weights at the end of each lr cycle, if
                       averaging.snapshots is on (written as each cycle ends)
    summary.json       final metrics                (at the end)

Each optimizer step: mini-batch → forward → loss + explicit penalties → backward → clipping →
non-finite check → step → averages (EMA, SWA), a snapshot at the end of an lr cycle → the
``on_step_end`` event. Every epoch (or ``eval_every`` steps):
validation metrics for the raw and the averaged weights; the plateau controller, the
keep-best checkpoint and early stopping read them. Checkpoints: every ``checkpoint_every``
steps unless the last is younger than ``checkpoint_seconds``, and always at a new best, an
early stop and the end; written by a background thread from copies of the tensors.
Everything a step depends on — weights, optimizer and scheduler state, batch position, RNG
states, averaged weights, counters, callbacks' state — is in the checkpoint, so a run
killed at any point and resumed from its last checkpoint ends bit-identical (on CPU).

What is trained comes as `trainlab.train.build.Parts`: built from the config
(``trainlab train``) or from the user's own model and data (``trainlab.fit``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _json as strict_json
from . import distributed
from .averaging import EMA, SWA, recompute_batch_norm
from .build import Parts, choose_device, from_config, needs_closure
from .callbacks import EVENTS, Callback, CsvLog, JsonlLog, Step, TensorBoardLog, overriding
from .checkpoint import (
    CHECKPOINTS_DIR,
    RUN_WEIGHTS_FILE,
    CheckpointWriter,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from .config import dump_toml, fingerprint
from .errors import TrainingError
from .evaluation import evaluate
from .plateau import METRIC_MODES, LRController, ReduceOnPlateau, improves
from .regularize import clip_grad_norm_, clip_grad_value_, name_matches, penalty
from .run_folder import CONFIG_FILE, RunFolder
from .schedules import Constant, cycle_ends
from .sources import EVAL_BATCH, size, unpack
from .state_tree import CheckpointError, rng_state, set_rng_state

MAX_ROLLBACKS = 5
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
EMA_WEIGHTS_FILE = "ema.safetensors"
SWA_WEIGHTS_FILE = "swa.safetensors"
SNAPSHOTS_DIR = "snapshots"
#: β of the smoothed training loss, an exponential moving average with bias correction.
LOSS_SMOOTHING = 0.98


class NonFiniteError(TrainingError):
    """The loss or the gradients became NaN/Inf under ``nonfinite = "raise"``."""


def resume_command(run_dir: Path, python: bool) -> str:
    """How a run continues: in Python for a run of ``trainlab.fit``, whose model and data
    the command line cannot rebuild."""
    if python:
        return (
            f"trainlab.fit(..., run_dir={str(run_dir)!r}, resume=True) with the same model, "
            "data and settings"
        )
    return f"trainlab train --resume {run_dir}"


def _stopped(signum: int, step: int, run_dir: Path, python: bool) -> str:
    """What a signal did, and how to continue."""
    return (
        f"stopped by {signal.Signals(signum).name} at step {step}; the checkpoint of step "
        f"{step} is saved. Continue with: {resume_command(run_dir, python)}"
    )


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped ``fit`` at a step boundary, after a checkpoint was saved."""

    def __init__(self, signum: int, step: int, run_dir: Path, *, python: bool = False) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        super().__init__(_stopped(signum, step, run_dir, python))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``trainlab.fit`` at a step boundary, after a checkpoint was saved.

    A ``KeyboardInterrupt``, because that is what a Python script expects of Ctrl-C: its
    ``except KeyboardInterrupt`` (or a notebook's stop button) catches it, and an ``except
    Exception`` meant for errors does not swallow it. ``step`` and ``run_dir`` say where
    the run stopped; ``trainlab.fit(..., run_dir=run_dir, resume=True)`` continues it.
    """

    def __init__(self, step: int, run_dir: Path) -> None:
        self.signum, self.step, self.run_dir = int(signal.SIGINT), step, run_dir
        super().__init__(_stopped(signal.SIGINT, step, run_dir, python=True))


def config_changed(run_dir: Path, how: str) -> TrainingError:
    """The refusal of a resume under another config than the run's checkpoints."""
    return TrainingError(
        f"Invalid --resume: {how} change the run in {str(run_dir)!r} (a resumed run must have "
        "the config it started with; undo the change, or start a new run with --run-dir "
        f"and run.init_from={run_dir})"
    )


def fit_changed(run_dir: Path) -> TrainingError:
    """The refusal of ``trainlab.fit(..., resume=True)`` with another model, data or settings
    than the run's checkpoints were made with (its fingerprint, `_signature`)."""
    return TrainingError(
        f"Invalid resume: True, but the model, data or settings differ from the run in "
        f"{str(run_dir)!r} (a resumed run continues with what it started with: call fit with "
        "the same model, data and settings, or drop resume=True to start a new run beside it)"
    )


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
    loss_average: float = 0.0  # EMA of the mini-batch losses, before bias correction
    loss_count: int = 0  # mini-batch losses in that average
    history: list[dict[str, Any]] = field(default_factory=list)

    def smoothed_loss(self) -> float:
        """The bias-corrected average: the raw EMA divided by 1 − βᵗ (as Adam's moments)."""
        if self.loss_count == 0:
            return math.nan
        return self.loss_average / (1 - LOSS_SMOOTHING**self.loss_count)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Train ``parts`` (default: what ``config`` describes) in ``run_dir``.

    ``run_dir`` is claimed for this process (see `trainlab.train.run_folder`): a new
    run needs a folder that is new or empty, a resumed one (``resume=True``) a run folder
    no other process has. ``callbacks`` get the loop's events (see
    `trainlab.train.callbacks`); ``metrics.jsonl`` and ``metrics.csv`` are written by
    callbacks that are always attached. ``log_every`` is in optimizer steps. ``fit`` turns
    SIGINT and SIGTERM into a checkpoint and [`Interrupted`][trainlab.train.Interrupted] in the
    main thread (Ctrl-C in ``trainlab.fit``:
    [`FitInterrupted`][trainlab.train.FitInterrupted]). Under torchrun (``WORLD_SIZE`` > 1)
    each process trains on its part of every batch and rank 0 alone writes ``run_dir`` (see
    `trainlab.train.distributed`).
    """

    def __init__(
        self,
        config: Any,
        run_dir: str | Path | RunFolder,
        *,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
        parts: Parts | None = None,
        log_every: int = 10,
    ) -> None:
        self.config = config
        claimed = isinstance(run_dir, (RunFolder, distributed.ReadOnlyFolder))
        self.run_dir = run_dir.path if claimed else Path(run_dir)
        # Under torchrun: this process's rank; rank 0 alone writes the run folder.
        self.ranks = distributed.setup()
        self.log_every = log_every
        run = config.run
        if run.threads is not None:
            torch.set_num_threads(run.threads)
        if parts is None:
            self.device = choose_device(run.device)
            seed_everything(run.seed)
            parts = from_config(config, self.device)
        else:
            self.device = next(parts.model.parameters()).device
        self.parts = parts
        # A run of trainlab.fit: its messages speak Python, and Ctrl-C reaches the script
        self._from_python = parts.about.get("source") == "python"
        self.model, self.optimizer, self.batches = parts.model, parts.optimizer, parts.train
        self.loss_fn, self.task = parts.loss, parts.task
        self.val, self.test = parts.val, parts.test
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._full_batch = needs_closure(self.optimizer)
        if self.ranks.parallel:
            if self._full_batch:
                raise TrainingError(
                    f"Invalid optimizer for {self.ranks.world} processes: "
                    f"{type(self.optimizer).__name__} steps on the whole training set at "
                    "once (train full-batch methods in one process)"
                )
            distributed.shard_batches(self.batches, self.ranks)
        exclude = config.penalty.exclude
        self._penalized = [
            p for name, p in self.model.named_parameters() if not name_matches(name, exclude)
        ]
        self.steps_total = run.total_steps(len(self.batches))
        if hasattr(self.optimizer, "expected_steps"):  # trainlab's: compile only if it pays
            self.optimizer.expected_steps = self.steps_total
        self.scheduler = parts.scheduler
        averaging = config.averaging
        self.lr = (
            None
            if self.scheduler is not None
            else LRController(
                self.optimizer,
                parts.schedule or Constant(),
                self._plateau(),
                momentum=config.schedule.momentum_schedule(),
                swa_lr=averaging.swa_lr,
                swa_start=averaging.swa_start if averaging.swa_lr is not None else None,
            )
        )
        self.ema = (
            EMA(
                self.model,
                averaging.decay,
                bias_correction=averaging.bias_correction,
                warmup=averaging.warmup,
                warmup_gamma=averaging.warmup_gamma,
                warmup_power=averaging.warmup_power,
            )
            if averaging.ema
            else None
        )
        self.swa = self._swa()
        self._swa_announced = False  # the swa_started record is logged once, at swa_start
        self.snapshot_steps = self._snapshot_steps()  # steps after which a cycle ends
        self.state = Progress()
        self._fingerprint = _signature(config, parts)
        self._writer = CheckpointWriter(
            resume_command(self.run_dir, True) if self._from_python else None
        )
        self._last_save = -math.inf  # time.monotonic() of the last checkpoint
        self._signal: int | None = None  # a SIGINT/SIGTERM received during fit
        self._stop_reason: str | None = None  # why a callback asked to stop (request_stop)
        self._started: float | None = None  # perf_counter() at step 0 of this segment
        self._saved_step: int | None = None  # the step of the last checkpoint submitted
        self._pending: list[dict[str, Any]] = []  # records for the first fit's loggers
        self.resumed_from: Path | None = None  # the checkpoint a resume started from
        instruments = self._instruments()  # checked before the folder is claimed or written
        if claimed:
            self.folder = run_dir
        elif not self.ranks.main:
            self.folder = distributed.ReadOnlyFolder(self.run_dir)
        elif resume:
            self.folder = RunFolder.claim_existing(self.run_dir)
        else:
            self.folder = RunFolder.claim_new(self.run_dir)
        try:
            logs: list[Callback] = []
            if self.ranks.main:  # the logs are rank 0's
                logs = [JsonlLog(self.run_dir), CsvLog(self.run_dir), *instruments]
                if run.tensorboard:
                    logs.append(TensorBoardLog(self.run_dir))
            self.callbacks = [*logs, *callbacks]
            self._events = {event: overriding(self.callbacks, event) for event in EVENTS}
            if resume:
                self._resume()
            elif self.ranks.main:
                self._write_run_files()
        except BaseException:
            self.folder.release(remove_if_unused=True)
            raise

    # -- set-up ------------------------------------------------------------------------------
    def _instruments(self) -> list[Callback]:
        """The live instruments of ``[diagnostics]``, their layer patterns checked."""
        diagnostics = self.config.diagnostics
        if not diagnostics.enabled:
            return []
        from ..diagnose.instruments import Instruments

        instruments = Instruments(
            diagnostics.every,
            diagnostics.window,
            histograms=diagnostics.histograms,
            layers=diagnostics.layers,
            plots=diagnostics.plots,
        )
        instruments.choose_layers(self.model)
        return [instruments]

    def _plateau(self) -> ReduceOnPlateau | None:
        return self.config.schedule.reduce_on_plateau()

    def _swa(self) -> SWA | None:
        """The SWA of ``[averaging]``, its start and period checked against the run's length."""
        averaging, total = self.config.averaging, self.steps_total
        start, every = averaging.swa_start, averaging.swa_every
        if start is None:
            return None
        length = self._length_in_words()
        if start >= total:
            raise TrainingError(
                f"Invalid averaging.swa_start: {start} (must be below the run's total steps "
                f"{total}: {length}; lower it, or train longer)"
            )
        if start + every > total:
            raise TrainingError(
                f"Invalid averaging.swa_every: {every} (the first average would come after "
                f"step swa_start + swa_every = {start + every}, past the run's {total} steps: "
                f"{length}; must be at most {total - start})"
            )
        if averaging.swa_lr is not None and self.lr is None:
            raise TrainingError(
                f"Invalid averaging.swa_lr: {averaging.swa_lr} (replaces a trainlab "
                "schedule's rate, and this run uses a torch lr_scheduler: give the run a "
                "trainlab schedule, or set averaging.swa_lr = none)"
            )
        return SWA(self.model, start=start, every=every)

    def _snapshot_steps(self) -> list[int]:
        """The steps after which a cycle of the cyclic_cosine schedule ends (snapshots)."""
        if not self.config.averaging.snapshots:
            return []
        example = '[{name = "cyclic_cosine", total = 300, cycles = 3}]'
        if self.lr is None or self.parts.schedule is None:
            raise TrainingError(
                "Invalid averaging.snapshots: True (needs a trainlab schedule with a "
                f"cyclic_cosine phase, e.g. schedule.phases = {example}; this run has "
                f"{'a torch lr_scheduler' if self.lr is None else 'a constant rate'})"
            )
        try:
            ends = cycle_ends(self.parts.schedule)
        except ValueError as error:
            raise TrainingError(
                f"Invalid averaging.snapshots: True (needs a cyclic_cosine schedule phase, "
                f"e.g. schedule.phases = {example}: {error})"
            ) from None
        if ends[-1] > self.steps_total:
            raise TrainingError(
                f"Invalid averaging.snapshots: True (the cyclic_cosine phase's last cycle "
                f"ends after step {ends[-1]}, past the run's {self.steps_total} steps: "
                f"{self._length_in_words()}; only {sum(e <= self.steps_total for e in ends)} "
                f"of its {len(ends)} cycles would end: shorten the phase or train longer)"
            )
        return ends

    def _length_in_words(self) -> str:
        run = self.config.run
        if run.steps is not None:
            return f"run.steps = {run.steps}"
        return f"run.epochs = {run.epochs} × {len(self.batches)} batches an epoch"

    def _write_run_files(self) -> None:
        """``config.toml`` and ``run.json``, each written to a temporary file and renamed.

        A run of the Python API writes only the config sections it used (``about``'s
        ``"sections"``): its model and data are the user's, not ``[model]`` and ``[data]``.
        """
        sections = self.parts.about.get("sections")  # "section" or "section.key" entries
        if sections is None:
            text = dump_toml(self.config)
        else:
            tree: dict[str, dict[str, Any]] = {}
            for name, table in self.config.to_dict().items():
                for key, value in table.items():
                    if name in sections or f"{name}.{key}" in sections:
                        tree.setdefault(name, {})[key] = "none" if value is None else value
            text = dump_toml(tree)
        write_atomic(self.run_dir / CONFIG_FILE, text)
        about = {"format": "trainlab-run", "version": 1, **self.parts.about}
        write_atomic(self.run_dir / RUN_FILE, strict_json.dumps(about, indent=1))

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the configured length; returns the summary (also in summary.json).

        SIGINT (Ctrl-C) or SIGTERM lets the step under way finish, saves a checkpoint and
        raises [`Interrupted`][trainlab.train.Interrupted] — for Ctrl-C in a run of
        ``trainlab.fit``, [`FitInterrupted`][trainlab.train.FitInterrupted], a
        ``KeyboardInterrupt``; a second Ctrl-C raises ``KeyboardInterrupt`` at once
        (checkpoints are written atomically, so nothing saved is corrupted either way).
        """
        self.folder.acquire()
        try:
            with self._signals_caught():
                return self._fit()
        finally:
            for callback in self.callbacks:
                callback.close()
            self.folder.release()

    def _fit(self) -> dict[str, Any]:
        self._started = time.perf_counter() - self.state.seconds
        self._emit("on_fit_start")
        for record in self._pending:
            self._record(record)
        self._pending.clear()
        stopped_early = False
        try:
            while self.state.step < self.steps_total and not stopped_early:
                self.model.train()
                for xb, yb in self.batches:
                    self._writer.raise_if_failed()
                    # False: a skipped or rolled-back step, with nothing new to evaluate
                    stepped = self._train_step(xb.to(self.device), yb.to(self.device))
                    agreed = self._agree_on_stop() if self.ranks.parallel else None
                    if stepped:
                        stopped_early = self._after_step()
                    signum = agreed if self.ranks.parallel else self._signal
                    if signum is not None:
                        self._stop_for_signal(signum)
                    if self.state.step >= self.steps_total or stopped_early:
                        break
                self.state.epoch = self.batches.epoch
        except BaseException:
            # The checkpoint in flight holds a good state: let it reach the disk.
            self._writer.wait(raise_errors=False)
            raise
        self._writer.wait()
        if self.ranks.parallel:
            distributed.barrier()  # rank 0's checkpoints are on disk before anyone reads one
            if not self.ranks.main:  # rank 0 evaluates and writes the summary
                summary = {"steps": self.state.step, "rank": self.ranks.rank}
                self._emit("on_fit_end", summary)
                return summary
        summary = self._finish(time.perf_counter() - self._started)
        self._emit("on_fit_end", summary)
        return summary

    def _agree_on_stop(self) -> int | None:
        """Under torchrun: a signal or a stop request on any rank holds for every rank.

        Returns the signal to stop for; a signal arriving later on some rank is seen by
        all at the next step (acting on it now would stop that rank alone).
        """
        signum, reason = distributed.agree_on_stop(self._signal, self._stop_reason)
        if reason is not None and self._stop_reason is None:
            self.request_stop(reason)
        return signum

    def _objective(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """(outputs, loss): the data loss plus the explicit penalties."""
        cfg = self.config
        outputs = self.model(xb)
        try:
            loss = self.loss_fn(outputs, yb)
        except (IndexError, RuntimeError) as error:  # e.g. a label ≥ the number of outputs
            labels = (
                f"; labels here run from {int(yb.min())} to {int(yb.max())}, the model gives "
                f"{outputs.shape[-1]} outputs"
                if self.task == "classification" and yb.numel() and outputs.dim() == 2
                else ""
            )
            raise TrainingError(
                f"Invalid batch at step {self.state.step + 1}: the loss fails on it "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}{labels}) "
                "(check the data's targets against the model's outputs: class labels must "
                "be 0..C-1)"
            ) from error
        if cfg.penalty.l1 or cfg.penalty.l2:
            loss = loss + penalty(self._penalized, l2=cfg.penalty.l2, l1=cfg.penalty.l1)
        return outputs, loss

    def _train_step(self, xb: Tensor, yb: Tensor) -> bool:
        """One optimizer step on (xb, yb); False when non-finite values prevented it."""
        cfg = self.config
        if self.lr is not None:
            self.lr.step(self.state.step)
        if self.swa is not None and self.state.step == self.swa.start:
            self._announce_swa()
        if self._full_batch:
            return self._closure_step(xb, yb)
        self.optimizer.zero_grad()
        outputs, loss = self._objective(xb, yb)
        loss.backward()
        params = [p for p in self._trainable if p.grad is not None]
        if self.ranks.parallel:  # the mean over every rank's part of the batch
            loss = distributed.reduce_gradients([p.grad for p in params], loss, len(xb))
        if cfg.clip.mode == "norm":  # scales nothing when the norm is not finite
            norm = clip_grad_norm_(params, cfg.clip.max_norm)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack(torch._foreach_norm([p.grad for p in params]))
            )
        # One synchronisation for the loss and the gradient norm (finite iff every gradient
        # is), before value clipping, which would turn ±inf into ±limit.
        loss_value, grad_norm = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self._nonfinite(loss_value, grad_norm)
            return False
        if cfg.clip.mode == "value":
            clip_grad_value_(params, cfg.clip.value, count=False)
        lr = _plain(self.optimizer.param_groups[0]["lr"])  # this step's (before a scheduler's)
        self.optimizer.step()
        self._stepped(loss_value, grad_norm, lr, xb, yb, outputs)
        return True

    def _announce_swa(self) -> None:
        """The swa_started record, with the rate from here on (``LRController`` sets swa_lr).

        Once, even when the step is retried (a skipped non-finite step).
        """
        if not self._swa_announced:
            self._swa_announced = True
            lr = _plain(self.optimizer.param_groups[0]["lr"])
            self._record({"step": self.state.step, "event": "swa_started", "lr": lr})

    def _closure_step(self, xb: Tensor, yb: Tensor) -> bool:
        """A step of a full-batch method (L-BFGS, Newton): it re-evaluates the loss itself."""
        evaluated: list[Tensor] = []

        def closure() -> Tensor:
            self.optimizer.zero_grad()
            outputs, loss = self._objective(xb, yb)
            loss.backward()
            evaluated[:] = [outputs.detach()]
            return loss

        lr = _plain(self.optimizer.param_groups[0]["lr"])
        loss = self.optimizer.step(closure)
        grads = [p.grad for p in self._trainable if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        loss_value, grad_norm = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self._nonfinite(loss_value, grad_norm)
            return False
        self._stepped(loss_value, grad_norm, lr, xb, yb, evaluated[0])
        return True

    def _stepped(
        self,
        loss_value: float,
        grad_norm: float,
        lr: float,
        xb: Tensor,
        yb: Tensor,
        outputs: Tensor,
    ) -> None:
        """After an optimizer step: scheduler, averages, counters, snapshot, events, logs."""
        if self.scheduler is not None and not _waits_for_metric(self.scheduler):
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if self.swa is not None:
            self.swa.update(self.model)
        state = self.state
        state.step += 1
        if state.step in self.snapshot_steps:
            self._save_snapshot(self.snapshot_steps.index(state.step) + 1)
        state.loss_count += 1
        state.loss_average = LOSS_SMOOTHING * state.loss_average + (1 - LOSS_SMOOTHING) * loss_value
        if self._events["on_step_end"]:
            info = Step(
                state.step,
                self.batches.epoch,
                loss_value,
                state.smoothed_loss(),
                grad_norm,
                lr,
                xb,
                yb,
                outputs,
            )
            self._emit("on_step_end", info)
        if state.step % self.log_every == 0 or state.step == 1:
            self._record(self._step_record(loss_value, grad_norm, lr, outputs, yb))

    def _save_snapshot(self, cycle: int) -> None:
        """The weights at the end of lr cycle ``cycle`` (from 1), written before any checkpoint
        of a later step: a resume never lacks a snapshot, and rewrites one identically."""
        path = self.run_dir / _snapshot_name(cycle)
        if self.ranks.main:
            path.parent.mkdir(exist_ok=True)
            _save_weights(path, self.model.state_dict())
        self._record({"step": self.state.step, "event": "snapshot", "path": _snapshot_name(cycle)})

    def _step_record(
        self, loss: float, grad_norm: float, lr: float, outputs: Tensor, targets: Tensor
    ) -> dict[str, Any]:
        """The training record of a logged step: loss, smoothed loss, lr, norms, statistics."""
        record: dict[str, Any] = {
            "step": self.state.step,
            "epoch": self.batches.epoch,
            "loss": loss,
            "smoothed_loss": self.state.smoothed_loss(),
            "lr": lr,
            "grad_norm": grad_norm,
        }
        if self.task == "classification" and self.ranks.parallel:  # the whole global batch
            right, total = distributed.sum_over_ranks(
                [(outputs.detach().argmax(1) == targets).sum().item(), len(targets)]
            )
            record["accuracy"] = right / total
        elif self.task == "classification":  # on the training batch, in train mode
            record["accuracy"] = (outputs.detach().argmax(1) == targets).float().mean().item()
        for index, stats in enumerate(getattr(self.optimizer, "stats", None) or []):
            for key, value in stats.items():  # track_stats=True: per group
                record[f"group{index}_{key}"] = _plain(value)
        return record

    def _after_step(self) -> bool:
        """Evaluation and checkpoints that are due after a step; True: stop early."""
        run, step = self.config.run, self.state.step
        eval_every = run.eval_every or len(self.batches)
        checkpoint_every = run.checkpoint_every or eval_every
        stopped_early = new_best = False
        if step % eval_every == 0 or step == self.steps_total:
            stopped_early = self._evaluate_and_select()
            if self.ranks.parallel:
                # A stop requested during evaluation (a callback's on_record) holds for every
                # rank, as one after the step does. A signal agreed here is acted on at the
                # next step's agreement, by all ranks alike.
                self._agree_on_stop()
            new_best = self.state.best_checkpoint == f"step-{step:08d}"
        stopped_early = stopped_early or self._stop_reason is not None
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
        if self.ranks.parallel:
            distributed.barrier()  # no rank ends before rank 0's checkpoint is on disk
        if not self._from_python:
            raise Interrupted(signum, self.state.step, self.run_dir)
        if signum == signal.SIGINT:
            raise FitInterrupted(self.state.step, self.run_dir)
        raise Interrupted(signum, self.state.step, self.run_dir, python=True)

    def _nonfinite(self, loss: float, grad_norm: float) -> None:
        policy, step = self.config.run.nonfinite, self.state.step
        self.optimizer.zero_grad()
        if policy == "skip":
            self.state.skipped += 1
            self._record({"step": step, "event": "skipped non-finite step"})
            return
        if policy == "rollback":
            if self.state.rollbacks >= MAX_ROLLBACKS:
                raise NonFiniteError(
                    f"Non-finite values again at step {step} after {MAX_ROLLBACKS} rollbacks, "
                    "each cutting the learning rate by 10× (the problem is probably not the "
                    "rate: check the data, the loss and the model's initialization)"
                )
            if self.lr is None:
                raise NonFiniteError(
                    f"Non-finite values at step {step}: run.nonfinite='rollback' cuts the rate "
                    "of a trainlab schedule, and this run uses a torch lr_scheduler (use a "
                    "trainlab schedule, or nonfinite='skip' or 'raise')"
                )
            self._writer.wait()  # the last good checkpoint is on disk before it is read
            if self.ranks.parallel:
                distributed.barrier()  # ... rank 0's, before any rank reads it
            last = latest_checkpoint(self.run_dir)
            if last is not None:
                self._restore(load_checkpoint(last))
            if self.ranks.parallel:
                distributed.barrier()  # every rank has read it before rank 0 saves (and prunes)
            self.lr.cut(0.1)  # the schedule's rates and SWA's alike
            self.state.rollbacks += 1
            self._record({"step": step, "event": "rollback", "to_step": self.state.step})
            # Save the cut rate and the count now, whatever run.checkpoint_seconds says: a
            # later rollback must start from them, not from the checkpoint restored here.
            self.save(background=True)
            return
        self._writer.wait()  # the last good checkpoint is complete before the run stops
        raise NonFiniteError(
            f"Non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at "
            f"step {step} (loss {loss}, gradient norm {grad_norm}). The learning rate "
            f"({_plain(self.optimizer.param_groups[0]['lr']):.3g}) is probably too high: lower "
            'optimizer.lr, or set run.nonfinite="rollback" to restore the last checkpoint '
            "and continue with a 10× smaller rate. Checkpoints already saved are kept."
        )

    # -- evaluation and selection --------------------------------------------------------
    def evaluate(self, data: Any) -> dict[str, float]:
        """Metrics of the model on ``data`` (see `trainlab.train.evaluation.evaluate`)."""
        return evaluate(self.model, data, self.loss_fn, self.task, self.device)

    def _evaluate_and_select(self) -> bool:
        """Evaluate on validation; plateau, keep-best and early stopping. True: stop."""
        val = self.evaluate(self.val)
        record = {"step": self.state.step, "epoch": self.batches.epoch}
        record.update({f"val_{k}": v for k, v in val.items()})
        if self.ema is not None and self.ema.num_updates > 0:
            with self.ema.swapped(self.model):
                ema_val = self.evaluate(self.val)
            record.update({f"ema_val_{k}": v for k, v in ema_val.items()})
        if self.ranks.parallel:
            # Every rank decides (plateau, keep-best, early stopping) on rank 0's numbers:
            # BatchNorm's running statistics, gathered from each rank's part of the batches,
            # differ between the ranks, and so would their decisions.
            record = distributed.from_rank_0(record)
        self._record(record)
        self.state.history.append(record)
        plateau = self.config.schedule.plateau
        if plateau and self.lr is not None:
            self.lr.report(record[plateau.get("metric", "val_loss")], self.state.step)
        if self.scheduler is not None and _waits_for_metric(self.scheduler):
            self.scheduler.step(record["val_loss"])
        return self._select(record)

    def _select(self, record: dict[str, Any]) -> bool:
        run = self.config.run
        key = run.keep_best_by or ("val_loss" if run.early_stopping else None)
        if key is not None and key not in record:  # accuracy has no meaning for regression
            key = "val_loss"
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
        if not self.ranks.main:  # rank 0 saves what every rank holds
            return self.run_dir / CHECKPOINTS_DIR / name
        state = {
            "config_fingerprint": self._fingerprint,
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict() if self.lr is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "batches": self.batches.state_dict(),
            "rng": rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "progress": {k: v for k, v in vars(self.state).items()},
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks()},
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
        self._emit("on_checkpoint", path)
        if not background:
            self._writer.wait()
        return path

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """Each callback under a stable key: its class name, numbered when repeated."""
        keyed, seen = [], {}
        for callback in self.callbacks:
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            keyed.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return keyed

    def _resume(self) -> None:
        """Continue from the last complete checkpoint, or from the start when there is none.

        A run killed before its first checkpoint was complete has nothing to continue from,
        so it starts over (the seed makes it the same run), its logs emptied. Otherwise the
        logs are cut back to their length at the checkpoint: the records of the steps done
        after it, which are done again now, would appear twice.
        """
        last = latest_checkpoint(self.run_dir)
        if last is not None:
            checkpoint = load_checkpoint(last)
            saved = checkpoint.state.get("config_fingerprint")
            if saved is not None and saved != self._fingerprint:
                if self._from_python:
                    raise fit_changed(self.run_dir)
                raise config_changed(self.run_dir, f"the settings in its {CONFIG_FILE}")
            self._restore(checkpoint)
            self._restore_callbacks(checkpoint.state.get("callbacks"))
            self.resumed_from = last
        self._pending.append(
            {"step": self.state.step, "event": "resumed", "from": last and last.name}
        )

    def _restore_callbacks(self, saved: Any) -> None:
        for key, callback in self._keyed_callbacks():
            if isinstance(saved, dict) and key in saved:
                callback.load_state_dict(saved[key])
            elif isinstance(callback, JsonlLog):
                callback.load_state_dict({})  # an older checkpoint: keep the whole log

    def _restore(self, checkpoint: Any) -> None:
        state = checkpoint.state
        try:
            self.model.load_state_dict(checkpoint.weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self._check_optimizer_state()
            if self.lr is not None:
                self.lr.load_state_dict(state["lr"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.batches.load_state_dict(state["batches"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            if self.swa is not None and state.get("swa") is not None:
                self.swa.load_state_dict(state["swa"])
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
        """Every per-parameter state tensor has its parameter's shape (or is a scalar).

        Full-batch methods keep their state over all parameters flattened: each vector
        there (directions, gradients, history) has their total length.
        """
        if self._full_batch:
            total = sum(p.numel() for p in self._trainable)
            for key, value in _tensors(self.optimizer.state_dict()["state"]):
                if value.dim() > 0 and value.shape != (total,):
                    raise ValueError(
                        f"optimizer state {key!r} has shape {tuple(value.shape)}, the "
                        f"flattened parameters ({total},)"
                    )
            return
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
        if self.config.run.early_stopping and self.config.run.early_stopping.get("restore_best"):
            best = self.state.best_checkpoint
            if best and (self.run_dir / CHECKPOINTS_DIR / best).exists():
                self.model.load_state_dict(
                    load_checkpoint(self.run_dir / CHECKPOINTS_DIR / best).weights
                )
        splits = {"train": self._train_data(), "val": self.val, "test": self.test}
        results = {name: self.evaluate(data) for name, data in splits.items()}
        summary: dict[str, Any] = {
            "steps": self.state.step,
            "epochs": round(self.state.step / len(self.batches), 2),
            "seconds": seconds,
            "task": self.task,
        }
        for metric in results["train"]:
            for name in splits:
                summary[f"{name}_{metric}"] = results[name][metric]
        gap_metric = "accuracy" if self.task == "classification" else "loss"
        sign = 1 if self.task == "classification" else -1  # higher is better vs lower
        summary["generalization_gap"] = sign * (
            results["train"][gap_metric] - results["test"][gap_metric]
        )
        summary["skipped_steps"] = self.state.skipped
        if self._stop_reason is not None:
            summary["stop_reason"] = self._stop_reason
        summary["rollbacks"] = self.state.rollbacks
        summary["run_dir"] = str(self.run_dir)
        _save_weights(self.run_dir / RUN_WEIGHTS_FILE, self.model.state_dict())
        if self.ema is not None and self.ema.num_updates > 0:
            with self.ema.swapped(self.model):
                ema_test = self.evaluate(self.test)
            for metric, value in ema_test.items():
                summary[f"ema_test_{metric}"] = value
            _save_weights(self.run_dir / EMA_WEIGHTS_FILE, self.ema.weights())
        if self.swa is not None:
            summary.update(self._finish_swa())
        if self.snapshot_steps:
            summary["snapshots"] = [
                _snapshot_name(k)
                for k, end in enumerate(self.snapshot_steps, start=1)
                if end <= self.state.step and (self.run_dir / _snapshot_name(k)).is_file()
            ]
        self._emit("on_summary", summary)
        write_atomic(self.run_dir / SUMMARY_FILE, strict_json.dumps(summary, indent=1))
        return summary

    def _finish_swa(self) -> dict[str, Any]:
        """SWA's weights with BatchNorm statistics recomputed, saved and evaluated.

        Inside ``swapped`` (the raw weights and buffers come back bit for bit): one pass over
        the training inputs, without augmentation, recomputes the statistics for the
        averaged weights; ``swa.safetensors`` gets those, and the splits are measured.
        """
        results: dict[str, Any] = {"swa_updates": self.swa.num_updates}
        if self.swa.num_updates == 0:  # stopped early, before the first average
            return results
        with self.swa.swapped(self.model):
            recompute_batch_norm(self.model, self.statistics_batches(), self.device)
            _save_weights(self.run_dir / SWA_WEIGHTS_FILE, self.model.state_dict())
            for name, data in (("val", self.val), ("test", self.test)):
                if size(data) > 0:
                    for metric, value in self.evaluate(data).items():
                        results[f"swa_{name}_{metric}"] = value
        return results

    def statistics_batches(self) -> Iterator[Tensor]:
        """The training inputs for BatchNorm statistics: in order, in the training batch size
        (and ``drop_last``), without trainlab's augmentation; the training order is not
        touched. A Dataset's own transforms (in ``__getitem__``) are the dataset's and stay."""
        source = self.batches
        if hasattr(source, "x"):  # trainlab.data.Batches: tensors in memory
            x, size_ = source.x, source.batch_size
            for b in range(len(source)):
                yield x[b * size_ : (b + 1) * size_]
            return
        loader = source.loader
        plain = torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=loader.batch_size or EVAL_BATCH,
            shuffle=False,
            drop_last=loader.drop_last,
            collate_fn=loader.collate_fn,
        )
        for batch in plain:
            yield unpack(batch, "train")[0]

    def _train_data(self) -> Any:
        """The training examples to measure at the end: the tensors, or the loader's dataset."""
        source = self.batches
        if hasattr(source, "x"):
            return (source.x, source.y)
        return source.loader.dataset

    def _emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on the callbacks that implement it; name a failing callback."""
        for callback in self._events[event]:
            try:
                getattr(callback, event)(self, *args)
            except (TrainingError, CheckpointError):
                raise
            except Exception as error:
                self._writer.wait(raise_errors=False)
                raise TrainingError(
                    f"Callback {type(callback).__name__}.{event} raised "
                    f"{type(error).__name__}: {error} (at step {self.state.step}; fix or "
                    "remove the callback: the checkpoints already saved are intact, and "
                    "resuming continues from the last one)"
                ) from error

    def _record(self, record: dict[str, Any]) -> None:
        self._emit("on_record", record)

    def log(self, record: dict[str, Any]) -> None:
        """Add a record (a dict with ``"step"``) to the logs, as a callback's own output."""
        self._record(record)

    def request_stop(self, reason: str) -> None:
        """End training after the step under way, as early stopping does (for a callback:
        a target reached, a budget spent): that step is checkpointed, the splits evaluated
        and the summary written, with ``reason`` as its ``"stop_reason"``. A resumed run
        trains on to its configured length."""
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"Invalid reason: {reason!r} (must be a non-empty string)")
        if self._stop_reason is None:
            self._stop_reason = reason
            self._record({"step": self.state.step, "event": "stop_requested", "reason": reason})


def _tensors(tree: Any, path: str = "") -> Iterator[tuple[str, Tensor]]:
    """Every tensor in a tree of dicts and lists, with its path."""
    if isinstance(tree, Tensor):
        yield path, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{path}/{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _tensors(value, f"{path}/{index}")


def _waits_for_metric(scheduler: Any) -> bool:
    """torch's ReduceLROnPlateau steps on a metric after each evaluation, not every step."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _plain(value: Any) -> Any:
    """A number for the logs (a 0-dim tensor, as a tensor lr or a statistic, as a float)."""
    return value.item() if isinstance(value, Tensor) else value


#: Param-group keys that learning-rate and momentum schedules change as the run goes.
SCHEDULED_KEYS = frozenset(
    {
        "params",
        "lr",
        "initial_lr",
        "max_lr",
        "min_lr",
        "momentum",
        "betas",
        "base_momentum",
        "max_momentum",
    }
)


def _signature(config: Any, parts: Parts) -> str:
    """What identifies a run for a resume: the config's fingerprint, the model's parameter
    names and shapes, the optimizer's class and hyperparameters, the data sizes."""
    groups = [  # less what schedules drive (a resumed fit gets the optimizer they moved)
        {k: repr(v) for k, v in group.items() if k not in SCHEDULED_KEYS}
        for group in parts.optimizer.param_groups
    ]
    described = {
        "config": fingerprint(config),
        "about": parts.about,
        "parameters": [(n, list(p.shape)) for n, p in parts.model.named_parameters()],
        "optimizer": [type(parts.optimizer).__qualname__, groups],
        "data": [size(parts.val), size(parts.test), len(parts.train)],
    }
    text = json.dumps(described, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def write_atomic(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` by a fsynced temporary file and a rename: never half a file.

    The temporary file has a name of its own (two writers of one path, such as two reports
    of one folder, never share it) and is removed when the write fails.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # "x": created here or not at all; the permissions follow the user's umask.
        with open(temp, "xb" if isinstance(data, bytes) else "x") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _remove_stale_temps(path)


def _remove_stale_temps(path: Path) -> None:
    """The temporary files of earlier writes of ``path`` whose process died mid-write (a
    kill): nothing else removes them. A file of a live process is a write under way."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temp.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _save_weights(path: Path, weights: dict[str, Tensor]) -> None:
    """A state dict as a safetensors file (CPU copies), written atomically."""
    import safetensors.torch

    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    write_atomic(path, safetensors.torch.save(tensors))


def _snapshot_name(cycle: int) -> str:
    """The run-folder path of the snapshot of lr cycle ``cycle`` (from 1)."""
    return f"{SNAPSHOTS_DIR}/cycle-{cycle}.safetensors"
