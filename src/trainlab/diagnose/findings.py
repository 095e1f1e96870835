"""A finding of the diagnostics: a pre-flight check or a verdict on a run.

Every check of ``trainlab doctor`` and every verdict of the live instruments is a
[`Finding`][trainlab.diagnose.Finding] — its name, a status, the evidence (the numbers, in words)
and the fix (what to do about it, in the lectures' terms) — so that one table, one JSON shape and
one printer serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]
"""The status of a finding: ``"pass"``, ``"warn"`` or ``"fail"``."""
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")
"""Every `Status`, from best to worst; a `Finding` with any other status is refused."""


@dataclass(frozen=True)
class Finding:
    """One check or verdict.

    Attributes:
        name: a stable identifier, e.g. ``"loss_at_init"`` or ``"lr_too_high"``.
        status: ``"pass"``, ``"warn"`` or ``"fail"``.
        evidence: the measured numbers against what was expected, in one sentence.
        fix: what to do, or ``""`` when nothing needs doing.
        data: the numbers behind the evidence (tables, per-layer values), JSON-able.
    """

    name: str
    status: Status
    evidence: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Invalid status: {self.status!r} (must be one of {STATUSES})")

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "status", "evidence", "fix"}`` plus ``"data"`` when there is any."""
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "evidence": self.evidence,
            "fix": self.fix,
        }
        if self.data:
            out["data"] = self.data
        return out


def table(findings: list[Finding]) -> str:
    """The findings as text: one block per finding, status first."""
    marks = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for finding in findings:
        lines.append(f"[{marks[finding.status]}] {finding.name}: {finding.evidence}")
        if finding.fix and finding.status != "pass":
            lines.append(f"       fix: {finding.fix}")
    return "\n".join(lines)
