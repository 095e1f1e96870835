"""The fused backend: the same rule compiled over flat buffers gives the same numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim import lr_scheduler

import trainlab.optim as optim
from trainlab.optim import _fused

from .common import batch, first_order_specs, groups, loss_of, make_params, torch_class, train

CASES = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in first_order_specs()
    for i, options in enumerate(spec.variants + spec.extra_variants)
]


def all_fused(opt) -> bool:
    info = opt.backend_info()
    return bool(info) and all(part["fused"] for part in info)


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_fused_matches_eager_over_100_float64_steps(spec, options):
    eager, _ = train(spec.cls, {**options, "backend": "eager"}, torch.float64, steps=100)
    fused, opt = train(spec.cls, {**options, "backend": "fused"}, torch.float64, steps=100)
    assert all_fused(opt)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


TWINNED = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in first_order_specs()
    for i, options in enumerate(spec.variants)
]


@pytest.mark.parametrize(("spec", "options"), TWINNED)
def test_fused_matches_torch_in_float32(spec, options):
    # step 1 runs eagerly (it creates the state); step 2 is the first compiled one
    theirs, _ = train(torch_class(spec), options, torch.float32, steps=2)
    fused, _ = train(spec.cls, {**options, "backend": "fused"}, torch.float32, steps=2)
    for a, b in zip(theirs, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_layout_parameters_and_gradients_are_views_of_one_buffer():
    params = make_params(torch.float32)
    opt = optim.Adam(params[:3], backend="fused")
    for step in range(3):
        opt.zero_grad()
        loss_of(params, batch(torch.float32, step)).backward()
        opt.step()
    (info,) = opt.backend_info()
    assert info["params"] == 3 and info["numel"] == 12 + 3 + 1 and info["fused"]
    flat = opt._engine.groups[0][0]
    for p in params[:3]:
        assert p.untyped_storage().data_ptr() == flat.param.untyped_storage().data_ptr()
        assert p.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()
        state = opt.state[p]
        assert state["exp_avg"].untyped_storage().data_ptr() == (
            flat.state["exp_avg"].untyped_storage().data_ptr()
        )
        assert state["exp_avg"].shape == p.shape and state["step"].dim() == 0
    # zero_grad keeps the views: backward accumulates straight into the flat buffer
    opt.zero_grad()
    assert all(p.grad is not None and not p.grad.any() for p in params[:3])


def test_unused_and_frozen_parameters_are_left_alone():
    params = make_params(torch.float64)
    frozen = torch.ones(3, dtype=torch.float64)  # requires_grad=False
    opt = optim.Adam([*params, frozen], lr=0.1, backend="fused")
    for step in range(4):
        opt.zero_grad()
        loss_of(params, batch(torch.float64, step)).backward()
        opt.step()
    assert params[3] not in opt.state and frozen not in opt.state  # never had a gradient
    torch.testing.assert_close(params[3], make_params(torch.float64)[3])
    assert all_fused(opt)


def skipping_run(cls, backend=None):
    """Parameter 1 gets no gradient in steps 3 and 4 (it is skipped, like torch.optim)."""
    params = make_params(torch.float64)[:3]
    kwargs = {"backend": backend} if backend else {}
    opt = cls(params, lr=0.05, **kwargs)
    for step in range(8):
        opt.zero_grad()
        w, b, s = params
        x = batch(torch.float64, step)
        used_b = b if step not in (3, 4) else b.detach()
        (((torch.tanh(x @ w + used_b) * s) - 0.5) ** 2).mean().backward()
        opt.step()
    return params, opt


def test_a_parameter_without_gradient_in_one_step_is_skipped_as_in_torch():
    ours, opt = skipping_run(optim.Adam, backend="fused")
    theirs, _ = skipping_run(torch.optim.Adam)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the step counts now differ between parameters: the eager loop carries the group
    assert opt.backend_info()[0]["fused"] is False


@pytest.mark.parametrize("reset", ["model.zero_grad", "assign"])
def test_gradients_replaced_outside_the_optimizer_are_taken(reset):
    def run(backend):
        params = make_params(torch.float64)[:3]
        opt = optim.SGD(params, lr=0.1, momentum=0.9, backend=backend)
        for step in range(5):
            if reset == "model.zero_grad":
                for p in params:
                    p.grad = None
                loss_of([*params, None], batch(torch.float64, step)).backward()
            else:
                grads = torch.autograd.grad(
                    loss_of([*params, None], batch(torch.float64, step)), params
                )
                for p, g in zip(params, grads):
                    p.grad = g.clone()
            opt.step()
        return params, opt

    eager, _ = run("eager")
    fused, opt = run("fused")
    assert all_fused(opt)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_moving_the_model_after_the_first_step_is_a_clear_error():
    model = torch.nn.Linear(4, 2)
    opt = optim.Adam(model.parameters(), backend="fused")
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    model.double()
    model(torch.randn(3, 4, dtype=torch.float64)).sum().backward()
    with pytest.raises(
        ValueError,
        match=r"Invalid parameter 0 of group 0: it moved from "
        r"cpu/torch.float32 to cpu/torch.float64",
    ):
        opt.step()


def test_parameter_data_replaced_on_the_same_device_is_adopted():
    def run(backend):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2).double()
        opt = optim.Adam(model.parameters(), lr=0.1, backend=backend)
        for step in range(6):
            if step == 3:  # e.g. loading weights with assign=True
                model.weight.data = torch.full_like(model.weight, 0.5)
            opt.zero_grad()
            model(batch(torch.float64, step)).square().sum().backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run("eager"), run("fused")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


class CountingBackend:
    """A torch.compile backend that counts compilations and runs the graph as traced."""

    def __init__(self):
        self.compilations = 0

    def __call__(self, graph_module, example_inputs):
        self.compilations += 1
        return graph_module.forward


@pytest.fixture
def counting_backend(monkeypatch):
    backend = CountingBackend()
    monkeypatch.setattr(_fused, "BACKEND", backend)
    _fused.compiled_update.cache_clear()
    yield backend
    _fused.compiled_update.cache_clear()


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=30),
    ],
    ids=["ExponentialLR", "OneCycleLR-with-betas"],
)
def test_a_scheduler_changing_lr_every_step_compiles_once(counting_backend, make_scheduler):
    params = make_params(torch.float32)[:3]
    opt = optim.Adam(params, lr=0.01, backend="fused")
    scheduler = make_scheduler(opt)
    lrs = set()
    for step in range(30):
        opt.zero_grad()
        loss_of([*params, None], batch(torch.float32, step)).backward()
        opt.step()
        scheduler.step()
        lrs.add(opt.param_groups[0]["lr"])
    assert len(lrs) >= 25  # a new learning rate (almost) every step
    assert counting_backend.compilations == 1
    assert all_fused(opt)


def test_group_labels_and_scheduler_keys_do_not_make_compiled_variants(counting_backend):
    # A "name" label is user metadata and OneCycleLR adds initial_lr, max_lr, min_lr,
    # max_momentum and base_momentum to every group: none of them is a hyperparameter
    # of the rule, so neither a variant per label nor an input refilled every step.
    def run(backend):
        params = make_params(torch.float32)[:3]
        opt = optim.Adam(
            [
                {"params": params[:1], "name": "backbone"},
                {"params": params[1:], "name": "head", "lr": 0.005},
            ],
            lr=0.01,
            backend=backend,
        )
        scheduler = lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.02], total_steps=12)
        trajectory = []
        for step in range(12):
            opt.zero_grad()
            loss_of([*params, None], batch(torch.float32, step)).backward()
            opt.step()
            scheduler.step()
            trajectory.append([p.detach().clone() for p in params])
        return trajectory, opt

    eager, _ = run("eager")
    assert counting_backend.compilations == 0
    fused, opt = run("fused")
    assert counting_backend.compilations == 1
    assert all_fused(opt) and len(opt.backend_info()) == 2
    assert all("max_lr" in g and "initial_lr" in g for g in opt.param_groups)
    h = opt.hyperparameters(opt.param_groups[0])
    assert not {"name", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"} & set(h)
    assert not {"foreach", "fused", "capturable", "differentiable", "params"} & set(h)
    for step, (a, b) in enumerate(zip(eager, fused)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"step {step}")


def test_compilation_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(_fused, "BACKEND", broken)
    _fused.compiled_update.cache_clear()
    try:
        options = {"lr": 0.01, "betas": (0.8, 0.99)}
        eager, _ = train(optim.Adam, {**options, "backend": "eager"}, torch.float64, steps=6)
        with pytest.warns(
            RuntimeWarning,
            match=r"fused backend of Adam is unavailable .*"
            r"no C\+\+ compiler found.*eager backend",
        ):
            fused, opt = train(optim.Adam, {**options, "backend": "fused"}, torch.float64, 6)
    finally:
        _fused.compiled_update.cache_clear()
    assert not all_fused(opt)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("first", "second"),
    [("fused", "eager"), ("eager", "fused"), ("torch", "fused"), ("fused", "torch")],
)
@pytest.mark.parametrize("name", ["adam", "sgd", "nadam"])
def test_state_dict_moves_across_backends_mid_run(name, first, second):
    spec = next(s for s in first_order_specs() if s.name == name)
    options = spec.variants[1]

    def build(kind, params):
        if kind == "torch":
            return torch_class(spec)(groups(params, torch_class(spec), options), **options)
        return spec.cls(groups(params, spec.cls, options), **options, backend=kind)

    def run(opt, params, start, stop):
        for step in range(start, stop):
            opt.zero_grad()
            loss_of(params, batch(torch.float64, step), options.get("maximize", False)).backward()
            opt.step()

    params = make_params(torch.float64)
    opt = build(first, params)
    run(opt, params, 0, 6)
    saved = copy.deepcopy(opt.state_dict())
    moved = [p.detach().clone().requires_grad_() for p in params]
    resumed = build(second, moved)
    resumed.load_state_dict(saved)
    run(resumed, moved, 6, 15)
    reference = make_params(torch.float64)
    run(build("eager", reference), reference, 0, 15)
    for a, b in zip(moved, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["fused", "torch-fused"])
def test_loading_state_into_a_running_fused_optimizer(backend):
    params = make_params(torch.float64)[:3]
    opt = optim.Adam(params, lr=0.01, backend=backend)
    for step in range(4):
        opt.zero_grad()
        loss_of([*params, None], batch(torch.float64, step)).backward()
        opt.step()
    snapshot = copy.deepcopy(opt.state_dict())
    weights = [p.detach().clone() for p in params]
    for step in range(4, 8):
        opt.zero_grad()
        loss_of([*params, None], batch(torch.float64, step)).backward()
        opt.step()
    after = [p.detach().clone() for p in params]
    with torch.no_grad():  # rewind and replay
        for p, w in zip(params, weights):
            p.copy_(w)
    opt.load_state_dict(snapshot)
    for step in range(4, 8):
        opt.zero_grad()
        loss_of([*params, None], batch(torch.float64, step)).backward()
        opt.step()
    assert all_fused(opt)
    assert opt.backend_info()[0]["kernel"] == ("torch" if backend == "torch-fused" else "compiled")
    for a, b in zip(after, params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def run_with_stats(backend, inject_nan=False, dtype=torch.float64, steps=3):
    params = make_params(dtype)[:3]
    opt = optim.SGD(params, lr=0.1, momentum=0.9, backend=backend, track_stats=True)
    for step in range(steps):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        loss_of([*params, None], batch(dtype, step)).backward()
        if inject_nan and step == steps - 1:
            params[0].grad[0, 0] = float("nan")
        grads = [p.grad.clone() for p in params]
        opt.step()
    (stats,) = opt.stats
    g = torch.cat([x.reshape(-1) for x in grads]).double()
    delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(params, before)]).double()
    theta = torch.cat([p.detach().reshape(-1) for p in params]).double()
    return opt, stats, g, delta, theta


def assert_stats(stats, g, delta, theta, rtol=1e-6):
    torch.testing.assert_close(stats["grad_norm"], g.norm(), rtol=rtol, atol=0)
    expected_ratio = delta.norm() / theta.norm()
    torch.testing.assert_close(stats["update_ratio"], expected_ratio, rtol=rtol, atol=0)


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_track_stats_matches_a_direct_computation(backend):
    _, stats, g, delta, theta = run_with_stats(backend)
    assert_stats(stats, g, delta, theta)
    assert stats["nonfinite"].item() == 0
    _, stats, *_ = run_with_stats(backend, inject_nan=True)
    assert stats["nonfinite"].item() == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_track_stats_are_summed_inside_the_fused_update_once_checked(dtype):
    opt, stats, g, delta, theta = run_with_stats("fused", dtype=dtype, steps=5)
    assert_stats(stats, g, delta, theta, rtol=1e-6 if dtype == torch.float64 else 1e-4)
    (info,) = opt.backend_info()
    assert info["fused"] and info["stats"] == "twin"
    assert opt._engine.groups[0][0].twin_checked


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_fused_statistics_match_eager_for_every_rule_and_variant(spec, options):
    runs = {}
    for backend in ("eager", "fused"):
        runs[backend] = train(
            spec.cls, {**options, "backend": backend, "track_stats": True}, torch.float64, 6
        )
    (eager_params, eager), (fused_params, fused) = runs["eager"], runs["fused"]
    assert all_fused(fused)
    for a, b in zip(eager_params, fused_params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for group_eager, group_fused in zip(eager.stats, fused.stats):
        for key in ("grad_norm", "update_ratio", "nonfinite"):
            torch.testing.assert_close(group_fused[key], group_eager[key], rtol=1e-9, atol=0)
    modes = {part["stats"] for part in fused.backend_info()}
    assert modes == {"twin" if spec.cls.fused_stats_in_loop else "delta"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_statistics_report_the_update_actually_stored(dtype):
    # A step too small to change a bfloat16/float16 θ is a stalled update: ratio 0.
    runs = {}
    for backend in ("eager", "fused"):
        params = [torch.ones(300, dtype=dtype, requires_grad=True) for _ in range(2)]
        opt = optim.SGD(params, lr=1e-5, backend=backend, track_stats=True)
        for _ in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5)
            opt.step()
        runs[backend] = opt
    fused = runs["fused"]
    assert fused.backend_info()[0]["stats"] == "copy"
    assert fused.stats[0]["update_ratio"].item() == 0.0
    assert runs["eager"].stats[0]["update_ratio"].item() == 0.0
    torch.testing.assert_close(fused.stats[0]["grad_norm"], runs["eager"].stats[0]["grad_norm"])


def test_track_stats_fall_back_to_separate_passes_when_the_check_fails(monkeypatch):
    # A compiler that wrote θ before reading it through the twin would sum the wrong
    # Δθ; a twin that is not θ at all stands in for it here.
    monkeypatch.setattr(_fused, "unaliased", torch.zeros_like)
    opt, stats, g, delta, theta = run_with_stats("fused", steps=6)
    assert_stats(stats, g, delta, theta)
    (info,) = opt.backend_info()
    assert info["fused"] and info["stats"] == "delta"


def test_auto_uses_eager_for_small_groups_and_fused_for_large(monkeypatch):
    small = optim.Adam([torch.zeros(10, requires_grad=True)])
    small.param_groups[0]["params"][0].grad = torch.ones(10)
    small.step()
    assert small.backend_info() == []
    monkeypatch.setattr(_fused, "compiler_available", lambda device: True)
    many = [torch.zeros(100, requires_grad=True) for _ in range(40)]
    for p in many:
        p.grad = torch.ones_like(p)
    opt = optim.Adam(many)
    opt.step()
    assert [part["numel"] for part in opt.backend_info()] == [4000]
    big_param = torch.zeros(5_000_000, requires_grad=True)
    big = optim.Adam([big_param])
    big_param.grad = torch.ones_like(big_param)
    big.step()
    assert [part["numel"] for part in big.backend_info()] == [5_000_000]


def test_backend_keyword_is_validated():
    with pytest.raises(
        ValueError,
        match=r"Invalid backend: 'triton' \(must be one of 'auto', "
        r"'eager', 'fused', 'torch-fused'\)",
    ):
        optim.SGD([torch.zeros(1, requires_grad=True)], backend="triton")
    with pytest.raises(ValueError, match=r"'torch-fused' \(torch has no fused NAdam kernel"):
        optim.NAdam([torch.zeros(1, requires_grad=True)], backend="torch-fused")


def test_a_switch_turned_on_mid_run_compiles_its_variant_and_matches_eager():
    def run(backend):
        params = make_params(torch.float64)[:3]
        opt = optim.Adam(params, lr=0.01, backend=backend)
        for step in range(8):
            if step == 4:
                opt.param_groups[0]["amsgrad"] = True
            opt.zero_grad()
            loss_of([*params, None], batch(torch.float64, step)).backward()
            opt.step()
        return params, opt

    eager, _ = run("eager")
    fused, opt = run("fused")
    assert all_fused(opt)
    assert all("max_exp_avg_sq" in opt.state[p] for p in fused)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize(
    ("cls", "switch", "value", "buffer"),
    [
        (optim.Adam, "amsgrad", True, "max_exp_avg_sq"),
        (optim.AdamW, "amsgrad", True, "max_exp_avg_sq"),
        (optim.RMSprop, "centered", True, "grad_avg"),
        (optim.RMSprop, "momentum", 0.9, "momentum_buffer"),
        (optim.SGD, "momentum", 0.9, "momentum_buffer"),
    ],
)
def test_state_switches_add_their_buffers_mid_run(
    counting_backend, backend, cls, switch, value, buffer
):
    assert switch in cls.state_switches
    params = make_params(torch.float64)[:3]
    opt = cls(params, lr=0.01, backend=backend)
    for step in range(4):
        if step == 2:
            opt.param_groups[0][switch] = value
        opt.zero_grad()
        loss_of([*params, None], batch(torch.float64, step)).backward()
        opt.step()
        assert all((buffer in opt.state[p]) == (step >= 2) for p in params)
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("track_stats", [False, True])
def test_after_its_first_call_a_flat_group_calls_the_compiled_graph_directly(track_stats):
    def run(backend, opt_steps, spy=None):
        params = make_params(torch.float64)[:3]
        opt = optim.Adam(params, lr=0.01, backend=backend, track_stats=track_stats)
        for step in range(opt_steps):
            if spy is not None and step == 3:
                spy(opt)
            opt.zero_grad()
            loss_of([*params, None], batch(torch.float64, step)).backward()
            opt.step()
        return params, opt

    calls = []

    def spy(opt):  # count the direct calls from now on
        flat = opt._engine.groups[0][0]
        update, graph, args = flat._direct

        def counted(*a):
            calls.append(len(a))
            return graph(*a)

        flat._direct = (update, counted, args)

    eager, reference = run("eager", 8)
    fused, opt = run("fused", 8, spy)
    assert len(calls) == 5  # steps 4 to 8 never went through dynamo's guarded call
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    if track_stats:  # the sums come back from the direct call too
        for key in ("grad_norm", "update_ratio"):
            torch.testing.assert_close(
                opt.stats[0][key], reference.stats[0][key], rtol=1e-9, atol=0
            )
