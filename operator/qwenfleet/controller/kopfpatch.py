"""Two fixes to kopf 1.45.2, applied before the operator starts.

**The start-up gate woke every waiting object on every change of the gate.**

While kopf fills the indexes after a start, it holds every object's handlers at one gate (a `ToggleSet` of
`all`): one toggle per indexed object, dropped when that object is indexed. kopf's `drop_toggle` notifies the
gate's condition on every drop, so each drop wakes every object already waiting, and each of them takes the
condition's lock in turn only to find the gate still closed: O(N²) wake-ups for N objects. After a restart on
1,000 Qwen3Deployments (about 6,000 objects with their children) that was 30 s of kopf's time before the first
pass (profiled with py-spy: `drop_toggle` -> `notify_all` and `Condition.wait_for`); on 3,000 the first pass did
not come within 10 minutes.

The fix notifies only when the gate's state flips. A waiter's predicate is that state, so it wakes exactly when
it could pass: the same behaviour, one wake-up per waiter. A toggle's own `turn_to` still notifies as before.

**A CRD installed while the operator runs could go unwatched for ever.** kopf looks a new kind up in the API
server's discovery when an event of its CRD arrives, and only then. The API server publishes a new kind in
discovery a moment after the CRD's last event (`Established`), so the lookup can find nothing, and no later
event comes: kopf logs "Unresolved resources cannot be served" and never watches the kind (seen on this
project's dev cluster with KEDA's CRD; the e2e test `test_a_keda_crd_installed_after_start_is_used_watched_and_
pruned` failed every time without this). The fix looks the group up again, after 0.5, 1, 2, 4 and 8 s, while a
kind of the CRD that a handler is registered for is still unresolved.

Only the pinned kopf is patched; another version runs unpatched, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import observation

log = logging.getLogger(__name__)
PATCHED_KOPF = "1.45.2"
"""The kopf release whose `ToggleSet` this replaces the methods of (pyproject.toml pins it)."""


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


RESCAN_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
_discovered = observation.process_discovered_resource_event


def _unresolved(raw_event: Any, registry: Any, insights: Any) -> bool:
    """Whether a handler wants a kind of this CRD's that kopf has not resolved (found in discovery) yet."""
    spec = (raw_event.get("object") or {}).get("spec") or {}
    group = spec.get("group")
    names = {v for k, v in (spec.get("names") or {}).items() if k in ("plural", "kind", "singular")}
    wanted = [s for s in registry._watching.get_all_selectors() | registry._indexing.get_all_selectors()
              if s.group == group and (s.any_name in names or s.plural in names or s.kind in names)]  # fmt: skip
    return any(not any(s.check(r) for r in insights.watched_resources) for s in wanted)


async def _process_discovered_resource_event(*, raw_event: Any, registry: Any, insights: Any, **kwargs: Any) -> None:
    await _discovered(raw_event=raw_event, registry=registry, insights=insights, **kwargs)
    if raw_event.get("type") is None or observation.is_deleted(raw_event):
        return
    for delay in RESCAN_DELAYS:
        if not _unresolved(raw_event, registry, insights):
            return
        await asyncio.sleep(delay)
        await _discovered(raw_event=raw_event, registry=registry, insights=insights, **kwargs)
    if _unresolved(raw_event, registry, insights):
        log.warning("CRD %s: its kind is not in the API server's discovery yet; not watched until it changes",
                    (raw_event.get("object") or {}).get("metadata", {}).get("name"))  # fmt: skip


def apply() -> bool:
    """Patch kopf's start-up gate if kopf is the pinned release; whether it was patched."""
    installed = version("kopf")
    if installed != PATCHED_KOPF:
        log.warning("kopf %s is not %s: its start-up gate is not patched (a restart on thousands of objects may "
                    "take minutes before the first pass)", installed, PATCHED_KOPF)  # fmt: skip
        return False
    for name, method in (("make_toggle", _make_toggle), ("drop_toggle", _drop_toggle), ("drop_toggles", _drop_toggles)):
        setattr(aiotoggles.ToggleSet, name, method)
    observation.process_discovered_resource_event = _process_discovered_resource_event
    return True
