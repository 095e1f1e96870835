"""Model builders: an MLP and a small CNN for the lab's datasets, with readable parameter names.

Every model is an ``nn.Sequential`` of named blocks, so ``state_dict()`` keys read like
``block1.fc.weight``, ``block2.norm.running_mean``, ``head.fc.bias``::

    mlp:  [flatten] → block1 … blockK → head
          blockk = fc (Linear) → [norm (BatchNorm1d)] → act → [drop (InvertedDropout)]
    cnn:  [unsqueeze] → block1 … blockK → readout → [dense1 … denseJ] → head
          blockk = conv (padding='same') → [norm] → act → [pool (2)]
          readout = [gap (global average pool)] → flatten → [drop];  head = fc

Batch norm sits before the nonlinearity, as in the lecture (FC → BN → tanh). A layer followed
by batch norm has no bias: BN subtracts the batch mean, which cancels any bias, and its β
plays that role.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .._checks import fail, flag, positive_int, unit_half_open
from . import layers
from .layers import InvertedDropout, Unsqueeze

CONV = {1: nn.Conv1d, 2: nn.Conv2d}
NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
POOL = {"max": {1: nn.MaxPool1d, 2: nn.MaxPool2d}, "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d}}
GLOBAL_AVERAGE_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def _check_widths(name: str, values: Any, *, allow_empty: bool) -> tuple[int, ...]:
    allowed = f"must be a {'' if allow_empty else 'non-empty '}sequence of integers >= 1"
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise fail(name, values, allowed)
    widths = tuple(values)
    bad = any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in widths)
    if bad or (not widths and not allow_empty):
        raise fail(name, values, allowed)
    return tuple(int(w) for w in widths)


def _check_regularization(activation: str, batch_norm: bool, dropout: float) -> None:
    layers.parse_activation(activation)
    flag("batch_norm", batch_norm)
    unit_half_open("dropout", dropout)


def dense_block(
    in_features: int, out_features: int, *, activation: str, batch_norm: bool, dropout: float
) -> nn.Sequential:
    """fc → [norm] → act → [drop]:  h = f(BN(W x + b)), then inverted dropout on h."""
    block: OrderedDict[str, nn.Module] = OrderedDict()
    block["fc"] = nn.Linear(in_features, out_features, bias=not batch_norm)
    if batch_norm:
        block["norm"] = nn.BatchNorm1d(out_features)
    block["act"] = layers.activation(activation)
    if dropout > 0:
        block["drop"] = InvertedDropout(dropout)
    return nn.Sequential(block)


def _add_classifier(
    model: OrderedDict[str, nn.Module],
    prefix: str,
    features: int,
    hidden: tuple[int, ...],
    classes: int,
    activation: str,
    *,
    batch_norm: bool,
    dropout: float,
) -> None:
    """Append dense blocks ``<prefix>1 … <prefix>J`` (widths ``hidden``) and the linear head."""
    for k, width in enumerate(hidden, start=1):
        model[f"{prefix}{k}"] = dense_block(
            features, width, activation=activation, batch_norm=batch_norm, dropout=dropout
        )
        features = width
    model["head"] = nn.Sequential(OrderedDict(fc=nn.Linear(features, classes)))


def mlp(
    in_features: int | Sequence[int],
    hidden: Sequence[int],
    classes: int,
    *,
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron: ``len(hidden)`` dense blocks and a linear head.

    Args:
        in_features: input size, or an input shape such as (1, 8, 8), flattened first.
        hidden: widths of the hidden layers; () gives softmax regression.
        classes: number of outputs (logits).
        activation: an ``ACTIVATIONS`` spec, e.g. ``"leaky_relu(0.1)"`` (default: "relu").
        batch_norm: BatchNorm1d between each Linear and its nonlinearity (default: False).
        dropout: inverted-dropout probability after each hidden nonlinearity (default: 0.0).

    Example:
        >>> mlp((1, 28, 28), [256, 128], 10, batch_norm=True, dropout=0.2)
    """
    hidden = _check_widths("hidden", hidden, allow_empty=True)
    positive_int("classes", classes)
    _check_regularization(activation, batch_norm, dropout)
    model: OrderedDict[str, nn.Module] = OrderedDict()
    if isinstance(in_features, Sequence):
        features = math.prod(_check_widths("in_features", in_features, allow_empty=False))
        model["flatten"] = nn.Flatten()
    else:
        positive_int("in_features", in_features)
        features = int(in_features)
    _add_classifier(
        model,
        "block",
        features,
        hidden,
        classes,
        activation,
        batch_norm=batch_norm,
        dropout=dropout,
    )
    return nn.Sequential(model)


def _split_input_shape(input_shape: Any) -> tuple[int, tuple[int, ...]]:
    """(L,) → 1 channel of length L;  (C, L) → 1-D;  (C, H, W) → 2-D."""
    allowed = "must be (L,), (C, L) or (C, H, W) with integers >= 1"
    try:
        shape = _check_widths("input_shape", input_shape, allow_empty=False)
    except ValueError:
        raise fail("input_shape", input_shape, allowed) from None
    if len(shape) > 3:
        raise fail("input_shape", input_shape, allowed)
    if len(shape) == 1:
        return 1, shape
    return shape[0], shape[1:]


def conv_block(
    in_channels: int,
    out_channels: int,
    spatial: tuple[int, ...],
    *,
    kernel_size: int,
    activation: str,
    batch_norm: bool,
    pool: str | None,
) -> tuple[nn.Sequential, tuple[int, ...]]:
    """conv → [norm] → act → [pool]; returns the block and its output's spatial size.

    The convolution keeps the size (padding='same'). Pooling uses a window of 2 along every
    axis of size >= 2 and of 1 along axes already at 1, so sizes go n → ⌊n/2⌋ but never below 1;
    when every axis is 1 the block has no pool.
    """
    dims = len(spatial)
    block: OrderedDict[str, nn.Module] = OrderedDict()
    block["conv"] = CONV[dims](
        in_channels, out_channels, kernel_size, padding="same", bias=not batch_norm
    )
    if batch_norm:
        block["norm"] = NORM[dims](out_channels)
    block["act"] = layers.activation(activation)
    window = tuple(2 if size >= 2 else 1 for size in spatial)
    if pool is not None and max(window) == 2:
        block["pool"] = POOL[pool][dims](window)
        spatial = tuple(size // w for size, w in zip(spatial, window))
    return nn.Sequential(block), spatial


def cnn(
    input_shape: Sequence[int],
    channels: Sequence[int],
    classes: int,
    *,
    kernel_size: int = 3,
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
    pool: str | None = "max",
    hidden: Sequence[int] = (),
    global_pool: bool = True,
) -> nn.Sequential:
    """A small convolutional network: conv blocks, a readout, optional dense blocks, a head.

    1-D convolutions for signals (L,) (one channel, e.g. MNIST-1D (40,)) or (C, L);
    2-D for images (C, H, W), e.g. digits (1, 8, 8), MNIST (1, 28, 28), CIFAR (3, 32, 32).

    Args:
        input_shape: shape of one example, without the batch axis.
        channels: output channels of each conv block.
        classes: number of outputs (logits).
        kernel_size: odd kernel size, so that padding='same' is symmetric (default: 3).
        activation: an ``ACTIVATIONS`` spec (default: "relu").
        batch_norm: BatchNorm after each conv / dense Linear, before the nonlinearity
            (default: False).
        dropout: inverted-dropout probability before each Linear of the classifier
            (default: 0.0). Conv blocks get none.
        pool: "max", "avg" or None: 2× pooling after each conv block while the size allows
            (default: "max").
        hidden: widths of dense blocks between readout and head (default: ()).
        global_pool: average each channel over space (features = channels[-1]); False
            flattens instead (features = channels[-1] × remaining spatial size)
            (default: True).

    Example:
        >>> cnn((3, 32, 32), [32, 64, 128], 10, batch_norm=True, dropout=0.3)
    """
    in_channels, spatial = _split_input_shape(input_shape)
    channels = _check_widths("channels", channels, allow_empty=False)
    hidden = _check_widths("hidden", hidden, allow_empty=True)
    positive_int("classes", classes)
    positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise fail("kernel_size", kernel_size, "must be odd, for padding='same'")
    if pool not in (*POOL, None):
        raise fail("pool", pool, "must be 'max', 'avg' or None")
    _check_regularization(activation, batch_norm, dropout)
    flag("global_pool", global_pool)

    dims = len(spatial)
    model: OrderedDict[str, nn.Module] = OrderedDict()
    if len(input_shape) == 1:
        model["unsqueeze"] = Unsqueeze(dim=1)
    for k, width in enumerate(channels, start=1):
        model[f"block{k}"], spatial = conv_block(
            in_channels,
            width,
            spatial,
            kernel_size=kernel_size,
            activation=activation,
            batch_norm=batch_norm,
            pool=pool,
        )
        in_channels = width

    readout: OrderedDict[str, nn.Module] = OrderedDict()
    if global_pool:
        readout["gap"] = GLOBAL_AVERAGE_POOL[dims](1)
        features = in_channels
    else:
        features = in_channels * math.prod(spatial)
    readout["flatten"] = nn.Flatten()
    if dropout > 0:
        readout["drop"] = InvertedDropout(dropout)
    model["readout"] = nn.Sequential(readout)

    _add_classifier(
        model,
        "dense",
        features,
        hidden,
        classes,
        activation,
        batch_norm=batch_norm,
        dropout=dropout,
    )
    return nn.Sequential(model)


MODELS: dict[str, Callable[..., nn.Sequential]] = {"mlp": mlp, "cnn": cnn}
"""The model registry: name → builder (CLI lookup, generic tests)."""
