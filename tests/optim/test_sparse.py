"""Sparse gradients (``nn.Embedding(sparse=True)``): SGD and Adagrad take them as torch does.

The other first-order optimizers refuse them with torch's RuntimeError
(tests/optim/test_validation.py).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import trainlab.optim as optim

from .common import assert_same_state, first_order_specs, torch_class

SPARSE_SPECS = [spec for spec in first_order_specs() if spec.cls.apply_sparse_rule is not None]
assert {spec.name for spec in SPARSE_SPECS} == {"sgd", "adagrad"}


def without_weight_decay(options: dict) -> dict:
    """torch refuses (coupled) weight decay with sparse gradients."""
    return {k: v for k, v in options.items() if k != "weight_decay"}


CASES = [
    pytest.param(spec, without_weight_decay(options), id=f"{spec.name}-{i}")
    for spec in SPARSE_SPECS
    for i, options in enumerate(spec.variants)
]


def make_model(seed: int = 0) -> tuple[torch.nn.Embedding, torch.Tensor]:
    """A sparse embedding (6 rows, 3 never looked up) and a dense vector, in float64."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.nn.Embedding(6, 3, sparse=True, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(6, 3, generator=gen, dtype=torch.float64))
    return emb, torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_()


def loss_of(emb, v, step: int, maximize: bool = False) -> torch.Tensor:
    # rows repeat within a batch: the gradient holds repeated indices (uncoalesced)
    rows = torch.tensor([[step % 3, 1, step % 3], [1, (2 * step) % 3, 1]])
    loss = (torch.tanh(emb(rows) @ v) - 0.5).square().mean() + 0.01 * emb(rows).pow(4).sum()
    return -loss if maximize else loss


def step(opt) -> None:
    """``opt.step()``; torch's own sparse Adagrad update warns that it leaves the sparse
    invariant checks unchosen (trainlab's opts out explicitly: its indices are coalesced)."""
    with warnings.catch_warnings():
        if type(opt).__module__.startswith("torch."):
            warnings.filterwarnings("ignore", "Sparse invariant checks", UserWarning)
        opt.step()


def run(opt, emb, v, steps, start=0, maximize=False):
    for i in range(start, start + steps):
        opt.zero_grad()
        loss_of(emb, v, i, maximize).backward()
        step(opt)


def train(cls, options, steps):
    emb, v = make_model()
    opt = cls([{"params": [emb.weight]}, {"params": [v], "lr": 0.02}], **options)
    run(opt, emb, v, steps, maximize=options.get("maximize", False))
    return [emb.weight, v], opt


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize(("spec", "options"), CASES)
def test_sparse_gradients_match_torch_over_20_steps(spec, options, backend, traced_only):
    ours, opt = train(spec.cls, {**options, "backend": backend}, 20)
    theirs, ref = train(torch_class(spec), options, 20)
    assert ours[0].grad.is_sparse
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # SGD's momentum buffer stays sparse, as torch keeps it; Adagrad's sum is dense
    assert_same_state(opt, ref, rtol=1e-9, atol=1e-12)
    untouched = ours[0][3:].detach()
    torch.testing.assert_close(untouched, make_model()[0].weight[3:].detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("spec", "options"), CASES)
@pytest.mark.parametrize("direction", ["torch->trainlab", "trainlab->torch"])
def test_sparse_state_dict_moves_between_torch_and_trainlab(spec, options, direction):
    first_cls, second_cls = (torch_class(spec), spec.cls)
    if direction == "trainlab->torch":
        first_cls, second_cls = second_cls, first_cls
    maximize = options.get("maximize", False)
    _, first = train(first_cls, options, 5)
    emb, v = make_model()
    with torch.no_grad():  # continue from where the first run stopped
        emb.weight.copy_(first.param_groups[0]["params"][0])
        v.copy_(first.param_groups[1]["params"][0])
    second = second_cls([{"params": [emb.weight]}, {"params": [v], "lr": 0.02}], **options)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    run(second, emb, v, 7, start=5, maximize=maximize)
    reference, _ = train(torch_class(spec), options, 12)
    for a, b in zip([emb.weight, v], reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", [spec.name for spec in SPARSE_SPECS])
def test_coupled_weight_decay_with_sparse_gradients_is_torchs_runtime_error(name):
    spec = optim.get(name)
    for cls in (torch_class(spec), spec.cls):
        emb, v = make_model()
        opt = cls([emb.weight, v], lr=0.1, weight_decay=0.01)
        loss_of(emb, v, 0).backward()
        with pytest.raises(RuntimeError):
            opt.step()
    with pytest.raises(
        RuntimeError,
        match=rf"^Invalid weight decay \(weight_decay\) for {spec.cls.__name__} with sparse "
        r"gradients: 0\.01 \(must be 0, or decoupled_weight_decay=True",
    ):
        opt.step()


@pytest.mark.parametrize("name", [spec.name for spec in SPARSE_SPECS])
def test_decoupled_weight_decay_with_sparse_gradients_equals_the_dense_gradient(name):
    cls = optim.get(name).cls
    options = {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True}
    results = []
    for sparse in (True, False):
        emb, v = make_model()
        opt = cls([emb.weight, v], **options)
        for i in range(5):
            opt.zero_grad()
            loss_of(emb, v, i).backward()
            if not sparse:
                emb.weight.grad = emb.weight.grad.to_dense()
            opt.step()
        results.append([emb.weight.detach(), v.detach()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_sparse_gradients_after_fused_steps_match_torch(spec, options, traced_only):
    """A flat group built from dense gradients steps a later sparse one in the eager loop.

    Where torch fails (Nesterov adds its dense buffer to a sparse g), trainlab fails with
    the same exception type at the same step.
    """
    results = []
    for cls, extra in ((spec.cls, {"backend": "fused"}), (torch_class(spec), {})):
        emb, v = make_model()
        opt = cls([emb.weight, v], **options, **extra)
        failure = None
        for i in range(6):
            g_emb, g_v = torch.autograd.grad(loss_of(emb, v, i), [emb.weight, v])
            # .grad assigned, as a sparse tensor every third step (backward would add a
            # sparse gradient into the flat group's dense .grad view)
            emb.weight.grad = g_emb if i % 3 == 2 else g_emb.to_dense()
            v.grad = g_v
            try:
                step(opt)
            except RuntimeError as error:
                failure = (type(error), i)
                break
        results.append(([emb.weight.detach(), v.detach()], failure))
    (ours, our_failure), (theirs, their_failure) = results
    assert our_failure == their_failure
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_track_stats_with_a_sparse_gradient():
    emb, v = make_model()
    opt = optim.Adagrad([emb.weight, v], lr=0.1, track_stats=True)
    loss_of(emb, v, 0).backward()
    expected = torch.cat([emb.weight.grad.to_dense().reshape(-1), v.grad]).norm()
    opt.step()
    torch.testing.assert_close(opt.stats[0]["grad_norm"], expected, rtol=1e-12, atol=0)
    assert opt.stats[0]["nonfinite"] == 0


@pytest.mark.parametrize("options", [{}, {"line_search_fn": "strong_wolfe"}])
def test_lbfgs_makes_a_sparse_gradient_dense_as_torch_does(options):
    results = []
    for cls in (optim.LBFGS, torch.optim.LBFGS):
        emb, v = make_model()
        opt = cls([emb.weight, v], **options)

        def closure(opt=opt, emb=emb, v=v):
            opt.zero_grad()
            loss = loss_of(emb, v, 0)
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
        results.append(([emb.weight.detach(), v.detach()], opt.state[emb.weight]["func_evals"]))
    (ours, our_evals), (theirs, their_evals) = results
    assert our_evals == their_evals
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
