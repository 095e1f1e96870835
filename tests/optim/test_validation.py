"""Bad input: a ValueError that names the argument, the bad value and what is allowed."""

from __future__ import annotations

import math

import pytest
import torch

import trainlab.optim as optim
from trainlab.optim import OPTIMIZERS
from trainlab.optim._base import FirstOrderOptimizer


def params():
    return [torch.zeros(3, requires_grad=True)]


NAN, INF = math.nan, math.inf

# (class, keywords, message regex)
BAD = [
    (
        optim.SGD,
        {"lr": -0.1},
        r"Invalid learning rate \(lr\): -0\.1 \(must be a finite number >= 0\)",
    ),
    (optim.SGD, {"lr": NAN}, r"Invalid learning rate \(lr\): nan \(must be a finite number >= 0\)"),
    (optim.Adam, {"lr": INF}, r"Invalid learning rate \(lr\): inf"),
    (optim.Adam, {"lr": torch.tensor(NAN)}, r"Invalid learning rate \(lr\): nan"),
    (optim.Adam, {"lr": "0.1"}, r"Invalid learning rate \(lr\): '0\.1'"),
    (
        optim.Adam,
        {"betas": (1.0, 0.999)},
        r"Invalid betas: \(1\.0, 0\.999\) "
        r"\(must be a pair \(beta1, beta2\) of numbers in \[0, 1\)\)",
    ),
    (optim.Adam, {"betas": (0.9, -0.1)}, r"Invalid betas: \(0\.9, -0\.1\)"),
    (optim.Adam, {"betas": (0.9, NAN)}, r"Invalid betas: \(0\.9, nan\)"),
    (optim.Adam, {"betas": 0.9}, r"Invalid betas: 0\.9"),
    (optim.NAdam, {"betas": (0.9,)}, r"Invalid betas"),
    (optim.Adam, {"eps": 0.0}, r"Invalid epsilon \(eps\): 0\.0 \(must be a finite number > 0\)"),
    (optim.Adagrad, {"eps": NAN}, r"Invalid epsilon \(eps\): nan"),
    (optim.RMSprop, {"eps": -1e-8}, r"Invalid epsilon \(eps\): -1e-08"),
    (
        optim.AdamW,
        {"weight_decay": -0.01},
        r"Invalid weight decay \(weight_decay\): -0\.01 \(must be a finite number >= 0\)",
    ),
    (optim.SGD, {"momentum": -0.9}, r"Invalid momentum: -0\.9 \(must be a number in \[0, 1\)\)"),
    (optim.SGD, {"momentum": 1.0}, r"Invalid momentum: 1\.0"),
    (optim.RMSprop, {"momentum": -0.5}, r"Invalid momentum: -0\.5"),
    (optim.SGD, {"dampening": 1.5}, r"Invalid dampening: 1\.5 \(must be a number in \[0, 1\]\)"),
    (optim.Adagrad, {"lr_decay": -1.0}, r"Invalid learning rate decay \(lr_decay\): -1\.0"),
    (optim.Adagrad, {"initial_accumulator_value": -1.0}, r"Invalid initial accumulator value"),
    (
        optim.RMSprop,
        {"alpha": 1.5},
        r"Invalid smoothing constant \(alpha\): 1\.5 \(must be a number in \[0, 1\]\)",
    ),
    (optim.RMSprop, {"alpha": -0.1}, r"Invalid smoothing constant \(alpha\): -0\.1"),
    (
        optim.Adadelta,
        {"rho": 1.1},
        r"Invalid decay rate \(rho\): 1\.1 \(must be a number in \[0, 1\]\)",
    ),
    (
        optim.NAdam,
        {"momentum_decay": -0.004},
        r"Invalid momentum decay \(momentum_decay\): -0\.004",
    ),
    (
        optim.SGD,
        {"nesterov": True},
        r"Invalid nesterov: True \(requires momentum > 0 and dampening = 0, got momentum=0",
    ),
    (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, r"dampening=0\.1"),
    (
        optim.SGD,
        {"momentum_form": "polyak"},
        r"Invalid momentum_form: 'polyak' \(must be one of 'rho', 'cs231n', 'ema'\)",
    ),
    (optim.Adam, {"amsgrad": "yes"}, r"Invalid amsgrad: 'yes' \(must be True or False\)"),
    (optim.Adam, {"bias_correction": 1}, r"Invalid bias_correction: 1 \(must be True or False\)"),
    (
        optim.Adam,
        {"differentiable": True},
        r"Invalid differentiable: True \(must be False: trainlab does not differentiate",
    ),
    (optim.RMSprop, {"capturable": True}, r"Invalid capturable: True \(must be False"),
    (
        optim.Adam,
        {"lrr": 0.1},
        r"Invalid keyword for Adam: 'lrr' \(unknown; allowed keywords: .*lr",
    ),
    (optim.SGD, {"beta": 0.9}, r"Invalid keyword for SGD: 'beta'"),
    (
        optim.LBFGS,
        {"history_size": 0},
        r"Invalid history size \(history_size\): 0 \(must be an integer >= 1\)",
    ),
    (optim.LBFGS, {"max_iter": 2.5}, r"Invalid maximum iterations \(max_iter\): 2\.5"),
    (
        optim.LBFGS,
        {"line_search_fn": "armijo"},
        r"Invalid line_search_fn: 'armijo' \(must be one of None, 'strong_wolfe'\)",
    ),
    (
        optim.LBFGS,
        {"tolerance_grad": NAN},
        r"Invalid gradient tolerance \(tolerance_grad\): nan "
        r"\(must be a number >= 0, inf, or -inf to never stop on it\)",
    ),
    (optim.LBFGS, {"tolerance_change": -1e-9}, r"Invalid change tolerance \(tolerance_change\)"),
    (optim.LBFGS, {"tolerance_grad": "-inf"}, r"Invalid gradient tolerance \(tolerance_grad\)"),
    (optim.Newton, {"damping": -1.0}, r"Invalid damping: -1\.0"),
    (
        optim.Newton,
        {"lr": 0.0},
        r"Invalid learning rate \(lr\): 0\.0 \(must be a finite number > 0\)",
    ),
]


@pytest.mark.parametrize(("cls", "options", "message"), BAD, ids=lambda x: "")
def test_bad_hyperparameter_is_named(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(params(), **options)


def test_bad_value_in_a_param_group_is_named():
    p, q = params()[0], params()[0]
    with pytest.raises(ValueError, match=r"Invalid learning rate \(lr\): -1\.0"):
        optim.Adam([{"params": [p]}, {"params": [q], "lr": -1.0}])


def test_unknown_group_key_is_named():
    with pytest.raises(ValueError, match=r"Invalid parameter group key in group 0: 'betas1'"):
        optim.Adam([{"params": params(), "betas1": 0.9}])


def test_group_key_of_another_optimizer_is_refused():
    with pytest.raises(ValueError, match=r"'momentum' \(unknown to Adam"):
        optim.Adam([{"params": params(), "momentum": 0.9}])


def test_nesterov_check_applies_to_groups():
    with pytest.raises(ValueError, match=r"Invalid nesterov"):
        optim.SGD([{"params": params(), "momentum": 0.0}], momentum=0.9, nesterov=True)


def test_parameter_in_two_groups():
    p = params()[0]
    with pytest.raises(ValueError, match=r"Invalid parameter 0 of group 1: it already belongs"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_floating_parameter(dtype):
    with pytest.raises(ValueError, match=rf"Invalid parameter 0 of group 0: dtype {dtype}"):
        optim.Adam([torch.zeros(2, dtype=dtype)])


def test_newton_refuses_a_complex_parameter():
    with pytest.raises(
        ValueError,
        match=r"Invalid parameter 0 of group 0: dtype torch.complex64 \(must be a real "
        r"floating-point tensor",
    ):
        optim.Newton([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])


def test_non_leaf_parameter():
    w = torch.zeros(2, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"a non-leaf tensor"):
        optim.SGD([w], lr=0.1)


def test_empty_parameter_list():
    with pytest.raises(ValueError, match=r"empty parameter list"):
        optim.Adam([])


def test_add_param_group_is_validated():
    opt = optim.SGD(params(), lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid momentum: 2\.0"):
        opt.add_param_group({"params": params(), "momentum": 2.0})
    assert len(opt.param_groups) == 1


# The optimizers torch.optim refuses sparse gradients for (SGD and Adagrad take them:
# tests/optim/test_sparse.py).
DENSE_ONLY = [
    s.name for s in OPTIMIZERS.values() if not s.closure and s.cls.apply_sparse_rule is None
]


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("name", DENSE_ONLY)
def test_sparse_gradient_is_refused_with_torchs_exception_type(name, backend):
    spec = OPTIMIZERS[name]
    for cls, options in ((torch.optim, {}), (optim, {"backend": backend})):
        emb = torch.nn.Embedding(5, 2, sparse=True)
        opt = getattr(cls, spec.cls.__name__)(emb.parameters(), **options)
        emb(torch.tensor([1, 2])).sum().backward()
        before = emb.weight.detach().clone()
        with pytest.raises(RuntimeError, match=r"does not support sparse gradients"):
            opt.step()
        torch.testing.assert_close(emb.weight.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize("zero_grad", ["none", "before", "after"])
@pytest.mark.parametrize("name", DENSE_ONLY)
def test_sparse_gradient_after_fused_steps_is_refused(name, zero_grad, traced_only):
    # The flat group exists (built from dense gradients); a sparse .grad assigned later
    # has no data pointer, and must reach the eager loop's error, not another one.
    weight = torch.ones(5, 2, requires_grad=True)
    opt = OPTIMIZERS[name].cls([weight], backend="fused")
    for _ in range(2):
        opt.zero_grad()
        weight.square().sum().backward()
        opt.step()
    assert opt.backend_info()[0]["params"] == 1
    if zero_grad == "before":
        opt.zero_grad()  # the flat group records that no parameter has a gradient
    weight.grad = torch.sparse_coo_tensor([[1, 3]], torch.ones(2, 2), (5, 2), check_invariants=True)
    if zero_grad == "after":  # clears the sparse gradient: the step has nothing to do
        opt.zero_grad()
        assert weight.grad.layout is torch.strided and not weight.grad.any()
        before = weight.detach().clone()
        opt.step()
        torch.testing.assert_close(weight.detach(), before, rtol=0, atol=0)
        return
    with pytest.raises(RuntimeError, match=r"^\w+ does not support sparse gradients"):
        opt.step()


def test_lbfgs_needs_one_group_and_a_closure():
    with pytest.raises(ValueError, match=r"LBFGS: 2 parameter groups"):
        optim.LBFGS([{"params": params()}, {"params": params()}])
    with pytest.raises(ValueError, match=r"LBFGS.step requires a closure"):
        optim.LBFGS(params()).step()


def test_unknown_registry_name():
    with pytest.raises(
        ValueError, match=r"Invalid optimizer: 'adamm' \(unknown; choose one of sgd, "
    ):
        optim.get("adamm")
    assert optim.get("AdamW").cls is optim.AdamW


def test_torch_compat_keywords_are_accepted():
    optim.Adam(params(), foreach=True, fused=False)
    optim.SGD(params(), foreach=False, fused=None, differentiable=False)


def test_a_parameter_group_must_be_a_dict():
    opt = optim.SGD(params(), lr=0.1)
    with pytest.raises(TypeError, match=r"^param_group must be a dict, but got list$"):
        opt.add_param_group(params())
    with pytest.raises(TypeError, match=r"^param_group must be a dict, but got Tensor$"):
        optim.Adam([{"params": params()}, torch.zeros(2, requires_grad=True)])
    assert len(opt.param_groups) == 1


def test_parameters_given_as_a_set_are_refused():
    with pytest.raises(TypeError, match=r"ordered collections.*Please use a list instead"):
        optim.SGD([{"params": set(params())}], lr=0.1)


@pytest.mark.parametrize(("bad", "typename"), [(1.0, "float"), (None, "NoneType"), ("w", "str")])
def test_a_parameter_must_be_a_tensor(bad, typename):
    with pytest.raises(
        TypeError,
        match=rf"^Invalid parameter 1 of group 0: {typename} \(must be a torch\.Tensor\)$",
    ):
        optim.Adam([torch.zeros(2, requires_grad=True), bad])


def test_newton_needs_a_parameter_that_requires_a_gradient():
    with pytest.raises(
        ValueError,
        match=r"^Invalid params for Newton: no parameter requires a gradient \(nothing to train\)$",
    ):
        optim.Newton([torch.zeros(3), torch.ones(2)])


def test_newton_refuses_a_hessian_that_cannot_be_made_positive_definite():
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([theta])
    with pytest.raises(
        ValueError, match=r"^Newton: the Hessian could not be made positive definite"
    ):
        opt.step(lambda: (theta**2).sum() * math.nan)  # NaN loss: NaN gradient and Hessian
    torch.testing.assert_close(
        theta.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64), rtol=0, atol=0
    )


WITHOUT_TORCH_KERNEL = [
    name
    for name, spec in OPTIMIZERS.items()
    if issubclass(spec.cls, FirstOrderOptimizer) and not spec.cls.has_torch_kernel
]


def test_the_optimizers_without_a_torch_kernel_are_the_four_torch_lacks():
    assert {OPTIMIZERS[n].cls for n in WITHOUT_TORCH_KERNEL} == {
        optim.RMSprop,
        optim.Adadelta,
        optim.Adamax,
        optim.NAdam,
    }


@pytest.mark.parametrize("name", WITHOUT_TORCH_KERNEL)
def test_fused_true_is_refused_where_torch_has_no_fused_kernel(name):
    cls = OPTIMIZERS[name].cls
    message = (
        rf"^Invalid fused: True \(must be False or None: torch has no fused {cls.__name__} "
        r"kernel; backend=\"fused\" runs trainlab's compiled step over flat buffers\)$"
    )
    with pytest.raises(ValueError, match=message):
        cls(params(), fused=True)
    with pytest.raises(ValueError, match=message):  # as a group key too
        cls([{"params": params(), "fused": True}])
    cls(params(), fused=False)  # the off values mean what they say: accepted
    cls([{"params": params(), "fused": None}])
