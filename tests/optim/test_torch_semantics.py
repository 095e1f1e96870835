"""torch.optim semantics a drop-in replacement keeps, checked as torch's own tests check them.

- ``step()`` never replaces ``p.grad`` nor writes into it, on every backend (torch's
  ``test_grads_are_never_inplaced_into``): the gradient is the user's tensor.
- ``fused=True`` on parameters torch's fused kernels cannot take (on ``meta``, complex) is
  torch's RuntimeError at the first step (torch's ``test_fused_error_on_params_on_meta``).
- ``LBFGS.step`` returns what torch's returns and leaves state of the same types.
"""

from __future__ import annotations

import math

import pytest
import torch

import trainlab.optim as optim
from trainlab.optim import _base

from .common import first_order_specs, torch_class

#: The backends each first-order optimizer offers besides "auto", which picks one of them.
BACKEND_CASES = [
    pytest.param(spec, options, backend, id=f"{spec.name}-{i}-{backend}")
    for spec in first_order_specs()
    for backend in ("eager", "fused", "torch-fused")
    if backend != "torch-fused" or spec.cls.has_torch_kernel
    for i, options in enumerate(spec.variants + spec.extra_variants)
]


def test_the_cases_cover_eight_optimizers_and_every_torch_kernel():
    names = {case.values[0].name for case in BACKEND_CASES}
    assert names == {"sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta", "adamax", "nadam"}
    kernels = {case.values[0].name for case in BACKEND_CASES if case.values[2] == "torch-fused"}
    assert kernels == {"sgd", "adam", "adamw", "adagrad"}


def two_params(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(2, 3, generator=gen, dtype=dtype).requires_grad_() for _ in range(2)]


def flat_kernels(opt) -> set:
    """What took the flat parts' last step ("compiled", "torch"; None: the eager loop)."""
    return {part["kernel"] for part in opt.backend_info()}


def fingerprint(params: list[torch.Tensor]) -> list[tuple[int, int, int]]:
    """Which tensor each ``p.grad`` is, where its memory is, and how often it was written."""
    return [(id(p.grad), p.grad.data_ptr(), p.grad._version) for p in params]


def step_leaves_the_gradients_alone(opt, params: list[torch.Tensor], step: int) -> None:
    """One ``opt.step()``, after which every ``p.grad`` is the same tensor, in the same
    memory, never written (its version counter unmoved) and holding the same values."""
    expected, values = fingerprint(params), [p.grad.clone() for p in params]
    opt.step()
    assert fingerprint(params) == expected, f"step {step}"
    for p, value in zip(params, values):
        assert torch.equal(p.grad, value), f"step {step}"


@pytest.mark.parametrize(("spec", "options", "backend"), BACKEND_CASES)
def test_step_never_replaces_or_writes_a_gradient_the_user_assigned(
    traced_only, spec, options, backend
):
    params = two_params()
    opt = spec.cls(params, **options, backend=backend)
    for step in range(3):  # the first step creates the state; the flat ones follow
        for p in params:
            p.grad = torch.rand_like(p)
        step_leaves_the_gradients_alone(opt, params, step)
    if backend != "eager":  # the flat path took the last step
        assert opt.backend_info() and flat_kernels(opt) <= {"compiled", "torch"}


@pytest.mark.parametrize(("spec", "options", "backend"), BACKEND_CASES)
@pytest.mark.parametrize("clear", ["opt.zero_grad()", "opt.zero_grad(False)", "p.grad = None"])
def test_step_leaves_the_gradient_backward_computed_alone(
    traced_only, spec, options, backend, clear
):
    params = two_params(torch.float64)
    opt = spec.cls(params, **options, backend=backend)
    for step in range(4):
        if clear == "p.grad = None":  # model.zero_grad(): backward makes new tensors
            for p in params:
                p.grad = None
        else:
            opt.zero_grad(set_to_none=clear == "opt.zero_grad()")
        x = torch.linspace(-1, 1, 3, dtype=torch.float64) * (step + 1)
        (torch.tanh(params[0] @ x).sum() * params[1].sum()).backward()
        step_leaves_the_gradients_alone(opt, params, step)
    if backend != "eager":  # the flat path took the last step
        assert opt.backend_info() and flat_kernels(opt) <= {"compiled", "torch"}


@pytest.mark.parametrize(
    ("cls", "options"),
    [(optim.SGD, {"lr": 0.1, "momentum": 0.9}), (optim.Adagrad, {"lr": 0.1})],
    ids=["sgd", "adagrad"],
)
@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_step_leaves_a_sparse_gradient_alone(traced_only, cls, options, backend):
    embedding = torch.nn.Embedding(5, 2, sparse=True)
    opt = cls(embedding.parameters(), **options, backend=backend)
    for step in range(3):
        opt.zero_grad()
        embedding(torch.tensor([1, step, 1])).sum().backward()
        grad = embedding.weight.grad
        expected, values = (id(grad), grad._version), grad.coalesce().values().clone()
        opt.step()
        assert (id(embedding.weight.grad), grad._version) == expected, f"step {step}"
        assert torch.equal(grad.coalesce().values(), values), f"step {step}"


@pytest.mark.parametrize("backend", ["fused", "torch-fused"])
def test_step_leaves_a_missing_gradient_missing(traced_only, backend):
    def run(cls, **backend_option):
        params = two_params()
        opt = cls(params, lr=0.1, **backend_option)
        for step in range(4):
            opt.zero_grad()
            (params[0].sum() + params[1].sum() * step).backward()
            if step in (1, 2):  # no gradient for this parameter in these steps
                params[1].grad = None
            opt.step()
            if step in (1, 2):
                assert params[1].grad is None, f"step {step}"
        return params

    for a, b in zip(run(optim.Adam, backend=backend), run(torch.optim.Adam)):
        torch.testing.assert_close(a, b)


def meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1))


FUSED_IN_TORCH = [spec for spec in first_order_specs() if spec.cls.has_torch_kernel]


@pytest.mark.parametrize("spec", FUSED_IN_TORCH, ids=lambda spec: spec.name)
def test_fused_true_on_meta_parameters_is_torchs_error_at_the_first_step(spec):
    errors = []
    for cls in (torch_class(spec), spec.cls):
        model = meta_model()
        opt = cls(model.parameters(), lr=0.1, fused=True)
        with torch.device("meta"):
            for p in model.parameters():
                p.grad = torch.rand_like(p)
        with pytest.raises(RuntimeError) as error:
            opt.step()
        errors.append(error.value)
        if cls is spec.cls:  # refused before a flat buffer was built on the meta device
            assert not opt.backend_info()
        # torch's sequence: the model made real (as new tensors) and stepped, which the
        # optimizer's meta parameters, now without gradients, sit out.
        opt.zero_grad(set_to_none=True)
        model.to_empty(device="cpu")
        for p in model.parameters():
            p.grad = torch.rand_like(p)
        opt.step()
    theirs, ours = errors
    assert str(ours).startswith(str(theirs)), str(ours)


def test_fused_true_on_complex_parameters_is_torchs_error_too():
    errors = []
    for cls in (torch.optim.Adam, optim.Adam):
        w = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
        w.grad = torch.ones_like(w)
        with pytest.raises(RuntimeError) as error:
            cls([w], fused=True).step()
        errors.append(str(error.value))
    theirs, ours = errors
    assert ours.startswith(theirs), ours
    # Without fused=True, trainlab steps complex parameters through their real view.
    w = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    w.grad = torch.ones_like(w)
    optim.Adam([w]).step()
    assert w.real.lt(0).all()


def test_fused_true_on_meta_parameters_names_the_parameter_and_the_fix():
    with torch.device("meta"):
        on_meta = torch.zeros(2, requires_grad=True)
    params = [torch.zeros(3, requires_grad=True), on_meta]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:]}], fused=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match=r"parameter 0 of group 1 is on meta; with fused=True"):
        opt.step()


def test_fused_true_checks_each_parameter_once_as_it_gets_a_gradient(monkeypatch):
    checks = []
    supported = ["cpu"]
    monkeypatch.setattr(
        _base, "_get_fused_kernels_supported_devices", lambda: checks.append(1) or supported
    )
    used, frozen = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optim.Adam([used, frozen], lr=0.1, backend="eager", fused=True)
    for _ in range(4):
        used.grad = torch.ones_like(used)
        opt.step()
    assert len(checks) == 1  # the frozen parameter does not make every step check again
    supported[:] = ["cuda"]  # now the frozen parameter gets its gradient, on a device refused
    frozen.grad = torch.ones_like(frozen)
    with pytest.raises(RuntimeError, match=r"parameter 1 of group 0 is on cpu"):
        opt.step()


def quadratic_closure(opt: torch.optim.Optimizer, w: torch.Tensor, form: str):
    a = torch.linspace(1, 3, w.numel(), dtype=w.dtype)

    def closure():
        opt.zero_grad()
        loss = (a * w * w).sum() + w.sum()
        loss.backward()
        if form == "float":
            return loss.item()
        return loss.reshape(1) if form == "1-element" else loss

    return closure


def lbfgs_run(cls: type, options: dict, form: str):
    w = torch.linspace(-1, 1, 4, dtype=torch.float64).requires_grad_()
    opt = cls([w], **options)
    closure = quadratic_closure(opt, w, form)
    returned = [opt.step(closure) for _ in range(3)]
    return returned, opt.state[w]


def number(value) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)


def kind(value) -> tuple:
    if isinstance(value, torch.Tensor):
        return ("Tensor", value.dtype, tuple(value.shape), value.requires_grad)
    if isinstance(value, list):
        return ("list", *dict.fromkeys(kind(v) for v in value))
    return (type(value).__name__,)


@pytest.mark.parametrize("form", ["tensor", "1-element", "float"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"line_search_fn": "strong_wolfe"},
        {"lr": 0.5, "max_iter": 1},
        {"lr": torch.tensor(0.5)},
        {"tolerance_grad": float("inf")},
        {"tolerance_grad": -math.inf, "tolerance_change": -math.inf},
        {"line_search_fn": "strong_wolfe", "tolerance_change": -math.inf},
    ],
    ids=[
        "defaults",
        "strong_wolfe",
        "one_iteration",
        "tensor_lr",
        "converged",
        "never_stops",
        "strong_wolfe_never_stops_on_change",
    ],
)
def test_lbfgs_step_returns_and_keeps_the_types_torch_does(options, form):
    theirs, their_state = lbfgs_run(torch.optim.LBFGS, options, form)
    ours, our_state = lbfgs_run(optim.LBFGS, options, form)
    assert [kind(v) for v in ours] == [kind(v) for v in theirs]
    for a, b in zip(ours, theirs):
        assert number(a) == pytest.approx(number(b), rel=1e-12)
    assert our_state.keys() == their_state.keys()
    for key in their_state:
        assert kind(our_state[key]) == kind(their_state[key]), key


def test_lbfgs_step_returns_the_closures_own_loss_object():
    w = torch.ones(3, requires_grad=True)
    opt = optim.LBFGS([w], max_iter=2)
    first = []

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        first.append(loss)
        return loss

    assert opt.step(closure) is first[0]


def test_lbfgs_returns_one_type_whether_it_stops_at_once_or_never():
    """torch's test_lbfgs_returns_consistent_type: tolerance_grad=inf stops after the first
    evaluation, -inf never stops on the gradient; the closure's loss comes back either way."""

    def closure():
        return torch.tensor([10])

    returned = {}
    for cls in (torch.optim.LBFGS, optim.LBFGS):
        params = [torch.randn(10, 5), torch.randn(10)]
        for tolerance in (math.inf, -math.inf):
            returned[cls, tolerance] = cls(params, 0.01, tolerance_grad=tolerance).step(closure)
    assert {kind(v) for v in returned.values()} == {("Tensor", torch.int64, (1,), False)}
    assert {number(v) for v in returned.values()} == {10.0}


# -- flat groups against torch.optim: gradients that are not plain buffer views ----------
FLAT_CASES = [
    pytest.param(cls, options, backend, id=f"{cls.__name__}-{backend}")
    for cls, options in [
        (optim.Adam, {"lr": 0.1}),
        (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
        (optim.Adagrad, {"lr": 0.1}),
    ]
    for backend in ("fused", "torch-fused")
]


def square_params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randn(3, 3, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(3)
    ]


def loss_of(params: list[torch.Tensor], step: int) -> torch.Tensor:
    x = torch.linspace(-1, 1, 3, dtype=torch.float64) * (step + 1)
    return sum(torch.tanh(p @ x).sum() * (i + 1) for i, p in enumerate(params))


def run_both(cls, options, backend, edit, steps=4):
    """The same training loop on trainlab's ``cls`` and torch's; ``edit(params, step)``
    changes the gradients after backward. Returns both parameter lists and the optimizer."""
    results = []
    for make in (lambda ps: cls(ps, **options, backend=backend), torch_class_of(cls, options)):
        params = square_params()
        opt = make(params)
        for step in range(steps):
            opt.zero_grad()
            loss_of(params, step).backward()
            edit(params, step)
            expected, values = fingerprint(params), [p.grad.clone() for p in params]
            opt.step()
            assert fingerprint(params) == expected, f"step {step}"  # no gradient written
            for p, value in zip(params, values):
                assert torch.equal(p.grad, value), f"step {step}"
        results.append((params, opt))
    (mine, opt), (theirs, _) = results
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)
    return opt


def torch_class_of(cls, options):
    return lambda ps: getattr(torch.optim, cls.__name__)(ps, **options)


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
@pytest.mark.parametrize("steps", [(3,), (1, 2, 3)], ids=["once", "then-zero_grad"])
def test_a_transposed_gradient_view_is_read_transposed(traced_only, cls, options, backend, steps):
    # Read as the transposed tensor it is, and left as it is (it lives in the gradient
    # buffer: the eager loop takes that step). zero_grad then replaces it: it is not the
    # buffer's view (backward into it would warn of the gradient layout contract).
    def transpose(params, step):
        if step in steps:  # steps after the first, which creates the state
            for p in params:  # the same start address, other strides
                p.grad = p.grad.t()

    opt = run_both(cls, options, backend, transpose, steps=5)
    assert flat_kernels(opt) <= {"compiled", "torch"}  # step 4 is flat again


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
def test_gradients_swapped_between_parameters_are_read_before_overwritten(
    traced_only, cls, options, backend
):
    def swap(params, step):
        if step in (1, 2, 3):
            params[0].grad, params[1].grad, params[2].grad = (
                params[1].grad,
                params[2].grad,
                params[0].grad,
            )

    opt = run_both(cls, options, backend, swap, steps=5)
    assert flat_kernels(opt) <= {"compiled", "torch"}  # step 4 is flat again


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
def test_an_assigned_gradient_beside_buffer_views_writes_none_of_them(
    traced_only, cls, options, backend
):
    versions = []

    def assign_one(params, step):
        params[2].grad = params[2].grad * 2
        versions.append([p.grad._version for p in params[:2]])

    def after(params, step):
        # The views the step did not get from the user stay unwritten by it.
        assert [p.grad._version for p in params[:2]] == versions[-1], f"step {step}"

    opt = run_both(cls, options, backend, assign_one)
    params = opt.param_groups[0]["params"]
    for step in range(3):
        opt.zero_grad()
        loss_of(params, step).backward()
        assign_one(params, step)
        opt.step()
        after(params, step)


HAND_FILLED = {
    "p.grad += g": lambda p, g: p.grad.add_(g) if p.grad is not None else setattr(p, "grad", g),
    "p.grad.copy_(g)": lambda p, g: (
        p.grad.copy_(g) if p.grad is not None else setattr(p, "grad", g)
    ),
}


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
@pytest.mark.parametrize("fill", list(HAND_FILLED))
@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradients_written_by_hand_into_the_views_are_stepped(
    traced_only, cls, options, backend, fill, set_to_none
):
    results = []
    for make in (lambda ps: cls(ps, **options, backend=backend), torch_class_of(cls, options)):
        params = square_params()
        opt = make(params)
        for step in range(4):
            opt.zero_grad(set_to_none=set_to_none)
            grads = torch.autograd.grad(loss_of(params[:2], step), params[:2])
            for p, g in zip(params, grads):  # params[2] never gets a gradient
                HAND_FILLED[fill](p, g)
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
def test_a_deleted_group_is_no_longer_stepped(traced_only, cls, options, backend):
    results = []
    for make in (lambda gs: cls(gs, **options, backend=backend), torch_class_of(cls, options)):
        params = square_params()
        opt = make([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}])
        for step in range(5):
            if step == 3:  # after two flat steps of each group
                del opt.param_groups[0]
            opt.zero_grad()
            loss_of(params, step).backward()
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
        # zero_grad leaves the removed group's gradients alone: they accumulate, as in torch
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize(("cls", "options", "backend"), FLAT_CASES)
def test_a_step_the_eager_loop_takes_copies_no_gradient_into_the_buffer(
    traced_only, monkeypatch, cls, options, backend
):
    copies = []
    foreach_copy = torch._foreach_copy_
    monkeypatch.setattr(torch, "_foreach_copy_", lambda *a: copies.append(1) or foreach_copy(*a))
    params = square_params()
    opt = cls(params, **options, backend=backend)
    counts = []
    for step in range(3):
        for p in params:
            p.grad = torch.rand_like(p)
        if step == 2:  # one parameter without a gradient: the eager loop steps the rest
            params[0].grad = None
        opt.step()
        counts.append(len(copies))
    # Step 1 is flat and copies the gradients in (one call); step 2 is the eager loop's.
    assert counts[1] - counts[0] == 1 and counts[2] == counts[1]
    if "initial_accumulator_value" not in opt.defaults:  # Adagrad's state exists from the start
        assert counts[0] == 0  # step 0 creates the state in the eager loop
