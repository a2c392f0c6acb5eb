"""Standard conditions: set one, keeping lastTransitionTime unless the status flips. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Cond:
    """A condition as the reconcile decides it; time and generation are added when merged."""

    type: str
    status: bool | None
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        """True, False or Unknown."""
        return "Unknown" if self.status is None else str(self.status)


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(current: list[Obj], wanted: list[Cond], generation: int, now: str) -> list[Obj]:
    """The new conditions list: ours replaced in place, others' kept, transition times kept unless flipped."""
    by_type = {c.get("type"): c for c in current}
    merged: list[Obj] = [c for c in current if c.get("type") not in {w.type for w in wanted}]
    for cond in wanted:
        old = by_type.get(cond.type)
        flipped = old is None or old.get("status") != cond.status_text
        merged.append(
            {
                "type": cond.type,
                "status": cond.status_text,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": now if flipped or old is None else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    order = {w.type: i for i, w in enumerate(wanted)}
    return sorted(merged, key=lambda c: order.get(c.get("type", ""), len(order)))


def status_changed(current: Obj, desired: Obj) -> bool:
    """True when a status patch would change anything we own."""
    return any(current.get(key) != value for key, value in desired.items())
