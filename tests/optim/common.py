"""A small test model shared by the optimizer tests.

Four parameters: a matrix, a bias, a 0-dim scale and one that never gets a gradient,
split over two parameter groups with different learning rates.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from trainlab.optim import OPTIMIZERS, OptimizerSpec


def make_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (3,), (), (2,)]
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def batch(dtype: torch.dtype, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 4, generator=gen, dtype=dtype)


def loss_of(params: list[torch.Tensor], x: torch.Tensor, maximize: bool = False) -> torch.Tensor:
    w, b, s, _unused = params
    out = torch.tanh(x @ w + b) * s
    loss = ((out - 0.5) ** 2).mean() + 0.05 * (w**4).sum() + 0.1 * s**2
    return -loss if maximize else loss


def default_lr(cls: type) -> float:
    return inspect.signature(cls.__init__).parameters["lr"].default


def groups(params: list[torch.Tensor], cls: type, options: dict[str, Any]) -> list[dict]:
    """Two groups; the second at half the learning rate."""
    lr = options.get("lr", default_lr(cls))
    w, b, s, unused = params
    return [{"params": [w, unused]}, {"params": [b, s], "lr": lr * 0.5}]


def train(
    cls: type, options: dict[str, Any], dtype: torch.dtype, steps: int, seed: int = 0
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    params = make_params(dtype, seed)
    opt = cls(groups(params, cls, options), **options)
    for step in range(steps):
        opt.zero_grad()
        loss_of(params, batch(dtype, step), options.get("maximize", False)).backward()
        opt.step()
    return params, opt


def assert_same_state(ours: torch.optim.Optimizer, theirs: torch.optim.Optimizer, **tol) -> None:
    """Same state keys, and tensors of the same dtype, layout and values (``tol``)."""
    a, b = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert a.keys() == b.keys()
    for index in a:
        assert a[index].keys() == b[index].keys(), f"state keys of parameter {index}"
        for key in a[index]:
            x, y = a[index][key], b[index][key]
            if isinstance(x, torch.Tensor) and x.is_sparse:  # entries may repeat: compare sums
                assert y.is_sparse, f"{key}: sparse in ours, {y.layout} in torch"
                x, y = x.to_dense(), y.to_dense()
            torch.testing.assert_close(x, y, **tol, msg=key)


def first_order_specs() -> list[OptimizerSpec]:
    return [spec for spec in OPTIMIZERS.values() if not spec.closure]


def torch_class(spec: OptimizerSpec) -> type:
    return getattr(torch.optim, spec.torch_name)


def spec_variant_ids(spec: OptimizerSpec, variants) -> list[str]:
    return [f"{spec.name}-{i}" for i in range(len(variants))]
