"""mlp and cnn: output shapes on the lab's datasets, block layout, parameter names, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.models import ACTIVATIONS, MODELS, InvertedDropout, Unsqueeze, cnn, mlp

DATASETS = {
    "mnist1d": (40,),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "cifar": (3, 32, 32),
}
REGULARIZATION = {
    "plain": {},
    "batch_norm": {"batch_norm": True},
    "dropout": {"dropout": 0.3},
    "both": {"batch_norm": True, "dropout": 0.3},
}


def build(kind, shape, **kw):
    if kind == "mlp":
        return mlp(shape, [6, 5], 10, **kw)
    return cnn(shape, [3, 4], 10, hidden=(5,), **kw)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("regularization", REGULARIZATION)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_output_shape(kind, dataset, regularization, act):
    shape = DATASETS[dataset]
    model = build(kind, shape, activation=act, **REGULARIZATION[regularization])
    x = torch.randn(3, *shape)
    assert model.train()(x).shape == (3, 10)
    with torch.no_grad():
        assert model.eval()(x).shape == (3, 10)


@pytest.mark.parametrize("kind", MODELS)
def test_batch_norm_and_dropout_present_or_absent(kind):
    def count(model, types):
        return sum(isinstance(m, types) for m in model.modules())

    norms = (nn.BatchNorm1d, nn.BatchNorm2d)
    plain = build(kind, (1, 8, 8))
    assert count(plain, norms) == 0 and count(plain, (InvertedDropout, nn.Dropout)) == 0
    regularized = build(kind, (1, 8, 8), batch_norm=True, dropout=0.5)
    # mlp: two hidden blocks; cnn: two conv blocks + one dense block, dropout only before Linears
    assert count(regularized, norms) == {"mlp": 2, "cnn": 3}[kind]
    assert count(regularized, InvertedDropout) == 2 and count(regularized, nn.Dropout) == 0


def test_mlp_block_order_is_fc_norm_act_drop():
    model = mlp(4, [3], 2, activation="tanh", batch_norm=True, dropout=0.1)
    assert list(model.block1._modules) == ["fc", "norm", "act", "drop"]
    assert isinstance(model.block1.act, nn.Tanh)


def test_mlp_state_dict_keys():
    assert list(mlp(4, [3], 2).state_dict()) == [
        "block1.fc.weight",
        "block1.fc.bias",
        "head.fc.weight",
        "head.fc.bias",
    ]


def test_cnn_state_dict_keys_with_batch_norm():
    # a layer followed by batch norm has no bias: BN's β plays that role
    model = cnn((1, 8, 8), [2], 3, batch_norm=True, dropout=0.5, hidden=(4,))
    assert list(model.state_dict()) == [
        "block1.conv.weight",
        "block1.norm.weight",
        "block1.norm.bias",
        "block1.norm.running_mean",
        "block1.norm.running_var",
        "block1.norm.num_batches_tracked",
        "dense1.fc.weight",
        "dense1.norm.weight",
        "dense1.norm.bias",
        "dense1.norm.running_mean",
        "dense1.norm.running_var",
        "dense1.norm.num_batches_tracked",
        "head.fc.weight",
        "head.fc.bias",
    ]
    assert list(model._modules) == ["block1", "readout", "dense1", "head"]


def test_names_do_not_depend_on_the_seed():
    torch.manual_seed(0)
    a = cnn((3, 32, 32), [4, 8], 10)
    torch.manual_seed(1)
    b = cnn((3, 32, 32), [4, 8], 10)
    assert list(a.state_dict()) == list(b.state_dict())


def test_signal_shapes_use_1d_convolutions():
    signal = cnn((40,), [4], 10)
    assert isinstance(signal.unsqueeze, Unsqueeze)
    assert isinstance(signal.block1.conv, nn.Conv1d) and signal.block1.conv.in_channels == 1
    channels_first = cnn((2, 40), [4], 10)
    assert "unsqueeze" not in channels_first._modules
    assert channels_first.block1.conv.in_channels == 2
    assert channels_first(torch.randn(3, 2, 40)).shape == (3, 10)
    assert isinstance(cnn((1, 8, 8), [4], 10).block1.conv, nn.Conv2d)


def test_pooling_stops_at_size_one():
    # digits 8×8: 8 → 4 → 2 → 1, then blocks 4 and 5 have no pool
    model = cnn((1, 8, 8), [2, 2, 2, 2, 2], 10, global_pool=False)
    pooled = ["pool" in model[k]._modules for k in range(5)]
    assert pooled == [True, True, True, False, False]
    assert model.head.fc.in_features == 2
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_pooling_halves_only_axes_that_allow_it():
    model = cnn((1, 1, 9), [2, 2], 10, global_pool=False, pool="avg")
    assert model.block1.pool.kernel_size == (1, 2)
    assert model.head.fc.in_features == 2 * 1 * 2  # 9 → 4 → 2
    assert model(torch.randn(3, 1, 1, 9)).shape == (3, 10)


@pytest.mark.parametrize(("shape", "features"), [((40,), 4 * 10), ((3, 32, 32), 4 * 8 * 8)])
def test_flatten_readout_size(shape, features):
    model = cnn(shape, [2, 4], 10, global_pool=False)
    assert model.head.fc.in_features == features
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_no_pooling_keeps_the_size():
    model = cnn((1, 8, 8), [2, 2], 10, pool=None, global_pool=False, kernel_size=5)
    assert model.head.fc.in_features == 2 * 8 * 8


def test_mlp_without_hidden_layers_is_softmax_regression():
    model = mlp(64, [], 10)
    assert list(model._modules) == ["head"]
    assert model(torch.randn(3, 64)).shape == (3, 10)


def test_tiny_cnn_trains_one_sgd_step():
    torch.manual_seed(0)
    model = cnn((1, 8, 8), [4, 8], 10, batch_norm=True, dropout=0.2, hidden=(16,))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(nn.functional.cross_entropy(model(x), y))


BAD = [
    (mlp, (0, [4], 10), {}, r"Invalid in_features: 0 \(must be an integer >= 1\)"),
    (mlp, ((1, 0), [4], 10), {}, r"Invalid in_features: \(1, 0\) \(must be a non-empty sequence"),
    (mlp, (4, [4, 0], 10), {}, r"Invalid hidden: \[4, 0\] \(must be a sequence of integers >= 1\)"),
    (mlp, (4, 8, 10), {}, r"Invalid hidden: 8"),
    (mlp, (4, [4], 0), {}, r"Invalid classes: 0 \(must be an integer >= 1\)"),
    (mlp, (4, [], 2), {"activation": "swish"}, r"Invalid activation: 'swish' \(must be one of"),
    (mlp, (4, [4], 2), {"dropout": 1.0}, r"Invalid dropout: 1\.0 \(must be a number in \[0, 1\)\)"),
    (mlp, (4, [4], 2), {"batch_norm": 1}, r"Invalid batch_norm: 1 \(must be True or False\)"),
    (
        cnn,
        ((), [4], 10),
        {},
        r"Invalid input_shape: \(\) \(must be \(L,\), \(C, L\) or \(C, H, W\)",
    ),
    (cnn, ((1, 0, 8), [4], 10), {}, r"Invalid input_shape: \(1, 0, 8\)"),
    (cnn, ((1, 1, 8, 8), [4], 10), {}, r"Invalid input_shape: \(1, 1, 8, 8\)"),
    (cnn, ((1, 8, 8), [], 10), {}, r"Invalid channels: \[\] \(must be a non-empty sequence"),
    (cnn, ((1, 8, 8), [4, -1], 10), {}, r"Invalid channels: \[4, -1\]"),
    (cnn, ((1, 8, 8), [4], 10), {"kernel_size": 4}, r"Invalid kernel_size: 4 \(must be odd"),
    (cnn, ((1, 8, 8), [4], 10), {"kernel_size": 0}, r"Invalid kernel_size: 0 \(must be an integer"),
    (cnn, ((1, 8, 8), [4], 10), {"pool": "median"}, r"Invalid pool: 'median' \(must be 'max', "),
    (cnn, ((1, 8, 8), [4], 10), {"hidden": (0,)}, r"Invalid hidden: \(0,\)"),
    (cnn, ((1, 8, 8), [4], 10), {"dropout": -0.1}, r"Invalid dropout: -0\.1"),
    (cnn, ((1, 8, 8), [4], 10), {"global_pool": None}, r"Invalid global_pool: None"),
]


@pytest.mark.parametrize(("builder", "args", "kw", "message"), BAD)
def test_bad_arguments(builder, args, kw, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        builder(*args, **kw)
