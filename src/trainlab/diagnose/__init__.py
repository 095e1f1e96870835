"""trainlab.diagnose — babysitting the learning process: pre-flight checks and findings.

``doctor(model, (x, y))`` runs the lectures' checks before a long run — the loss at
initialization (≈ ln C), a gradient check, overfitting 20 examples, the data's order and
scale, the activations at initialization — and returns a list of
[`Finding`][trainlab.diagnose.Finding]; ``table`` prints them. Each check is also a function
of its own. ``lr_find`` sweeps the learning rate and suggests one, restoring everything it
touched; ``Instruments`` watches a run (``[diagnostics]`` in the config) and judges it.
"""

from .activations import initialization_check
from .checks import CHECKS, doctor, loss_at_init, overfit_tiny
from .data_checks import data_checks
from .findings import STATUSES, Finding, Status, table
from .gradcheck import gradient_check
from .instruments import Instruments
from .lr_find import LRFindResult, lr_find, plot, suggested_overrides

__all__ = [
    "CHECKS",
    "STATUSES",
    "Finding",
    "Instruments",
    "LRFindResult",
    "Status",
    "data_checks",
    "doctor",
    "gradient_check",
    "initialization_check",
    "loss_at_init",
    "lr_find",
    "overfit_tiny",
    "plot",
    "suggested_overrides",
    "table",
]
