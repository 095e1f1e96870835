"""Bookkeeping shared by every trainlab optimizer.

The math lives in one small *rule* per algorithm (``sgd.py``, ``adam.py``, ...): a pure
tensor function of (parameter, gradient, state tensors, hyperparameters). This module
is everything around it: parameter groups, hyperparameter checks, lazily created
state in ``torch.optim``'s format, the loop over parameters, and the two pieces every
first-order method shares — ``maximize`` and (coupled or decoupled) weight decay.

Subclassing ``torch.optim.Optimizer`` keeps trainlab optimizers drop-in: LR
schedulers, ``state_dict()`` / ``load_state_dict()``, ``zero_grad()`` and hooks work
as they do for torch's own classes.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from .. import _checks
from .._checks import Check
from ._ops import add_scaled

# Keys torch's LR schedulers and param-name support add to groups; legal in a group.
_SCHEDULER_KEYS = frozenset(
    {
        "params",
        "param_names",
        "initial_lr",
        "max_lr",
        "min_lr",
        "base_lr",
        "max_momentum",
        "base_momentum",
        "swa_lr",
    }
)

# torch.optim keywords that select an implementation, not the math. trainlab accepts the
# harmless ones so that swapping `torch.optim.X(..., foreach=True)` for `trainlab.optim.X`
# just works; the rest must stay at their "off" value.
TORCH_COMPAT_CHECKS: dict[str, Check] = {
    "foreach": _checks.optional_flag,
    "fused": _checks.optional_flag,
    "capturable": _checks.must_be_false("trainlab steps are not CUDA-graph capturable"),
    "differentiable": _checks.must_be_false(
        "trainlab does not differentiate through optimizer steps"
    ),
}


@functools.cache
def _hyperparameter_names(cls: type) -> tuple[str, ...]:
    """The group keys ``cls``'s rules read: its declared hyperparameters.

    Everything else a group may carry — ``params``, the torch-compatibility switches
    (``foreach``, ...), keys torch's schedulers add (``initial_lr``, ``max_lr``, ...) and
    user labels (``"name"``) — stays out, so that it neither becomes a compiled variant
    of the fused backend nor a tensor input refilled every step.
    """
    return tuple(k for k in cls.checks if k not in TORCH_COMPAT_CHECKS)


def scalar_dtype() -> torch.dtype:
    """dtype of the 0-dim ``step`` tensors, as torch.optim stores them."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def as_float(value: float | Tensor) -> float:
    """A hyperparameter as a Python number (torch allows a 0-dim tensor learning rate)."""
    return value.item() if isinstance(value, Tensor) else float(value)


def reject_unknown(cls_name: str, unknown: dict[str, Any], known: Iterable[str]) -> None:
    """Constructor guard: an unknown keyword is a ValueError naming it and the allowed ones."""
    if unknown:
        name = sorted(unknown)[0]
        allowed = ", ".join(sorted(known))
        raise ValueError(
            f"Invalid keyword for {cls_name}: {name!r} (unknown; allowed keywords: {allowed})"
        )


def apply_weight_decay(
    param: Tensor, grad: Tensor, *, lr: float, weight_decay: float, decoupled: bool
) -> Tensor:
    """L2 regularisation in the gradient, or decoupled decay of the weights.

    Coupled (L2):  g ← g + λ·θ   — the decay then passes through the method's scaling.
    Decoupled:     θ ← θ·(1 − η·λ) — applied to the weights, outside the adaptive scaling
    (Loshchilov & Hutter, 2019). The two are the same for plain SGD and differ for any
    method that rescales the gradient (momentum, AdaGrad, RMSProp, Adam, ...).
    """
    if decoupled:
        param.mul_(1 - lr * weight_decay)
        return grad
    return add_scaled(grad, param, weight_decay)


def check_fused_support(index: int, group: dict[str, Any], positions: Iterable[int]) -> list[int]:
    """``fused=True`` on a parameter torch's fused kernels cannot run on: torch's error.

    The keyword asks for torch's fused implementation, which takes real floating-point
    parameters on the devices it has kernels for (not ``meta``, for instance); torch.optim
    refuses the others with this RuntimeError at the step, and so does trainlab, so that a
    model built on the meta device fails where it fails in torch, before any flat buffer is
    built. Checks the parameters at ``positions`` of the group; those without a gradient are
    not checked, as in torch, and are returned: they are checked once they get one, and a
    parameter that never does (a frozen layer) costs a step no more than a look at ``.grad``.
    """
    params, supported, unchecked = group["params"], None, []
    for position in positions:
        p = params[position]
        if p.grad is None:
            unchecked.append(position)
            continue
        if supported is None:
            supported = _get_fused_kernels_supported_devices()
        if p.device.type not in supported or not p.is_floating_point():
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {supported} but {p.dtype} and {p.device.type} (parameter "
                f"{position} of group {index} is on {p.device.type}; with fused=True, create "
                "the parameters on one of those devices as a real floating-point tensor, e.g. "
                "model.to_empty(device='cpu') for a model built on meta, or leave out fused)"
            )
    return unchecked


def _hooks_when_present(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` inside torch.optim's wrapper only while a hook or the profiler needs it.

    torch.optim wraps every ``step`` in a profiler range and loops over the step hooks:
    about 25 µs a step, a third of a small group's whole fused step. This wrapper takes
    torch's path (the same ``profile_hook_step``) whenever a step pre/post hook is
    registered, globally or on the optimizer, or the autograd profiler runs, and calls
    ``step`` directly otherwise. Marked ``hooked`` so that torch does not wrap it again.
    """
    # torch keeps the global hooks in module-level dicts with no public accessor.
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

    with_hooks = torch.optim.Optimizer.profile_hook_step(step)
    profiling = torch._C._autograd._profiler_enabled

    @functools.wraps(step)
    def wrapper(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
            or profiling()
        ):
            return with_hooks(self, *args, **kwargs)
        return step(self, *args, **kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


class TrainlabOptimizer(torch.optim.Optimizer):
    """Common base: validated parameter groups in ``torch.optim``'s format."""

    #: keyword -> check, for every hyperparameter a group may carry.
    checks: ClassVar[dict[str, Check]] = {}
    #: Complex parameters are optimized as their real view (torch.view_as_real), as in
    #: torch.optim; False where the method needs a real vector space (Newton's Hessian).
    complex_parameters: ClassVar[bool] = True
    #: Group keys that define the algorithm rather than tune it: ``load_state_dict`` keeps
    #: the values this optimizer has (torch.optim.AdamW keeps ``decoupled_weight_decay``
    #: the same way, so that an Adam state_dict cannot turn AdamW back into Adam).
    kept_on_load: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, keywords: dict[str, Any]) -> None:
        """``keywords``: the subclass constructor's ``locals()`` — its signature is the list
        of hyperparameters, and ``**unknown`` collects misspelled ones."""
        hidden = {"self", "params", "unknown", "__class__"}
        unknown = keywords.get("unknown", {})
        # A torch keyword the signature leaves out but the checks know (``fused`` where
        # torch has no fused kernel of the algorithm): its check says what it allows.
        for name in sorted(unknown.keys() & self.checks.keys()):
            self.checks[name](name, unknown[name])
        unknown = {k: v for k, v in unknown.items() if k not in self.checks}
        reject_unknown(type(self).__name__, unknown, self.checks)
        defaults = {k: v for k, v in keywords.items() if k not in hidden}
        self._validate_hyperparameters(defaults, where="")
        self._check_combination(defaults)
        super().__init__(params, defaults)

    # -- validation ------------------------------------------------------------------
    def _validate_hyperparameters(self, group: dict[str, Any], where: str) -> None:
        for name, value in group.items():
            if name in _SCHEDULER_KEYS:
                continue
            check = self.checks.get(name)
            if check is None:
                self._check_extra_key(name, where)
                continue
            check(name, value)

    def _check_extra_key(self, name: str, where: str) -> None:
        """Refuse a group key that looks like a mistake; let user metadata ("name") pass.

        A key is refused when it is a hyperparameter of another trainlab optimizer
        (``momentum`` given to Adam) or a near-miss of one of this optimizer's
        (``betas1``); torch.optim would silently ignore both.
        """
        from .registry import OPTIMIZERS

        others = {k for spec in OPTIMIZERS.values() for k in getattr(spec.cls, "checks", {})}
        close = difflib.get_close_matches(name, list(self.checks), n=1, cutoff=0.8)
        if name in others or close:
            hint = f"did you mean {close[0]!r}? " if close else ""
            allowed = ", ".join(sorted(set(self.checks) | {"params"}))
            raise ValueError(
                f"Invalid parameter group key{where}: {name!r} (unknown to "
                f"{type(self).__name__}; {hint}allowed keys: {allowed})"
            )

    def _check_combination(self, group: dict[str, Any]) -> None:
        """Constraints between hyperparameters (e.g. Nesterov needs momentum)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group after checking it as the constructor checks its groups.

        The parameters must be leaf floating-point tensors (complex ones where the algorithm
        supports them) in an ordered collection, and in no other group; a misspelled or
        invalid hyperparameter is refused with a message naming it. Keys the group leaves
        out take the optimizer's defaults, as in ``torch.optim``.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        index = len(self.param_groups)
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list instead."
            )
        params = list(params) if params is not None else []
        param_group["params"] = params
        tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        for i, p in enumerate(tensors):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"Invalid parameter {i} of group {index}: {torch.typename(p)} "
                    "(must be a torch.Tensor)"
                )
            if not (p.is_floating_point() or (p.is_complex() and self.complex_parameters)):
                kinds = "floating-point or complex"
                if not self.complex_parameters:
                    kinds = "real floating-point"
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: dtype {p.dtype} (must be a "
                    f"{kinds} tensor; {type(self).__name__} cannot optimize other dtypes)"
                )
            if not p.is_leaf:
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: a non-leaf tensor "
                    "(optimize the leaf tensor it was computed from, e.g. `w = w.detach()"
                    ".requires_grad_()`)"
                )
        hyper = {k: v for k, v in param_group.items() if k != "params"}
        self._validate_hyperparameters(hyper, where=f" in group {index}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(tensors):
            if id(p) in seen:
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: it already belongs to another "
                    "parameter group (a parameter may appear in only one group)"
                )
        self._check_combination({**self.defaults, **param_group})
        if len({id(p) for p in tensors}) != len(tensors):
            # torch.optim warns and keeps the duplicates (each occurrence is stepped); so
            # does trainlab, to stay drop-in.
            warnings.warn(
                f"optimizer contains a parameter group with duplicate parameters (group "
                f"{index}); each occurrence is updated, as in torch.optim — list each "
                "parameter once",
                UserWarning,
                stacklevel=3,
            )
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``, after checking the saved groups.

        Their hyperparameters are restored (as in torch), so they are validated first,
        like a group given to the constructor: a group of another optimizer (SGD's
        ``momentum`` loaded into Adam) is refused, and a failed load changes nothing.
        The ``kept_on_load`` keys keep this optimizer's values.
        """
        for index, group in enumerate(state_dict["param_groups"]):
            hyper = {k: v for k, v in group.items() if k != "params"}
            self._validate_hyperparameters(hyper, where=f" in group {index} of the state_dict")
            self._check_combination({**self.defaults, **hyper})
        kept = [{k: g[k] for k in self.kept_on_load if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, values in zip(self.param_groups, kept):
            group.update(values)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state saved by torch.optim lacks trainlab's extra switches: use the defaults.
        # (Only this class's own keywords: torch's __setstate__ adds ``differentiable`` to
        # the defaults of every optimizer, LBFGS included, whose groups have no such key.)
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                if key in self.checks:
                    group.setdefault(key, value)
        for param_state in self.state.values():  # checkpoints of old torch versions
            step = param_state.get("step")
            if step is not None and not isinstance(step, Tensor):
                param_state["step"] = torch.tensor(float(step), dtype=scalar_dtype())


#: How a first-order optimizer steps its groups (its ``backend`` keyword): "eager" (one
#: update per parameter), "fused" (trainlab's compiled rule, one pass over a group's flat
#: buffers), "torch-fused" (torch's own fused kernel over the same buffers, where torch has
#: one for the settings) and "auto" (the one measured cheapest for each group).
BACKENDS = ("auto", "eager", "fused", "torch-fused")


class FirstOrderOptimizer(TrainlabOptimizer):
    """Bookkeeping around a first-order update rule, run eagerly or compiled.

    A subclass provides:

    - ``init_state(param, group)``: the state tensors of one parameter, created on its
      first step, with torch.optim's keys (entries named in ``lazy_state`` start as
      ``None`` and are created as zeros on the first step, which the rule is told through
      ``h["first_step"]``);
    - ``coefficients(step, h, state)``: the step-dependent scalars of the algorithm
      (bias corrections, decayed learning rates), as Python numbers;
    - ``apply_rule(param, grad, state, h)``: a static function that prepares the
      gradient (``maximize``, weight decay) and calls the algorithm's rule.

    ``apply_rule`` is the only place the math runs. The eager backend calls it once per
    parameter; the fused backend (``_fused.py``) calls the *same* function once per
    parameter group, compiled, over flat buffers that hold every parameter, gradient and
    state tensor of the group. Where torch has a fused kernel of the algorithm, a subclass
    also binds it to those buffers in ``torch_kernel`` (the "torch-fused" backend).
    """

    #: Hyperparameters whose truth value decides which state keys ``init_state`` creates
    #: (AMSGrad's maximum, centered RMSprop's mean, momentum buffers).
    state_switches: ClassVar[tuple[str, ...]] = ()
    #: 0-dim state entries (one number per parameter), kept outside the compiled rule.
    scalar_state: ClassVar[tuple[str, ...]] = ("step",)
    #: State entries ``init_state`` leaves as None, created from the first gradient.
    lazy_state: ClassVar[tuple[str, ...]] = ()
    #: True when ``coefficients`` advances state (then it runs once per parameter).
    coefficients_update_state: ClassVar[bool] = False
    #: The rule for a sparse gradient (``torch.nn.Embedding(sparse=True)``), or None
    #: where torch.optim refuses sparse gradients (with a RuntimeError, as here).
    apply_sparse_rule: ClassVar[Callable[..., None] | None] = None
    #: ``track_stats`` on the fused backend: sum the statistics inside the compiled
    #: update loop. False for rules whose θ update reads a state value the same step
    #: overwrites (AdaDelta's E[Δθ²]): inductor then splits the loop and stages θ, which
    #: costs more than summing in separate passes afterwards.
    fused_stats_in_loop: ClassVar[bool] = True
    #: Does torch have a fused kernel of this algorithm (`torch_kernel`)?
    has_torch_kernel: ClassVar[bool] = False

    def __init__(self, params: Any, keywords: dict[str, Any]) -> None:
        from ._fused import FusedEngine

        backend = keywords.pop("backend", "auto")
        track_stats = keywords.pop("track_stats", False)
        _checks.one_of(*BACKENDS)("backend", backend)
        _checks.flag("track_stats", track_stats)
        if backend == "torch-fused" and not self.has_torch_kernel:
            raise ValueError(
                f"Invalid backend for {type(self).__name__}: 'torch-fused' (torch has no fused "
                f"{type(self).__name__} kernel; use 'fused', trainlab's compiled one, or 'auto')"
            )
        super().__init__(params, keywords)
        self.backend: str = backend
        self.track_stats: bool = track_stats
        #: How many steps the run will take, when known (the trainer sets it). With
        #: ``backend="auto"`` a group is compiled only if the steps' saving repays the
        #: compilation; None (the default) takes the run to be long.
        self.expected_steps: int | None = None
        #: per parameter group, after each step with ``track_stats=True``: gradient norm
        #: ‖g‖, update ratio ‖Δθ‖/‖θ‖ and the number of non-finite gradient elements.
        self.stats: list[dict[str, Tensor]] = []
        self._state_keys_cache: dict[tuple, frozenset[str]] = {}
        #: per group with ``fused=True`` (by id): the positions of the parameters that
        #: `check_fused_support` has not checked yet, having had no gradient so far.
        self._fused_unchecked: dict[int, list[int]] = {}
        self._engine = FusedEngine(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients; fused groups zero their flat gradient buffer in one pass.

        With ``set_to_none=True`` (the default, as in torch) a fused group gives its
        parameters zero views of that buffer as gradients, so that backward accumulates
        into it, and records instead that no parameter has a gradient until backward
        provides one. This is the only place the optimizer sets ``p.grad``: ``step`` reads
        a gradient tensor of the user's (copying it into the buffer) and never replaces or
        writes it, as torch.optim's ``step`` does not.
        """
        fused = self._engine.zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or id(p) in fused:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._fused_unchecked.clear()  # new group dicts
        self._engine.readopt()  # fused groups move the loaded state into their buffers

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(backend=self.backend, track_stats=self.track_stats)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from ._fused import FusedEngine

        super().__setstate__(state)
        if "_engine" not in self.__dict__:  # unpickled or deep-copied: flat groups rebuild
            self.__dict__.setdefault("backend", "auto")
            self.__dict__.setdefault("track_stats", False)
            self.__dict__.setdefault("expected_steps", None)
            self.stats = []
            self._state_keys_cache = {}
            self._fused_unchecked = {}
            self._engine = FusedEngine(self)

    def backend_info(self) -> list[dict[str, Any]]:
        """Where the fused backend runs: one entry per flat buffer set (group, device, dtype).

        ``fused`` is True while that part is stepped over its flat buffers, False once it
        fell back to the eager loop (compilation failed, or its parameters' step counts
        diverged because some got no gradient in a step). ``kernel`` says what took its
        last step: ``"compiled"`` (trainlab's rule) or ``"torch"`` (torch's fused kernel;
        None before the first flat step). ``stats`` (with
        ``track_stats=True``) is ``"twin"`` while the statistics are summed inside the
        compiled update and ``"delta"`` where they take separate passes after it.
        """
        return self._engine.info()

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The state of ``param`` in ``group``, created on its first step, with torch.optim's keys.

        Entries named in ``lazy_state`` start as None and are created from the first gradient.
        """
        raise NotImplementedError

    def coefficients(
        self, step: float | None, h: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, float]:
        """The step-dependent scalars of the algorithm for step ``step`` (default: none).

        Bias corrections and decayed learning rates, as Python numbers; they are merged into
        ``h`` before `apply_rule` runs.
        """
        return {}

    def state_keys(
        self, group: dict[str, Any], dtype: torch.dtype, device: torch.device
    ) -> frozenset[str]:
        """The state keys ``init_state`` gives a parameter of this group (its switches decide)."""
        key = (*(bool(group.get(name)) for name in self.state_switches), dtype, device)
        keys = self._state_keys_cache.get(key)
        if keys is None:
            dummy = torch.zeros((), dtype=dtype, device=device)
            keys = self._state_keys_cache[key] = frozenset(self.init_state(dummy, group))
        return keys

    def torch_kernel(
        self,
        h: dict[str, Any],
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        step: Tensor | None,
    ) -> Callable[[], None] | None:
        """torch's fused kernel of this algorithm bound to flat buffers, or None.

        A call without arguments steps ``param`` and ``state`` from ``grad`` with
        hyperparameters ``h``, reading the step count (already advanced) from ``step``. None
        where torch has no kernel for these settings (the default: no kernel at all).
        """
        return None

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        """Update ``param`` and its ``state`` in place from ``grad``, with hyperparameters ``h``.

        A static function: it prepares the gradient (``maximize``, weight decay) and calls the
        algorithm's update rule. The eager backend calls it once per parameter, the fused backend
        once per group over flat buffers, compiled.
        """
        raise NotImplementedError

    def apply_rule_to_real_view(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]
    ) -> None:
        """``apply_rule`` for a complex parameter: on the real views of θ, g and the state.

        As in torch.optim, a complex number counts as two real coordinates (real and
        imaginary part), each with its own moments; the state stays complex, in torch's
        ``state_dict`` format, and the rule updates it through the views.
        """
        real = {k: as_real(v) for k, v in state.items()}
        self.apply_rule(as_real(param), as_real(grad), real, h)

    def sparse_rule(self, h: dict[str, Any]) -> Callable[..., None]:
        """The rule for a sparse gradient, or the RuntimeError torch.optim raises."""
        name = type(self).__name__
        if self.apply_sparse_rule is None:
            raise RuntimeError(
                f"{name} does not support sparse gradients (use torch.nn.Embedding("
                "sparse=False), or SGD, Adagrad or torch.optim.SparseAdam for sparse ones)"
            )
        if h["weight_decay_on"] and not h["decoupled_weight_decay"]:
            raise RuntimeError(
                f"Invalid weight decay (weight_decay) for {name} with sparse gradients: "
                f"{h['weight_decay']} (must be 0, or decoupled_weight_decay=True: L2 decay "
                "would make the gradient dense)"
            )
        return self.apply_sparse_rule

    def hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        """The group's hyperparameters for the rule: numbers, with betas split in two.

        Only the hyperparameters the class declares (``checks``, less the torch
        compatibility switches) are taken, plus the switches derived here.
        """
        h = {k: group[k] for k in _hyperparameter_names(type(self)) if k in group}
        h["lr"] = as_float(h["lr"])
        h["weight_decay"] = as_float(h["weight_decay"])
        # Switches, so that compiled code branches on Python values, not on tensors.
        h["weight_decay_on"] = h["weight_decay"] != 0
        h["momentum_on"] = h.get("momentum", 0) != 0
        if "betas" in h:
            h["beta1"], h["beta2"] = (as_float(b) for b in h.pop("betas"))
        return h

    @_hooks_when_present
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.stats = []
        for index, group in enumerate(self.param_groups):
            if group.get("fused"):
                self._check_fused_support(index, group)
            h = self.hyperparameters(group)
            done = self._engine.step(index, group, h)
            params = group["params"]
            rest = [p for p in params if id(p) not in done] if done else params
            eager_stats = self._eager_step(rest, group, h)
            if self.track_stats:
                self.stats.append(self._engine.merge_stats(index, eager_stats))
        return loss

    def _check_fused_support(self, index: int, group: dict[str, Any]) -> None:
        """`check_fused_support` for the group's parameters not checked yet (each once)."""
        unchecked = self._fused_unchecked.get(id(group))
        if unchecked is None:
            unchecked = range(len(group["params"]))
        elif not unchecked:
            return
        self._fused_unchecked[id(group)] = check_fused_support(index, group, unchecked)

    def _eager_step(
        self, params: list[Tensor], group: dict[str, Any], h: dict[str, Any]
    ) -> list[Tensor] | None:
        """The per-parameter loop; returns [Σg², Σ(Δθ)², Σθ², non-finite] if tracking."""
        sums = None
        expected: frozenset[str] | None = None
        cached_key: tuple | None = None
        rule_h: dict[str, Any] = {}
        apply_rule, lazy_state, all_state = self.apply_rule, self.lazy_state, self.state
        started: set[int] = set()  # parameters whose lazy buffers this step created
        for param in params:
            grad = param.grad
            if grad is None:
                continue
            rule = apply_rule
            if grad.is_sparse:
                rule = self.sparse_rule(h)
            elif param.is_complex():
                rule = self.apply_rule_to_real_view
            state = all_state.get(param)
            if not state:
                state = self.init_state(param, group)
                if state:  # like torch.optim, stateless steps leave no state entry
                    all_state[param] = state
            else:  # a switch turned on mid-run (amsgrad, centered, momentum) needs buffers
                if expected is None:
                    expected = self.state_keys(group, param.dtype, param.device)
                if not expected <= state.keys():
                    fresh = self.init_state(param, group)
                    state.update({k: v for k, v in fresh.items() if k not in state})
            first_step = False
            for key in lazy_state:  # buffers made from the first gradient (SGD)
                if key not in state:
                    continue
                if state[key] is None:  # shaped like g: sparse for a sparse g, as in torch
                    state[key] = torch.zeros_like(grad)
                    started.add(id(param))
                    first_step = True
                elif started and id(param) in started:  # listed twice: torch restarts it
                    first_step = True
            step = None
            if "step" in state:
                state["step"] += 1
                step = state["step"].item()
            # Parameters at the same step share the scalars (unless computing them
            # updates the state, as NAdam's running product of momenta does).
            key = (step, first_step)
            if key != cached_key or self.coefficients_update_state:
                rule_h = {**h, **self.coefficients(step, h, state), "first_step": first_step}
                cached_key = key
            if self.track_stats:
                before = param.clone()
                rule(param, grad, state, rule_h)
                sums = accumulate_stats(sums, grad, param, before)
            else:
                rule(param, grad, state, rule_h)
        return sums


def as_real(x: Any) -> Any:
    """A complex tensor's real view (last dimension: real, imaginary); anything else as is."""
    return torch.view_as_real(x) if isinstance(x, Tensor) and x.is_complex() else x


def accumulate_stats(
    sums: list[Tensor] | None, grad: Tensor, param: Tensor, before: Tensor
) -> list[Tensor]:
    """Add one parameter's [Σg², Σ(Δθ)², Σθ², non-finite count] to ``sums``."""
    if grad.is_sparse:  # its stored values: the same sums, the zeros are finite
        grad = grad.coalesce().values()
    grad, param, before = as_real(grad), as_real(param), as_real(before)
    parts = [
        grad.double().square().sum(),
        (param - before).double().square().sum(),
        param.double().square().sum(),
        (~torch.isfinite(grad)).sum().double(),
    ]
    return parts if sums is None else [a + b for a, b in zip(sums, parts)]


def prepare_gradient(param: Tensor, grad: Tensor, h: dict[str, Any]) -> Tensor:
    """The two steps every first-order rule starts with: ``maximize`` and weight decay."""
    if h["maximize"]:
        grad = -grad
    if h["weight_decay_on"]:
        grad = apply_weight_decay(
            param,
            grad,
            lr=h["lr"],
            weight_decay=h["weight_decay"],
            decoupled=h["decoupled_weight_decay"],
        )
    return grad


def step_counter() -> Tensor:
    """The 0-dim ``step`` tensor torch.optim keeps per parameter."""
    return torch.tensor(0.0, dtype=scalar_dtype())


def no_torch_kernel(algorithm: str) -> Check:
    """The check of ``fused`` for an algorithm torch has no fused kernel of.

    torch's class has no such keyword; trainlab's takes its off values (False, None), as
    code written for the classes that have one passes them, and refuses True by saying
    why, not as an unknown keyword.
    """

    def check(name: str, value: Any) -> None:
        _checks.optional_flag(name, value)
        if value:
            raise _checks.fail(
                name,
                value,
                f"must be False or None: torch has no fused {algorithm} kernel; "
                'backend="fused" runs trainlab\'s compiled step over flat buffers',
            )

    return check


def first_order_checks(**specific: Check) -> dict[str, Check]:
    """Checks for the keywords every first-order optimizer takes, plus ``specific``."""
    return {
        "lr": _checks.nonnegative,
        "weight_decay": _checks.nonnegative,
        "maximize": _checks.flag,
        "decoupled_weight_decay": _checks.flag,
        **TORCH_COMPAT_CHECKS,
        **specific,
    }
