"""Input normalization with statistics of the training split only.

    x_hat = (x - mean) / max(std, eps)

``mean`` and ``std`` come from the training split alone and are then applied, unchanged,
to validation and test data: statistics of held-out data must not leak into training.
Three granularities, as in the lectures:

* ``"feature"`` — one mean and std per feature (every entry of x[0]), over axis 0;
* ``"channel"`` — one mean and std per channel of (N, C, ...) data, over all other axes;
* ``"mean"`` — subtract the per-channel mean only (the ImageNet-mean example), std = 1.

The std is the population std (divisor N, not N - 1), clamped below by ``eps`` so that
constant features (e.g. always-black MNIST border pixels) map to 0 instead of NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import fail, one_of, positive

MODES = ("feature", "channel", "mean")


def statistics(x: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Mean and std of ``x`` for ``mode``, shaped to broadcast against one sample batch.

    feature: mean_j = 1/N sum_n x[n, j] (j any trailing index), shape x.shape[1:];
    channel: mean_c = 1/(N M) sum_{n, m} x[n, c, m] (m the spatial indices), shape
    (C, 1, ..., 1); mean: as channel, with std = 1.

    Sums run in float64 and the results are cast back to x's dtype.
    """
    wide = x.to(torch.float64)
    axes = (0,) if mode == "feature" else (0, *range(2, x.dim()))
    if mode == "mean":
        mean = wide.mean(dim=axes, keepdim=True)
        std = torch.ones_like(mean)
    else:
        std, mean = torch.std_mean(wide, dim=axes, correction=0, keepdim=True)
    return mean[0].to(x.dtype), std[0].to(x.dtype)


class Normalizer:
    """Fit mean/std on the training split, then apply them to every split.

    Example::

        norm = Normalizer("channel").fit(x_train)
        x_train, x_val, x_test = norm(x_train), norm(x_val), norm(x_test)

    Args:
        mode: ``"feature"``, ``"channel"`` or ``"mean"`` (default: "feature").
        eps: lower bound of the std (default: 1e-8).
    """

    def __init__(self, mode: str = "feature", eps: float = 1e-8) -> None:
        one_of(*MODES)("mode", mode)
        positive("eps", eps)
        self.mode = mode
        self.eps = float(eps)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def fit(self, x_train: Tensor) -> Normalizer:
        """Store the statistics of ``x_train`` (the training split only); returns self."""
        x_train = _as_float(x_train, "x_train")
        min_dim = 1 if self.mode == "feature" else 2
        if x_train.dim() < min_dim or len(x_train) == 0:
            layout = "(N, ...)" if min_dim == 1 else "(N, C, ...)"
            raise fail("x_train shape", tuple(x_train.shape), f"must be {layout} with N >= 1")
        bad = int((~torch.isfinite(x_train)).sum())
        if bad:
            raise fail("x_train", f"{bad} NaN or infinite entries", "must be finite")
        mean, std = statistics(x_train, self.mode)
        self.mean, self.std = mean, std.clamp(min=self.eps)
        return self

    def transform(self, x: Tensor) -> Tensor:
        """x_hat = (x - mean) / std."""
        x = _as_float(x, "x")
        mean, std = self._fitted(x)
        return (x - mean) / std

    __call__ = transform

    def inverse(self, x_hat: Tensor) -> Tensor:
        """x = x_hat * std + mean, e.g. to show normalized images."""
        x_hat = _as_float(x_hat, "x_hat")
        mean, std = self._fitted(x_hat)
        return x_hat * std + mean

    def state_dict(self) -> dict[str, Any]:
        """{"mode", "eps", "mean", "std"}: enough to rebuild the transform without the data."""
        mean, std = self._fitted()
        return {"mode": self.mode, "eps": self.eps, "mean": mean.clone(), "std": std.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`."""
        keys = {"mode", "eps", "mean", "std"}
        if not isinstance(state, dict) or set(state) != keys:
            shown = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise fail("state", shown, f"must be a dict with keys {sorted(keys)}")
        one_of(*MODES)("mode", state["mode"])
        positive("eps", state["eps"])
        mean, std = state["mean"], state["std"]
        if not isinstance(mean, Tensor) or not isinstance(std, Tensor) or mean.shape != std.shape:
            raise fail("state", "mean/std", "must be two tensors of the same shape")
        self.mode, self.eps = state["mode"], float(state["eps"])
        self.mean, self.std = mean.clone(), std.clone()

    def __repr__(self) -> str:
        fitted = "unfitted" if self.mean is None else f"fitted {tuple(self.mean.shape)}"
        return f"Normalizer(mode={self.mode!r}, eps={self.eps}, {fitted})"

    def _fitted(self, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            raise fail(
                "Normalizer state", "not fitted", "call .fit(x_train) on the training split first"
            )
        if x is not None and not self._fits(x):
            raise fail("x shape", tuple(x.shape), f"must be {self._layout()} like the fit data")
        return self.mean, self.std

    def _fits(self, x: Tensor) -> bool:
        """Same sample shape (feature), or same channels and number of axes (channel, mean)."""
        if self.mode == "feature":
            return x.dim() >= 1 and x.shape[1:] == self.mean.shape
        return x.dim() == self.mean.dim() + 1 and x.shape[1] == self.mean.shape[0]

    def _layout(self) -> str:
        if self.mode == "feature":
            return str(("N", *self.mean.shape)).replace("'", "")
        spatial = ", ".join(["..."] * (self.mean.dim() - 1))
        return f"(N, {self.mean.shape[0]}, {spatial})" if spatial else f"(N, {self.mean.shape[0]})"


def _as_float(x: Tensor, name: str) -> Tensor:
    """uint8 images and int tensors become the default float dtype."""
    if not isinstance(x, Tensor):
        raise fail(name, type(x).__name__, "must be a tensor")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())
