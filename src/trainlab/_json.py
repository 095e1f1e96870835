"""Strict JSON for every file and ``--json`` output: NaN and infinities become null.

Python's ``json`` writes NaN and Infinity by default, which strict parsers (browsers,
``jq``, other languages) reject. A metric with no data (no validation split) or a ratio
with a zero denominator is NaN in memory and ``null`` on disk.
"""

from __future__ import annotations

import json
import math
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every non-finite float as None, tuples as lists, 0-dim tensors as numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of `plain` (``value``), refusing anything still non-finite."""
    return json.dumps(plain(value), allow_nan=False, **options)
