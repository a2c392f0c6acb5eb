"""Conditions as the controller writes them: the pure rules live in api.status; the clock lives here."""

from __future__ import annotations

from datetime import UTC, datetime

from qwenfleet.api.status import Cond, ConditionType, Reason, merge_conditions

__all__ = ["Cond", "ConditionType", "Reason", "merge_conditions", "now_rfc3339"]


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
