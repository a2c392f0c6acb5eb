"""Kubernetes Events about our objects (`kubectl describe` shows them).

An Event is created by the worker whose pass saw the transition, before it takes the next key: no queue to
overflow when thousands of objects turn Ready at once, and an Event is never lost to one. A refused Event (a
namespace being deleted, say) is logged and not retried.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from qwenfleet.kube import Kube, KubeError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "qwenfleet"
MAX_MESSAGE = 1024


def event_manifest(obj: Obj, type_: str, reason: str, message: str, now: datetime, unique: int) -> Obj:
    """A core/v1 Event about `obj`, named after it as kubectl and client-go do (`name.<hex>`)."""
    meta = obj.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
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


async def post_event(kube: Kube, obj: Obj, type_: str, reason: str, message: str) -> None:
    """Create an Event about `obj`; a refusal is logged, never raised."""
    try:
        await kube.create(event_manifest(obj, type_, reason, message, datetime.now(UTC), time.time_ns()))
    except KubeError as exc:
        log.info("event %s about %s not posted: %s", reason, (obj.get("metadata") or {}).get("name"), exc)
