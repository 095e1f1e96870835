"""The limits on what loaders read: each message names its limit, read at call time."""

from __future__ import annotations

import pytest

from trainlab.data import DatasetError, limits


def test_check_names_the_limit_and_reads_it_at_call_time(monkeypatch):
    limits.check("MAX_CLASSES", 100_000, "classes", 3, "100000 classes", "pass fewer")
    monkeypatch.setattr(limits, "MAX_CLASSES", 99_999)
    with pytest.raises(DatasetError) as caught:
        limits.check("MAX_CLASSES", 100_000, "classes", 3, "100000 classes", "pass fewer")
    assert str(caught.value) == (
        "Invalid classes: 3 (100000 classes, over the limit "
        "trainlab.data.limits.MAX_CLASSES = 99999; pass fewer)"
    )
