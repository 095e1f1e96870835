"""Normalizer: training-split statistics only, closed forms, inverse, state round trip."""

import pytest
import torch

from trainlab.data.normalize import Normalizer


def images(n: int, shift: float, seed: int) -> torch.Tensor:
    """(n, 3, 4, 5) images with channel means (1, 2, 3) + shift and stds (1, 2, 3)."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    return torch.randn(n, 3, 4, 5, generator=generator) * scale + scale + shift


@pytest.mark.parametrize("mode", ["feature", "channel"])
def test_statistics_come_from_the_training_split_only(mode):
    x_train, x_test = images(200, 0.0, seed=0), images(200, 5.0, seed=1)
    norm = Normalizer(mode).fit(x_train)
    train, test = norm(x_train), norm(x_test)
    axes = (0,) if mode == "feature" else (0, 2, 3)
    torch.testing.assert_close(
        train.mean(axes), torch.zeros_like(train.mean(axes)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        train.std(axes, correction=0), torch.ones_like(train.mean(axes)), atol=1e-5, rtol=0
    )
    assert test.mean() > 1.0  # the shifted test split is not centred: no leak


def test_feature_mode_closed_form():
    x = torch.randn(50, 7, dtype=torch.float64) * 3 + 1
    out = Normalizer("feature").fit(x)(x)
    expected = (x - x.mean(0)) / x.std(0, correction=0)
    torch.testing.assert_close(out, expected)


def test_channel_mode_closed_form():
    x = images(30, 0.0, seed=2).double()
    norm = Normalizer("channel").fit(x)
    mean = x.mean((0, 2, 3), keepdim=True)
    std = x.std((0, 2, 3), keepdim=True, correction=0)
    assert norm.mean.shape == (3, 1, 1)
    torch.testing.assert_close(norm(x), (x - mean) / std)


def test_mean_mode_subtracts_the_channel_mean_only():
    x = images(30, 0.0, seed=3).double()
    norm = Normalizer("mean").fit(x)
    torch.testing.assert_close(norm(x), x - x.mean((0, 2, 3), keepdim=True))
    assert torch.equal(norm.std, torch.ones(3, 1, 1, dtype=torch.float64))


def test_two_dimensional_data_in_channel_mode_is_per_feature():
    x = torch.randn(40, 6, dtype=torch.float64)
    torch.testing.assert_close(Normalizer("channel").fit(x)(x), Normalizer("feature").fit(x)(x))


def test_constant_feature_is_clamped_by_eps_not_nan():
    x = torch.randn(20, 3)
    x[:, 1] = 4.0
    norm = Normalizer("feature", eps=1e-6).fit(x)
    assert norm.std[1] == pytest.approx(1e-6)
    assert torch.equal(norm(x)[:, 1], torch.zeros(20))


@pytest.mark.parametrize("mode", ["feature", "channel", "mean"])
def test_inverse_round_trip(mode):
    x = images(10, 0.0, seed=4)
    norm = Normalizer(mode).fit(x)
    torch.testing.assert_close(norm.inverse(norm(x)), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["feature", "channel", "mean"])
def test_state_dict_round_trip(mode):
    x_train, x_test = images(20, 0.0, seed=5), images(5, 1.0, seed=6)
    norm = Normalizer(mode, eps=1e-4).fit(x_train)
    state = norm.state_dict()
    assert state["mode"] == mode and state["eps"] == 1e-4
    restored = Normalizer()
    restored.load_state_dict(state)
    assert restored.mode == mode
    assert torch.equal(restored(x_test), norm(x_test))
    state["mean"].add_(1.0)  # the saved state is a copy
    assert torch.equal(restored(x_test), norm(x_test))


def test_uint8_images_become_float():
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    out = Normalizer("channel").fit(x)(x)
    assert out.dtype == torch.float32
    assert abs(out.mean().item()) < 1e-5


def test_use_before_fit_names_the_fix():
    pattern = r"Invalid Normalizer state: 'not fitted' \(call \.fit\(x_train\) on the training"
    with pytest.raises(ValueError, match=pattern):
        Normalizer()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=pattern):
        Normalizer().inverse(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=pattern):
        Normalizer().state_dict()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_fit_data(bad):
    x = torch.randn(10, 3)
    x[4, 1] = bad
    with pytest.raises(ValueError, match=r"Invalid x_train: '1 NaN or infinite entries'"):
        Normalizer().fit(x)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match=r"Invalid mode: 'pixel' \(must be one of 'feature'"):
        Normalizer("pixel")
    with pytest.raises(
        ValueError, match=r"Invalid epsilon \(eps\): 0 \(must be a finite number > 0\)"
    ):
        Normalizer(eps=0)
    with pytest.raises(
        ValueError, match=r"Invalid x_train shape: \(5,\) \(must be \(N, C, \.\.\.\)"
    ):
        Normalizer("channel").fit(torch.randn(5))
    norm = Normalizer("channel").fit(images(4, 0.0, seed=7))
    with pytest.raises(ValueError, match=r"Invalid x shape: \(2, 1, 4, 5\) \(must be \(N, 3, "):
        norm(torch.zeros(2, 1, 4, 5))
    assert norm(torch.zeros(2, 3, 8, 8)).shape == (2, 3, 8, 8)  # other image sizes are fine
    with pytest.raises(ValueError, match=r"Invalid x shape: \(2, 6\) \(must be \(N, 7\)"):
        Normalizer("feature").fit(torch.randn(3, 7))(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"Invalid state: .* \(must be a dict with keys"):
        norm.load_state_dict({"mean": torch.zeros(3)})
