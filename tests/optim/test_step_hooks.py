"""Step hooks and the profiler see trainlab's optimizers as they see torch.optim's.

trainlab calls ``step`` through torch's hook-and-profiler wrapper only while something
needs it (it costs about 25 µs a step); these tests hold it to doing so every time.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import trainlab.optim as optim


def stepped(backend: str) -> tuple[torch.optim.Optimizer, torch.nn.Parameter]:
    """An Adam with one parameter and its gradient; backend "torch" is torch.optim.Adam."""
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    if backend == "torch":
        return torch.optim.Adam([param], lr=0.1), param
    return optim.Adam([param], lr=0.1, backend=backend), param


@pytest.mark.parametrize("backend", ["torch", "eager", "fused"])
def test_instance_hooks_run_in_order_and_a_pre_hook_can_replace_the_arguments(backend):
    opt, param = stepped(backend)
    calls: list[str] = []
    closure_calls: list[int] = []

    def closure():
        closure_calls.append(1)
        return torch.tensor(0.0)

    def pre(optimizer, args, kwargs):
        calls.append("pre")
        assert optimizer is opt
        return args, {"closure": closure}  # (args hold the optimizer) with this closure

    opt.register_step_pre_hook(pre)
    post = opt.register_step_post_hook(lambda optimizer, args, kwargs: calls.append("post"))
    for _ in range(3):
        opt.step()
    assert calls == ["pre", "post"] * 3 and len(closure_calls) == 3
    post.remove()
    opt.step()
    assert calls[-1] == "pre"  # the removed post hook is gone; the pre hook still runs
    assert not torch.equal(param.detach(), torch.ones(4))


def test_a_global_hook_sees_every_optimizer_step():
    opt, _ = stepped("fused")
    seen: list[str] = []
    handle = register_optimizer_step_post_hook(lambda o, a, k: seen.append(type(o).__name__))
    try:
        opt.step()
        opt.step()
    finally:
        handle.remove()
    opt.step()
    assert seen == ["Adam", "Adam"]


def test_the_profiler_sees_the_step_by_torch_optims_name():
    opt, _ = stepped("eager")
    opt.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = {event.name for event in prof.events()}
    assert "Optimizer.step#Adam.step" in names


def test_without_hooks_the_step_skips_torchs_wrapper(monkeypatch):
    opt, _ = stepped("eager")
    wrapped: list[int] = []
    original = torch.autograd.profiler.record_function.__enter__

    def counting(self):
        wrapped.append(1)
        return original(self)

    monkeypatch.setattr(torch.autograd.profiler.record_function, "__enter__", counting)
    opt.step()
    assert wrapped == []
    opt.register_step_pre_hook(lambda o, a, k: None)
    opt.step()
    assert wrapped == [1]
