"""The autoscaler loop's checkpoint I/O against a fake API: restored only from its own deployment's checkpoint,
written when a minute closed, never over a ConfigMap of the user's, a failed write counted and tried again."""

from __future__ import annotations

import asyncio
from typing import Any

from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.forecast import Forecast
from qwenfleet.autoscale.loop import Memory, restore, save
from qwenfleet.autoscale.policy import State
from qwenfleet.kube import Kube, KubeError

PLAN = "Qwen3-4B/bf16/L4-24GB/1/1/64/40960/120000"
META = {"namespace": "team-a", "name": "chat", "uid": "uid-1"}


class FakeKube:
    """The two calls the loop makes for checkpoints, over a dict of ConfigMaps."""

    def __init__(self, found: dict[str, Any] | None = None, fail: bool = False) -> None:
        self.found = found
        self.fail = fail
        self.applied: list[dict[str, Any]] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert (api_version, kind, name, namespace) == ("v1", "ConfigMap", "chat-autoscaler", "team-a")
        return self.found

    async def apply(self, manifest: dict[str, Any], **_: Any) -> dict[str, Any]:
        if self.fail:
            raise KubeError(503, "ServiceUnavailable", "the API server is away")
        self.applied.append(manifest)
        self.found = manifest
        return manifest


def _grown() -> Forecast:
    return Forecast(buckets=(1.0, 2.0, 3.0), bucket_start=180.0, bucket_count=10.0, last_time=200.0)


def _memory(forecast: Forecast) -> Memory:
    return Memory(state=State(desired=1, forecast=forecast), plan=PLAN, owner=("team-a", "chat", "uid-1"))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _fake(kube: FakeKube) -> Kube:
    return kube  # type: ignore[return-value]


def test_a_closed_minute_is_checkpointed_once_and_restored_by_its_own_deployment_only() -> None:
    kube, memory = FakeKube(), _memory(_grown())
    assert _run(save(_fake(kube), memory, now=200.0))
    assert not _run(save(_fake(kube), memory, now=210.0))  # no minute closed since
    assert memory.checkpoint_events["written"] == 1 and len(kube.applied) == 1
    restored = _run(restore(_fake(kube), META, PLAN, 205.0))
    assert list(restored.buckets) == [1.0, 2.0, 3.0]
    assert _run(restore(_fake(kube), META | {"uid": "uid-2"}, PLAN, 205.0)) == Forecast()  # an earlier namesake's


def test_a_configmap_of_the_users_is_neither_read_nor_written() -> None:
    users = {"metadata": {"name": "chat-autoscaler", "ownerReferences": [{"uid": "uid-1"}]},
             "data": {checkpoint.DATA_KEY: "{}", "notes": "mine"}}  # fmt: skip
    kube, memory = FakeKube(found=users), _memory(_grown())
    assert not _run(save(_fake(kube), memory, now=200.0))
    assert kube.applied == [] and memory.foreign and memory.checkpoint_events["declined"] == 1
    assert _run(restore(_fake(kube), META, PLAN, 205.0)) == Forecast()


def test_a_failed_write_is_counted_and_tried_again_when_the_next_call_comes() -> None:
    kube, memory = FakeKube(fail=True), _memory(_grown())
    assert not _run(save(_fake(kube), memory, now=200.0))
    assert memory.checkpoint_events["failed"] == 1 and memory.checkpoint_at is None
    kube.fail = False
    assert _run(save(_fake(kube), memory, now=210.0))
    assert memory.checkpoint_events["written"] == 1


def test_an_unreachable_api_server_means_a_fresh_start_not_a_stuck_autoscaler() -> None:
    class Down(FakeKube):
        async def get(self, *_: Any, **__: Any) -> dict[str, Any] | None:
            raise KubeError(0, "Unavailable", "connection refused")

    assert _run(restore(_fake(Down()), META, PLAN, 5.0)) == Forecast()
