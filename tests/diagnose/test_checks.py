"""The pre-flight checks fire on the failure each is built for, and not on a healthy model."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.diagnose import (
    CHECKS,
    data_checks,
    doctor,
    initialization_check,
    loss_at_init,
    overfit_tiny,
)
from trainlab.models import init_, mlp


def blobs(n: int = 200, features: int = 16, classes: int = 10) -> tuple[Tensor, Tensor]:
    """Gaussian inputs with labels that depend on them, in random order."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :classes] + 0.5 * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


def healthy(classes: int = 10, **kw) -> nn.Sequential:
    torch.manual_seed(0)
    return mlp(16, [32, 32], classes, **kw)


def by_name(findings, name):
    (finding,) = [f for f in findings if f.name == name]
    return finding


# --- loss at init -----------------------------------------------------------------------------


def test_loss_at_init_of_a_healthy_classifier_is_ln_c():
    x, y = blobs()
    finding = loss_at_init(healthy(), x, y, F.cross_entropy, classes=10)
    assert finding.status == "pass"
    assert finding.data["expected"] == pytest.approx(math.log(10))
    assert finding.data["loss"] == pytest.approx(2.303, abs=0.1 * 2.303)
    assert "ln 10 = 2.303" in finding.evidence


def test_loss_at_init_fails_when_the_last_layer_is_100x_too_large():
    model = healthy()
    with torch.no_grad():
        model.head.fc.weight.mul_(100)
    x, y = blobs()
    finding = loss_at_init(model, x, y, F.cross_entropy, classes=10)
    assert finding.status == "fail"
    assert finding.data["relative_deviation"] > 0.5
    assert "last layer" in finding.fix


def test_l2_raises_the_loss_by_lambda_times_the_squared_weights():
    model = healthy()
    x, y = blobs()
    finding = loss_at_init(model, x, y, F.cross_entropy, classes=10, l2=1e-2)
    squared = sum(p.square().sum().item() for p in model.parameters() if p.dim() >= 2)
    assert finding.data["penalty"] == pytest.approx(1e-2 * squared, rel=1e-5)
    assert finding.data["loss_with_penalty"] > finding.data["loss"]
    assert not finding.data["l2_is_probe"]
    assert f"rises to {finding.data['loss_with_penalty']:.4g}" in finding.evidence
    probe = loss_at_init(model, x, y, F.cross_entropy, classes=10)
    assert probe.data["l2_is_probe"] and probe.data["l2"] == 1e-3
    assert probe.data["loss_with_penalty"] > probe.data["loss"]


def test_loss_at_init_recognises_smoothed_cross_entropy_and_leaves_other_losses_alone():
    x, y = blobs()
    smoothed = loss_at_init(
        healthy(), x, y, lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1), classes=10
    )
    assert smoothed.data["expected"] == pytest.approx(math.log(10))

    def one_hot_mse(out: Tensor, t: Tensor) -> Tensor:
        return F.mse_loss(out, F.one_hot(t, 10).float())

    other = loss_at_init(healthy(), x, y, one_hot_mse, classes=10)
    assert other.status == "pass" and other.data["expected"] is None
    assert other.data["baseline"] == pytest.approx(0.1)  # all-zero outputs: 1/C


def test_loss_at_init_for_regression_compares_with_predicting_the_mean():
    x, _ = blobs()
    y = x[:, :2].sum(1, keepdim=True)
    finding = loss_at_init(healthy(classes=1), x, y, F.mse_loss, classes=None)
    assert finding.status == "pass"
    assert finding.data["baseline"] == pytest.approx(y.var(unbiased=False).item(), rel=1e-5)


def test_loss_at_init_leaves_batch_norm_statistics_and_mode_alone():
    model = healthy(batch_norm=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = blobs()
    loss_at_init(model, x, y, F.cross_entropy, classes=10)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_at_init_refuses_a_wrong_class_count():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"Invalid classes: 5 \(the model outputs shape"):
        loss_at_init(healthy(), x, y, F.cross_entropy, classes=5)


# --- overfitting 20 examples ------------------------------------------------------------------


def test_a_healthy_mlp_memorizes_20_examples():
    x, y = blobs()
    finding = overfit_tiny(healthy(dropout=0.5), x, y, F.cross_entropy, task="classification")
    assert finding.status == "pass"
    assert finding.data["final_accuracy"] == 1.0
    assert finding.data["reached_at_step"] < 200


class MixesTheBatch(nn.Module):
    """A real bug: the mean over the batch axis (dim 0) instead of a feature axis."""

    def __init__(self) -> None:
        super().__init__()
        self.net = healthy()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.mean(0, keepdim=True).expand_as(x))


def test_a_model_that_ignores_its_input_cannot_overfit():
    x, y = blobs()
    finding = overfit_tiny(MixesTheBatch(), x, y, F.cross_entropy, task="classification")
    assert finding.status == "fail"
    assert finding.data["final_accuracy"] < 1.0
    assert "entropy of the label frequencies" in finding.fix and "wrong axis" in finding.fix


def test_a_zero_learning_rate_cannot_overfit_and_says_so():
    x, y = blobs()
    finding = overfit_tiny(healthy(), x, y, F.cross_entropy, task="classification", lr=0.0)
    assert finding.status == "fail"
    assert finding.data["final_loss"] == finding.data["initial_loss"]
    assert "did not move: the learning rate (0) is too small or 0" in finding.fix


def test_regression_overfits_below_one_percent_of_the_initial_loss():
    x, _ = blobs()
    y = torch.sin(3 * x[:, :1])
    finding = overfit_tiny(healthy(classes=1), x, y, F.mse_loss, task="regression")
    assert finding.status == "pass"
    assert finding.data["final_loss"] <= 0.01 * finding.data["initial_loss"]


# --- the data ---------------------------------------------------------------------------------


def test_sorted_labels_without_shuffling_fire_and_shuffled_ones_do_not():
    x, y = blobs(400)
    order = y.argsort(stable=True)
    sorted_x, sorted_y = x[order], y[order]
    fired = by_name(
        data_checks(sorted_x, sorted_y, shuffle="none", task="classification"), "label_order"
    )
    assert fired.status == "fail"
    assert fired.data["longest_run"] == int(torch.bincount(y).max())
    assert "shuffle='epoch'" in fired.fix
    calm = data_checks(x, y, shuffle="none", task="classification")
    assert by_name(calm, "label_order").status == "pass"
    reshuffled = data_checks(sorted_x, sorted_y, shuffle="epoch", task="classification")
    assert by_name(reshuffled, "label_order").status == "pass"


def test_sorted_regression_targets_fire():
    x, _ = blobs(400)
    y = x[:, :1].sort(0).values
    finding = by_name(data_checks(x, y, shuffle="none", task="regression"), "label_order")
    assert finding.status == "fail"


def test_unnormalized_features_fire_and_standardized_ones_do_not():
    x, y = blobs()
    raw = by_name(
        data_checks(x * 100 + 50, y, shuffle="epoch", task="classification"), "feature_scale"
    )
    assert raw.status == "fail"
    assert raw.data["max_abs_mean"] > 10 and raw.data["median_std"] > 50
    assert "x' = (x − μ)/σ" in raw.fix
    fine = by_name(data_checks(x, y, shuffle="epoch", task="classification"), "feature_scale")
    assert fine.status == "pass"


def test_one_feature_on_another_scale_warns():
    x, y = blobs()
    x[:, 3] = x[:, 3] * 1000
    finding = by_name(data_checks(x, y, shuffle="epoch", task="classification"), "feature_scale")
    assert finding.status == "fail"  # its mean alone is far from 0 at that scale
    x, y = blobs()
    x[:, 3] = (x[:, 3] - x[:, 3].mean()) * 500  # centred, but 500× the others' spread
    finding = by_name(data_checks(x, y, shuffle="epoch", task="classification"), "feature_scale")
    assert finding.status == "warn"


def test_class_imbalance_warns():
    x, _ = blobs()
    y = torch.zeros(len(x), dtype=torch.long)
    y[:10] = 1  # 10 against 190
    finding = by_name(data_checks(x, y, shuffle="epoch", task="classification"), "class_balance")
    assert finding.status == "warn" and finding.data["ratio"] == pytest.approx(10 / 190)
    balanced = by_name(
        data_checks(*blobs(), shuffle="epoch", task="classification", classes=10), "class_balance"
    )
    assert balanced.status == "pass"


# --- activations at initialization ------------------------------------------------------------


def test_zero_init_is_reported_as_symmetry():
    model = init_(healthy(activation="tanh"), "zeros")
    finding = by_name(initialization_check(model, blobs()[0]), "symmetry")
    assert finding.status == "fail"
    assert "'block1.fc' (Linear)" in finding.evidence
    assert "never" in finding.fix


def test_small_normal_init_collapses_a_deep_tanh_net_and_xavier_does_not():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = blobs()[0]
    small = init_(mlp(16, [64] * 10, 10, activation="tanh"), "normal", std=0.01, generator=g)
    finding = by_name(initialization_check(small, x), "activation_scale")
    assert finding.status == "fail"
    assert "collapse" in finding.evidence and "'block10.act'" in finding.evidence
    assert finding.data["std_ratio_to_first"][-1] < 1e-6
    assert "Xavier" in finding.fix
    xavier = init_(mlp(16, [64] * 10, 10, activation="tanh"), "xavier_normal", generator=g)
    assert all(f.status == "pass" for f in initialization_check(xavier, x))


def test_a_large_negative_bias_kills_the_relus():
    model = healthy()
    with torch.no_grad():
        model.block2.fc.bias.fill_(-10.0)
    findings = initialization_check(model, blobs()[0])
    dead = by_name(findings, "dead_units")
    assert dead.status == "fail"
    assert "'block2.act' (ReLU)" in dead.evidence
    assert dead.data["dead"] == {"block1.act": 0.0, "block2.act": 1.0}
    assert by_name(initialization_check(healthy(), blobs()[0]), "dead_units").status == "pass"


def test_large_weights_saturate_tanh_and_explode_relu():
    g = torch.Generator().manual_seed(0)
    x = blobs()[0]
    tanh = init_(mlp(16, [64] * 4, 10, activation="tanh"), "normal", std=1.0, generator=g)
    assert by_name(initialization_check(tanh, x), "saturation").status == "fail"
    relu = init_(mlp(16, [64] * 4, 10), "normal", std=1.0, generator=g)
    exploded = by_name(initialization_check(relu, x), "activation_scale")
    assert exploded.status == "fail" and "explode" in exploded.evidence


# --- doctor -----------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


def test_doctor_passes_a_healthy_model_and_touches_neither_model_nor_rng():
    model = healthy(batch_norm=True, dropout=0.2).eval()
    model.block1.fc.weight.requires_grad_(False)  # a frozen layer stays frozen
    before = snapshot(model)
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    findings = doctor(model, blobs())
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())
    names = [f.name for f in findings]
    assert names[:3] == ["loss_at_init", "gradient_check", "overfit_tiny"]
    assert [f for f in findings if f.status == "fail"] == []
    json.dumps([f.to_dict() for f in findings], allow_nan=False)


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_alone_leaves_model_and_rng_untouched(name):
    model = healthy(batch_norm=True, dropout=0.2)
    before = snapshot(model)
    state = torch.get_rng_state()
    findings = doctor(model, blobs(), checks=(name,))
    assert findings and torch.equal(torch.get_rng_state(), state)
    after = snapshot(model)
    assert after["training"] == before["training"] and all(g is None for g in after["grads"])
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())


def test_doctor_runs_the_checks_asked_for_and_infers_regression():
    x, _ = blobs()
    y = x[:, :2].sum(1)
    findings = doctor(healthy(classes=1), (x, y), checks=("data", "loss_at_init"))
    assert [f.name for f in findings] == ["loss_at_init", "label_order", "feature_scale"]
    assert findings[0].data["classes"] is None
    assert [f.name for f in doctor(healthy(), blobs(), checks="overfit_tiny")] == ["overfit_tiny"]


def test_doctor_refuses_bad_input_with_the_cause_and_the_fix():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"x has 200 rows and y has 150"):
        doctor(healthy(), (x, y[:150]))
    with pytest.raises(
        ValueError, match=r"forward pass fails on a batch of x with shape \(2, 15\)"
    ):
        doctor(healthy(), (x[:, :15], y))
    with pytest.raises(ValueError, match=r"label 12 for a model with 10 outputs"):
        doctor(healthy(), (x, y.clamp(max=12) + (y == 9).long() * 3))
    with pytest.raises(ValueError, match=r"Invalid check: 'gradients' \(must be one of"):
        doctor(healthy(), (x, y), checks=("gradients",))
    with pytest.raises(ValueError, match=r"Invalid shuffle: 'random'"):
        doctor(healthy(), (x, y), shuffle="random")
