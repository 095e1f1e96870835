"""L-BFGS and Newton on full-batch problems."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import trainlab.optim as optim


def logistic_problem(seed=0, n=200, d=10):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    noise = 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    y = (x @ w_true + noise > 0).double()
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def loss():  # L2-regularised logistic regression
        return F.binary_cross_entropy_with_logits(x @ w + b, y) + 0.01 * (w**2).sum()

    return [w, b], loss


def with_backward(opt, loss):
    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    return closure


@pytest.mark.parametrize(
    "options",
    [{}, {"line_search_fn": "strong_wolfe"}, {"history_size": 3, "max_iter": 5, "lr": 0.5}],
)
def test_lbfgs_matches_torch_on_logistic_regression(options):
    results = []
    for cls in (optim.LBFGS, torch.optim.LBFGS):
        params, loss = logistic_problem()
        opt = cls(params, **options)
        for _ in range(4):
            opt.step(with_backward(opt, loss))
        state = opt.state[params[0]]
        results.append((params, state["func_evals"], state["n_iter"]))
    (ours, evals, iters), (theirs, their_evals, their_iters) = results
    assert (evals, iters) == (their_evals, their_iters)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [{"line_search_fn": "strong_wolfe"}, {"lr": 0.1}])
def test_lbfgs_matches_torch_on_rosenbrock(options):
    results = []
    for cls in (optim.LBFGS, torch.optim.LBFGS):
        x = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
        opt = cls([x], **options)

        def rosenbrock(x=x):
            return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

        for _ in range(3):
            opt.step(with_backward(opt, rosenbrock))
        results.append(x.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-12)
    if options.get("line_search_fn"):
        torch.testing.assert_close(
            results[0], torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0
        )


def test_lbfgs_state_moves_between_torch_and_trainlab():
    options = {"line_search_fn": "strong_wolfe", "max_iter": 3}
    params, loss = logistic_problem()
    theirs = torch.optim.LBFGS(params, **options)
    theirs.step(with_backward(theirs, loss))
    saved = copy.deepcopy(theirs.state_dict())
    moved, moved_loss = logistic_problem()
    with torch.no_grad():
        for p, q in zip(moved, params):
            p.copy_(q)
    ours = optim.LBFGS(moved, **options)
    ours.load_state_dict(saved)
    for _ in range(2):
        theirs.step(with_backward(theirs, loss))
        ours.step(with_backward(ours, moved_loss))
    for a, b in zip(moved, params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def kink(x):
    """|x₁ − 2| + |x₂ − 2| from (1, 1): along −g the slope jumps from −2 to +2 at the
    minimum, so no step meets the strong-Wolfe curvature condition and the line search
    runs until its evaluation budget (or its interval) is exhausted."""
    return (x - 2).abs().sum()


START = {rosenbrock: [-1.5, 2.0], kink: [1.0, 1.0]}


def counted_lbfgs_run(cls, problem=rosenbrock, steps=3, **options):
    """(closure calls, state["func_evals"], final parameters)."""
    x = torch.tensor(START[problem], dtype=torch.float64, requires_grad=True)
    opt = cls([x], **options)
    calls = 0

    def closure():
        nonlocal calls
        calls += 1
        opt.zero_grad()
        loss = problem(x)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return calls, opt.state[x]["func_evals"], x.detach()


@pytest.mark.parametrize("problem", [rosenbrock, kink], ids=["rosenbrock", "kink"])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize(
    ("max_iter", "max_eval"), [(1, 5), (1, 1), (1, None), (2, 3), (3, None), (5, 7), (20, 30)]
)
def test_lbfgs_evaluates_the_closure_as_often_as_torch(max_iter, max_eval, line_search_fn, problem):
    # The line search gets what is left of max_eval, not a budget of its own.
    options = {"max_iter": max_iter, "max_eval": max_eval, "line_search_fn": line_search_fn}
    our_calls, our_evals, ours = counted_lbfgs_run(optim.LBFGS, problem, **options)
    their_calls, their_evals, theirs = counted_lbfgs_run(torch.optim.LBFGS, problem, **options)
    assert (our_calls, our_evals) == (their_calls, their_evals)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_lbfgs_with_max_iter_1_and_max_eval_5_calls_the_closure_6_times():
    # torch's count: the first evaluation, then a line search allowed 1 + (5 − 1) calls
    calls, evals, _ = counted_lbfgs_run(
        optim.LBFGS, kink, steps=1, max_iter=1, max_eval=5, line_search_fn="strong_wolfe"
    )
    assert (calls, evals) == (6, 6)


@pytest.mark.parametrize(
    "options",
    [{"tolerance_grad": math.inf}, {"tolerance_change": math.inf}, {"tolerance_change": 0.0}],
)
def test_lbfgs_takes_infinite_tolerances_as_torch_does(options):
    ours = counted_lbfgs_run(optim.LBFGS, line_search_fn="strong_wolfe", **options)
    theirs = counted_lbfgs_run(torch.optim.LBFGS, line_search_fn="strong_wolfe", **options)
    assert ours[:2] == theirs[:2]
    torch.testing.assert_close(ours[2], theirs[2], rtol=1e-9, atol=1e-12)
    if options.get("tolerance_grad") == math.inf:  # converged before moving
        assert ours[:2] == (3, 3)
        torch.testing.assert_close(ours[2], torch.tensor([-1.5, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("options", [{}, {"line_search_fn": "strong_wolfe", "history_size": 4}])
def test_lbfgs_state_dict_round_trip_is_exact_and_has_torchs_keys(options):
    params, loss = logistic_problem()
    opt = optim.LBFGS(params, **options)
    for _ in range(2):
        opt.step(with_backward(opt, loss))
    saved = copy.deepcopy(opt.state_dict())
    fresh_params, _ = logistic_problem()
    fresh = optim.LBFGS(fresh_params, **options)
    fresh.load_state_dict(copy.deepcopy(saved))
    assert fresh.state_dict()["param_groups"] == saved["param_groups"]
    opt.load_state_dict(copy.deepcopy(saved))  # and into itself
    assert opt.state_dict()["param_groups"] == saved["param_groups"]
    theirs_params, their_loss = logistic_problem()
    theirs = torch.optim.LBFGS(theirs_params, **options)
    for _ in range(2):
        theirs.step(with_backward(theirs, their_loss))
    assert saved["param_groups"] == theirs.state_dict()["param_groups"]
    assert saved["state"].keys() == theirs.state_dict()["state"].keys()
    assert saved["state"][0].keys() == theirs.state_dict()["state"][0].keys()


def gradient_norm(loss, params) -> float:
    grads = torch.autograd.grad(loss(), params)
    return torch.cat([g.reshape(-1) for g in grads]).norm().item()


@pytest.mark.parametrize("line_search_fn", [None, "backtracking"])
def test_newton_reaches_gradient_norm_1e_8_within_6_of_10_steps(line_search_fn):
    params, loss = logistic_problem()
    opt = optim.Newton(params, line_search_fn=line_search_fn)
    norms = []  # ‖∇J‖ after each step
    for _ in range(10):
        opt.step(loss)
        norms.append(gradient_norm(loss, params))
    assert opt.state[params[0]]["n_iter"] == 10
    assert max(norms[5:]) < 1e-8  # reached within 6 steps, and stays there
    # Quadratic convergence: far fewer than 10 steps were needed because, once close,
    # each step about squares the norm (a linearly convergent method would keep a
    # constant ratio), until it reaches rounding level.
    assert norms[0] > 1e-2
    for k in range(2, 5):
        assert norms[k] < norms[k - 1] ** 1.5, norms


def test_newton_converges_quadratically():
    params, loss = logistic_problem()
    opt = optim.Newton(params)
    norms = []
    for _ in range(6):
        opt.step(loss)
        norms.append(opt.state[params[0]]["grad_norm"])
    # Near the optimum the gradient norm roughly squares each step.
    assert norms[4] < norms[3] ** 1.5


def test_newton_refuses_large_problems_and_explains_why():
    big = torch.nn.Linear(100, 50)  # 5,050 parameters
    with pytest.raises(
        ValueError, match=r"5,050 parameters \(must be <= max_params=2,000\)"
    ) as err:
        optim.Newton(big.parameters())
    text = str(err.value)
    assert "O(n²) memory" in text and "O(n³) time" in text and "102.0 MB" in text
    assert "impractical" in text and "LBFGS" in text
    optim.Newton(big.parameters(), max_params=6000)  # allowed when asked for


CLOSURE_FORMS = ["returns_the_loss", "tensor_backward", "autograd_backward"]


def newton_closure(opt, loss, form):
    """A closure for ``opt`` in one of Newton's accepted forms: returning the loss only,
    or LBFGS-style (clear the gradients, loss, backward, return the loss) with either
    spelling of backward."""

    def closure():
        opt.zero_grad()
        value = loss()
        if form == "tensor_backward":
            value.backward()
        elif form == "autograd_backward":
            torch.autograd.backward(value)
        return value

    return closure


def newton_run(problem, form, steps=6, **options):
    """Newton from a fixed start: (iterates, closure calls, func_evals, [(t, λ)] per step)."""
    if problem == "logistic":
        params, loss = logistic_problem()
    else:  # Rosenbrock from where the Hessian is indefinite
        x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
        params, loss = [x], lambda: rosenbrock(x)
    opt = optim.Newton(params, **options)
    closure = newton_closure(opt, loss, form)
    calls = 0

    def counted():
        nonlocal calls
        calls += 1
        return closure()

    iterates, steps_taken = [], []
    for _ in range(steps):
        opt.step(counted)
        state = opt.state[params[0]]
        iterates.append(torch.cat([p.detach().reshape(-1) for p in params]))
        steps_taken.append((state["t"], state["damping"]))
    return iterates, calls, state["func_evals"], steps_taken


@pytest.mark.parametrize(
    ("problem", "line_search_fn"),
    [("logistic", None), ("logistic", "backtracking"), ("rosenbrock", "backtracking")],
)
def test_newton_takes_an_lbfgs_style_closure_with_identical_iterates(problem, line_search_fn):
    plain, *lbfgs_style = [
        newton_run(problem, form, line_search_fn=line_search_fn) for form in CLOSURE_FORMS
    ]
    iterates, calls, evals, steps_taken = plain
    for other in lbfgs_style:
        assert all(torch.equal(a, b) for a, b in zip(iterates, other[0]))
        assert other[1:] == (calls, evals, steps_taken)
    assert calls == evals  # each closure call is one function evaluation, searches included
    if line_search_fn:
        assert evals > len(steps_taken)  # the search evaluated trial steps
    if problem == "rosenbrock":  # the run went through damping and a shortened step
        assert any(lam > 0 for _, lam in steps_taken)
        assert any(t < 1 for t, _ in steps_taken)


def least_squares_problem():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    w_true = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    targets = inputs @ w_true + 0.3 + 0.1 * torch.randn(50, 1, generator=gen, dtype=torch.float64)
    design = torch.cat([inputs, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, targets).solution.reshape(-1)
    return inputs, targets, solution


@pytest.mark.parametrize(
    "spec", [s for s in optim.OPTIMIZERS.values() if s.closure], ids=lambda s: s.name
)
def test_full_batch_optimizers_run_torchs_lbfgs_closure_pattern(spec):
    # The training loop from torch.optim's docs ("optimizer.step(closure)"), unchanged for
    # every full-batch optimizer; on least squares each must reach the lstsq solution
    # (L-BFGS within its default tolerance_grad).
    inputs, targets, solution = least_squares_problem()
    model = torch.nn.Linear(3, 1).double()
    loss_fn = torch.nn.MSELoss()
    optimizer = spec.cls(model.parameters())
    dataset = [(inputs, targets)] * 3
    for batch, target in dataset:

        def closure(batch=batch, target=target):
            optimizer.zero_grad()
            output = model(batch)
            loss = loss_fn(output, target)
            loss.backward()
            return loss

        optimizer.step(closure)
    fitted = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    torch.testing.assert_close(fitted, solution, rtol=0, atol=1e-5)


@pytest.mark.parametrize("line_search_fn", [None, "backtracking"])
def test_newton_leaves_grad_as_the_closures_last_backward_left_it(line_search_fn):
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([x], line_search_fn=line_search_fn)
    evaluated_at = []

    def closure():
        evaluated_at.append(x.detach().clone())
        return newton_closure(opt, lambda: rosenbrock(x), "tensor_backward")()

    for _ in range(4):
        opt.step(closure)
        last = evaluated_at[-1].requires_grad_()
        (expected,) = torch.autograd.grad(rosenbrock(last), [last])
        torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
        # Backtracking's last evaluation is the step it accepts; without a search the
        # closure last ran before the step.
        assert torch.equal(evaluated_at[-1], x.detach()) == (line_search_fn is not None)


def test_newton_does_not_write_grad_for_a_closure_that_does_not():
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([x], line_search_fn="backtracking")
    sentinel = torch.full_like(x, 7.0)
    x.grad = sentinel
    opt.step(lambda: rosenbrock(x))
    assert x.grad is sentinel
    assert bool((sentinel == 7.0).all())


@pytest.mark.parametrize("form", CLOSURE_FORMS)
@pytest.mark.parametrize(
    ("bad_loss", "got"),
    [
        (lambda x: (1 - x) ** 2, r"a tensor of shape \(2,\)"),
        (lambda x: rosenbrock(x.detach()), r"a tensor without grad_fn"),
    ],
    ids=["non_scalar", "no_grad_fn"],
)
def test_newton_closure_must_return_a_scalar_loss_with_a_graph(bad_loss, got, form):
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([x])
    with pytest.raises(ValueError, match=r"must return the scalar loss tensor.*\(got " + got):
        opt.step(newton_closure(opt, lambda: bad_loss(x), form))
    assert torch.equal(x.detach(), torch.tensor([-1.0, 2.0], dtype=torch.float64))


def test_newton_closure_must_return_the_loss_tensor():
    params, loss = logistic_problem()
    opt = optim.Newton(params)
    with pytest.raises(ValueError, match=r"must return the scalar loss tensor.*\(got float\)"):
        opt.step(lambda: loss().item())
    lbfgs_style = newton_closure(opt, loss, "tensor_backward")
    with pytest.raises(ValueError, match=r"must return the scalar loss tensor.*\(got float\)"):
        opt.step(lambda: lbfgs_style().item())
    with pytest.raises(ValueError, match=r"requires a closure"):
        opt.step()


def test_newton_explains_a_closure_that_frees_the_graph():
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([x])

    def closure():  # computes the gradient itself, freeing the graph
        loss = rosenbrock(x)
        (x.grad,) = torch.autograd.grad(loss, [x])
        return loss

    with pytest.raises(
        ValueError, match=r"freed the autograd graph.*not torch\.autograd\.grad without"
    ):
        opt.step(closure)


def test_newton_damping_escapes_a_saddle():
    # f = x² + y⁴/4 − y²/2 at (0.5, 0.1): H = diag(2, 3y² − 1) is indefinite. The pure
    # Newton step would jump to the saddle (0, 0); damping makes it a descent step.
    theta = torch.tensor([0.5, 0.1], dtype=torch.float64, requires_grad=True)

    def f():
        return theta[0] ** 2 + theta[1] ** 4 / 4 - theta[1] ** 2 / 2

    opt = optim.Newton([theta], line_search_fn="backtracking")
    before = f().item()
    opt.step(f)
    assert opt.state[theta]["damping"] > 0
    assert f().item() < before
    for _ in range(20):
        opt.step(f)
    torch.testing.assert_close(theta.detach().abs(), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_newton_direction_solves_the_damped_system():
    h = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    d, lam = optim.newton_direction(g, h, 0.5)
    assert lam == 0.5
    torch.testing.assert_close((h + 0.5 * torch.eye(2, dtype=torch.float64)) @ d, -g)
