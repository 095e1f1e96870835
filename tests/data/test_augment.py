"""Batch augmentations: identities, determinism, closed forms, argument checks."""

import math

import pytest
import torch

from trainlab.data import augment as A

IMAGE_AUGMENTATIONS = {
    "hflip": lambda p: A.HorizontalFlip(p),
    "vflip": lambda p: A.VerticalFlip(p),
    "translate": lambda p: A.Translate(p, max_shift=2),
    "rotate": lambda p: A.Rotate(p, max_degrees=30),
    "crop": lambda p: A.RandomResizedCrop(p, scale=(0.5, 0.9)),
    "jitter": lambda p: A.ColorJitter(p, 0.3, 0.3, 0.3),
    "noise": lambda p: A.GaussianNoise(p, std=0.2),
}
SEQUENCE_AUGMENTATIONS = {
    "shift": lambda p: A.Shift1d(p, max_shift=3),
    "shift_circular": lambda p: A.Shift1d(p, max_shift=3, circular=True),
    "scale": lambda p: A.Scale1d(p, max_scale=0.3),
    "noise1d": lambda p: A.Noise1d(p, std=0.2),
}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, channels: int = 3, size: tuple[int, int] = (8, 10)) -> torch.Tensor:
    return torch.rand(n, channels, *size, generator=generator(123))


def sequences(shape: tuple[int, ...] = (6, 2, 12)) -> torch.Tensor:
    return torch.randn(shape, generator=generator(321))


def all_cases():
    for name, make in IMAGE_AUGMENTATIONS.items():
        yield pytest.param(make, images, id=name)
    for name, make in SEQUENCE_AUGMENTATIONS.items():
        yield pytest.param(make, sequences, id=name)


CASES = list(all_cases())


@pytest.mark.parametrize(("make", "batch"), CASES)
def test_shape_and_dtype_preserved(make, batch):
    x = batch()
    out = make(1.0)(x, generator())
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize(("make", "batch"), CASES)
def test_probability_zero_is_the_identity(make, batch):
    x = batch()
    assert torch.equal(make(0.0)(x, generator()), x)


@pytest.mark.parametrize(("make", "batch"), CASES)
def test_eval_mode_returns_the_batch_and_draws_nothing(make, batch):
    x, g = batch(), generator()
    state = g.get_state()
    assert make(1.0)(x, g, train=False) is x
    assert make(1.0)(x, None, train=False) is x  # no generator needed in eval
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize(("make", "batch"), CASES)
def test_same_seed_same_batch_other_seed_differs(make, batch):
    x = batch()
    aug = make(0.7)
    assert torch.equal(aug(x, generator(1)), aug(x, generator(1)))
    assert not torch.equal(aug(x, generator(1)), aug(x, generator(2)))


@pytest.mark.parametrize(("make", "batch"), CASES)
def test_training_needs_a_generator(make, batch):
    with pytest.raises(ValueError, match=r"Invalid generator: None \(training-mode augmentation"):
        make(1.0)(batch(), None)


def test_probability_is_per_sample():
    x = images(n=2000, channels=1, size=(2, 2))
    out = A.HorizontalFlip(0.3)(x, generator())
    flipped = (out != x).flatten(1).any(1).float().mean().item()
    assert abs(flipped - 0.3) < 0.04


def test_flips_twice_are_the_identity_and_match_torch_flip():
    x = images()
    for aug, dim in ((A.HorizontalFlip(1.0), -1), (A.VerticalFlip(1.0), -2)):
        once = aug(x, generator())
        assert torch.equal(once, x.flip(dim))
        assert torch.equal(aug(once, generator()), x)


def test_flips_and_shifts_accept_integer_images():
    x = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    assert A.HorizontalFlip(1.0)(x, generator()).dtype == torch.uint8
    assert A.Translate(1.0, 1)(x, generator()).dtype == torch.uint8


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: x'[i, j] = x[i - dy, j - dx], zero outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_translate_is_a_zero_filled_shift_within_range():
    x = images(n=8) + 1.0  # no zeros in the data, so the fill is visible
    out = A.Translate(1.0, max_shift=2)(x, generator(5))
    shifts = range(-2, 3)
    for sample, result in zip(x, out):
        matches = [(dy, dx) for dy in shifts for dx in shifts]
        matches = [m for m in matches if torch.equal(shifted(sample, *m), result)]
        assert len(matches) == 1
    assert torch.equal(A.Translate(1.0, max_shift=0)(x, generator()), x)


def test_rotate_by_zero_degrees_is_the_identity():
    x = images()
    torch.testing.assert_close(A.Rotate(1.0, max_degrees=0)(x, generator()), x)
    # Full-scale crop: the same resampling path with the identity matrix.
    torch.testing.assert_close(A.RandomResizedCrop(1.0, scale=(1.0, 1.0))(x, generator()), x)


def test_rotate_keeps_the_centre_and_the_mass_of_a_centred_blob():
    size = 33
    t = torch.arange(size, dtype=torch.float64) - size // 2
    blob = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / 20).expand(16, 1, size, size)
    out = A.Rotate(1.0, max_degrees=180)(blob, generator(7))
    torch.testing.assert_close(out[:, 0, size // 2, size // 2], blob[:, 0, size // 2, size // 2])
    torch.testing.assert_close(out.sum((1, 2, 3)), blob.sum((1, 2, 3)), rtol=1e-3, atol=0)


def test_crop_zooms_in_keeping_the_centre_value_of_a_ramp():
    """A crop scaled back up makes a horizontal ramp steeper (slope 1/side)."""
    w = 16
    ramp = torch.arange(w, dtype=torch.float64).expand(4, 1, w, w)
    out = A.RandomResizedCrop(1.0, scale=(0.25, 0.25))(ramp, generator(3))
    slope = out[:, 0, w // 2, 6:10].diff(dim=-1)
    torch.testing.assert_close(slope, torch.full_like(slope, 0.5))  # side = sqrt(0.25)


def test_color_jitter_closed_forms():
    x = images(channels=3)
    bright = A.ColorJitter(1.0, brightness=0.5, contrast=0, saturation=0)(x, generator())
    ratio = bright / x
    per_sample = ratio.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert ((per_sample >= 0.5 - 1e-6) & (per_sample <= 1.5 + 1e-6)).all()
    gray = x[:, :1].expand(-1, 3, -1, -1)  # already gray: saturation changes nothing
    torch.testing.assert_close(A.ColorJitter(1.0, 0, 0, 0.9)(gray, generator()), gray)
    single = x[:, :1]
    torch.testing.assert_close(A.ColorJitter(1.0, 0, 0, 0.9)(single, generator()), single)
    contrast = A.ColorJitter(1.0, 0, 0.5, 0)(single, generator())
    torch.testing.assert_close(contrast.mean((1, 2, 3)), single.mean((1, 2, 3)))
    with pytest.raises(ValueError, match=r"Invalid x channels: 2 \(ColorJitter needs 1"):
        A.ColorJitter(1.0)(images(channels=2), generator())


@pytest.mark.parametrize(
    ("aug", "shape"),
    [(A.GaussianNoise(1.0, std=0.5), (64, 1, 32, 32)), (A.Noise1d(1.0, std=0.5), (64, 1024))],
)
def test_noise_std_matches(aug, shape):
    noise = aug(torch.zeros(shape), generator())
    assert abs(noise.std().item() - 0.5) < 0.01
    assert abs(noise.mean().item()) < 0.01


def test_shift1d_zero_fill_and_circular():
    x = torch.arange(1.0, 11.0).expand(20, 10)  # (N, L), no zeros
    zero = A.Shift1d(1.0, max_shift=3)(x, generator(1))
    circular = A.Shift1d(1.0, max_shift=3, circular=True)(x, generator(1))
    for row_zero, row_circular in zip(zero, circular):
        (d,) = [d for d in range(-3, 4) if torch.equal(row_circular, x[0].roll(d))]
        assert torch.equal(row_zero, shifted(x[:1], 0, d)[0])  # same draws, zero fill


def test_scale1d_fixes_the_centre_and_stretches_a_ramp():
    length = 11  # odd: the centre c = 5 is a sample
    ramp = torch.arange(length, dtype=torch.float64).expand(32, 2, length)
    out = A.Scale1d(1.0, max_scale=0.3)(ramp, generator())
    assert torch.equal(out[..., 5], ramp[..., 5])
    # x'(t) = c + (t - c) / s: inside the signal, the slope is 1/s in [1/1.3, 1/0.7].
    slope = out[..., 4:7].diff(dim=-1)
    assert ((slope > 1 / 1.3 - 1e-9) & (slope < 1 / 0.7 + 1e-9)).all()
    torch.testing.assert_close(slope[..., 0], slope[..., 1])
    torch.testing.assert_close(A.Scale1d(1.0, max_scale=0)(ramp, generator()), ramp)


def test_compose_applies_in_order_sharing_the_generator():
    x = images()
    first, second = A.Rotate(1.0, 20), A.GaussianNoise(0.5, 0.1)
    g = generator(9)
    expected = second(first(x, g), g)
    assert torch.equal(A.Compose([first, second])(x, generator(9)), expected)
    assert A.Compose([first, second])(x, None, train=False) is x


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: A.HorizontalFlip(1.5), r"Invalid p: 1\.5 \(must be a number in \[0, 1\]\)"),
        (lambda: A.GaussianNoise(-0.1), r"Invalid p: -0\.1 \(must be a number in \[0, 1\]\)"),
        (lambda: A.Translate(0.5, -1), r"Invalid max_shift: -1 \(must be an integer >= 0\)"),
        (lambda: A.Shift1d(0.5, 1.5), r"Invalid max_shift: 1\.5 \(must be an integer >= 0\)"),
        (lambda: A.Rotate(0.5, -3), r"Invalid max_degrees: -3 \(must be a finite number >= 0\)"),
        (lambda: A.GaussianNoise(0.5, -1), r"Invalid std: -1 \(must be a finite number >= 0\)"),
        (lambda: A.Noise1d(0.5, math.inf), r"Invalid std: inf \(must be a finite number >= 0\)"),
        (lambda: A.ColorJitter(0.5, contrast=-1), r"Invalid contrast: -1 \(must be a finite"),
        (lambda: A.Scale1d(0.5, 1.0), r"Invalid max_scale: 1\.0 \(must be a number in \[0, 1\)\)"),
        (lambda: A.RandomResizedCrop(0.5, (0, 1)), r"Invalid scale: \(0, 1\) \(must be a pair"),
        (lambda: A.Compose([1]), r"Invalid augmentations\[0\]: 1 \(must be callable"),
    ],
)
def test_bad_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_bad_batches():
    with pytest.raises(ValueError, match=r"Invalid x shape: \(4, 10\) \(Rotate needs images"):
        A.Rotate(1.0)(torch.zeros(4, 10), generator())
    with pytest.raises(ValueError, match=r"Invalid x shape: \(1, 1, 4, 10\) \(Shift1d needs"):
        A.Shift1d(1.0)(torch.zeros(1, 1, 4, 10), generator())
    with pytest.raises(ValueError, match=r"Invalid x dtype: torch\.uint8 \(Rotate needs a float"):
        A.Rotate(1.0)(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), generator())
