"""Data augmentation on whole batches: seeded, train-only, composable.

Every augmentation is called as ``aug(x, generator, train=True)`` on a batch and returns a
new batch of the same shape. Each sample is transformed with probability ``p`` (one
Bernoulli draw per sample); the transform's magnitude (angle, shift, factor) is drawn per
sample from ``generator``, so the same generator state gives the same batch. With
``train=False`` the batch comes back unchanged and no randomness is drawn: augmentation
belongs to training only, never to validation or test data.

All transforms are vectorized over the batch: the random parameters are drawn for every
sample, the transform is applied to the whole batch, and a mask keeps the untouched
samples as they were (so ``p = 0`` is exactly the identity).

Images are (N, C, H, W); sequences (MNIST-1D) are (N, L) or (N, C, L).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import fail, flag, nonnegative, nonnegative_int, unit_closed, unit_half_open

IMAGE = (4,)
SEQUENCE = (2, 3)
LAYOUT = {IMAGE: "images (N, C, H, W)", SEQUENCE: "sequences (N, L) or (N, C, L)"}
# ITU-R BT.601 luma weights, the usual RGB -> gray.
LUMA = (0.299, 0.587, 0.114)


class Augmentation:
    """Base class: the per-sample coin flip, train/eval switch and checks.

    Subclasses set ``dims`` (accepted ``x.dim()``) and implement `transform`,
    which transforms every sample of the batch.
    """

    dims: tuple[int, ...] = IMAGE
    needs_float = False  # interpolation, jitter and noise make no sense on integer data

    def __init__(self, p: float) -> None:
        unit_closed("p", p)
        self.p = float(p)

    def __call__(self, x: Tensor, generator: torch.Generator | None, train: bool = True) -> Tensor:
        flag("train", train)
        if not train:
            return x
        self._check(x, generator)
        n = x.shape[0]
        coin = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
        apply = (coin < self.p).to(x.device)
        transformed = self.transform(x, generator)
        return torch.where(apply.view(n, *[1] * (x.dim() - 1)), transformed, x)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Transform every sample of the batch ``x``, drawing randomness from ``generator``.

        The caller keeps each transformed sample with probability ``p`` and the original
        otherwise, so a subclass transforms the whole batch unconditionally.
        """
        raise NotImplementedError

    def _check(self, x: Tensor, generator: Any) -> None:
        if not isinstance(generator, torch.Generator):
            allowed = "training-mode augmentation needs a torch.Generator; use train=False in eval"
            raise fail("generator", generator, allowed)
        if not isinstance(x, Tensor) or x.dim() not in self.dims:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise fail("x shape", shape, f"{type(self).__name__} needs {LAYOUT[self.dims]}")
        if self.needs_float and not x.is_floating_point():
            raise fail("x dtype", x.dtype, f"{type(self).__name__} needs a floating-point tensor")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose:
    """Apply augmentations in order, all drawing from the one generator."""

    def __init__(self, augmentations: Sequence[Callable[..., Tensor]]) -> None:
        for i, aug in enumerate(augmentations):
            if not callable(aug):
                raise fail(f"augmentations[{i}]", aug, "must be callable as aug(x, generator)")
        self.augmentations = list(augmentations)

    def __call__(self, x: Tensor, generator: torch.Generator | None, train: bool = True) -> Tensor:
        for aug in self.augmentations:
            x = aug(x, generator, train=train)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


# --- images (N, C, H, W) -------------------------------------------------------------------


class HorizontalFlip(Augmentation):
    """Mirror left-right: x'[..., i, j] = x[..., i, W - 1 - j]."""

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x.flip(-1)


class VerticalFlip(Augmentation):
    """Mirror top-bottom: x'[..., i, j] = x[..., H - 1 - i, j]."""

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x.flip(-2)


class Translate(Augmentation):
    """Shift by whole pixels, zero fill: x'[i, j] = x[i - dy, j - dx], dx, dy uniform integers
    in [-max_shift, max_shift].

    Args:
        p: probability per sample.
        max_shift: largest shift in pixels, each axis (default: 2).
    """

    def __init__(self, p: float, max_shift: int = 2) -> None:
        super().__init__(p)
        nonnegative_int("max_shift", max_shift)
        self.max_shift = int(max_shift)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        dy, dx = (_shifts(x, self.max_shift, generator) for _ in range(2))
        shifted = shift_along_last(x, dx)
        return shift_along_last(shifted.transpose(-1, -2), dy).transpose(-1, -2)


class Rotate(Augmentation):
    """Rotate about the image centre by theta uniform in [-max_degrees, max_degrees].

    Bilinear sampling (``affine_grid`` + ``grid_sample``), zero fill outside the image:

        x'(u) = x(R(theta) u),  R = [[cos, -sin], [sin, cos]]  (pixel coordinates)

    The normalized grid is rescaled by the aspect ratio so that non-square images rotate
    rigidly instead of shearing. theta = 0 gives x back up to float rounding.
    """

    needs_float = True

    def __init__(self, p: float, max_degrees: float = 15.0) -> None:
        super().__init__(p)
        nonnegative("max_degrees", max_degrees)
        self.max_degrees = float(max_degrees)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        theta = _uniform(n, -self.max_degrees, self.max_degrees, generator, x) * (math.pi / 180)
        cos, sin, zero = theta.cos(), theta.sin(), torch.zeros_like(theta)
        matrix = torch.stack(
            [torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)],
            1,
        )
        return _resample(x, matrix)


class RandomResizedCrop(Augmentation):
    """Crop a random square-in-proportion region and scale it back to (H, W).

    The crop keeps fraction s of the area, s uniform in ``scale``, so each side keeps
    a = sqrt(s); its centre is uniform among positions inside the image. Bilinear
    resampling. (Unlike torchvision the aspect ratio is kept: digits are not stretched.)

    Args:
        p: probability per sample.
        scale: (low, high) area fraction, 0 < low <= high <= 1 (default: (0.8, 1.0)).
    """

    needs_float = True

    def __init__(self, p: float, scale: tuple[float, float] = (0.8, 1.0)) -> None:
        super().__init__(p)
        allowed = "must be a pair (low, high) with 0 < low <= high <= 1"
        if not isinstance(scale, (tuple, list)) or len(scale) != 2:
            raise fail("scale", scale, allowed)
        if not all(isinstance(s, numbers.Real) for s in scale) or not 0 < scale[0] <= scale[1] <= 1:
            raise fail("scale", tuple(scale), allowed)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n = x.shape[0]
        side = _uniform(n, *self.scale, generator, x).sqrt()
        # Normalized coordinates run over [-1, 1]: the centre may move by (1 - side).
        cy, cx = (_uniform(n, -1.0, 1.0, generator, x) * (1 - side) for _ in range(2))
        zero = torch.zeros_like(side)
        matrix = torch.stack(
            [torch.stack([side, zero, cx], 1), torch.stack([zero, side, cy], 1)], 1
        )
        return _resample(x, matrix)


class ColorJitter(Augmentation):
    """Random brightness, contrast and saturation, in that order.

    With factors b, c, s uniform in [max(0, 1 - m), 1 + m] for magnitude m:

        brightness:  x' = b x
        contrast:    x' = c (x - mean(gray(x))) + mean(gray(x))   (mean over the image)
        saturation:  x' = s (x - gray(x)) + gray(x)                (3-channel images only)

    gray = 0.299 R + 0.587 G + 0.114 B. One-channel images are already gray: saturation
    leaves them unchanged. Values are not clipped, so it works on any value range.

    Args:
        p: probability per sample.
        brightness: magnitude b >= 0 of the brightness change (default: 0.2).
        contrast: magnitude c >= 0 of the contrast change (default: 0.2).
        saturation: magnitude s >= 0 of the saturation change (default: 0.2).
    """

    needs_float = True

    def __init__(
        self, p: float, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2
    ) -> None:
        super().__init__(p)
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            nonnegative(name, value)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation = float(saturation)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        channels = x.shape[1]
        if channels not in (1, 3):
            raise fail("x channels", channels, "ColorJitter needs 1 (gray) or 3 (RGB) channels")
        magnitudes = (self.brightness, self.contrast, self.saturation)
        b, c, s = (self._factor(m, generator, x) for m in magnitudes)
        x = x * b
        gray_mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = c * (x - gray_mean) + gray_mean
        if channels == 3:
            gray = _gray(x)
            x = s * (x - gray) + gray
        return x

    @staticmethod
    def _factor(magnitude: float, generator: torch.Generator, x: Tensor) -> Tensor:
        factor = _uniform(x.shape[0], max(0.0, 1 - magnitude), 1 + magnitude, generator, x)
        return factor.view(-1, 1, 1, 1)


class GaussianNoise(Augmentation):
    """Additive noise: x' = x + std * z, z ~ N(0, 1) per entry."""

    needs_float = True

    def __init__(self, p: float, std: float = 0.1) -> None:
        super().__init__(p)
        nonnegative("std", std)
        self.std = float(std)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return x + self.std * noise.to(x.device)


# --- sequences (N, L) or (N, C, L) ----------------------------------------------------------


class Shift1d(Augmentation):
    """Shift along the sequence by an integer d uniform in [-max_shift, max_shift].

    Zero fill by default, x'[t] = x[t - d] (0 outside); ``circular=True`` wraps around,
    x'[t] = x[(t - d) mod L], like MNIST-1D's own random translation.
    """

    dims = SEQUENCE

    def __init__(self, p: float, max_shift: int = 4, circular: bool = False) -> None:
        super().__init__(p)
        nonnegative_int("max_shift", max_shift)
        flag("circular", circular)
        self.max_shift, self.circular = int(max_shift), circular

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return shift_along_last(x, _shifts(x, self.max_shift, generator), self.circular)


class Scale1d(Augmentation):
    """Stretch (s > 1) or squeeze (s < 1) about the centre, s uniform in [1 - m, 1 + m]:

        x'[t] = x(c + (t - c) / s),  c = (L - 1) / 2,

    linear interpolation between samples, zero outside; the length stays L.

    Args:
        p: probability per sample.
        max_scale: m in [0, 1) (default: 0.1).
    """

    dims = SEQUENCE

    needs_float = True

    def __init__(self, p: float, max_scale: float = 0.1) -> None:
        super().__init__(p)
        unit_half_open("max_scale", max_scale)
        self.max_scale = float(max_scale)

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, length = x.shape[0], x.shape[-1]
        s = _uniform(n, 1 - self.max_scale, 1 + self.max_scale, generator, x)
        centre = (length - 1) / 2
        t = torch.arange(length, device=x.device, dtype=x.dtype)
        source = centre + (t - centre) / s[:, None]  # (N, L) positions to read
        left = source.floor()
        weight = _batch_view(source - left, x)
        left = left.long()
        return (1 - weight) * gather_zero_fill(x, left) + weight * gather_zero_fill(x, left + 1)


class Noise1d(GaussianNoise):
    """[`GaussianNoise`][trainlab.data.GaussianNoise] for sequences (N, L) or (N, C, L)."""

    dims = SEQUENCE


# --- pure tensor helpers --------------------------------------------------------------------


def gather_zero_fill(x: Tensor, index: Tensor) -> Tensor:
    """x'[n, ..., t] = x[n, ..., index[n, t]], 0 where the index is outside [0, L)."""
    length = x.shape[-1]
    inside = _batch_view((index >= 0) & (index < length), x)
    index = _batch_view(index.clamp(0, length - 1), x).expand_as(x)
    return torch.where(inside, x.gather(-1, index), torch.zeros((), dtype=x.dtype))


def shift_along_last(x: Tensor, shift: Tensor, circular: bool = False) -> Tensor:
    """x'[n, ..., t] = x[n, ..., t - shift[n]], zero fill or wrapped around (circular)."""
    length = x.shape[-1]
    index = torch.arange(length, device=x.device) - shift.to(x.device)[:, None]
    if circular:
        return x.gather(-1, _batch_view(index % length, x).expand_as(x))
    return gather_zero_fill(x, index)


def _resample(x: Tensor, matrix: Tensor) -> Tensor:
    """Bilinear x'(u) = x(A u + b) for per-sample 2x3 matrices in normalized coordinates."""
    grid = F.affine_grid(matrix.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _batch_view(per_position: Tensor, x: Tensor) -> Tensor:
    """(N, L) -> (N, 1, ..., 1, L) to broadcast against x."""
    return per_position.view(x.shape[0], *[1] * (x.dim() - 2), per_position.shape[-1])


def _uniform(n: int, low: float, high: float, generator: torch.Generator, x: Tensor) -> Tensor:
    draw = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return (low + (high - low) * draw).to(device=x.device, dtype=dtype)


def _shifts(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    shape, device = (x.shape[0],), generator.device
    return torch.randint(-max_shift, max_shift + 1, shape, generator=generator, device=device)
