"""The operator's rails: leadership bounded by the renew deadline, a stop that lets a pass finish, a forgotten key
that stays forgotten, throttling honoured, repeated Events aggregated, failed watches reported, jittered back-off."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from qwenfleet.controller.events import EventPoster
from qwenfleet.controller.health import WATCHER_PREFIX, WatchHealth
from qwenfleet.controller.leader import LeaderElector
from qwenfleet.controller.operator import MAX_BACKOFF_SECONDS, back_off
from qwenfleet.controller.workqueue import WorkQueue
from qwenfleet.kube import Kube, KubeError
from tests.unit.test_kube_turns import SlowApi


class LeaseApi:
    """A Lease store whose calls hang (never answer) once `hang` is set, as an API server that stops answering."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.hang = asyncio.Event()
        self.calls = 0

    async def _maybe_hang(self) -> None:
        self.calls += 1
        if self.hang.is_set():
            await asyncio.Event().wait()

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        await self._maybe_hang()
        return None if self.lease is None else {**self.lease, "spec": dict(self.lease["spec"])}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._maybe_hang()
        self.lease = body
        return body

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._maybe_hang()
        self.lease = body
        return body


async def test_a_leader_whose_api_calls_hang_gives_up_within_the_renew_deadline() -> None:
    api = LeaseApi()
    elector = LeaderElector(api, "ns", "lease", "me", duration=1.5)  # type: ignore[arg-type]
    await elector.acquire()
    assert elector.leading and api.lease is not None
    holding = asyncio.ensure_future(elector.hold())
    await asyncio.sleep(0.5)
    assert not holding.done()  # renewals succeed meanwhile
    renewed = time.monotonic()
    api.hang.set()
    await asyncio.wait_for(holding, elector.duration)  # a hung call is cut off: never waits the 60 s request timeout
    gave_up = time.monotonic() - renewed
    assert not elector.leading
    # the last renewal began at most one retry period before the hang; a standby may take over only after the
    # whole duration without a change
    assert gave_up <= elector.renew_deadline + 0.3 < elector.duration, gave_up


async def test_losing_the_lease_stops_the_work_before_a_standby_may_take_it() -> None:
    from qwenfleet.controller.main import LOST_DRAIN_SECONDS

    api = LeaseApi()
    elector = LeaderElector(api, "ns", "lease", "me", duration=1.5)  # type: ignore[arg-type]
    passes: list[float] = []

    async def process(key: str) -> float | None:
        passes.append(time.monotonic())
        return 0.05  # a pass every 50 ms while leading

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    await elector.acquire()
    queue.start()
    queue.add("d")
    last_renewal = time.monotonic()
    api.hang.set()
    await elector.hold()
    await queue.stop(min(LOST_DRAIN_SECONDS, 0.2))
    stopped = time.monotonic()
    count = len(passes)
    await asyncio.sleep(0.2)
    assert len(passes) == count, "no pass after leadership was lost"
    assert stopped - last_renewal < elector.duration, "the work ran on past the point a standby may take over"


async def test_a_stop_during_a_pass_lets_it_finish() -> None:
    finished: list[str] = []
    started = asyncio.Event()

    async def process(key: str) -> float | None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(key)
        return 60.0

    queue: WorkQueue[str] = WorkQueue(process, workers=2)
    queue.start()
    queue.add("a")
    await started.wait()
    await queue.stop(drain_seconds=2.0)
    assert finished == ["a"]
    queue.add("b")  # a stopped queue takes nothing
    assert queue.known() == 0


async def test_a_stop_cancels_a_pass_that_outlasts_the_drain() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def process(key: str) -> float | None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    queue.add("a")
    await started.wait()
    await queue.stop(drain_seconds=0.1)
    assert cancelled.is_set()


async def test_a_key_forgotten_during_its_pass_is_not_scheduled_again() -> None:
    release = asyncio.Event()
    passes: list[str] = []

    async def process(key: str) -> float | None:
        passes.append(key)
        await release.wait()
        return 0.01  # would resync almost at once

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    queue.add("a")
    await asyncio.sleep(0.01)
    queue.forget("a")  # the object was deleted while its pass ran
    release.set()
    await asyncio.sleep(0.1)
    assert passes == ["a"] and queue.known() == 0
    await queue.stop()


class ThrottlingApi(SlowApi):
    """Answers 429 with Retry-After to the first request, then 200; records when each request came."""

    def __init__(self, retry_after: str) -> None:
        super().__init__(connections=4)
        self.retry_after = retry_after
        self.times: list[float] = []

    async def call_api(self, path: str, method: str, **_: Any) -> dict[str, Any]:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            exc = ApiException(status=429, reason="Too Many Requests")
            exc.headers = {"Retry-After": self.retry_after}
            exc.body = '{"reason": "TooManyRequests", "message": "slow down"}'
            raise exc
        return {"ok": True}


async def test_a_429_is_retried_after_the_time_the_server_asks_for() -> None:
    api = ThrottlingApi("1")
    kube = Kube(api)  # type: ignore[arg-type]
    assert await kube._call("GET", "/api/v1/namespaces") == {"ok": True}
    assert len(api.times) == 2
    assert api.times[1] - api.times[0] >= 1.0


async def test_a_429_that_persists_is_an_error_in_the_end() -> None:
    class Always(ThrottlingApi):
        async def call_api(self, path: str, method: str, **_: Any) -> dict[str, Any]:
            self.times.append(time.monotonic())
            exc = ApiException(status=429, reason="Too Many Requests")
            exc.headers = {"Retry-After": "0"}
            raise exc

    api = Always("0")
    kube = Kube(api)  # type: ignore[arg-type]
    try:
        await kube._call("GET", "/x")
        raise AssertionError("expected a KubeError")
    except KubeError as exc:
        assert exc.status == 429
    assert len(api.times) == 6


class EventApi:
    """Records Event creates and patches."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.created.append(manifest)
        return manifest

    async def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: Any) -> Any:
        self.patched.append((name, patch))
        return patch


def _owner(uid: str = "u1") -> dict[str, Any]:
    return {"apiVersion": "qwenfleet.dev/v1alpha1", "kind": "Qwen3Deployment",
            "metadata": {"name": "d", "namespace": "n", "uid": uid}}  # fmt: skip


async def test_repeated_failures_post_one_event_whose_count_rises() -> None:
    api = EventApi()
    poster = EventPoster(api)  # type: ignore[arg-type]
    poster.start()
    await poster.post(_owner(), "Warning", "ApplyFailed", "409 Conflict")
    await asyncio.sleep(0.05)
    for _ in range(3):
        await poster.post(_owner(), "Warning", "ApplyFailed", "409 Conflict")
        await asyncio.sleep(0.05)
    await poster.post(_owner(), "Warning", "ApplyFailed", "another message")  # not a repeat
    await poster.post(_owner("u2"), "Warning", "ApplyFailed", "409 Conflict")  # another object
    await poster.stop()
    assert len(api.created) == 3
    first = api.created[0]["metadata"]["name"]
    counts = [patch["count"] for name, patch in api.patched if name == first]
    assert counts == sorted(counts) and counts[-1] == 4


async def test_repeats_that_come_while_an_event_is_sent_are_added_up() -> None:
    api = EventApi()
    poster = EventPoster(api)  # type: ignore[arg-type]
    for _ in range(5):  # queued before any sender runs
        await poster.post(_owner(), "Normal", "Scaled", "2 replicas")
    poster.start()
    await poster.stop()
    assert len(api.created) == 1 and api.created[0]["count"] == 5 and not api.patched


async def test_a_watch_that_fails_is_reported_and_a_cancelled_one_is_not() -> None:
    health = WatchHealth()

    async def forbidden() -> None:
        await asyncio.sleep(0.01)
        raise KubeError(403, "Forbidden", 'services is forbidden: cannot watch resource "services"')

    failing = asyncio.ensure_future(forbidden())
    failing.set_name(f"{WATCHER_PREFIX}services.v1@ns")
    cancelled = asyncio.ensure_future(asyncio.sleep(10))
    cancelled.set_name(f"{WATCHER_PREFIX}scaledobjects.v1alpha1.keda.sh@ns")
    health.scan()
    assert health.problems() is None and health.alive() == 2
    cancelled.cancel()
    await asyncio.gather(failing, cancelled, return_exceptions=True)
    await asyncio.sleep(0)
    problem = health.problems()
    assert problem is not None and "services.v1@ns" in problem and "403" in problem
    assert "keda" not in problem


def test_back_off_doubles_up_to_a_cap_with_jitter() -> None:
    rng = random.Random(7)
    waits = [back_off(n, rng) for n in range(1, 12)]
    assert 2.0 <= waits[0] <= 2.4 and 4.0 <= waits[1] <= 4.8
    assert all(MAX_BACKOFF_SECONDS <= w <= MAX_BACKOFF_SECONDS * 1.2 for w in waits[7:])
    assert len({round(back_off(3, rng), 6) for _ in range(20)}) > 1  # not all the same
