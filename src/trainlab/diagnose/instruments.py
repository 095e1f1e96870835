"""Live instruments and verdicts: the lectures' babysitting, as a callback on the trainer.

Every ``every`` optimizer steps [`Instruments`][trainlab.diagnose.Instruments] samples one step:

- **activations** of each instrumented layer on that step's batch: mean, standard deviation,
  the fraction of *saturated* units (tanh |a| > 0.99, sigmoid a < 0.01 or > 0.99) and,
  for ReLU-type layers, which units were active; a unit inactive on every sampled batch
  of the last ``window`` samples is *dead*;
- **gradients** of each parameter tensor: their norm, and the gradient-to-weight ratio
  ‖g‖/‖θ‖ across depth (vanishing: the first layers' ratio ≪ the last's);
- **updates**: ‖Δθ‖/‖θ‖ per parameter tensor, the lecture's "about 1e-3" rule of thumb.

From these and the logs it judges the run — each verdict a rule with its threshold below,
its evidence and the lecture's fix — prints a verdict the first time it fires and lists
every fired verdict in ``summary.json`` under ``"verdicts"``. The samples go to
``metrics.jsonl`` (one record per sample with the per-layer numbers) and, whole, to
``diagnostics.json``; with ``plots`` the figures go into the run folder.

Rules (thresholds are module constants):

- ``lr_too_high``: a non-finite loss or a skipped/rolled-back step; or the smoothed loss
  risen to ``RISE`` × its minimum; or the median update ratio above ``UPDATE_HIGH`` (5e-2,
  50× the rule of thumb) on every one of the last ``window`` samples. (Adam's first steps
  move each weight by about η, so with η = 3e-3 and weights of rms 0.2 a healthy run starts
  near 1.5e-2: the threshold leaves room for that.)
- ``lr_too_low``: the median update ratio below ``UPDATE_LOW`` (1e-5) over the last
  ``window`` samples while the smoothed loss moved less than ``FLAT`` (1%) and the
  gradients are alive (median ‖g‖/‖θ‖ above ``GRADIENT_ALIVE``, 1e-6: zero gradients
  give zero updates at any rate).
- ``plateau``: the smoothed loss improved less than ``FLAT`` over the last
  ``PLATEAU_SPAN`` (150) steps or more, with update ratios that are not too low: lower the
  rate ÷10.
- ``dead_units``: more than ``DEAD`` (50%) of a ReLU layer's units dead.
- ``saturation``: more than ``SATURATED`` (50%) of a tanh/sigmoid layer's units saturated.
- ``vanishing_gradients`` / ``exploding_gradients``: the first parameter tensor's
  gradient-to-weight ratio below ``VANISH`` (1e-3) × or above ``EXPLODE`` (1e3) × the last's.
- ``overfitting``: over the last three evaluations the validation loss rose, to more than
  ``OVERFIT_RISE`` (5%) above its best, while the training loss fell and the gap between
  them grew.
- ``underfitting`` (at the end): training accuracy below ``UNDERFIT_ACCURACY`` (80%) and
  validation within ``UNDERFIT_GAP`` (3 points) of it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import _json as strict_json
from ..train.callbacks import Callback, Step
from ..train.errors import TrainingError
from .findings import Finding

if TYPE_CHECKING:
    from ..train.trainer import Trainer

UPDATE_HIGH = 5e-2
UPDATE_LOW = 1e-5
RISE = 1.5
PLATEAU_SPAN = 150
GRADIENT_ALIVE = 1e-6
FLAT = 0.01
DEAD = 0.5
SATURATED = 0.5
VANISH = 1e-3
EXPLODE = 1e3
OVERFIT_RISE = 0.05
UNDERFIT_ACCURACY = 0.8
UNDERFIT_GAP = 0.03
HISTOGRAM_BINS = 30
DIAGNOSTICS_FILE = "diagnostics.json"
SAMPLES_FILE = "diagnostics.jsonl"

RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.CELU, nn.SELU)
SATURATING = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "tanh"}
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

FIXES = {
    "lr_too_high": "lower the learning rate (÷3 to ÷10), or warm it up; the lectures: a "
    "loss that explodes or goes NaN means the rate is too high",
    "lr_too_low": "raise the learning rate (×3 to ×10): updates of ~1e-3 of the weights "
    "per step are the lectures' rule of thumb; try trainlab lr-find",
    "plateau": "divide the learning rate by 10 (the lectures' step decay), or add a "
    "schedule / reduce-on-plateau",
    "dead_units": "lower the learning rate, use a leaky ReLU or a smaller negative bias, "
    "Kaiming (He) initialization",
    "saturation": "normalize the inputs, use Xavier initialization for tanh/sigmoid, batch "
    "norm before the nonlinearity, or ReLU",
    "vanishing_gradients": "Kaiming/Xavier initialization, batch norm, residual "
    "connections, ReLU instead of saturating units",
    "exploding_gradients": "lower the learning rate, clip the gradient norm, batch norm, "
    "better initialization",
    "overfitting": "more data or augmentation, dropout, weight decay, early stopping, or a "
    "smaller model (the lectures' remedies for a growing generalization gap)",
    "underfitting": "a bigger model, longer training, less regularization (dropout, weight "
    "decay), or a higher learning rate",
}


class Instruments(Callback):
    """Sample activations, gradients and updates every ``every`` steps; judge the run.

    Args:
        every: optimizer steps between two samples (default: 10).
        window: samples over which dead units and loss trends are judged (default: 10).
        histograms: keep activation and gradient histograms of every sample (default: False).
        layers: fnmatch patterns of module names to instrument; () means every layer
            (default: ()). A pattern that matches no module is an error at the start.
        plots: write PNG figures into the run folder at the end (default: True).
        report: called with each verdict as it fires (default: print to stderr).
    """

    def __init__(
        self,
        every: int = 10,
        window: int = 10,
        *,
        histograms: bool = False,
        layers: tuple[str, ...] = (),
        plots: bool = True,
        report: Callable[[Finding], None] | None = None,
    ) -> None:
        self.every, self.window, self.histograms = every, window, histograms
        self.patterns, self.plots = tuple(layers), plots
        self.report = report if report is not None else _print
        # the samples go to diagnostics.jsonl as they are taken; what the rules need of the
        # past is kept here, bounded, and checkpointed: the trace of the last samples
        # (step, smoothed loss, median update and gradient ratios) and the minimum loss
        self.trace: list[dict[str, float]] = []
        self.min_loss = math.inf
        self.finite_losses = 0
        self.verdicts: dict[str, Finding] = {}
        self.active: dict[str, list[list[bool]]] = {}  # layer -> per-sample unit activity
        self.evaluations: list[dict[str, float]] = []
        self._restored = False  # state loaded from a checkpoint, or a fit already begun
        self._cut: int | None = None  # diagnostics.jsonl's length at that checkpoint
        self._path: Path | None = None
        self._hooks: list[Any] = []
        self._captured: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}
        self._layers: dict[str, nn.Module] = {}

    # -- events --------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        self._layers = self.choose_layers(trainer.model)
        self._path = trainer.run_dir / SAMPLES_FILE
        cut = self._cut
        if not self._restored and self._path.exists():  # a new run, or one started over
            self._path.unlink()
        elif cut is not None and self._path.exists() and self._path.stat().st_size > cut:
            with open(self._path, "r+b") as file:  # the samples after the checkpoint go
                file.truncate(cut)
        self._restored, self._cut = True, None
        if trainer.state.step % self.every == self.every - 1 or self.every == 1:
            self._arm(trainer)

    def on_step_end(self, trainer: Trainer, step: Step) -> None:
        if self._hooks or self._before:
            self._sample(trainer, step)
        if (step.step + 1) % self.every == 0:
            self._arm(trainer)

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event in ("skipped non-finite step", "rollback"):
            self._fire(
                "lr_too_high",
                "fail",
                f"a non-finite loss or gradient at step {record['step']} ({event})",
                {"step": record["step"]},
            )
        if "val_loss" in record and "diagnostics" not in record:
            self.evaluations.append(
                {
                    "step": record["step"],
                    "val_loss": record["val_loss"],
                    "train_loss": trainer.state.smoothed_loss(),
                }
            )
            self._judge_fit()

    def on_summary(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self._detach()
        self._judge_end(summary)
        summary["verdicts"] = [finding.to_dict() for finding in self.verdicts.values()]
        history = self.samples()
        path = trainer.run_dir / DIAGNOSTICS_FILE
        path.write_text(strict_json.dumps(self._document(history)))
        if self.plots and history:
            from .plots import diagnostics_figures

            diagnostics_figures(
                trainer.run_dir, history, _read_jsonl(trainer.run_dir / "metrics.jsonl")
            )

    def samples(self) -> list[dict[str, Any]]:
        """Every sample of the run so far, from ``diagnostics.jsonl``."""
        return _read_jsonl(self._path) if self._path is not None else []

    def close(self) -> None:
        """Remove the hooks and the saved weights, however ``fit`` ended."""
        self._detach()
        self._captured, self._before = {}, {}

    def state_dict(self) -> Any:
        size = self._path.stat().st_size if self._path is not None and self._path.exists() else 0
        return {
            "samples_bytes": size,
            "trace": self.trace,
            "min_loss": self.min_loss,
            "finite_losses": self.finite_losses,
            "verdicts": [f.to_dict() for f in self.verdicts.values()],
            "active": {k: [[int(b) for b in row] for row in v] for k, v in self.active.items()},
            "evaluations": self.evaluations,
        }

    def load_state_dict(self, state: Any) -> None:
        """Continue from a checkpoint: its windows, and diagnostics.jsonl cut back to it."""
        self.trace = [dict(entry) for entry in state["trace"]]
        self.min_loss, self.finite_losses = float(state["min_loss"]), int(state["finite_losses"])
        self.verdicts = {
            v["name"]: Finding(v["name"], v["status"], v["evidence"], v["fix"], v.get("data", {}))
            for v in state["verdicts"]
        }
        self.active = {k: [[bool(b) for b in row] for row in v] for k, v in state["active"].items()}
        self.evaluations = list(state["evaluations"])
        self._restored = True
        self._cut = int(state["samples_bytes"])

    # -- sampling ------------------------------------------------------------------------
    def choose_layers(self, model: nn.Module) -> dict[str, nn.Module]:
        """The modules to instrument; a pattern that matches none is an error."""
        named = dict(model.named_modules())
        if self.patterns:
            for pattern in self.patterns:
                if not any(fnmatch.fnmatchcase(name, pattern) for name in named if name):
                    raise TrainingError(
                        f"Invalid diagnostics.layers: {pattern!r} matches no module of the model "
                        f"(its modules: {', '.join(n for n in named if n)[:400]})"
                    )
        chosen = {}
        for name, module in named.items():
            if not name or (
                self.patterns and not any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            ):
                continue
            if isinstance(module, (*RELU_LIKE, *SATURATING, *WEIGHTED)):
                chosen[name] = module
        return chosen

    def _arm(self, trainer: Trainer) -> None:
        """Hook the layers and remember θ before the next step's update."""
        self._detach()
        for name, module in self._layers.items():
            self._hooks.append(module.register_forward_hook(self._capture(name)))
        self._before = {
            name: p.detach().clone()
            for name, p in trainer.model.named_parameters()
            if p.requires_grad
        }

    def _capture(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and module.training:
                self._captured[name] = output.detach()

        return hook

    def _detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _sample(self, trainer: Trainer, step: Step) -> None:
        self._detach()
        layers = {}
        for name, output in self._captured.items():
            layers[name] = self._activation_stats(name, self._layers[name], output)
        parameters = {}
        for name, param in trainer.model.named_parameters():
            if name not in self._before:
                continue
            weight = float(param.detach().norm())
            grad = float(param.grad.norm()) if param.grad is not None else 0.0
            update = float((param.detach() - self._before[name]).norm())
            entry = {
                "grad_norm": grad,
                "grad_weight_ratio": grad / weight if weight > 0 else math.nan,
                "update_ratio": update / weight if weight > 0 else math.nan,
            }
            if self.histograms and param.grad is not None:
                entry["grad_histogram"] = _histogram(param.grad)
            parameters[name] = entry
        self._captured, self._before = {}, {}
        sample = {
            "step": step.step,
            "loss": step.loss,
            "smoothed_loss": step.smoothed_loss,
            "lr": step.lr,
            "layers": layers,
            "parameters": parameters,
        }
        if self._path is not None:
            with open(self._path, "a") as file:
                file.write(strict_json.dumps(sample) + "\n")
        self.trace.append(
            {
                "step": step.step,
                "smoothed_loss": step.smoothed_loss,
                "update_ratio": _median_ratio(sample),
                "grad_ratio": _median_grad_ratio(sample),
            }
        )
        del self.trace[: -(self.window + PLATEAU_SPAN // self.every + 2)]
        if math.isfinite(step.smoothed_loss):
            self.min_loss = min(self.min_loss, step.smoothed_loss)
            self.finite_losses += 1
        median_ratio = _median_ratio(sample)
        trainer.log(
            {
                "step": step.step,
                "epoch": step.epoch,
                "update_ratio_median": median_ratio,
                "diagnostics": {"layers": layers, "parameters": _without_histograms(parameters)},
            }
        )
        self._judge_sample(step, layers, parameters, median_ratio)

    def _activation_stats(self, name: str, module: nn.Module, output: Tensor) -> dict[str, Any]:
        values = output.float()
        stats: dict[str, Any] = {
            "kind": type(module).__name__,
            "mean": float(values.mean()),
            "std": float(values.std()) if values.numel() > 1 else 0.0,
        }
        kind = next((k for cls, k in SATURATING.items() if isinstance(module, cls)), None)
        if kind == "tanh":
            stats["saturated"] = float((values.abs() > 0.99).float().mean())
        elif kind == "sigmoid":
            stats["saturated"] = float(((values < 0.01) | (values > 0.99)).float().mean())
        if isinstance(module, RELU_LIKE) and values.dim() >= 2:
            units = values.transpose(0, 1).reshape(values.shape[1], -1)  # unit × (batch·space)
            active = (units > 0).any(dim=1).tolist()
            window = self.active.setdefault(name, [])
            window.append(active)
            del window[: -self.window]
            ever = [any(column) for column in zip(*window)]
            stats["dead"] = 1 - sum(ever) / len(ever) if ever else 0.0
            stats["dead_window"] = len(window)
        if self.histograms:
            stats["histogram"] = _histogram(values)
        return stats

    # -- verdicts ------------------------------------------------------------------------
    def _fire(self, name: str, status: str, evidence: str, data: dict[str, Any]) -> None:
        if name in self.verdicts:
            return
        finding = Finding(name, status, evidence, FIXES[name], data)  # type: ignore[arg-type]
        self.verdicts[name] = finding
        self.report(finding)

    def _judge_sample(
        self,
        step: Step,
        layers: dict[str, Any],
        parameters: dict[str, Any],
        median_ratio: float,
    ) -> None:
        loss, low = step.smoothed_loss, self.min_loss
        if self.finite_losses >= 3 and math.isfinite(loss) and loss > RISE * low:
            self._fire(
                "lr_too_high",
                "fail",
                f"the smoothed loss rose to {loss:.4g} at step {step.step}, "
                f"{loss / low:.1f}× its minimum {low:.4g}",
                {"step": step.step, "loss": loss, "minimum": low},
            )
        recent = self.trace[-self.window :]
        recent_ratios = [entry["update_ratio"] for entry in recent]
        if len(recent) == self.window and all(r > UPDATE_HIGH for r in recent_ratios):
            self._fire(
                "lr_too_high",
                "warn",
                f"median update/weight ratio ≥ {min(recent_ratios):.2g} over the last "
                f"{self.window} samples, up to step {step.step} (the lectures' rule of thumb: "
                f"~1e-3; above {UPDATE_HIGH:g} is too high)",
                {"step": step.step, "update_ratio": min(recent_ratios)},
            )
        if len(recent) == self.window:
            ratios = recent_ratios
            start, end = recent[0]["smoothed_loss"], recent[-1]["smoothed_loss"]
            change = (start - end) / abs(start) if start else 0.0
            # zero gradients (dead units, a detached graph) also give zero updates: that
            # is not a rate too low, so the gradients must be alive
            alive = all(entry["grad_ratio"] > GRADIENT_ALIVE for entry in recent)
            small = all(math.isfinite(r) and r < UPDATE_LOW for r in ratios)
            if small and alive and abs(change) < FLAT:
                self._fire(
                    "lr_too_low",
                    "warn",
                    f"median update/weight ratio ≤ {max(ratios):.2g} over the last "
                    f"{self.window} samples and the smoothed loss moved {change:.2%} "
                    "(expected ~1e-3 and a falling loss)",
                    {"step": step.step, "update_ratio": max(ratios), "loss_change": change},
                )
        # a plateau is judged over PLATEAU_SPAN steps at least, longer than the smoothed
        # loss's own memory of 1/(1 − β) = 50 steps, so that its lag is not mistaken for one
        earlier = [e for e in self.trace if e["step"] <= step.step - PLATEAU_SPAN]
        if earlier and len(self.trace) >= self.window and "lr_too_low" not in self.verdicts:
            start = earlier[-1]["smoothed_loss"]
            change = (start - step.smoothed_loss) / abs(start) if start else 0.0
            spanned = [e for e in self.trace if e["step"] > earlier[-1]["step"]]
            normal = all(e["update_ratio"] >= UPDATE_LOW for e in spanned)
            if change < FLAT and normal:
                self._fire(
                    "plateau",
                    "warn",
                    f"the smoothed loss improved {change:.2%} over steps "
                    f"{earlier[-1]['step']}–{step.step}",
                    {"step": step.step, "loss_change": change},
                )
        for name, stats in layers.items():
            dead = stats.get("dead", 0.0)
            if dead > DEAD and stats.get("dead_window", 0) >= min(self.window, 3):
                self._fire(
                    "dead_units",
                    "warn",
                    f"{dead:.0%} of the units of {name} ({stats['kind']}) were never active "
                    f"over the last {stats['dead_window']} samples",
                    {"layer": name, "dead": dead},
                )
            saturated = stats.get("saturated", 0.0)
            if saturated > SATURATED:
                self._fire(
                    "saturation",
                    "warn",
                    f"{saturated:.0%} of the units of {name} ({stats['kind']}) are saturated "
                    f"at step {step.step}",
                    {"layer": name, "saturated": saturated},
                )
        weights = [
            (name, p["grad_weight_ratio"])
            for name, p in parameters.items()
            if name.endswith("weight") and math.isfinite(p["grad_weight_ratio"])
        ]
        if len(weights) >= 2 and weights[-1][1] > 0:
            (first, low), (last, high) = weights[0], weights[-1]
            ratio = low / high
            if ratio < VANISH:
                self._fire(
                    "vanishing_gradients",
                    "warn",
                    f"gradient/weight ratio of {first} is {ratio:.2g}× that of {last} at step "
                    f"{step.step} (the first layers barely learn)",
                    {"first": first, "last": last, "ratio": ratio},
                )
            elif ratio > EXPLODE:
                self._fire(
                    "exploding_gradients",
                    "warn",
                    f"gradient/weight ratio of {first} is {ratio:.2g}× that of {last} at step "
                    f"{step.step}",
                    {"first": first, "last": last, "ratio": ratio},
                )

    def _judge_fit(self) -> None:
        """Overfitting: validation loss rising while the training loss falls (see the rules)."""
        if len(self.evaluations) < 3:
            return
        a, b, c = self.evaluations[-3:]
        best = min(e["val_loss"] for e in self.evaluations)
        rising = c["val_loss"] > a["val_loss"] and c["val_loss"] > (1 + OVERFIT_RISE) * best
        falling = c["train_loss"] < a["train_loss"]
        gaps = [e["val_loss"] - e["train_loss"] for e in (a, b, c)]
        if rising and falling and gaps[2] > gaps[0]:
            self._fire(
                "overfitting",
                "warn",
                f"validation loss rose {a['val_loss']:.4g} → {c['val_loss']:.4g} over steps "
                f"{a['step']}–{c['step']} while the training loss fell "
                f"{a['train_loss']:.4g} → {c['train_loss']:.4g}; the gap grew to {gaps[2]:.4g}",
                {"evaluations": [a, b, c]},
            )

    def _judge_end(self, summary: dict[str, Any]) -> None:
        train, val = summary.get("train_accuracy"), summary.get("val_accuracy")
        measured = isinstance(train, float) and isinstance(val, float) and not math.isnan(val)
        if measured and train < UNDERFIT_ACCURACY and abs(train - val) < UNDERFIT_GAP:
            self._fire(
                "underfitting",
                "warn",
                f"training accuracy {train:.1%} with validation at {val:.1%}: the model "
                "does not fit even its training data",
                {"train_accuracy": train, "val_accuracy": val},
            )

    def _document(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "every": self.every,
            "window": self.window,
            "thresholds": {
                "update_high": UPDATE_HIGH,
                "update_low": UPDATE_LOW,
                "rise": RISE,
                "gradient_alive": GRADIENT_ALIVE,
                "flat": FLAT,
                "plateau_span": PLATEAU_SPAN,
                "dead": DEAD,
                "saturated": SATURATED,
                "vanish": VANISH,
                "explode": EXPLODE,
                "overfit_rise": OVERFIT_RISE,
                "underfit_accuracy": UNDERFIT_ACCURACY,
                "underfit_gap": UNDERFIT_GAP,
            },
            "samples": history,
            "verdicts": [f.to_dict() for f in self.verdicts.values()],
        }


def _print(finding: Finding) -> None:
    print(
        f"\ntrainlab: verdict [{finding.status}] {finding.name}: {finding.evidence}\n"
        f"  fix: {finding.fix}",
        file=sys.stderr,
    )


def _histogram(values: Tensor) -> dict[str, Any]:
    flat = values.detach().float().flatten()
    low, high = float(flat.min()), float(flat.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return {"low": low, "high": high, "counts": []}
    counts = torch.histc(flat, bins=HISTOGRAM_BINS, min=low, max=high if high > low else low + 1)
    return {"low": low, "high": high, "counts": [int(c) for c in counts.tolist()]}


def _median(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _median_grad_ratio(sample: dict[str, Any]) -> float:
    """The median gradient/weight ratio over a sample's parameter tensors."""
    ratios = [p["grad_weight_ratio"] for p in sample["parameters"].values()]
    return _median([r for r in ratios if math.isfinite(r)])


def _median_ratio(sample: dict[str, Any]) -> float:
    return _median(
        [
            p["update_ratio"]
            for p in sample["parameters"].values()
            if math.isfinite(p["update_ratio"])
        ]
    )


def _without_histograms(parameters: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in p.items() if k != "grad_histogram"} for n, p in parameters.items()}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
