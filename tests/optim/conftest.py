"""Fixtures shared by the optimizer tests."""

from __future__ import annotations

import pytest

from trainlab.optim import _fused


@pytest.fixture
def traced_only(monkeypatch):
    """The fused backend compiled by dynamo alone (no inductor): same path, faster."""
    monkeypatch.setattr(_fused, "BACKEND", "eager")
    _fused.compiled_update.cache_clear()
    yield
    _fused.compiled_update.cache_clear()
