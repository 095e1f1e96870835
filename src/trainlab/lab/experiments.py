"""Every experiment of the lab: importing this module registers them all in EXPERIMENTS."""

from __future__ import annotations

import importlib

from .experiment import EXPERIMENTS, Experiment

#: The experiment modules, in the order ``trainlab lab list`` shows them.
MODULES = (
    "exp_trajectories",
    "exp_ewma",
    "exp_adaptive",
    "exp_bias_correction",
    "exp_learning_rate",
    "exp_init",
    "exp_batchnorm",
    "exp_data",
    "exp_regularization",
    "exp_search",
)


def load() -> dict[str, Experiment]:
    """Import every experiment module (each registers itself) and return the registry."""
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return EXPERIMENTS
