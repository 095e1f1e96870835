"""Complex parameters: stepped through their real view, with torch.optim's numbers and state."""

from __future__ import annotations

import copy

import pytest
import torch

import trainlab.optim as optim

from .common import assert_same_state, default_lr, first_order_specs, torch_class

CASES = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in first_order_specs()
    if spec.torch_name
    for i, options in enumerate(spec.variants)
]
# One case per optimizer, for the slower tests.
EACH = [
    pytest.param(spec, spec.variants[-1], id=spec.name)
    for spec in first_order_specs()
    if spec.torch_name
]


def make_params(seed: int = 0) -> list[torch.Tensor]:
    """A complex matrix and bias, a real 0-dim scale, a complex one without gradient."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [((4, 3), torch.complex128), ((3,), torch.complex128), ((), torch.float64)]
    params = [torch.randn(s, generator=gen, dtype=d).requires_grad_() for s, d in shapes]
    return [*params, torch.randn(2, generator=gen, dtype=torch.complex128).requires_grad_()]


def loss_of(params: list[torch.Tensor], step: int, maximize: bool = False) -> torch.Tensor:
    w, b, s, _unused = params
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step), dtype=torch.complex128)
    out = x @ w + b
    fit = (out - 0.5).abs().square().mean() + 0.1 * s * out.real.mean() + 0.1 * s**2
    loss = fit + 0.05 * w.abs().pow(4).sum()
    return -loss if maximize else loss


def groups(params: list[torch.Tensor], cls: type, options: dict) -> list[dict]:
    lr = options.get("lr", default_lr(cls))
    w, b, s, unused = params
    return [{"params": [w, unused]}, {"params": [b, s], "lr": lr * 0.5}]


def run(opt, params, steps, start=0, maximize=False):
    for step in range(start, start + steps):
        opt.zero_grad()
        loss_of(params, step, maximize).backward()
        opt.step()


def train(cls, options, steps, seed=0):
    params = make_params(seed)
    opt = cls(groups(params, cls, options), **options)
    run(opt, params, steps, maximize=options.get("maximize", False))
    return params, opt


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_complex_parameters_match_torch_over_30_steps(spec, options):
    ours, opt = train(spec.cls, options, 30)
    theirs, ref = train(torch_class(spec), options, 30)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # same keys, dtypes and values: complex moments (exp_avg, ...) stay complex, as in torch
    assert_same_state(opt, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("spec", "options"), EACH)
def test_complex_parameters_on_the_fused_backend_match_torch(spec, options, traced_only):
    ours, opt = train(spec.cls, {**options, "backend": "fused"}, 6)
    theirs, _ = train(torch_class(spec), options, 6)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # the real parameter is fused; the complex ones take the eager loop
    (info,) = opt.backend_info()
    assert info["group"] == 1 and info["params"] == 1 and info["fused"]


@pytest.mark.parametrize(("spec", "options"), EACH)
@pytest.mark.parametrize("direction", ["torch->trainlab", "trainlab->torch"])
def test_complex_state_dict_moves_between_torch_and_trainlab(spec, options, direction):
    first_cls, second_cls = (torch_class(spec), spec.cls)
    if direction == "trainlab->torch":
        first_cls, second_cls = second_cls, first_cls
    maximize = options.get("maximize", False)
    params, first = train(first_cls, options, 5)
    moved = [p.detach().clone().requires_grad_() for p in params]
    second = second_cls(groups(moved, second_cls, options), **options)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    run(second, moved, 7, start=5, maximize=maximize)
    reference, _ = train(torch_class(spec), options, 12)
    for a, b in zip(moved, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"line_search_fn": "strong_wolfe", "history_size": 3}])
def test_lbfgs_with_complex_parameters_matches_torch(options):
    results = []
    for cls in (optim.LBFGS, torch.optim.LBFGS):
        params = make_params()
        opt = cls(params[:3], **options)

        def closure(opt=opt, params=params):
            opt.zero_grad()
            loss = loss_of(params, 0)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        results.append((params[:3], opt.state[params[0]]["func_evals"]))
    (ours, our_evals), (theirs, their_evals) = results
    assert our_evals == their_evals
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_track_stats_count_real_and_imaginary_parts():
    params = make_params()
    opt = optim.Adam(params[:2], lr=0.01, track_stats=True)
    opt.zero_grad()
    loss_of(params, 0).backward()
    grads = [torch.view_as_real(p.grad).clone() for p in params[:2]]
    opt.step()
    expected = torch.cat([g.reshape(-1) for g in grads]).norm()
    torch.testing.assert_close(opt.stats[0]["grad_norm"], expected, rtol=1e-12, atol=0)
