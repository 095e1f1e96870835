"""The gradient check: a wrong backward fails, named; right ones pass; kinks are set apart."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.diagnose import gradient_check
from trainlab.diagnose.gradcheck import band, is_kink, relative_error
from trainlab.models import mlp


class MatMul(torch.autograd.Function):
    """y = x Wᵀ with a hand-written backward; ``scale_grad_w`` ≠ 1 plants a bug."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale_grad_w: float) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.scale_grad_w = scale_grad_w
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x, weight = ctx.saved_tensors
        return grad @ weight, ctx.scale_grad_w * grad.t() @ x, None


class HandWritten(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, scale_grad_w: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / math.sqrt(fan_in))
        self.scale_grad_w = scale_grad_w

    def forward(self, x: Tensor) -> Tensor:
        return MatMul.apply(x, self.weight, self.scale_grad_w)


def small_net(scale_grad_w: float) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 16), nn.Tanh(), HandWritten(16, 16, scale_grad_w), nn.Tanh(), nn.Linear(16, 5)
    )


def batch(n: int = 8, features: int = 12, classes: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_wrong_backward_fails_and_names_its_parameter():
    x, y = batch()
    finding = gradient_check(small_net(scale_grad_w=2.0), x, y, F.cross_entropy)
    assert finding.status == "fail"
    assert "'2.weight' (HandWritten)" in finding.evidence
    assert finding.data["worst_parameter"] == "2.weight"
    rows = {row["parameter"]: row for row in finding.data["tensors"]}
    assert rows["2.weight"]["band"] == "wrong"
    assert rows["2.weight"]["max_relative_error"] == pytest.approx(0.5, rel=1e-3)  # a = 2n
    assert rows["0.weight"]["band"] in ("good", "ok")  # the other layers are right
    assert "backward" in finding.fix


def test_correct_backward_passes_and_every_tensor_is_checked():
    x, y = batch()
    model = small_net(scale_grad_w=1.0)
    finding = gradient_check(model, x, y, F.cross_entropy, samples_per_tensor=5)
    assert finding.status == "pass"
    names = [row["parameter"] for row in finding.data["tensors"]]
    assert names == [name for name, _ in model.named_parameters()]
    assert all(row["checked"] == 5 for row in finding.data["tensors"])
    assert finding.data["worst_relative_error"] < 1e-4
    json.dumps(finding.to_dict(), allow_nan=False)


def test_relu_net_with_batch_norm_and_dropout_passes():
    """Kinks, batch statistics and a dropout mask: deterministic, and no false failure."""
    torch.manual_seed(0)
    model = mlp(12, [32, 32], 5, batch_norm=True, dropout=0.5)
    x, y = batch()
    finding = gradient_check(model, x, y, F.cross_entropy)
    assert finding.status == "pass", finding.evidence
    assert finding.data["mode"].startswith("float64 copy, train mode")


def test_a_crossed_relu_kink_is_set_apart_not_failed():
    # pre-activation w·x + b = 3e-7: a step of ε = 1e-6 on w or b crosses the ReLU's kink
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU()).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(-1.0 + 3e-7)
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    finding = gradient_check(model, x, y, F.mse_loss)
    assert finding.status == "pass"
    assert finding.data["kinks"] == 2
    row = finding.data["tensors"][1]
    assert row["kink_errors"][0] > 1e-2  # the centred difference alone would call it wrong
    assert "kink" in finding.evidence


def test_kink_and_error_formulas():
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, -1.0) == 2.0
    assert relative_error(2.0, 1.0) == 0.5
    assert relative_error(1e-12, 2e-12, floor=1e-6) == pytest.approx(1e-6)
    assert math.isinf(relative_error(float("nan"), 1.0))
    assert [band(e) for e in (0.0, 1e-7, 1e-5, 1e-3, 0.5)] == [
        "good",
        "good",
        "ok",
        "suspicious",
        "wrong",
    ]
    assert is_kink(-2.0, -2.0, -0.6)  # analytic = slope on θ's side, the other side differs
    assert not is_kink(-4.0, -2.0, -2.0 + 1e-6)  # smooth region, wrong analytic


def test_model_and_rng_are_untouched():
    model = small_net(scale_grad_w=1.0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gradient_check(model, x, y, F.cross_entropy)
    assert torch.equal(torch.rand(3), expected)
    assert not model.training
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Rounded(nn.Module):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.body, self.head, self.where = nn.Linear(12, 16), nn.Linear(16, 5), where

    def forward(self, x: Tensor) -> Tensor:
        if self.where == "argmax":  # predicted classes, not logits: no gradient at all
            return F.one_hot(self.head(self.body(x)).argmax(1), 5).double()
        if self.where == "output":  # the logits rounded: zero gradient everywhere
            return torch.round(self.head(self.body(x)) * 1e-3)
        return self.head(torch.round(self.body(x) * 10))  # the body is cut off


def test_argmax_or_round_on_the_output_is_a_clear_error():
    x, y = batch()
    with pytest.raises(ValueError, match=r"no gradient with respect to any parameter.*argmax"):
        gradient_check(Rounded("argmax"), x, y, F.cross_entropy)
    with pytest.raises(ValueError, match=r"every gradient is exactly 0.* round"):
        gradient_check(Rounded("output"), x, y, F.cross_entropy)


def test_a_tensor_no_gradient_reaches_is_named():
    x, y = batch()
    finding = gradient_check(Rounded("middle"), x, y, F.cross_entropy)
    assert finding.status == "warn"
    assert finding.data["no_gradient"] == ["body.weight", "body.bias"]
    assert "'body.weight'" in finding.evidence and "round" in finding.fix


def test_bad_inputs_are_clear_errors():
    x, y = batch()
    with pytest.raises(ValueError, match=r"forward pass fails on a batch of x with shape \(8, 7\)"):
        gradient_check(small_net(1.0), x[:, :7], y, F.cross_entropy)
    with pytest.raises(ValueError, match=r"x has 8 rows and y has 4"):
        gradient_check(small_net(1.0), x, y[:4], F.cross_entropy)
    with pytest.raises(ValueError, match=r"Invalid loss: loss_fn fails on outputs of shape"):
        gradient_check(small_net(1.0), x, y + 10, F.cross_entropy)  # labels beyond the logits
    frozen = small_net(1.0).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        gradient_check(frozen, x, y, F.cross_entropy)
    with pytest.raises(ValueError, match=r"Invalid epsilon \(eps\): 0"):
        gradient_check(small_net(1.0), x, y, F.cross_entropy, eps=0)
