"""The reconcile work queue: one pass per key at a time, no lost change, schedules replaced, no task per key."""

from __future__ import annotations

import asyncio

from qwenfleet.controller.deployment import STATUS_DEFER_SECONDS, status_deferral
from qwenfleet.controller.workqueue import WorkQueue


async def test_a_key_added_many_times_is_passed_once_and_again_after_a_change_during_its_pass() -> None:
    passes: list[str] = []
    gate = asyncio.Event()

    async def process(key: str) -> float | None:
        passes.append(key)
        if len(passes) == 1:
            await gate.wait()
        return None

    queue: WorkQueue[str] = WorkQueue(process, workers=4)
    queue.start()
    for _ in range(5):
        queue.add("a")
    await asyncio.sleep(0.01)
    queue.add("a")  # during its pass: once more afterwards, never concurrently
    queue.add("a")
    gate.set()
    await asyncio.sleep(0.05)
    await queue.stop()
    assert passes == ["a", "a"]


async def test_the_next_pass_is_scheduled_and_forget_cancels_it() -> None:
    passes: list[str] = []

    async def process(key: str) -> float | None:
        passes.append(key)
        return 0.02

    queue: WorkQueue[str] = WorkQueue(process, workers=2)
    queue.start()
    queue.add("a")
    queue.add("b")
    await asyncio.sleep(0.07)
    queue.forget("b")
    seen_b = passes.count("b")
    await asyncio.sleep(0.07)
    await queue.stop()
    assert passes.count("a") >= 3
    assert passes.count("b") <= seen_b + 1  # at most a pass already queued when it was forgotten
    assert len(queue._tasks) == 0


async def test_workers_are_bounded_whatever_the_number_of_keys() -> None:
    running = 0
    peak = 0

    async def process(key: int) -> float | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return None

    queue: WorkQueue[int] = WorkQueue(process, workers=3)
    queue.start()
    for i in range(100):
        queue.add(i)
    await asyncio.sleep(0.2)
    await queue.stop()
    assert peak == 3
    assert queue.passes == 100
    assert len(queue.done_once) == 100


def test_status_waits_briefly_for_the_workload_controller_after_an_apply() -> None:
    assert status_deferral(workload_observed=True, since_applied=0.1) is None
    assert status_deferral(workload_observed=False, since_applied=None) is None  # not applied by us: write
    assert status_deferral(workload_observed=False, since_applied=STATUS_DEFER_SECONDS) is None
    wait = status_deferral(workload_observed=False, since_applied=1.0)
    assert wait is not None and 0 < wait <= STATUS_DEFER_SECONDS


def test_the_reconcile_leaves_the_autoscaler_and_cost_ledger_status_fields_alone() -> None:
    from qwenfleet.render.status import DEPLOYMENT_STATUS_FIELDS, status_patch

    assert "autoscaler" not in DEPLOYMENT_STATUS_FIELDS and "cost" not in DEPLOYMENT_STATUS_FIELDS
    current = {"observedGeneration": 1, "cost": {"gpuHourUSD": 0.8}, "autoscaler": {"desiredReplicas": 2}}
    assert status_patch(current, {"observedGeneration": 1}, DEPLOYMENT_STATUS_FIELDS) is None


async def test_the_sooner_schedule_wins() -> None:
    passes: list[float] = []

    async def process(key: str) -> float | None:
        passes.append(asyncio.get_running_loop().time())
        return 60.0  # the resync, long after the test

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    queue.add("a")
    queue.add_after("a", 0.1)  # asked again soon (a CRD appeared): the pass's 60 s resync must not replace it
    await asyncio.sleep(0.3)
    await queue.stop()
    assert len(passes) == 2
