"""kopf start-up and clean-up of the cost loop (cost/loop.py): it runs while this replica runs the handlers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from qwenfleet.cost.loop import CostLoop, register


@kopf.on.startup()
async def start_cost_loop(memo: kopf.Memo, **_: Any) -> None:
    """Start the fleet's cost ledgers (after the main start-up handler made the API client)."""
    kube = memo.get("kube")
    if kube is None:
        raise kopf.TemporaryError("API client not ready yet", delay=1)
    loop = CostLoop(kube, memo.get("namespaces"), memo.get("cost_interval") or 10.0)
    register(loop)
    memo.cost_task = asyncio.create_task(loop.run())


@kopf.on.cleanup()
async def stop_cost_loop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the cost loop."""
    task: asyncio.Task[None] | None = memo.get("cost_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
