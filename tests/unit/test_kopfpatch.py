"""kopf's start-up gate, patched: the same openings for every waiter, one wake-up each instead of one per drop."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

from kopf._cogs.aiokits import aiotoggles

from qwenfleet.controller import kopfpatch

ROOT = Path(__file__).resolve().parents[2]


def test_the_patched_release_is_the_one_pinned() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"kopf=={kopfpatch.PATCHED_KOPF}" in deps
    assert kopfpatch.apply() is True


async def _gate(objects: int) -> tuple[int, list[bool]]:
    """A gate of `objects` toggles, each object waiting on it after dropping its own: (predicate checks, passed)."""
    kopfpatch.apply()
    gate = aiotoggles.ToggleSet(all)
    checks = 0
    is_on = gate.is_on

    def counted() -> bool:
        nonlocal checks
        checks += 1
        return is_on()

    gate.is_on = counted  # type: ignore[method-assign]
    toggles = [await gate.make_toggle(name=str(i)) for i in range(objects)]
    passed: list[bool] = []

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await gate.drop_toggle(toggle)
        await gate.wait_for(True)
        passed.append(True)

    closed_waiter = asyncio.ensure_future(gate.wait_for(True))
    await asyncio.sleep(0)
    assert not closed_waiter.done()
    workers = []
    for toggle in toggles:  # objects indexed one after another, as a list streams in
        workers.append(asyncio.ensure_future(worker(toggle)))
        for _ in range(3):
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*workers), 5)
    await asyncio.wait_for(closed_waiter, 1)
    return checks, passed


async def test_every_waiter_passes_once_the_last_toggle_drops() -> None:
    checks, passed = await _gate(300)
    assert len(passed) == 300
    # unpatched, every drop wakes every waiter: about 300 * 300 / 2 checks; patched, a few per object
    assert checks < 10 * 300


async def test_adding_a_toggle_closes_an_open_gate_for_waiters_on_closed() -> None:
    kopfpatch.apply()
    gate = aiotoggles.ToggleSet(all)
    closed = asyncio.ensure_future(gate.wait_for(False))
    await asyncio.sleep(0)
    assert not closed.done()
    toggle = await gate.make_toggle(name="new")
    await asyncio.wait_for(closed, 1)
    await toggle.turn_to(True)  # a toggle's own flip still wakes the set's waiters
    await asyncio.wait_for(gate.wait_for(True), 1)
    await gate.drop_toggles([toggle])
    assert gate.is_on()
