"""trainlab.diagnose — babysitting the learning process: pre-flight checks and findings.

``doctor(model, (x, y))`` runs the lectures' checks before a long run — the loss at
initialization (≈ ln C), a gradient check, overfitting 20 examples, the data's order and
scale, the activations at initialization — and returns :class:`Finding` s; ``table``
prints them. Each check is also a function of its own.
"""

from .activations import initialization_check
from .checks import CHECKS, doctor, loss_at_init, overfit_tiny
from .data_checks import data_checks
from .findings import STATUSES, Finding, Status, table
from .gradcheck import gradient_check

__all__ = [
    "CHECKS",
    "STATUSES",
    "Finding",
    "Status",
    "data_checks",
    "doctor",
    "gradient_check",
    "initialization_check",
    "loss_at_init",
    "overfit_tiny",
    "table",
]
