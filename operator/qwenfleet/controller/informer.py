"""One shared list-and-watch per kind and namespace: how the operator learns of every change.

An informer lists its kind once (paged), then watches from the list's resourceVersion, reconnecting from the
last version it saw whenever the server ends the watch; when that version is too old (410 Gone) it lists again
and reports as deleted whatever vanished in between. It hands each change to a plain function and keeps only
the names and labels of what it has seen: what to remember of each object is the handler's decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from qwenfleet.controller.metrics import RELISTS
from qwenfleet.kube import Kube, KubeError, WatchExpired

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Handler = Callable[[str, Obj], None]
"""Called with ("ADDED" | "MODIFIED" | "DELETED", the object)."""
MAX_BACKOFF_SECONDS = 30.0


def _name(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """List, then watch, one kind (optionally one namespace and label selector) for as long as `run` runs."""

    def __init__(
        self,
        kube: Kube,
        api_version: str,
        kind: str,
        namespace: str | None,
        handler: Handler,
        *,
        label_selector: str | None = None,
    ) -> None:
        self.kube = kube
        self.api_version, self.kind, self.namespace = api_version, kind, namespace
        self.label_selector = label_selector
        self.handler = handler
        self.synced = asyncio.Event()
        """Set once the first list has been handed to the handler."""
        self._known: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> labels

    def __repr__(self) -> str:
        return f"Informer({self.kind} in {self.namespace or 'all namespaces'})"

    def _hand(self, kind: str, obj: Obj) -> None:
        key = _name(obj)
        if kind == "DELETED":
            self._known.pop(key, None)
        else:
            self._known[key] = dict((obj.get("metadata") or {}).get("labels") or {})
        try:
            self.handler(kind, obj)
        except Exception:  # a handler's bug must not end the watch
            log.exception("%r: handling %s %s/%s failed", self, kind, *key)

    async def _list(self) -> str:
        """Hand every object over; report those that vanished since the last list as deleted. The version."""
        listed: set[tuple[str, str]] = set()
        version = ""
        async for page, page_version in self.kube.list_pages(
            self.api_version, self.kind, self.namespace, label_selector=self.label_selector
        ):
            version = page_version
            for obj in page:
                listed.add(_name(obj))
                self._hand("MODIFIED" if _name(obj) in self._known else "ADDED", obj)
        for (namespace, name), labels in list(self._known.items()):
            if (namespace, name) not in listed:
                gone = {"namespace": namespace, "name": name, "labels": labels}
                self._hand("DELETED", {"apiVersion": self.api_version, "kind": self.kind, "metadata": gone})
        return version

    async def run(self) -> None:
        """Until cancelled: list, then watch from there; reconnect, or list again when the version expired."""
        version: str | None = None
        backoff = 1.0
        while True:
            try:
                if version is None:
                    version = await self._list()
                    self.synced.set()
                async for kind, obj in self.kube.watch(
                    self.api_version, self.kind, self.namespace, version, label_selector=self.label_selector
                ):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        obj.setdefault("apiVersion", self.api_version)
                        obj.setdefault("kind", self.kind)
                        self._hand(kind, obj)
                backoff = 1.0
            except WatchExpired:
                log.info("%r: resourceVersion %s expired; listing again", self, version)
                version = None
                RELISTS.labels(self.kind).inc()
            except KubeError as exc:
                log.warning("%r: %s; retrying in %.0fs", self, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%r failed; retrying in %.0fs", self, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
