"""Leader election on a coordination.k8s.io Lease: only the holder watches and reconciles.

Expiry is judged as client-go does: by how long *this* replica has seen the same holder and renew time
unchanged on its own monotonic clock, never by comparing another machine's timestamps with ours, so clock
skew between nodes cannot make two leaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qwenfleet.kube import Kube, KubeError

log = logging.getLogger(__name__)
LEASE_API = "coordination.k8s.io/v1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """The last Lease record this replica saw, and when (monotonic seconds) it last changed."""

    holder: str | None = None
    renew_time: str | None = None
    since: float = field(default_factory=time.monotonic)

    def update(self, spec: dict[str, Any], now: float) -> None:
        """Note the record; restart the expiry clock only when holder or renew time changed."""
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if record != (self.holder, self.renew_time):
            self.holder, self.renew_time, self.since = record[0], record[1], now


def claim(
    spec: dict[str, Any], identity: str, observed: Observed, now: float, duration: float
) -> dict[str, Any] | None:
    """The Lease spec to write to hold (or renew) the lease, or None while another replica validly holds it."""
    holder = spec.get("holderIdentity")
    expired = now - observed.since > spec.get("leaseDurationSeconds", duration)
    if holder and holder != identity and not expired:
        return None
    taking = holder != identity
    stamp = _now()
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(duration),
        "acquireTime": stamp if taking else spec.get("acquireTime", stamp),
        "renewTime": stamp,
        "leaseTransitions": int(spec.get("leaseTransitions", 0)) + (1 if taking and holder else 0),
    }


class LeaderElector:
    """Acquire, renew and release one Lease."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration: float = 15.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.observed = Observed()
        self.leading = False

    async def _try(self) -> bool:
        """One attempt to hold the Lease; True when this replica holds it afterwards."""
        lease = await self.kube.get(LEASE_API, "Lease", self.name, self.namespace)
        now = time.monotonic()
        if lease is None:
            spec = claim({}, self.identity, self.observed, now, self.duration)
            body = {"apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}  # fmt: skip
            try:
                await self.kube.create(body)
            except KubeError as exc:
                if exc.status == 409:
                    return False
                raise
            return True
        self.observed.update(lease.get("spec") or {}, now)
        spec = claim(lease.get("spec") or {}, self.identity, self.observed, now, self.duration)
        if spec is None:
            return False
        lease["spec"] = spec
        try:
            await self.kube.replace(lease)  # carries resourceVersion: a racing replica gets 409
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def acquire(self, retry: float = 2.0) -> None:
        """Wait until this replica holds the Lease."""
        log.info("leader election: %s waits for lease %s/%s", self.identity, self.namespace, self.name)
        while True:
            try:
                if await self._try():
                    self.leading = True
                    log.info("leader election: %s is the leader", self.identity)
                    return
            except KubeError as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(retry)

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew every third of the duration; set `lost` when renewals fail for longer than the duration."""
        last_ok = time.monotonic()
        while not lost.is_set():
            await asyncio.sleep(self.duration / 3)
            try:
                if await self._try():
                    last_ok = time.monotonic()
                    continue
                log.error("leader election: another replica took lease %s", self.name)
            except KubeError as exc:
                log.warning("leader election: renewal failed: %s", exc)
                if time.monotonic() - last_ok < self.duration * 2 / 3:
                    continue  # keep trying while the lease is still surely ours
            self.leading = False
            lost.set()

    async def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        with contextlib.suppress(KubeError):
            lease = await self.kube.get(LEASE_API, "Lease", self.name, self.namespace)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
                await self.kube.replace(lease)
                log.info("leader election: released lease %s", self.name)
