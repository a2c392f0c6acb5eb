"""kopf's settings for this operator, and the storages that make a watch event cheap.

qwenfleet registers only `@kopf.on.event` and `@kopf.index` handlers, whose results kopf keeps nowhere: it needs
no diff base (what changed since the last handling) and no progress (which handlers ran). kopf computes both for
every event all the same, a deep copy of the whole body each, unless the storages are ones that store nothing.
That is safe only while no change-detection handler (on.create/update/resume/delete/field), daemon or timer is
registered; `assert_event_handlers_only` refuses to start otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from qwenfleet.render.names import GROUP

WATCH_INACTIVITY_SECONDS = 70.0
"""A watch that brings no event for this long, not even a bookmark (the API server sends one about every
minute), is taken for dead and reconnected from its last resourceVersion (kopf's inactivity timeout)."""
API_ERROR_BACKOFFS = (1.0, 2.0, 4.0, 8.0)
"""kopf's retries of a failed API request (403s during upgrades included) before it gives up: 15 s, not the
default 54 s, so a watch that is really forbidden shows on /healthz within a probe or two."""
LIST_CHUNK = 500
EXIT_SECONDS = 5.0
"""How long a stop waits for handlers and reconcile passes that are running to finish."""


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is never built, stored or read: no change-detection handler needs one."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    """Handler progress that is never stored: event and index handlers have none to keep."""

    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        return None

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return essence


def assert_event_handlers_only(registry: kopf.OperatorRegistry) -> None:
    """Refuse a registry with handlers that would need the diff base or progress the storages above drop."""
    # kopf exposes no public listing of handlers by kind; these are its registries of change-detection
    # handlers (on.create/update/resume/delete/field) and of daemons and timers.
    changing = list(registry._changing.get_all_handlers())
    spawning = list(registry._spawning.get_all_handlers())
    if changing or spawning:
        ids = ", ".join(str(h.id) for h in [*changing, *spawning])
        raise RuntimeError(f"only on.event and index handlers may be registered with the no-op storages: {ids}")


def configure(settings: kopf.OperatorSettings, label_selectors: Mapping[tuple[str, str, str], str]) -> None:
    """Production settings: cheap events, server-side filtering, bounded waits."""
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
    settings.persistence.finalizer = f"{GROUP}/kopf"  # never added (no handler needs one); never ours to remove
    for (group, version, plural), selector in label_selectors.items():
        # Only what we made reaches the operator: filtered by the API server, never after the fact here.
        settings.watching.label_selectors[group, version, plural] = selector
    settings.watching.chunk_size = LIST_CHUNK  # the first list of each kind in pages
    # No server timeout: the API server then ends each watch at its own random time between its
    # --min-request-timeout and twice that, so the watches do not all reconnect at once; a stream that
    # stalls meanwhile is caught by the inactivity timeout.
    settings.watching.server_timeout = None
    settings.watching.client_timeout = None
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_SECONDS
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = API_ERROR_BACKOFFS
    settings.networking.enforce_retry_after = False  # a 429's Retry-After is the least kopf waits
    settings.queueing.worker_limit = None  # a limit below the object count deadlocks the indexes (kopf docs)
    settings.queueing.exit_timeout = EXIT_SECONDS
    settings.posting.enabled = False  # Events are ours (controller/events.py: aggregated repeats)
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # leadership is the Lease's (controller/leader.py)
    settings.scanning.disabled = False  # notice CRDs installed later (KEDA, Karpenter, ...)
