"""trainlab.optim — the lectures' optimizers, drop-in compatible with ``torch.optim``.

Each algorithm is one small update rule (``sgd``, ``adam``, ...) in the lecture's
symbols, wrapped by a class with ``torch.optim``'s name, keywords, defaults and
``state_dict`` format. ``OPTIMIZERS`` is the registry of all of them.
"""

from .adadelta import Adadelta, adadelta
from .adagrad import Adagrad, adagrad, adagrad_sparse
from .adam import Adam, AdamW, adam
from .adamax import Adamax, adamax
from .calibration import calibrate
from .lbfgs import LBFGS, lbfgs_direction
from .nadam import NAdam, nadam
from .newton import Newton, newton_direction
from .registry import OPTIMIZERS, OptimizerSpec, get
from .rmsprop import RMSprop, rmsprop
from .sgd import MOMENTUM_FORMS, SGD, sgd

__all__ = [
    "LBFGS",
    "MOMENTUM_FORMS",
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "Newton",
    "OptimizerSpec",
    "RMSprop",
    "adadelta",
    "adagrad",
    "adagrad_sparse",
    "adam",
    "adamax",
    "calibrate",
    "get",
    "lbfgs_direction",
    "nadam",
    "newton_direction",
    "rmsprop",
    "sgd",
]
