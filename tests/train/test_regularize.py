"""Penalties against their closed forms and gradients; clipping against torch.nn.utils."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.train.regularize import (
    clip_grad_norm_,
    clip_grad_value_,
    l1_penalty,
    l2_penalty,
    name_matches,
    penalty,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.norm = nn.LayerNorm(5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)).relu())


def net(dtype: torch.dtype = torch.float64) -> Net:
    torch.manual_seed(0)
    model = Net().to(dtype)
    with torch.no_grad():  # LayerNorm starts at 1 and 0: make it count
        model.norm.weight.uniform_(-1, 1)
        model.norm.bias.uniform_(-1, 1)
    return model


def penalized_names(model: nn.Module, exclude) -> set[str]:
    """Which parameters get a gradient from the penalty."""
    model.zero_grad()
    penalty(model, l2=1.0, exclude=exclude).backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}


# --- penalties: values and gradients ------------------------------------------------------


def test_values_follow_the_closed_forms():
    w = [torch.tensor([1.0, -2.0, 0.0]), torch.tensor([[3.0], [-4.0]])]
    assert l2_penalty(w).item() == 1 + 4 + 9 + 16
    assert l1_penalty(w).item() == 1 + 2 + 3 + 4
    torch.testing.assert_close(penalty(w, l2=0.5), torch.tensor(15.0))
    torch.testing.assert_close(penalty(w, l1=0.1), torch.tensor(1.0))
    torch.testing.assert_close(penalty(w, l2=0.5, l1=0.1), torch.tensor(16.0))  # elastic net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("l2", "l1"), [(0.3, 0.0), (0.0, 0.2), (0.3, 0.2)])
def test_gradients_follow_the_closed_form(dtype, l2, l1):
    """∂/∂W (λ₂‖W‖² + λ₁‖W‖₁) = 2·λ₂·W + λ₁·sign(W), with sign(0) = 0."""
    model = net(dtype)
    with torch.no_grad():
        model.fc1.weight[0, :2] = 0.0  # the L1 subgradient at 0 is 0
        model.fc2.bias.zero_()  # a whole zero tensor: no NaN from ‖W‖ = 0
    value = penalty(model, l2=l2, l1=l1)
    value.backward()
    expected = sum(
        l2 * p.detach().square().sum() + l1 * p.detach().abs().sum() for p in model.parameters()
    )
    torch.testing.assert_close(value, expected)
    for name, p in model.named_parameters():
        closed = 2 * l2 * p.detach() + l1 * torch.sign(p.detach())
        torch.testing.assert_close(p.grad, closed, msg=name)
        assert torch.isfinite(p.grad).all()


def test_penalized_sgd_step_equals_torch_weight_decay_twice_lambda():
    """The λ‖W‖² convention: loss + penalty(l2=λ) under plain SGD = SGD(weight_decay=2λ)."""
    lam, x = (
        0.05,
        torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
    )
    ours, theirs = net(), net()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, weight_decay=2 * lam)
    for _ in range(3):
        (ours(x).square().mean() + penalty(ours, l2=lam)).backward()
        theirs(x).square().mean().backward()
        opt_ours.step()
        opt_theirs.step()
        opt_ours.zero_grad()
        opt_theirs.zero_grad()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_accepts_tensors_pairs_and_mappings():
    model = net()
    whole = penalty(model, l2=0.1, l1=0.1)
    torch.testing.assert_close(penalty(model.parameters(), l2=0.1, l1=0.1), whole)
    torch.testing.assert_close(penalty(model.named_parameters(), l2=0.1, l1=0.1), whole)
    torch.testing.assert_close(penalty(dict(model.named_parameters()), l2=0.1, l1=0.1), whole)
    torch.testing.assert_close(penalty(model.fc1.weight, l2=1.0), l2_penalty([model.fc1.weight]))


def test_nothing_to_penalize_gives_a_zero_that_can_be_added_to_the_loss():
    model = net()
    for value in (
        penalty(model),
        penalty([], l2=1.0),
        penalty(model, l1=1.0, exclude=lambda n, p: True),
    ):
        assert value.shape == () and value.item() == 0.0
    assert penalty(model).dtype == torch.float64
    loss = model(torch.randn(2, 4, dtype=torch.float64)).sum() + penalty(model)
    loss.backward()  # no error: the zero is just a constant


# --- exclude ------------------------------------------------------------------------------


def test_exclude_patterns_skip_biases_and_norm_layers():
    model = net()
    assert penalized_names(model, None) == {n for n, _ in model.named_parameters()}
    assert penalized_names(model, ["*.bias", "norm.*"]) == {"fc1.weight", "fc2.weight"}
    assert penalized_names(model, ["*.bias"]) == {"fc1.weight", "norm.weight", "fc2.weight"}
    assert penalized_names(model, ("fc?.*",)) == {"norm.weight", "norm.bias"}


def test_a_leading_star_dot_also_matches_top_level_names():
    torch.manual_seed(0)
    wrapped = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.LayerNorm(2)))
    with torch.no_grad():
        wrapped[1][0].bias.fill_(0.5)
    assert penalized_names(nn.Linear(2, 2), ["*.bias"]) == {"weight"}
    assert penalized_names(wrapped, ["*.bias", "*.1.*"]) == {"0.weight"}


def test_name_patterns_are_case_sensitive_and_reach_top_level_names():
    assert name_matches("bias", ["*.bias"]) and name_matches("block1.linear.bias", ["*.bias"])
    assert not name_matches("block1.linear.Bias", ["*.bias"])
    assert not name_matches("block1.linear.weight", ["*.bias", "*.norm.*"])


def test_exclude_callable_gets_name_and_parameter():
    model, seen = net(), []

    def one_dimensional(name, p):
        seen.append(name)
        return p.ndim < 2

    assert penalized_names(model, one_dimensional) == {"fc1.weight", "fc2.weight"}
    assert seen == [n for n, _ in model.named_parameters()]


# --- clipping -----------------------------------------------------------------------------


def grads_of(seed: int, dtype: torch.dtype, scale: float = 1.0) -> list[torch.Tensor]:
    """Parameters with random gradients; the third has none."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.zeros(shape, dtype=dtype, requires_grad=True)
        for shape in [(3, 4), (7,), (2,), (1, 1)]
    ]
    for i, p in enumerate(params):
        if i != 2:
            p.grad = scale * torch.randn(p.shape, dtype=dtype, generator=gen)
    return params


def cloned(params: list[torch.Tensor]) -> list[torch.Tensor]:
    copies = [p.detach().clone().requires_grad_() for p in params]
    for c, p in zip(copies, params):
        c.grad = None if p.grad is None else p.grad.clone()
    return copies


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("limit", [0.1, 0.7, 5.0])
def test_clip_grad_value_matches_torch_and_counts_the_clipped(dtype, limit):
    ours = grads_of(0, dtype)
    theirs = cloned(ours)
    expected = sum(int((p.grad.abs() > limit).sum()) for p in ours if p.grad is not None)
    count = clip_grad_value_(ours, limit)
    torch.nn.utils.clip_grad_value_(theirs, limit)
    assert isinstance(count, int) and count == expected
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)
            assert a.grad.abs().max() <= limit


def test_clip_grad_value_without_counting_clips_the_same():
    p, q = (torch.zeros(4, requires_grad=True) for _ in range(2))
    p.grad = torch.tensor([-3.0, 0.5, 2.0, float("inf")])
    q.grad = p.grad.clone()
    assert clip_grad_value_(p, 1.0, count=False) is None
    assert clip_grad_value_(q, 1.0) == 3
    assert torch.equal(p.grad, q.grad)


def test_clip_grad_value_on_one_tensor_and_without_gradients():
    p = torch.zeros(3, requires_grad=True)
    assert clip_grad_value_(p, 1.0) == 0  # no gradient yet
    p.grad = torch.tensor([2.0, -0.5, float("-inf")])
    assert clip_grad_value_(p, 1.0) == 2
    assert p.grad.tolist() == [1.0, -0.5, -1.0]
    p.grad = torch.tensor([float("nan"), 3.0, 0.25])
    assert clip_grad_value_([p], 1.0) == 1  # NaN stays NaN and is not counted
    assert p.grad[0].isnan() and p.grad[1:].tolist() == [1.0, 0.25]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 2.0, 100.0])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    ours = grads_of(1, dtype, scale=1.5)
    theirs = cloned(ours)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    torch.testing.assert_close(total, expected)
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)
    after = torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in ours if p.grad is not None]), norm_type
    )
    assert after <= max_norm * (1 + 1e-5)


def test_clip_grad_norm_leaves_small_gradients_untouched():
    params = grads_of(2, torch.float64, scale=0.01)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    total = clip_grad_norm_(params, 1.0)
    assert total < 1.0
    for p, g in zip(params, before):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_clip_grad_norm_without_any_gradient_returns_zero():
    assert clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    assert clip_grad_norm_([], 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_clip_grad_norm_returns_a_non_finite_norm_and_scales_nothing(bad):
    params = grads_of(3, torch.float32, scale=10.0)
    params[0].grad[1, 2] = bad
    before = [None if p.grad is None else p.grad.clone() for p in params]
    total = clip_grad_norm_(params, 1.0)
    assert not torch.isfinite(total)
    for p, g in zip(params, before):
        if g is None:
            assert p.grad is None
        else:  # bit for bit, NaN where it was
            torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2": -0.1}, r"Invalid l2: -0.1 \(must be a finite number >= 0\)"),
        ({"l1": -1}, r"Invalid l1: -1 \(must be a finite number >= 0\)"),
        ({"l2": float("nan")}, r"Invalid l2: nan \(must be a finite number >= 0\)"),
        ({"l1": "0.1"}, r"Invalid l1: '0.1' \(must be a finite number >= 0\)"),
        ({"exclude": "*.bias"}, r"Invalid exclude: '\*.bias' \(must be a callable .* or a list"),
        ({"exclude": ["*.bias", 3]}, r"Invalid exclude: \['\*.bias', 3\] \(must be a callable"),
        ({"exclude": [""]}, r"Invalid exclude: \[''\] \(must be a callable"),
        ({"exclude": 5}, r"Invalid exclude: 5 \(must be a callable"),
    ],
)
def test_bad_penalty_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        penalty(net(), **kwargs)


def test_bad_parameter_containers_are_refused():
    with pytest.raises(ValueError, match=r"Invalid model_or_params: \"item '0': float\""):
        penalty([1.0], l2=0.1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: clip_grad_norm_(p, 0.0),
            r"Invalid max_norm: 0.0 \(must be a finite number > 0\)",
        ),
        (
            lambda p: clip_grad_norm_(p, -1.0),
            r"Invalid max_norm: -1.0 \(must be a finite number > 0\)",
        ),
        (lambda p: clip_grad_norm_(p, float("inf")), r"Invalid max_norm: inf"),
        (
            lambda p: clip_grad_norm_(p, 1.0, 0),
            r"Invalid norm_type: 0 \(must be a number > 0 or inf\)",
        ),
        (lambda p: clip_grad_norm_(p, 1.0, float("nan")), r"Invalid norm_type: nan"),
        (lambda p: clip_grad_norm_(p, 1.0, "fro"), r"Invalid norm_type: 'fro'"),
        (lambda p: clip_grad_value_(p, 0), r"Invalid limit: 0 \(must be a finite number > 0\)"),
        (
            lambda p: clip_grad_value_(p, -0.5),
            r"Invalid limit: -0.5 \(must be a finite number > 0\)",
        ),
    ],
)
def test_bad_clipping_arguments_are_refused(call, message):
    params = grads_of(4, torch.float32)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    with pytest.raises(ValueError, match=message):
        call(params)
    for p, g in zip(params, before):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
