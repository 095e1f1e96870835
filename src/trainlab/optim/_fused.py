"""The fused backend: each parameter group's update as one compiled kernel over flat buffers.

An optimizer step is memory-bound. Per-tensor loops pay Python and kernel-launch
overhead per parameter and make one pass over memory per tensor operation. Here the
parameters, gradients and state of a group (per device and dtype) are laid out as views
into one contiguous buffer each, and the optimizer's own ``apply_rule`` — the same
function the eager backend runs per parameter — is compiled once by ``torch.compile``
(inductor: C++/OpenMP on CPU, Triton on GPU) into a single pass over those buffers.

Hyperparameters enter the compiled code as 0-dim tensors, so a learning rate changed by
a scheduler every step is new data, not a new program. Step-dependent scalars (bias
corrections) are computed in Python beforehand, once per step.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import shutil
import threading
import types
import warnings
import weakref
from numbers import Number
from typing import TYPE_CHECKING, Any

import torch
import torch.utils.dlpack
from torch import Tensor

if TYPE_CHECKING:
    from ._base import FirstOrderOptimizer

#: The ``torch.compile`` backend. Tests replace it with one that fails, to exercise the
#: fallback to the eager backend.
BACKEND: Any = "inductor"


def _update(
    param: Tensor,
    grad: Tensor,
    state: dict[str, Tensor],
    h: dict[str, Any],
    apply_rule: Any,
    before: Tensor | None,
    delta: Tensor | None,
) -> tuple[Tensor, ...] | None:
    """What gets compiled: the optimizer's rule over flat buffers, and its statistics.

    Without statistics (``before`` and ``delta`` None) it is the rule alone. With them it
    also returns sums of squares, in one of two ways:

    * ``before`` — θ's memory seen through a second tensor that the compiler does not
      know aliases ``param``. Inductor then emits one loop that loads θ_old (through
      ``before``), computes θ_new and [Σg², Σ(Δθ)², Σθ²], and stores θ_new in place: the
      statistics cost no extra pass over memory. This is correct only while the loop
      reads each element before it writes it, so the first steps are checked against a
      copy of θ (`FlatGroup._statistics`) and any mismatch switches the
      group to the second way for good.
    * ``delta`` — θ_old is cloned inside the compiled code, Δθ written to ``delta`` and
      only [Σg²] returned (a reduction over a clone of a mutated input makes inductor
      stage θ_new in a temporary and copy it back, tripling the step's cost); Σ(Δθ)² and
      Σθ² are then BLAS passes over the flat buffers, outside.
    """
    if delta is not None:
        old = param.clone()
        apply_rule(param, grad, state, h)
        delta.copy_(param - old)
        return (_square_sum(grad),)
    apply_rule(param, grad, state, h)
    if before is None:
        return None
    return _square_sum(grad), _square_sum(param - before), _square_sum(param)


def _square_sum(x: Tensor) -> Tensor:
    """Σx², accumulated in float64 for float64 buffers and in float32 otherwise.

    (Accumulating float32 in float64 costs more here: inductor then splits the loop.)
    """
    if x.dtype != torch.float64:
        x = x.float()
    return (x * x).sum()


def unaliased(buffer: Tensor) -> Tensor:
    """A second tensor over ``buffer``'s memory that torch does not know is an alias."""
    return torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(buffer))


def sum_of_squares(x: Tensor) -> Tensor:
    """Σx² of a flat buffer in one pass (BLAS dot where the dtype has one)."""
    if x.dtype in (torch.float32, torch.float64):
        return torch.dot(x, x)
    return x.float().square().sum()


#: ``_recorded.calls``: while set (a list), every call of a compiled graph in this thread
#: appends (graph, its arguments, its outputs) to it: a flat group's step through dynamo
#: records what ran, to call that graph directly in the next steps.
_recorded = threading.local()


def _recording(backend: Any) -> Any:
    """``backend`` (a ``torch.compile`` backend) with each compiled graph's calls recorded.

    Calling dynamo's compiled function checks its guards and steps through its frame
    evaluation: about 20 µs, twice the kernel itself for a small group. A flat group calls
    the same graph with the same tensors (refilled in place) every step, so once its
    call through dynamo has shown which graph ran with which arguments, it calls that
    graph directly (see `FlatGroup._call`).
    """
    if backend == "inductor":

        def compile_graph(graph_module: Any, example_inputs: Any) -> Any:
            # Imported while compiling: the import raises torch's own deprecation notices,
            # which the compiling step silences.
            from torch._inductor.compile_fx import compile_fx

            patches = {"cpp.dynamic_threads": True}
            return compile_fx(graph_module, example_inputs, config_patches=patches)

    elif isinstance(backend, str):
        compile_graph = torch._dynamo.lookup_backend(backend)
    else:
        compile_graph = backend

    def compile_recorded(graph_module: Any, example_inputs: Any) -> Any:
        graph = compile_graph(graph_module, example_inputs)

        def run(*args: Any) -> Any:
            outputs = graph(*args)
            calls = getattr(_recorded, "calls", None)
            if calls is not None:
                calls.append((graph, args, outputs))
            return outputs

        return run

    return compile_recorded


@functools.cache
def compiled_update(cls: type, variant: tuple) -> Any:
    """``_update`` compiled for one optimizer class and one variant of its switches.

    ``variant`` holds everything the compiled code branches on (flags such as
    ``amsgrad``, the dtype and device). Each variant gets its own copy of the code
    object, so dynamo compiles it once and never runs into its per-code recompile limit.
    """
    digest = hashlib.sha1(repr(variant).encode()).hexdigest()[:12]  # stable across processes
    name = f"fused_{cls.__name__}_{digest}"
    code = _update.__code__.replace(co_name=name)
    function = types.FunctionType(code, _update.__globals__, name)
    return torch.compile(function, backend=_recording(BACKEND), fullgraph=True, dynamic=True)


def compiler_available(device: torch.device) -> bool:
    """Can inductor compile for ``device`` here (a C++ compiler on CPU, Triton on CUDA)?"""
    if device.type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++"))
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def _is_switch(value: Any) -> bool:
    """Flags and names (bools, strings, None) are baked into a compiled variant."""
    kind = type(value)
    if kind is float or kind is int:  # the common cases, without the Number ABC check
        return False
    if kind is bool or kind is str or value is None:
        return True
    return not isinstance(value, Number)


def _record_gradient(group: weakref.ref, i: int, param: Tensor) -> None:
    flat = group()
    if flat is not None:
        flat.has_grad[i] = True
        if param.grad is flat.grad_views[i]:  # backward wrote into the flat buffer
            flat.hooked_writes += 1


class FlatGroup:
    """The parameters of one group on one device and dtype, as views into flat buffers."""

    def __init__(
        self,
        optimizer: FirstOrderOptimizer,
        group: dict[str, Any],
        params: list[Tensor],
        path: str = "fused",
    ):
        self.optimizer, self.group, self.params = optimizer, group, params
        #: "torch-fused": torch's fused kernel over the flat buffers where it has one for
        #: the group's settings; "fused" (or no such kernel): trainlab's compiled rule.
        self.path = path
        self.kernel_used: bool | None = None  # did the last flat step run torch's kernel?
        self.ids = {id(p) for p in params}
        self.device, self.dtype = params[0].device, params[0].dtype
        self.numels = [p.numel() for p in params]
        self.offsets = [0, *itertools.accumulate(self.numels)][:-1]
        total = sum(self.numels)
        self.param = torch.empty(total, dtype=self.dtype, device=self.device)
        # The gradients' flat buffer. A parameter's ``.grad`` becomes a view of it only
        # when zero_grad hands one out (backward then accumulates straight into it); a
        # gradient tensor of the user's or of autograd is copied in at each step, never
        # swapped for a view: as in torch.optim, ``step`` leaves ``p.grad`` alone.
        self.grad = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.has_grad = [p.grad is not None for p in params]
        # Writes into the gradient buffer since zero_grad (or the last step): its version
        # then, and how many of the writes since were backward's, recorded by the hook.
        # Any others were made by hand into the views (``p.grad += g``): see _written_views.
        self.grad_version = self.grad._version
        self.hooked_writes = 0
        for i, p in enumerate(params):
            self._view(self.param, i).copy_(p.detach())
            p.data = self._view(self.param, i)
            # The hook records that this parameter got a gradient from backward in this
            # step (into a view of self.grad or a tensor of its own). It holds the group
            # weakly and goes away with it, so a replaced optimizer leaves nothing behind.
            handle = p.register_post_accumulate_grad_hook(
                functools.partial(_record_gradient, weakref.ref(self), i)
            )
            weakref.finalize(self, handle.remove)
        self.param_ptrs = [p.data_ptr() for p in params]
        self.grad_views = [self._view(self.grad, i) for i in range(len(params))]
        self.grad_ptrs = [view.data_ptr() for view in self.grad_views]
        # adopt_state() (below) sets the flat state, the per-parameter scalars and the step:
        self.state: dict[str, Tensor | None]  # flat per-element state
        self.scalars: dict[str, Tensor]  # one number per parameter (step, ...)
        self.step: int | None  # the common step count; None once parameters differ
        self.fused_ok = True
        self._compiled: set[Any] = set()  # the compiled variants this group has called
        self.needs_adopt = False
        self._scalar_inputs: dict[str, tuple[float, Tensor]] = {}
        # (h, statistics mode, inputs, compiled update, torch kernel call or None) of the
        # last step: see fused_step.
        self._prepared: tuple[dict[str, Any], str | None, dict[str, Any], Any, Any] | None = None
        # (compiled update, its graph, the graph's arguments): see _call.
        self._direct: tuple[Any, Any, tuple[Any, ...]] | None = None
        self._kernel_steps: Tensor | None = None  # torch's kernel's step count on a GPU
        self.stats: tuple[Tensor, ...] | None = None
        # track_stats: "twin" sums inside the update loop, "delta" writes Δθ and sums
        # after it (see _update); a twin is trusted once a step has checked it.
        if self.dtype not in (torch.float32, torch.float64):
            # bfloat16/float16: the compiled loop sees θ_new before it is rounded to the
            # stored precision, so Δθ is taken from copies of the stored values instead.
            self.stats_mode = "copy"
        elif optimizer.fused_stats_in_loop:
            self.stats_mode = "twin"
        else:
            self.stats_mode = "delta"
        self.twin_checked: set[Any] = set()  # compiled variants whose sums were confirmed
        self._twin: Tensor | None = None
        self._delta: Tensor | None = None
        self.adopt_state()

    def _view(self, buffer: Tensor, i: int) -> Tensor:
        start = self.offsets[i]
        return buffer[start : start + self.numels[i]].view(self.params[i].shape)

    # -- state ---------------------------------------------------------------------------
    def adopt_state(self) -> None:
        """Move the parameters' state (fresh, or loaded) into flat buffers, as views."""
        opt = self.optimizer
        states = [opt.state.get(p) or {} for p in self.params]
        self.state, self.scalars = {}, {}
        self._prepared = None  # the state's keys may differ: check them again
        self._direct = None  # new state buffers: the recorded arguments are stale
        if not any(states):
            self.step = 0
            return
        keys = set(states[0])
        if any(set(s) != keys for s in states):
            self.step = None  # parameters at different stages: the eager loop handles them
            return
        for key in keys:
            values = [s[key] for s in states]
            if all(v is None for v in values):
                self.state[key] = None
            elif any(v is None or v.layout is not torch.strided for v in values):
                self.step = None  # partly created, or sparse (SGD's buffer after sparse steps)
                return
            elif key in opt.scalar_state:
                buffer = torch.tensor([v.item() for v in values], dtype=values[0].dtype)
                self.scalars[key] = buffer
                for i, s in enumerate(states):
                    s[key] = buffer[i]
            else:
                buffer = torch.empty_like(self.param)
                for i, s in enumerate(states):
                    view = self._view(buffer, i)
                    view.copy_(values[i])
                    s[key] = view
                self.state[key] = buffer
        steps = self.scalars.get("step")
        if steps is None:
            self.step = 0
        elif bool((steps == steps[0]).all()):
            self.step = int(steps[0].item())
        else:
            self.step = None

    def _state_ready(self) -> bool:
        """Is every parameter's state in the flat buffers, with the keys the group needs?"""
        opt = self.optimizer
        expected = opt.state_keys(self.group, self.dtype, self.device)
        if not expected:
            return True
        if set(self.state) | set(self.scalars) != expected:
            return False
        return all(buffer is not None for buffer in self.state.values())

    # -- layout --------------------------------------------------------------------------
    def check_layout(self) -> list[tuple[int, Tensor]] | None:
        """Re-point parameters that were replaced, refuse a device/dtype move, and find the
        gradients that are not this group's views of its buffer.

        Returns those gradients as (position, tensor), to be copied into the buffer just
        before a flat step (`copy_gradients`); None when a gradient cannot go into the flat
        buffer (a sparse one): the eager loop then takes the step (with the sparse rule of
        SGD and Adagrad; the other optimizers raise torch's error).
        """
        sparse = False
        foreign: list[tuple[int, Tensor]] = []  # gradient tensors of their own
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.param_ptrs[i]:
                if p.device != self.device or p.dtype != self.dtype:
                    index = self.optimizer.param_groups.index(self.group)
                    position = next(j for j, q in enumerate(self.group["params"]) if q is p)
                    raise ValueError(
                        f"Invalid parameter {position} of group {index}: it moved from "
                        f"{self.device}/{self.dtype} to {p.device}/{p.dtype} after the "
                        "optimizer's first step, but its optimizer state stays where it was "
                        "(build the optimizer after model.to(...), or move the model back)"
                    )
                self._view(self.param, i).copy_(p.detach())
                p.data = self._view(self.param, i)
                self.param_ptrs[i] = p.data_ptr()
            grad = p.grad
            if grad is None:  # set to None by hand or by model.zero_grad(): skipped
                self.has_grad[i] = False
            elif grad is self.grad_views[i]:  # the view zero_grad handed out: nothing to copy
                continue
            elif grad.layout is not torch.strided:  # sparse: no data pointer to compare
                # Not a gradient-less parameter: the eager loop must see it.
                self.has_grad[i] = True
                sparse = True
            elif not self._is_own_slot(i, grad):  # a gradient tensor of its own
                foreign.append((i, grad))
                self.has_grad[i] = True
        return None if sparse else foreign

    def _is_own_slot(self, i: int, grad: Tensor) -> bool:
        """Is ``grad`` exactly parameter ``i``'s slot of the buffer (the view, re-made)?

        The start address alone is not enough: ``p.grad.t()`` of a square weight starts
        there too but reads the slot transposed.
        """
        view = self.grad_views[i]
        return (
            grad.data_ptr() == self.grad_ptrs[i]
            and grad.dtype == view.dtype
            and grad.shape == view.shape
            and grad.stride() == view.stride()
            and grad.untyped_storage().data_ptr() == self.grad.untyped_storage().data_ptr()
        )

    def copy_gradients(self, foreign: list[tuple[int, Tensor]]) -> None:
        """Copy gradient tensors of their own into their slots of the buffer (one call)."""
        torch._foreach_copy_([self.grad_views[i] for i, _ in foreign], [g for _, g in foreign])

    def _buffer_in_use(self) -> bool:
        """Does some parameter's ``.grad`` live in the gradient buffer (a view of it)?

        Then writing into the buffer would write that gradient, and bump its version
        counter (shared by all views of the buffer), so that a view saved for a backward
        would fail as "modified by an inplace operation".
        """
        storage = self.grad.untyped_storage().data_ptr()
        return any(
            p.grad is not None
            and p.grad.layout is torch.strided
            and p.grad.untyped_storage().data_ptr() == storage
            for p in self.params
        )

    def _written_views(self) -> None:
        """Count as gradients the views that were written by hand since zero_grad.

        After zero_grad a parameter's ``.grad`` is a zero view of the buffer, and only
        backward's writes are recorded (by the hook). When the buffer was written more often
        than that (``p.grad += g``, ``p.grad.copy_(g)``, or an in-place clip), each unrecorded
        view that now holds a nonzero value counts as a gradient, as the tensor it would be in
        torch; a view left at zero stays a missing gradient. One pass, taken only then.
        """
        if self.grad._version - self.grad_version <= self.hooked_writes:
            return
        for i, p in enumerate(self.params):
            if not self.has_grad[i] and p.grad is self.grad_views[i]:
                self.has_grad[i] = bool(p.grad.any())

    def zero_grad(self, set_to_none: bool) -> set[int]:
        """Zero the flat gradient buffer; returns the ids of the parameters it cleared.

        Parameters without a gradient, and with ``set_to_none`` every parameter, get a
        zero view of the buffer as ``.grad`` (so that backward accumulates into it), and no
        parameter counts as having a gradient until backward gives one. With
        ``set_to_none=False`` a gradient tensor of the user's (or a sparse one) is left to
        the optimizer to zero in place, as torch does, and stays that parameter's ``.grad``.
        """
        self.grad.zero_()
        kept: set[int] = set()  # the user's gradient tensors, zeroed in place by the caller
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is not None:
                if grad is self.grad_views[i]:
                    continue  # the view handed out, zeroed above
                if not set_to_none:
                    kept.add(id(p))
                    continue
            p.grad = self.grad_views[i]
        if set_to_none:  # no gradient until backward gives one
            self.has_grad = [False] * len(self.params)
        self.grad_version, self.hooked_writes = self.grad._version, 0
        return self.ids - kept if kept else self.ids

    # -- the step ------------------------------------------------------------------------
    def fused_step(self, h: dict[str, Any]) -> bool:
        """One step over the whole group's flat buffers; False when the eager loop must do it.

        The step is torch's fused kernel where the group's path is "torch-fused" and torch has
        one for its settings, else trainlab's compiled rule.
        """
        try:
            return self._fused_step(h)
        finally:  # the buffer's writes from here on are the next step's to account for
            self.grad_version, self.hooked_writes = self.grad._version, 0

    def _fused_step(self, h: dict[str, Any]) -> bool:
        if not self.fused_ok:
            return False
        foreign = self.check_layout()
        if foreign is None or (foreign and self._buffer_in_use()):
            # A sparse gradient, or gradients to copy in while some ``p.grad`` lives in the
            # buffer (a view zero_grad handed out, or one transposed or moved to another
            # parameter): copying would write those gradients, and step never writes one.
            # The eager loop steps the group, so the step counts move on without
            # self.step; the next fused step takes them from the state again.
            self.needs_adopt = True
            return False
        if not all(self.has_grad):
            self._written_views()
        all_grads = all(self.has_grad)
        if self.step is None or not all_grads:
            if not all_grads and any(self.has_grad):
                self.step = None  # the eager loop steps only some parameters: counts part
            return False
        opt = self.optimizer
        if self.needs_adopt:
            self.adopt_state()
            self.needs_adopt = False
            if self.step is None:
                return False
        stats_mode = self.stats_mode if opt.track_stats else None
        prepared = self._prepared
        if prepared is None or prepared[0] != h or prepared[1] != stats_mode:
            # A new hyperparameter, a switch or a statistics mode: check the state and
            # rebuild the step's inputs. Steps that change nothing reuse them.
            if not self._state_ready():
                # The first step creates the state (and SGD's buffer from the first
                # gradient): the eager loop does it, and it moves into flat buffers next step.
                self.needs_adopt = True
                return False
            prepared = self._prepared = (dict(h), stats_mode, *self._prepare(h, stats_mode))
        _, _, inputs, update, kernel = prepared
        if foreign:  # copied only now that the flat step is certain to run
            self.copy_gradients(foreign)
        if kernel is not None:
            return self._kernel_step(kernel, h, stats_mode)
        self.kernel_used = False
        first_call = update not in self._compiled
        # Only a compiling call can fail: snapshot the counters for it, not on every step.
        saved = {k: v.clone() for k, v in self.scalars.items()} if first_call else {}
        step = None
        if "step" in self.scalars:
            self.scalars["step"].add_(1)
            step = float(self.step + 1)
        direct = True  # may the recorded graph run? Not when a switch comes from the step
        for k, v in opt.coefficients(step, h, self.scalars).items():
            if _is_switch(v):
                inputs[k], direct = v, False
            else:
                inputs[k] = self._scalar_input(k, v)
        before, delta, check = self._statistics_buffers(stats_mode, update)
        args = (self.param, self.grad, self.state, inputs, opt.apply_rule, before, delta)
        try:
            if not first_call:
                sums = self._call(update, args, direct)
            else:  # this call compiles: torch's own deprecation notices are not ours
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)
                    sums = self._call(update, args, direct)
                self._compiled.add(update)
        except Exception as error:  # compilation failed: no buffer was written yet
            for key, value in saved.items():
                self.scalars[key].copy_(value)
            self.fused_ok = False
            self._unavailable(f"the fused backend of {type(opt).__name__}", error)
            return False
        if step is not None:
            self.step += 1
        if stats_mode is not None:
            self.stats = self._statistics(sums, check, update)
        return True

    def _call(self, update: Any, args: tuple[Any, ...], direct: bool) -> Any:
        """``update(*args)``: the recorded compiled graph called directly, or through dynamo.

        Through dynamo, each call checks the guards of every input before running the
        graph. A flat group passes the same tensors every step (buffers updated in place,
        0-dim inputs refilled in place), so the graph dynamo ran last time, called with the
        same arguments, is the same computation. The recorded call is adopted only when it
        is the one graph that ran and its outputs are exactly what ``update`` returned.
        """
        recorded = self._direct
        if direct and recorded is not None and recorded[0] is update:
            outputs = recorded[1](*recorded[2])
            return tuple(outputs) if outputs else None
        _recorded.calls = calls = []
        try:
            result = update(*args)
        finally:
            _recorded.calls = None
        returned = () if result is None else tuple(result)
        if direct and len(calls) == 1:
            graph, graph_args, outputs = calls[0]
            outputs = tuple(outputs) if outputs else ()
            if len(outputs) == len(returned) and all(a is b for a, b in zip(outputs, returned)):
                self._direct = (update, graph, graph_args)
        return result

    def _kernel_step(self, kernel: Any, h: dict[str, Any], stats_mode: str | None) -> bool:
        """One step by torch's own fused kernel over the flat buffers (see `_prepare`)."""
        steps = self.scalars.get("step")
        if steps is not None:
            steps.add_(1)
            if self._kernel_steps is not None:  # the kernel's step lives on the device
                self._kernel_steps.fill_(self.step + 1)
        check = None if stats_mode is None else self.param.clone()
        try:
            kernel()
        except Exception as error:  # refused before writing (a dtype or device it lacks)
            if steps is not None:
                steps.sub_(1)
            self.path, self._prepared = "fused", None
            opt = self.optimizer
            self._unavailable(f"torch's fused {type(opt).__name__} kernel", error, "fused")
            return self.fused_step(h)
        self.kernel_used = True
        if steps is not None:
            self.step += 1
        if stats_mode is not None:
            self.stats = self._statistics(None, check, None)
        return True

    def _unavailable(self, what: str, error: Exception, instead: str = "eager") -> None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = " ".join(lines[:2])
        warnings.warn(
            f"trainlab: {what} is unavailable on {self.device} ({type(error).__name__}: "
            f"{reason[:200]}); using the {instead} backend instead (same results, slower steps)",
            RuntimeWarning,
            stacklevel=5,
        )

    def _prepare(self, h: dict[str, Any], stats_mode: str | None) -> tuple[Any, Any, Any]:
        """The step's inputs for hyperparameters ``h``: (inputs, compiled variant, kernel call).

        Switches (non-numbers) pick the variant; numbers become 0-dim tensor inputs, refilled
        in place when they change. The step-dependent coefficients are added on every step.
        On the "torch-fused" path, the kernel call is torch's fused kernel bound to the flat
        buffers and ``h`` (None where torch has no kernel for these settings).
        """
        opt = self.optimizer
        if self.path == "torch-fused":
            # The kernel reads the step count from a tensor: the first parameter's count
            # (all are equal), or a copy on the group's device.
            step = self.scalars.get("step")
            if step is not None and step.device != self.device:
                if self._kernel_steps is None:  # made once: a scheduler re-prepares every step
                    self._kernel_steps = torch.zeros(1, device=self.device, dtype=torch.float32)
                step = self._kernel_steps
            elif step is not None:
                step = step[:1]
            kernel = opt.torch_kernel(h, self.param, self.grad, self.state, step)
            if kernel is not None:
                return {}, None, kernel
        inputs: dict[str, Any] = {}
        flags = []
        for k, v in h.items():
            if _is_switch(v):
                inputs[k] = v
                flags.append((k, v))
            else:
                inputs[k] = self._scalar_input(k, v)
        inputs["first_step"] = False
        in_kernel = stats_mode if stats_mode != "copy" else None
        variant = (*flags, ("stats", in_kernel), self.dtype, self.device.type)
        return inputs, compiled_update(type(opt), variant), None

    # -- statistics ----------------------------------------------------------------------
    def _statistics_buffers(self, mode: str | None, update: Any) -> tuple[Tensor | None, ...]:
        """(before, delta, check) for ``_update``: see its docstring."""
        if mode is None:
            return None, None, None
        if mode == "copy":
            return None, None, self.param.clone()
        if mode == "delta":
            if self._delta is None:
                self._delta = torch.empty_like(self.param)
            return None, self._delta, None
        if self._twin is None:
            self._twin = unaliased(self.param)
        check = None if update in self.twin_checked else self.param.clone()
        return self._twin, None, check

    def _statistics(self, sums: tuple[Tensor, ...] | None, check: Tensor | None, update: Any):
        """[Σg², Σ(Δθ)², Σθ², non-finite count] of the step just taken.

        In "twin" mode the sums come from the update loop itself; until one step with a
        nonzero update has confirmed Σ(Δθ)² against a copy of θ taken before the step,
        each step of that compiled variant is checked, and a mismatch (a compiler that
        split the loop, so θ was written before the twin was read) moves the group to
        "delta" mode for good. Without sums from the step ("copy" mode, for bfloat16 and
        float16, and torch's kernel) all three come from the stored values and a copy of
        θ taken before the step. The non-finite count is exact: Σg² is finite exactly when
        every g is finite, unless squares overflow, and only then are the elements counted
        one by one.
        """
        if sums is None:
            wide, old = self.param, check
            if self.dtype not in (torch.float32, torch.float64):
                wide, old = wide.float(), old.float()
            sums = (_square_sum(self.grad), _square_sum(wide - old), _square_sum(wide))
            check = None
        elif len(sums) == 1 and self._delta is not None:  # "delta" mode: [Σg²] so far
            sums = (sums[0], sum_of_squares(self._delta), sum_of_squares(self.param))
        grad_sq, update_sq, param_sq = sums
        if check is not None:
            wide_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
            expected = sum_of_squares(self.param.to(wide_dtype) - check.to(wide_dtype))
            if bool(expected > 0):
                if bool(torch.isclose(update_sq.to(wide_dtype), expected, rtol=1e-3, atol=0)):
                    self.twin_checked.add(update)
                else:
                    self.stats_mode, self._twin = "delta", None
                    update_sq = expected
        nonfinite = grad_sq.new_zeros(())
        if not bool(torch.isfinite(grad_sq)):
            nonfinite = (~torch.isfinite(self.grad)).sum()
        return grad_sq, update_sq, param_sq, nonfinite

    def _scalar_input(self, name: str, value: Any) -> Tensor:
        """A number as a 0-dim tensor input of the compiled code (refilled in place)."""
        cached = self._scalar_inputs.get(name)
        if cached is not None and cached[0] == value:
            return cached[1]
        if cached is None:
            dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
            tensor = torch.zeros((), dtype=dtype, device=self.device)
        else:
            tensor = cached[1]
        tensor.fill_(value)
        self._scalar_inputs[name] = (value, tensor)
        return tensor


_KERNEL_NAMES = {True: "torch", False: "compiled", None: None}


def _stats_mode(flat: FlatGroup) -> str:
    """How the flat group's statistics are taken (torch's kernel: from a copy of θ)."""
    return "copy" if flat.kernel_used else flat.stats_mode


class FusedEngine:
    """Builds and runs the flat groups of one optimizer."""

    def __init__(self, optimizer: FirstOrderOptimizer):
        self.optimizer = optimizer
        self.groups: dict[int, list[FlatGroup]] = {}
        self._group_ids: dict[int, int] = {}
        self._group_params: dict[int, tuple[int, ...]] = {}  # ids of each group's parameters

    def _flat_groups(self, index: int, group: dict[str, Any]) -> list[FlatGroup]:
        flats = self.groups.get(index)
        if flats is not None and self._group_ids.get(index) == id(group):
            return flats
        params = group["params"]
        if flats is not None and self._group_params[index] == tuple(map(id, params)):
            # The same parameters in a new dict: load_state_dict replaced the group dicts.
            for flat in flats:
                flat.group = group
            self._group_ids[index] = id(group)
            return flats
        # New, or another group now at this index (one before it was deleted): built anew,
        # so that a removed group's parameters are not stepped with this one's settings.
        flats = []
        # A group listing a parameter twice steps it twice (as torch.optim does): one flat
        # view per parameter cannot express that, so the eager loop takes such a group.
        if self.optimizer.backend != "eager" and len({id(p) for p in params}) == len(params):
            by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for p in params:
                # Parameters without a gradient at the first step (frozen, unused) stay
                # with the eager loop, which skips them as torch.optim does; so do sparse
                # gradients and complex parameters (stepped through their real view).
                if p.grad is not None and not p.grad.is_sparse and not p.is_complex():
                    by_kind.setdefault((p.device, p.dtype), []).append(p)
            for (device, _), params in by_kind.items():
                path = self._path(device, params, group)
                if path != "eager":
                    flats.append(FlatGroup(self.optimizer, group, params, path))
        self.groups[index], self._group_ids[index] = flats, id(group)
        self._group_params[index] = tuple(map(id, params))
        return flats

    def _path(self, device: torch.device, params: list[Tensor], group: dict[str, Any]) -> str:
        """How the group's parameters on ``device`` are stepped: "eager", "fused" or
        "torch-fused" (the backend chosen, or for "auto" the one measured cheapest)."""
        opt = self.optimizer
        if opt.backend != "auto":
            return opt.backend
        compiled, kernel = compiler_available(device), opt.has_torch_kernel
        if not compiled and not kernel:  # nothing but the eager loop to choose
            return "eager"
        from .calibration import costs

        measured = costs(type(opt), device, params[0].dtype, group, optimizer=opt)
        elements = sum(p.numel() for p in params)
        return measured.choose(
            len(params), elements, opt.expected_steps, compiled=compiled, kernel=kernel
        )

    def step(self, index: int, group: dict[str, Any], h: dict[str, Any]) -> set[int]:
        """Fused steps for the group's flat parts.

        Returns the ids of the parameters the eager loop must not touch: those stepped
        here, and flat parameters that got no gradient (their ``.grad`` is a zero view of
        the flat buffer, not None, so the eager loop could not tell).
        """
        if index == 0 and len(self.groups) > len(self.optimizer.param_groups):
            self._forget_deleted_groups()
        done: set[int] = set()
        for flat in self._flat_groups(index, group):
            flat.stats = None
            if flat.fused_step(h):
                done |= flat.ids
            else:
                done |= {id(p) for p, has in zip(flat.params, flat.has_grad) if not has}
        return done

    def _forget_deleted_groups(self) -> None:
        """Drop the flat groups of indices past the last group (groups were deleted), so
        that zero_grad no longer hands their parameters views and info no longer lists them.
        """
        for index in [i for i in self.groups if i >= len(self.optimizer.param_groups)]:
            del self.groups[index], self._group_ids[index], self._group_params[index]

    def info(self) -> list[dict[str, Any]]:
        parts, tracking = [], self.optimizer.track_stats
        for index, flats in sorted(self.groups.items()):
            for flat in flats:
                fused = flat.fused_ok and flat.step is not None
                parts.append(
                    {
                        "group": index,
                        "device": str(flat.device),
                        "dtype": str(flat.dtype).replace("torch.", ""),
                        "params": len(flat.params),
                        "numel": flat.param.numel(),
                        "fused": fused,
                        "kernel": _KERNEL_NAMES[flat.kernel_used] if fused else None,
                        "stats": _stats_mode(flat) if tracking and fused else None,
                    }
                )
        return parts

    def zero_grad(self, set_to_none: bool) -> set[int]:
        """Clear the flat groups' gradients; returns the ids of the parameters cleared.

        Flat groups whose group was deleted are skipped: their parameters are no longer the
        optimizer's, and torch's zero_grad leaves them alone.
        """
        done: set[int] = set()
        for index, flats in self.groups.items():
            if self._still_holds(index):
                for flat in flats:
                    done |= flat.zero_grad(set_to_none)
        return done

    def _still_holds(self, index: int) -> bool:
        """Is the group at ``index`` still the one its flat groups were built for?"""
        groups = self.optimizer.param_groups
        if index >= len(groups):
            return False
        group = groups[index]
        if self._group_ids[index] == id(group):
            return True
        return self._group_params[index] == tuple(map(id, group["params"]))

    def readopt(self) -> None:
        """After load_state_dict: move the loaded state into the flat buffers."""
        for flats in self.groups.values():
            for flat in flats:
                flat.adopt_state()

    def merge_stats(self, index: int, eager: list[Tensor] | None) -> dict[str, Tensor]:
        sums = [torch.zeros((), dtype=torch.float64) for _ in range(4)]
        parts = [f.stats for f in self.groups.get(index, []) if f.stats is not None]
        if eager is not None:
            parts.append(tuple(eager))
        for part in parts:
            sums = [s + p.detach().double().cpu() for s, p in zip(sums, part)]
        grad_sq, update_sq, param_sq, nonfinite = sums
        return {
            "grad_norm": grad_sq.sqrt(),
            "update_ratio": update_sq.sqrt() / param_sq.sqrt().clamp_min(1e-30),
            "nonfinite": nonfinite,
        }
