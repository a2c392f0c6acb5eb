"""The client's requests take turns: never more in flight than connections, first come first served."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from qwenfleet.kube import Kube


class SlowApi:
    """Answers after a moment; records how many calls were in flight and the order they were let through."""

    def __init__(self, connections: int) -> None:
        self.configuration = SimpleNamespace(connection_pool_maxsize=connections)
        self.in_flight = self.most = 0
        self.order: list[str] = []

    async def call_api(self, path: str, method: str, **_: Any) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.order.append(path)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return {"path": path}


async def test_requests_beyond_the_pool_wait_their_turn_in_arrival_order() -> None:
    api = SlowApi(connections=3)
    kube = Kube(api)  # type: ignore[arg-type]
    first = [asyncio.ensure_future(kube._call("GET", f"/early/{i}")) for i in range(10)]
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(kube._call("GET", f"/late/{i}")) for i in range(10)]
    results = await asyncio.gather(*first, *later)
    assert api.most == 3
    assert [r["path"] for r in results] == [f"/early/{i}" for i in range(10)] + [f"/late/{i}" for i in range(10)]
    assert api.order[:10] == [f"/early/{i}" for i in range(10)]  # no late request overtook a waiting early one
