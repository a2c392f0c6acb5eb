"""One fix to kopf 1.45.2, applied before the operator starts: its start-up gate woke every waiting object on
every change of the gate.

While kopf fills the indexes after a start, it holds every object's handlers at one gate (a `ToggleSet` of
`all`): one toggle per indexed object, dropped when that object is indexed. kopf's `drop_toggle` notifies the
gate's condition on every drop, so each drop wakes every object already waiting, and each of them takes the
condition's lock in turn only to find the gate still closed: O(N²) wake-ups for N objects. After a restart on
1,000 Qwen3Deployments (about 6,000 objects with their children) that was 30 s of kopf's time before the first
pass (profiled with py-spy: `drop_toggle` -> `notify_all` and `Condition.wait_for`); on 3,000 the first pass did
not come within 10 minutes.

The fix notifies only when the gate's state flips. A waiter's predicate is that state, so it wakes exactly when
it could pass: the same behaviour, one wake-up per waiter. A toggle's own `turn_to` still notifies as before.
Only the pinned kopf is patched; another version runs unpatched, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import version

from kopf._cogs.aiokits import aiotoggles

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


def apply() -> bool:
    """Patch kopf's start-up gate if kopf is the pinned release; whether it was patched."""
    installed = version("kopf")
    if installed != PATCHED_KOPF:
        log.warning("kopf %s is not %s: its start-up gate is not patched (a restart on thousands of objects may "
                    "take minutes before the first pass)", installed, PATCHED_KOPF)  # fmt: skip
        return False
    for name, method in (("make_toggle", _make_toggle), ("drop_toggle", _drop_toggle), ("drop_toggles", _drop_toggles)):
        setattr(aiotoggles.ToggleSet, name, method)
    return True
