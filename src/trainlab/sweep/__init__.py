"""trainlab.sweep — hyperparameter sweeps: Optuna studies whose trials are trainlab runs.

``run_sweep(CONFIG, SPACE.toml, trials=N, workers=K, ...)`` (``trainlab sweep``) trains N
trials, each an ordinary run folder ``trials/<number>/`` of the sweep folder, by K worker
processes sharing one Optuna storage — a journal file in the sweep folder (one host) or a
PostgreSQL URL (any number of hosts) — and writes ``trials.csv``, ``best.toml`` and plots.
``refine=PREVIOUS`` (``--refine``) narrows the space to the best region of a previous sweep.
"""

from .refine import MIN_BEST, Refinement, refine
from .results import BEST_FILE, TRIALS_FILE, write_results
from .space import KINDS, Param, Space, load_space
from .study import METRICS, PRUNERS, SAMPLERS, Pruning, Sweep, open_storage, prepare, run_sweep

__all__ = [
    "BEST_FILE",
    "KINDS",
    "METRICS",
    "MIN_BEST",
    "PRUNERS",
    "SAMPLERS",
    "TRIALS_FILE",
    "Param",
    "Pruning",
    "Refinement",
    "Space",
    "Sweep",
    "load_space",
    "open_storage",
    "prepare",
    "refine",
    "run_sweep",
    "write_results",
]
