"""Metrics of a model on data (the numbers of the logs, summary.json and ``trainlab evaluate``),
and its predictions on new inputs (``trainlab.predict``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .errors import TrainingError
from .sources import evaluation_batches, size

CLASSIFICATION_METRICS = ("loss", "accuracy")
REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Any,
    loss: Callable[[Tensor, Tensor], Tensor],
    task: str,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (``(x, y)``, a Dataset or a DataLoader) in eval mode.

    Classification: ``loss`` and ``accuracy``. Regression: ``loss``, ``mae`` (mean absolute
    error), ``rmse`` and ``r2`` = 1 − SSE/SST, the fraction of the targets' variance the
    model explains. The loss is the mean over examples of the per-batch mean loss weighted
    by batch size (exact for mean-reduced losses). Empty data gives NaN for every metric.
    """
    keys = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if size(data) == 0:
        return dict.fromkeys(keys, math.nan)
    was = model.training
    model.eval()
    total_loss, count, correct = 0.0, 0, 0
    sums = torch.zeros(4, dtype=torch.float64)  # Σ|e|, Σe², Σy, Σy²
    try:
        for xb, yb in evaluation_batches(data, "evaluation data"):
            xb, yb = xb.to(device), yb.to(device)
            outputs = model(xb)
            total_loss += loss(outputs, yb).item() * len(xb)
            count += len(xb)
            if task == "classification":
                correct += int((outputs.argmax(1) == yb).sum())
            else:
                target = yb.double()
                error = outputs.double().reshape(target.shape) - target
                parts = [
                    error.abs().sum(),
                    error.square().sum(),
                    target.sum(),
                    target.square().sum(),
                ]
                sums += torch.stack(parts).cpu()
    finally:
        model.train(was)
    if task == "classification":
        return {"loss": total_loss / count, "accuracy": correct / count}
    abs_sum, sq_sum, y_sum, y_sq = sums.tolist()
    spread = y_sq - y_sum * y_sum / count  # SST = Σ(y − ȳ)²
    return {
        "loss": total_loss / count,
        "mae": abs_sum / count,
        "rmse": math.sqrt(sq_sum / count),
        "r2": 1 - sq_sum / spread if spread > 0 else math.nan,
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[Tensor],
    task: str,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The predictions of ``model`` on ``batches`` of inputs, in eval mode, on the CPU.

    Classification: class probabilities, softmax(logits) = exp(z_c) / Σ_k exp(z_k) over
    the last dimension. Regression: the outputs as they are. Eval mode turns dropout off
    and makes batch norm use its running statistics, so a prediction does not depend on
    the batch it is in; the model's mode is restored afterwards.
    """
    was = model.training
    model.eval()
    outputs = []
    try:
        for xb in batches:
            out = model(xb.to(device))
            outputs.append((torch.softmax(out, -1) if task == "classification" else out).cpu())
    finally:
        model.train(was)
    if not outputs:
        raise TrainingError("Invalid inputs: no examples (pass at least one row)")
    return torch.cat(outputs)
