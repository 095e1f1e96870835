"""The limits on what loaders read: each one documented, each message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainlab.data import DatasetError, limits

README = Path(__file__).resolve().parents[2] / "README.md"
LIMITS = {name: value for name, value in vars(limits).items() if name.startswith("MAX_")}


def shown(name: str, value: int) -> str:
    """How the README writes a limit: bytes in GiB or MiB, counts with thousands separators."""
    if name.endswith("_BYTES"):
        return f"{value >> 30} GiB" if value % (1 << 30) == 0 else f"{value >> 20} MiB"
    return f"{value:,}"


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_every_limit_is_in_the_readme_with_its_value(name):
    assert f"`{name}` = {shown(name, LIMITS[name])}" in README.read_text(encoding="utf-8")


def test_check_names_the_limit_and_reads_it_at_call_time(monkeypatch):
    limits.check("MAX_CLASSES", 100_000, "classes", 3, "100000 classes", "pass fewer")
    monkeypatch.setattr(limits, "MAX_CLASSES", 99_999)
    with pytest.raises(DatasetError) as caught:
        limits.check("MAX_CLASSES", 100_000, "classes", 3, "100000 classes", "pass fewer")
    assert str(caught.value) == (
        "Invalid classes: 3 (100000 classes, over the limit "
        "trainlab.data.limits.MAX_CLASSES = 99999; pass fewer)"
    )
