"""The gradient check: autograd against centred differences, entry by entry, layer by layer.

The lecture's first pitfall of SGD is a wrong gradient program, and its remedy a numerical
gradient checker. For a sample of entries θᵢ of every parameter tensor::

    numeric   n = (f(θ + ε·eᵢ) − f(θ − ε·eᵢ)) / 2ε      (centred: error O(ε²), not O(ε))
    analytic  a = ∂f/∂θᵢ                                 (what backward() computed)
    relative error = |a − n| / max(|a|, |n|)              (0 when both are 0)

in float64 (in float32, round-off alone gives errors near 1e-2), with the bands of the
cs231n notes: > 1e-2 the gradient is probably wrong; 1e-4 … 1e-2 uncomfortable; 1e-7 … 1e-4
fine for objectives with kinks (ReLU, max-pool) but high for smooth ones (tanh, softmax);
< 1e-7 good.

Kinks. Where the forward crosses a kink between θ − ε and θ + ε (a ReLU input changes sign,
a max-pool winner changes), the centred difference averages two slopes and disagrees with
the analytic gradient even though backward is right. Such an entry is recognised by its
one-sided differences d₊ = (f(θ + ε) − f(θ))/ε and d₋ = (f(θ) − f(θ − ε))/ε: they disagree
(a jump in the slope) and the analytic gradient equals one of them (the slope on θ's side).
A wrong backward matches neither. Kink entries are reported, not failed.

Resolution. Round-off in f is about one unit in the last place, so n carries an absolute
error near ε_mach·|f|/ε (≈ 5e-10 for f ≈ 2.3, ε = 1e-6). Entries smaller than that cannot
be judged relative to themselves; the denominator is therefore max(|a|, |n|, floor) with
floor = 1e5·ε_mach·max(1, |f|)/ε (≈ 5e-5), so round-off — which reaches a few units in
the last place where gradients vanish — stays near 1e-5, in the "ok" band, while a
backward that is off by a factor still fails down to gradients of ≈ 1e-2 × floor.

Determinism. The check runs on a float64 deep copy in train mode — batch norm uses batch
statistics, so the backward of batch norm itself is checked — and reseeds torch's RNG
before every forward, so dropout draws the same mask in every evaluation and is checked
too. The user's model and the global RNG state are left exactly as they were.

References: cs231n notes, "Neural Networks 3: gradient checks"; Gunasekar, "Tricks and
tools for NN training" (TTICS 2018), "Write a numerical gradient checker".
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import positive, positive_int
from ..train.state_tree import rng_state, set_rng_state
from .findings import Finding

#: Upper edges of the cs231n bands for the relative error, best first.
BANDS: tuple[tuple[float, str], ...] = (
    (1e-7, "good"),
    (1e-4, "ok"),
    (1e-2, "suspicious"),
    (math.inf, "wrong"),
)
#: The status each band gives: "ok" passes, as the cs231n notes accept it for ReLU nets.
BAND_STATUS = {"good": "pass", "ok": "pass", "suspicious": "warn", "wrong": "fail"}
#: The floor of the denominator, in units of the round-off of a centred difference.
ROUNDOFF_MARGIN = 1e5
#: A kink: the analytic gradient lies within this fraction of the slope jump of one side.
KINK_MATCH = 0.1

LossFn = Callable[[Tensor, Tensor], Tensor]


# --- running a model with clear errors and a restored RNG -----------------------------------


@contextlib.contextmanager
def rng_restored() -> Iterator[None]:
    """Put every global RNG (torch CPU and CUDA, numpy, random) back as it was on exit."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def deep_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` for a check to run on, or a ValueError saying why not."""
    try:
        return copy.deepcopy(model)
    except Exception as error:  # a module holding something deepcopy cannot copy
        raise ValueError(
            f"Invalid model: it cannot be deep-copied ({type(error).__name__}: {error}); the "
            "checks run on a copy so that the model is never touched (keep handles, locks "
            "and open files out of the module's attributes)"
        ) from error


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def check_batch(x: Tensor, y: Tensor | None = None) -> None:
    """x (and y) as tensors of one length with at least one row, or a ValueError."""
    if not isinstance(x, Tensor) or (y is not None and not isinstance(y, Tensor)):
        raise ValueError("Invalid batch: x and y must be tensors (convert with torch.as_tensor)")
    if x.dim() == 0 or len(x) == 0:
        raise ValueError(f"Invalid x: shape {tuple(x.shape)} (must hold at least one example)")
    if y is not None and (y.dim() == 0 or len(y) != len(x)):
        rows = len(y) if y.dim() else 0
        raise ValueError(
            f"Invalid batch: x has {len(x)} rows and y has {rows} (x and y must have the same "
            "first dimension, one row per example)"
        )


def forward(model: nn.Module, x: Tensor, *, where: str = "") -> Tensor:
    """``model(x)``, or a ValueError naming the failure and the fix."""
    try:
        out = model(x)
    except Exception as error:  # any failure of user code, reported with the input's shape
        raise ValueError(
            f"Invalid model: its forward pass fails on a batch of x with shape "
            f"{tuple(x.shape)} and dtype {x.dtype}{where}: {type(error).__name__}: {error} "
            "(check the model's input size against the data; make constants created in "
            "forward follow x.dtype and x.device)"
        ) from error
    if not isinstance(out, Tensor):
        raise ValueError(
            f"Invalid model: its forward returns a {type(out).__name__} (the checks need one "
            "tensor of outputs; wrap the model so that forward returns the logits or predictions)"
        )
    return out


def loss_value(loss_fn: LossFn, out: Tensor, y: Tensor) -> Tensor:
    """``loss_fn(out, y)`` as a 0-dim tensor, or a ValueError naming the failure and the fix."""
    try:
        loss = loss_fn(out, y)
    except Exception as error:  # any failure of user code, reported with the shapes
        raise ValueError(
            f"Invalid loss: loss_fn fails on outputs of shape {tuple(out.shape)} and targets "
            f"of shape {tuple(y.shape)} and dtype {y.dtype}: {type(error).__name__}: {error} "
            "(integer class labels need as many logits as classes; regression targets need "
            "outputs of their shape)"
        ) from error
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"Invalid loss: loss_fn returns {shape} (must be a scalar tensor; average or sum "
            "the per-example losses)"
        )
    return loss.reshape(())


# --- the math -------------------------------------------------------------------------------


def relative_error(analytic: float, numeric: float, floor: float = 0.0) -> float:
    """|a − n| / max(|a|, |n|, floor); 0 when a = n (both 0 included)."""
    if not (math.isfinite(analytic) and math.isfinite(numeric)):
        return math.inf
    difference = abs(analytic - numeric)
    if difference == 0.0:
        return 0.0
    return difference / max(abs(analytic), abs(numeric), floor)


def band(error: float) -> str:
    """The cs231n band of a relative error: "good", "ok", "suspicious" or "wrong"."""
    return next(name for edge, name in BANDS if error <= edge)


def is_kink(analytic: float, forward_slope: float, backward_slope: float) -> bool:
    """Whether a disagreement is a kink crossed between θ − ε and θ + ε, not a wrong backward.

    At a kink the one-sided slopes d₊ and d₋ differ by the jump of the derivative and the
    analytic gradient is the slope on θ's side: |a − d±| is small next to |d₊ − d₋|.
    In a smooth region d₊ ≈ d₋ ≈ n, so a wrong a matches neither.
    """
    jump = abs(forward_slope - backward_slope)
    nearest = min(abs(analytic - forward_slope), abs(analytic - backward_slope))
    return jump > 0.0 and nearest <= KINK_MATCH * jump


def resolution(loss: float, eps: float) -> float:
    """The floor of the relative error's denominator: ROUNDOFF_MARGIN · ε_mach·max(1, |f|)/ε."""
    return ROUNDOFF_MARGIN * torch.finfo(torch.float64).eps * max(1.0, abs(loss)) / eps


@dataclass(frozen=True)
class Entry:
    """One checked entry θᵢ of a parameter tensor."""

    index: tuple[int, ...]
    analytic: float
    numeric: float
    error: float
    kink: bool


# --- the check ------------------------------------------------------------------------------


def gradient_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    samples_per_tensor: int = 10,
    eps: float = 1e-6,
    seed: int = 0,
) -> Finding:
    """Compare autograd's gradient with centred differences on entries of every parameter.

    For ``samples_per_tensor`` entries θᵢ of each trainable tensor (all of them when it is
    smaller; drawn with a generator seeded by ``seed``), n = (f(θ + εeᵢ) − f(θ − εeᵢ))/2ε
    against a = ∂f/∂θᵢ, with f = loss_fn(model(x), y) in float64. The relative error
    |a − n|/max(|a|, |n|) is banded as in the cs231n notes:

    ===================  ==========  ======  ===========================================
    relative error       band        status  meaning
    ===================  ==========  ======  ===========================================
    > 1e-2               wrong       fail    the backward of that layer is wrong
    1e-4 … 1e-2          suspicious  warn    probably wrong, unless it is a kink
    1e-7 … 1e-4          ok          pass    usual for kinky nets (ReLU); high if smooth
    < 1e-7               good        pass
    ===================  ==========  ======  ===========================================

    Entries where the forward crosses a kink (module docstring) are counted apart and do
    not fail. The check runs on a float64 deep copy in train mode, with torch's RNG
    reseeded to ``seed`` before every forward (dropout draws one mask; batch norm uses the
    batch's statistics); ``model`` and the global RNG state are not touched. Use a small
    batch (e.g. 8 examples): the check costs 2 forwards per entry.

    Args:
        model: any module; custom ``autograd.Function``s included.
        x: a small input batch (floating inputs are cast to float64).
        y: the targets (floating targets are cast to float64).
        loss_fn: ``loss_fn(outputs, y)`` → scalar.
        samples_per_tensor: entries checked per parameter tensor (default: 10).
        eps: the step ε of the centred difference (default: 1e-6).
        seed: seeds the entry sample and every forward's RNG (default: 0).

    Returns:
        ``Finding("gradient_check", ...)``: the evidence names the tensor with the largest
        relative error; ``data["tensors"]`` holds one row per parameter tensor.

    Raises:
        ValueError: no trainable parameter, a forward or loss that fails, or a loss whose
            gradient is cut or zero everywhere (argmax, round, ``.detach()``, integer casts).

    References: cs231n notes, "Gradient checks"; Gunasekar, TTICS 2018.
    """
    check_batch(x, y)
    positive_int("samples_per_tensor", samples_per_tensor)
    positive("eps", eps)
    with rng_restored():
        model64, x64, y64 = _float64_copy(model, x, y)
        named = [(name, p) for name, p in model64.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                "Invalid model: it has no trainable parameters (requires_grad is False "
                "everywhere; nothing to check)"
            )

        def f() -> Tensor:
            torch.manual_seed(seed)  # the same dropout mask in every evaluation
            return loss_value(
                loss_fn, forward(model64, x64, where=" (the gradient check's float64 copy)"), y64
            )

        loss = f()
        _check_differentiable(loss)
        f0 = loss.item()
        if not math.isfinite(f0):
            raise ValueError(
                f"Invalid loss: {f0} at the current weights (the gradient check needs a "
                "finite loss; run loss_at_init and the initialization check first)"
            )
        loss.backward()
        floor = resolution(f0, eps)
        picker = torch.Generator().manual_seed(seed)
        rows = []
        with torch.no_grad():
            for name, p in named:
                entries = _check_tensor(p, f, f0, eps, floor, samples_per_tensor, picker)
                rows.append(_row(name, p, entries))
    _check_not_flat(rows)
    return _finding(rows, model, eps, floor, samples_per_tensor)


def _float64_copy(model: nn.Module, x: Tensor, y: Tensor) -> tuple[nn.Module, Tensor, Tensor]:
    model64 = deep_copy(model).to(torch.float64).train()
    for p in model64.parameters():
        p.grad = None
    x64 = x.to(torch.float64) if x.is_floating_point() else x
    y64 = y.to(torch.float64) if y.is_floating_point() else y
    device = model_device(model64)
    return model64, x64.to(device), y64.to(device)


def _check_differentiable(loss: Tensor) -> None:
    if not loss.requires_grad:
        raise ValueError(
            "Invalid model: the loss has no gradient with respect to any parameter — an "
            "operation without a gradient (argmax, round, a comparison, .detach(), .item(), "
            "an integer cast) cuts the graph between the parameters and the loss (keep the "
            "path from parameters to loss differentiable: logits, not predicted classes)"
        )


def _check_not_flat(rows: list[dict[str, Any]]) -> None:
    """A loss flat in every parameter (analytic and numeric gradients all 0) is an input error.

    Where the numeric gradient is not 0, a zero analytic one is a wrong backward: a
    finding, not an error.
    """
    if all(r["gradient"] != "nonzero" and r["max_abs_numeric"] == 0.0 for r in rows):
        raise ValueError(
            "Invalid model: every gradient is exactly 0, analytic and numeric — the loss is "
            "flat in the parameters, as after round, floor, sign or a step function "
            "(piecewise-constant ops give zero gradients; use their smooth versions, or a "
            "straight-through estimator written as a custom autograd.Function)"
        )


def _check_tensor(
    p: Tensor,
    f: Callable[[], Tensor],
    f0: float,
    eps: float,
    floor: float,
    samples: int,
    picker: torch.Generator,
) -> list[Entry]:
    """Centred differences on ``samples`` entries of ``p`` (all when it is smaller)."""
    picks = torch.randperm(p.numel(), generator=picker)[:samples].sort().values.tolist()
    entries = []
    for i in picks:
        index = _unravel(i, tuple(p.shape))
        original = p[index].item()
        p[index] = original + eps  # in place, under no_grad: the copy's parameter itself
        f_plus = f().item()
        p[index] = original - eps
        f_minus = f().item()
        p[index] = original
        a = 0.0 if p.grad is None else p.grad[index].item()  # None: unused by the loss
        n = (f_plus - f_minus) / (2 * eps)
        error = relative_error(a, n, floor)
        kink = band(error) not in ("good", "ok") and is_kink(
            a, (f_plus - f0) / eps, (f0 - f_minus) / eps
        )
        entries.append(Entry(index, a, n, error, kink))
    return entries


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index tuple of entry ``flat_index`` in row-major order (``()`` for a scalar)."""
    index = []
    for size in reversed(shape):
        flat_index, k = divmod(flat_index, size)
        index.append(k)
    return tuple(reversed(index))


def _row(name: str, p: Tensor, entries: list[Entry]) -> dict[str, Any]:
    """One line of the table: the tensor's worst entry that is not a kink, and its band."""
    judged = [e for e in entries if not e.kink]
    worst = max(judged, key=lambda e: e.error) if judged else None
    if p.grad is None:
        gradient = "none"  # not reached by backward: unused, or cut by argmax/.detach()
    else:
        gradient = "zero" if not p.grad.any() else "nonzero"
    return {
        "parameter": name,
        "shape": list(p.shape),
        "gradient": gradient,
        "checked": len(entries),
        "kinks": len(entries) - len(judged),
        "max_relative_error": _json_float(worst.error) if worst else 0.0,
        "band": band(worst.error) if worst else "good",
        "worst_index": list(worst.index) if worst else None,
        "analytic": _json_float(worst.analytic) if worst else None,
        "numeric": _json_float(worst.numeric) if worst else None,
        "max_abs_analytic": _json_float(max(abs(e.analytic) for e in entries)),
        "max_abs_numeric": _json_float(max(abs(e.numeric) for e in entries)),
        "kink_errors": [_json_float(e.error) for e in entries if e.kink],
    }


def _json_float(value: float) -> float | None:
    """``value``, or None where JSON has no number (NaN, ±inf)."""
    return value if math.isfinite(value) else None


def _owner(model: nn.Module, parameter: str) -> str:
    """The class of the module holding ``parameter``, e.g. "Linear"."""
    path = parameter.rpartition(".")[0]
    try:
        return type(model.get_submodule(path) if path else model).__name__
    except AttributeError:
        return "?"


#: What each band means, for the evidence.
MEANINGS = {
    "good": "< 1e-7, good",
    "ok": "1e-7…1e-4, ok: usual with kinks (ReLU, max-pool), for a smooth net only at round-off",
    "suspicious": "1e-4…1e-2, suspicious",
    "wrong": "> 1e-2, the gradient is wrong",
}


def _finding(
    rows: list[dict[str, Any]], model: nn.Module, eps: float, floor: float, samples: int
) -> Finding:
    def error(row: dict[str, Any]) -> float:
        return math.inf if row["max_relative_error"] is None else row["max_relative_error"]

    worst = max(rows, key=error)
    status = BAND_STATUS[worst["band"]]
    checked = sum(r["checked"] for r in rows)
    kinks = sum(r["kinks"] for r in rows)
    where = f"'{worst['parameter']}' ({_owner(model, worst['parameter'])})"
    shown = "inf" if worst["max_relative_error"] is None else f"{worst['max_relative_error']:.1e}"
    if worst["worst_index"] is None:  # every entry of every tensor crossed a kink
        values = ""
    else:
        a, n = worst["analytic"], worst["numeric"]
        roundoff = floor / ROUNDOFF_MARGIN  # ε_mach·max(1, |f|)/ε
        at_roundoff = (
            f", |a − n| = {abs(a - n):.1e} is float64 round-off"
            if abs(a - n) <= 10 * roundoff
            else ""
        )
        values = (
            f" (analytic {a:.6g} vs numeric {n:.6g} at {tuple(worst['worst_index'])}{at_roundoff})"
        )
    cut = [r["parameter"] for r in rows if r["gradient"] != "nonzero"]
    if cut and status == "pass":
        status = "warn"
    cut_note = (
        f"; no gradient reaches {', '.join(map(repr, cut))} (None or exactly 0 everywhere)"
        if cut
        else ""
    )
    kink_note = (
        f"; {kinks} entries crossed a kink (ReLU/max-pool) and were set apart" if kinks else ""
    )
    evidence = (
        f"worst tensor {where}: relative error {shown}{values}, {MEANINGS[worst['band']]} — "
        f"{checked} entries in {len(rows)} tensors checked in float64 with ε = {eps:g}"
        f"{kink_note}{cut_note}"
    )
    fixes = {
        "wrong": (
            f"The backward through {where} disagrees with centred differences: fix that "
            "layer's gradient (a custom autograd.Function's backward, an in-place op, or a "
            ".data/.detach() that cuts the graph), then run the check again"
        ),
        "suspicious": (
            f"Errors of 1e-4…1e-2 at {where} are too large for a correct backward: check "
            "that layer's gradient formula (kinks were already set apart)"
        ),
        "ok": "",
        "good": "",
    }
    fix = fixes[worst["band"]]
    if cut and not fix:
        fix = (
            f"Nothing reaches {', '.join(map(repr, cut))}, so it never trains: an op without "
            "a useful gradient (argmax, round, sign, a comparison), a .detach(), or ReLUs "
            "dead on the whole batch sit between it and the loss; if the tensor is unused "
            "on purpose, freeze it (requires_grad=False)"
        )
    data = {
        "eps": eps,
        "samples_per_tensor": samples,
        "resolution": floor,
        "mode": "float64 copy, train mode, RNG reseeded before every forward",
        "worst_parameter": worst["parameter"],
        "worst_relative_error": worst["max_relative_error"],
        "kinks": kinks,
        "no_gradient": cut,
        "tensors": rows,
    }
    return Finding("gradient_check", status, evidence, fix, data)
