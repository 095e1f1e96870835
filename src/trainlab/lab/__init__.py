"""trainlab.lab — experiments that show why the techniques work."""

from .problems import PROBLEMS, Problem
from .race import Entrant, RaceResult, entrants, format_table, race, race_all

__all__ = [
    "PROBLEMS",
    "Entrant",
    "Problem",
    "RaceResult",
    "entrants",
    "format_table",
    "race",
    "race_all",
]
