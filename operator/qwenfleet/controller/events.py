"""Kubernetes Events about our objects (`kubectl describe` shows them), sent off the reconcile's path.

A pass queues its Events and goes on; SENDERS tasks create them. A repeat of an Event (same object, type,
reason and message) within AGGREGATE_SECONDS is not a new Event: the one already posted has its `count` raised
and `lastTimestamp` moved, as client-go's recorder does, so a pass failing every back-off leaves one line in
`kubectl describe`, not one per attempt. Repeats that arrive while their Event is being sent are added up into
one update. When thousands of objects turn Ready at once the queue fills, and then a pass waits for room instead of
dropping an Event. A refused Event (a namespace being deleted, say) is logged and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from qwenfleet.kube import Kube, KubeError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "qwenfleet"
MAX_MESSAGE = 1024
MAX_PENDING = 1000
SENDERS = 4
AGGREGATE_SECONDS = 600.0
MAX_REMEMBERED = 4096
"""Events remembered for aggregation; the oldest is forgotten first (a repeat of it is then a new Event)."""
EventKey = tuple[str, str, str, str]
"""(uid of the object, type, reason, message)."""


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_manifest(obj: Obj, type_: str, reason: str, message: str, now: datetime, unique: int) -> Obj:
    """A core/v1 Event about `obj`, named after it as kubectl and client-go do (`name.<hex>`)."""
    meta = obj.get("metadata") or {}
    stamp = _stamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{unique:x}", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass
class _Record:
    """One Event as posted (or being posted), and the repeats not yet sent."""

    manifest: Obj
    count: int = 1
    sent_count: int = 0
    last: str = ""
    posted_at: float = 0.0
    created: bool = False
    queued: bool = False


class EventPoster:
    """`post` queues an Event about an object (waiting only while MAX_PENDING are queued); SENDERS tasks send."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._pending: asyncio.Queue[EventKey] = asyncio.Queue(MAX_PENDING)
        self._records: OrderedDict[EventKey, _Record] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.created = 0
        self.updated = 0

    async def post(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Queue an Event about `obj`, or count a repeat of one posted within AGGREGATE_SECONDS."""
        message = message[:MAX_MESSAGE]
        key = (str((obj.get("metadata") or {}).get("uid") or ""), type_, reason, message)
        now = time.monotonic()
        stamp = _stamp(datetime.now(UTC))
        record = self._records.get(key)
        if record is not None and now - record.posted_at < AGGREGATE_SECONDS:
            record.count += 1
            record.last = stamp
            self._records.move_to_end(key)
        else:
            manifest = event_manifest(obj, type_, reason, message, datetime.now(UTC), time.time_ns())
            record = self._records[key] = _Record(manifest=manifest, last=stamp, posted_at=now)
            for old in list(islice(self._records, max(0, len(self._records) - MAX_REMEMBERED))):
                if not self._records[old].queued:  # one still to be sent stays
                    del self._records[old]
        if not record.queued:
            record.queued = True
            await self._pending.put(key)

    def start(self) -> None:
        """Start sending (inside the running event loop)."""
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._send()) for _ in range(SENDERS)]

    async def stop(self, drain_seconds: float = 2.0) -> None:
        """Send what is queued (for at most `drain_seconds`), then stop."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _deliver(self, record: _Record) -> None:
        """Create the Event, or raise its count to what was posted; a refusal is logged, never raised."""
        count, last = record.count, record.last
        manifest = record.manifest
        meta = manifest["metadata"]
        try:
            if record.created:
                patch = {"count": count, "lastTimestamp": last}
                try:
                    await self.kube.merge_patch("v1", "Event", meta["name"], meta["namespace"], patch)
                    self.updated += 1
                except KubeError as exc:
                    if not exc.not_found:
                        raise
                    record.created = False  # expired or deleted: post it anew
            if not record.created:
                await self.kube.create({**manifest, "count": count, "lastTimestamp": last})
                record.created = True
                self.created += 1
            record.sent_count = count
        except KubeError as exc:
            record.sent_count = count  # not retried
            log.info("event %s about %s not posted: %s", manifest["reason"], manifest["involvedObject"]["name"], exc)

    async def _send(self) -> None:
        while True:
            key = await self._pending.get()
            try:
                record = self._records.get(key)
                while record is not None and record.count > record.sent_count:
                    await self._deliver(record)  # again for repeats that came while it was sent
                if record is not None:
                    record.queued = False
            finally:
                self._pending.task_done()
