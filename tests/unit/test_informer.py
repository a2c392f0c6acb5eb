"""The informer: list, watch from the list's version, reconnect, list again on 410 and report what vanished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from qwenfleet.controller.events import EventPoster, event_manifest
from qwenfleet.controller.informer import Informer
from qwenfleet.kube import KubeError, WatchExpired

Obj = dict[str, Any]


def _svc(name: str, version: str, owner: str = "d") -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "n", "resourceVersion": version,
                         "labels": {"qwenfleet.dev/deployment": owner}}}  # fmt: skip


class ScriptedKube:
    """Lists return the given snapshots in turn; each watch plays the next script (events, then an ending)."""

    def __init__(self, lists: list[list[Obj]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.listed = 0
        self.watched_from: list[str] = []
        self.done = asyncio.Event()

    async def list_pages(self, *_: Any, **__: Any) -> AsyncIterator[tuple[list[Obj], str]]:
        snapshot = self.lists[self.listed]
        self.listed += 1
        yield snapshot[:1], "ignored"
        yield snapshot[1:], f"list-{self.listed}"

    async def watch(self, _api: str, _kind: str, _ns: str | None, version: str, **_: Any) -> AsyncIterator[Any]:
        self.watched_from.append(version)
        if not self.watches:
            self.done.set()
            await asyncio.sleep(3600)
        for step in self.watches.pop(0):
            if isinstance(step, BaseException):
                raise step
            yield step


async def _run(kube: ScriptedKube) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    informer = Informer(kube, "v1", "Service", "n", lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))  # type: ignore[arg-type]
    task = asyncio.ensure_future(informer.run())
    await asyncio.wait_for(kube.done.wait(), 10)
    assert informer.synced.is_set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seen


async def test_lists_then_watches_from_the_last_version_seen_and_reconnects_from_there() -> None:
    kube = ScriptedKube(
        [[_svc("a", "1"), _svc("b", "2")]],
        [
            [("MODIFIED", _svc("a", "5")), ("BOOKMARK", {"metadata": {"resourceVersion": "9"}})],  # the server ends it
            [("DELETED", _svc("b", "10"))],
        ],
    )
    seen = await _run(kube)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert kube.watched_from == ["list-1", "9", "10"]  # a bookmark moves the version on, and is not handed over
    assert kube.listed == 1


async def test_an_expired_version_lists_again_and_reports_what_vanished_meanwhile_as_deleted() -> None:
    kube = ScriptedKube(
        [[_svc("a", "1"), _svc("b", "2")], [_svc("a", "7"), _svc("c", "8")]],
        [[WatchExpired("list-1")]],
    )
    before = REGISTRY.get_sample_value("qwenfleet_informer_relists_total", {"kind": "Service"}) or 0.0
    seen = await _run(kube)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "b")]
    assert kube.listed == 2 and kube.watched_from == ["list-1", "list-2"]
    assert REGISTRY.get_sample_value("qwenfleet_informer_relists_total", {"kind": "Service"}) == before + 1


async def test_a_failed_watch_is_retried_from_the_same_version_and_a_handler_bug_ends_nothing() -> None:
    kube = ScriptedKube([[_svc("a", "1")]], [[KubeError(0, "Unavailable", "reset")], [("MODIFIED", _svc("x", "4"))]])
    calls: list[str] = []

    def handler(kind: str, obj: Obj) -> None:
        calls.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "x":
            raise ValueError("a bug")

    informer = Informer(kube, "v1", "Service", "n", handler)  # type: ignore[arg-type]
    task = asyncio.ensure_future(informer.run())
    await asyncio.wait_for(kube.done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert calls == ["a", "x"]
    assert kube.watched_from == ["list-1", "list-1", "4"]


def test_an_event_names_its_object_and_keeps_the_message_short() -> None:
    body = {"apiVersion": "qwenfleet.dev/v1alpha1", "kind": "Qwen3Deployment",
            "metadata": {"name": "m", "namespace": "n", "uid": "u", "resourceVersion": "3"}}  # fmt: skip
    event = event_manifest(body, "Normal", "Ready", "x" * 5000, datetime(2026, 12, 1, tzinfo=UTC), 255)
    assert event["metadata"] == {"name": "m.ff", "namespace": "n"}
    assert event["involvedObject"]["uid"] == "u" and event["involvedObject"]["kind"] == "Qwen3Deployment"
    assert len(event["message"]) == 1024 and event["firstTimestamp"] == "2026-12-01T00:00:00Z"


class CreatingKube:
    def __init__(self) -> None:
        self.created: list[Obj] = []

    async def create(self, manifest: Obj) -> Obj:
        if manifest["reason"] == "Refused":
            raise KubeError(403, "Forbidden", "namespace terminating")
        self.created.append(manifest)
        return manifest


async def test_events_are_sent_a_refused_one_is_only_logged_and_a_full_queue_waits_instead_of_dropping(
    monkeypatch: Any,
) -> None:
    from qwenfleet.controller import events

    monkeypatch.setattr(events, "MAX_PENDING", 2)
    kube = CreatingKube()
    poster = EventPoster(kube)  # type: ignore[arg-type]
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}}
    reasons = ["One", "Refused", "Two", "Three", "Four"]
    filling = asyncio.ensure_future(asyncio.gather(*(poster.post(body, "Normal", r, "m") for r in reasons)))
    await asyncio.sleep(0.05)
    assert not filling.done()  # two queued, the rest wait for room: nobody sends yet
    poster.start()
    await filling
    await poster.stop()
    assert sorted(e["reason"] for e in kube.created) == sorted(r for r in reasons if r != "Refused")


class FlakyKube:
    """The API server does not answer the first two questions."""

    def __init__(self) -> None:
        self.calls = 0

    async def crd_exists(self, name: str) -> bool:
        self.calls += 1
        if self.calls <= 2:
            raise KubeError(0, "Unavailable", "connection refused")
        return name.startswith("nodepools.")


async def test_start_up_waits_for_the_api_server_instead_of_crashing() -> None:
    from qwenfleet.controller.operator import Operator, Options

    kube = FlakyKube()
    operator = Operator(kube, kube, Options())  # type: ignore[arg-type]
    stop = asyncio.Event()
    assert await asyncio.wait_for(operator._discover(stop), 10)
    assert operator.caps.karpenter and not operator.caps.service_monitor
    assert any(i.kind == "NodePool" for i in operator.informers)
    assert not any(i.kind == "ServiceMonitor" for i in operator.informers)
    stop.set()
    assert not await Operator(FlakyKube(), kube, Options())._discover(stop)  # type: ignore[arg-type]
