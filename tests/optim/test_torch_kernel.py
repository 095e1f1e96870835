"""backend="torch-fused": torch's own fused kernels over trainlab's flat buffers.

SGD, Adagrad, Adam and AdamW have one in torch. Called on the flat buffers it must give
the numbers of the eager loop (and of torch.optim), keep torch's state_dict, hand over to
trainlab's compiled rule where torch's kernel lacks a setting, and report statistics.
"""

from __future__ import annotations

import copy

import pytest
import torch

import trainlab.optim as optim

from .common import batch, first_order_specs, groups, loss_of, make_params, torch_class, train

WITH_KERNEL = [spec for spec in first_order_specs() if spec.cls.has_torch_kernel]


def kernel_has(spec, options) -> bool:
    """Does torch's kernel cover these settings? (trainlab-only switches are not in it)"""
    decoupled = options.get("decoupled_weight_decay", spec.name == "adamw")
    if spec.name in ("sgd", "adagrad") and decoupled and options.get("weight_decay"):
        return False
    if options.get("momentum_form", "rho") != "rho":
        return False
    return options.get("bias_correction", True)


CASES = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in WITH_KERNEL
    for i, options in enumerate(spec.variants + spec.extra_variants)
]


def kernels(opt) -> set:
    return {part["kernel"] for part in opt.backend_info() if part["fused"]}


def torch_has_a_fused_kernel(spec) -> bool:
    """Does torch.optim's counterpart accept ``fused=True`` (on CPU)?"""
    try:
        torch_class(spec)([torch.zeros(1, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def test_exactly_the_optimizers_torch_has_a_fused_kernel_of_use_it():
    for spec in first_order_specs():
        assert spec.cls.has_torch_kernel == torch_has_a_fused_kernel(spec), spec.name
    assert sorted(spec.name for spec in WITH_KERNEL) == ["adagrad", "adam", "adamw", "sgd"]


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_torch_kernel_matches_eager_over_100_float64_steps(spec, options):
    eager, _ = train(spec.cls, {**options, "backend": "eager"}, torch.float64, steps=100)
    kernel, opt = train(spec.cls, {**options, "backend": "torch-fused"}, torch.float64, 100)
    # settings torch's kernel lacks (trainlab's momentum forms, ...) take the compiled rule
    assert kernels(opt) == ({"torch"} if kernel_has(spec, options) else {"compiled"})
    for a, b in zip(eager, kernel):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


TORCH_CASES = [  # the settings torch.optim has too
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in WITH_KERNEL
    for i, options in enumerate(spec.variants)
]


@pytest.mark.parametrize(("spec", "options"), TORCH_CASES)
def test_torch_kernel_matches_torch_optim_in_float32_with_its_state_dict(spec, options):
    theirs, ref = train(torch_class(spec), {**options, "fused": True}, torch.float32, steps=5)
    ours, opt = train(spec.cls, {**options, "backend": "torch-fused"}, torch.float32, steps=5)
    assert kernels(opt) == {"torch"}
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    a, b = opt.state_dict(), ref.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        assert state.keys() == b["state"][index].keys()
        for key, value in state.items():
            torch.testing.assert_close(value, b["state"][index][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("first", "second"),
    [("torch-fused", "fused"), ("fused", "torch-fused"), ("eager", "torch-fused")],
)
@pytest.mark.parametrize("spec", WITH_KERNEL, ids=lambda spec: spec.name)
def test_state_dict_moves_to_and_from_the_torch_kernel_mid_run(spec, first, second):
    options = spec.variants[1]

    def run(opt, params, start, stop):
        for step in range(start, stop):
            opt.zero_grad()
            loss_of(params, batch(torch.float64, step), options.get("maximize", False)).backward()
            opt.step()

    params = make_params(torch.float64)
    opt = spec.cls(groups(params, spec.cls, options), **options, backend=first)
    run(opt, params, 0, 6)
    saved = copy.deepcopy(opt.state_dict())
    moved = [p.detach().clone().requires_grad_() for p in params]
    resumed = spec.cls(groups(moved, spec.cls, options), **options, backend=second)
    resumed.load_state_dict(saved)
    run(resumed, moved, 6, 15)
    reference = make_params(torch.float64)
    eager = spec.cls(groups(reference, spec.cls, options), **options, backend="eager")
    run(eager, reference, 0, 15)
    assert "torch" in kernels(opt) | kernels(resumed)
    for a, b in zip(moved, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_setting_torchs_kernel_lacks_turned_on_mid_run_moves_to_the_compiled_rule():
    def run(backend):
        params = make_params(torch.float64)[:3]
        opt = optim.Adam(params, lr=0.01, backend=backend)
        seen = []
        for step in range(8):
            if step == 4:
                opt.param_groups[0]["bias_correction"] = False
            opt.zero_grad()
            loss_of([*params, None], batch(torch.float64, step)).backward()
            opt.step()
            seen.append(kernels(opt))
        return params, seen

    eager, _ = run("eager")
    kernel, seen = run("torch-fused")
    assert seen[1:4] == [{"torch"}] * 3 and seen[4:] == [{"compiled"}] * 4
    for a, b in zip(eager, kernel):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_scheduler_changing_lr_every_step_reaches_the_kernel():
    def run(backend):
        params = make_params(torch.float64)[:3]
        opt = optim.SGD(params, lr=0.1, momentum=0.9, backend=backend)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
        for step in range(10):
            opt.zero_grad()
            loss_of([*params, None], batch(torch.float64, step)).backward()
            opt.step()
            scheduler.step()
        return params, opt

    eager, _ = run("eager")
    kernel, opt = run("torch-fused")
    assert kernels(opt) == {"torch"}
    for a, b in zip(eager, kernel):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_statistics_of_a_kernel_step_match_the_eager_loop(dtype):
    runs = {}
    for backend in ("eager", "torch-fused"):
        options = {"lr": 0.01, "weight_decay": 0.01, "backend": backend, "track_stats": True}
        runs[backend] = train(optim.AdamW, options, dtype, steps=4)
    (eager_params, eager), (kernel_params, kernel) = runs["eager"], runs["torch-fused"]
    assert kernels(kernel) == {"torch"}
    assert {part["stats"] for part in kernel.backend_info()} == {"copy"}
    tolerance = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for a, b in zip(eager_params, kernel_params):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
    for group_eager, group_kernel in zip(eager.stats, kernel.stats):
        for key in ("grad_norm", "update_ratio", "nonfinite"):
            torch.testing.assert_close(
                group_kernel[key], group_eager[key], rtol=tolerance, atol=0, msg=key
            )


def test_a_kernel_that_fails_hands_the_group_to_the_compiled_rule_with_one_warning(
    monkeypatch,
):
    def refusing(self, h, param, grad, state, step):
        def call():
            raise RuntimeError("no kernel for this device")

        return call

    monkeypatch.setattr(optim.Adam, "torch_kernel", refusing)
    options = {"lr": 0.01, "betas": (0.8, 0.99)}
    eager, _ = train(optim.Adam, {**options, "backend": "eager"}, torch.float64, steps=6)
    with pytest.warns(RuntimeWarning, match=r"torch's fused Adam kernel is unavailable") as caught:
        kernel, opt = train(optim.Adam, {**options, "backend": "torch-fused"}, torch.float64, 6)
    assert len(caught) == 2  # once for each of the two groups' flat buffers
    assert kernels(opt) == {"compiled"}
    for a, b in zip(eager, kernel):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
