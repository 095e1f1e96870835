"""trainlab.models — networks for the lab: activations, dropout, MLP/CNN builders, init schemes.

``mlp`` and ``cnn`` build ``nn.Sequential`` models with readable parameter names
(``block1.conv.weight``, ``head.fc.bias``); ``init_`` re-initializes them with one of
``INIT_SCHEMES``. ``ACTIVATIONS``, ``INIT_SCHEMES`` and ``MODELS`` are the registries.
"""

from .builders import MODELS, cnn, conv_block, dense_block, mlp
from .init import (
    INIT_SCHEMES,
    InitScheme,
    fans,
    init_,
    kaiming_gain,
    kaiming_normal_,
    kaiming_std,
    kaiming_uniform_,
    normal_,
    xavier_normal_,
    xavier_std,
    xavier_uniform_,
    zeros_,
)
from .layers import (
    ACTIVATIONS,
    ActivationSpec,
    InvertedDropout,
    Unsqueeze,
    activation,
    parse_activation,
)

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "MODELS",
    "ActivationSpec",
    "InitScheme",
    "InvertedDropout",
    "Unsqueeze",
    "activation",
    "cnn",
    "conv_block",
    "dense_block",
    "fans",
    "init_",
    "kaiming_gain",
    "kaiming_normal_",
    "kaiming_std",
    "kaiming_uniform_",
    "mlp",
    "normal_",
    "parse_activation",
    "xavier_normal_",
    "xavier_std",
    "xavier_uniform_",
    "zeros_",
]
