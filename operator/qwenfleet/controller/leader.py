"""Leader election on a coordination.k8s.io Lease: only the holder watches and reconciles.

Expiry is judged as client-go does: by how long *this* replica has seen the same holder and renew time
unchanged on its own monotonic clock, never by comparing another machine's timestamps with ours, so clock
skew between nodes cannot make two leaders.

The holder gives up when it has not renewed within the renew deadline (two thirds of the lease duration),
counted from the start of its last successful renewal, and every call it makes is cut off at that deadline: an API
server that does not answer cannot keep a leader leading past it, while a standby waits the whole duration. What
runs under the lease is stopped before `hold` returns, in the time left between the two.
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
LEASE_SECONDS = 15.0
"""How long a silent leader keeps the Lease; renewals every 2 s, given up after 10 s (client-go's defaults)."""


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

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration: float = LEASE_SECONDS) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = duration * 2 / 3
        self.retry_period = duration / 7.5
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

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease (each attempt cut off at the renew deadline)."""
        log.info("leader election: %s waits for lease %s/%s", self.identity, self.namespace, self.name)
        while True:
            try:
                if await asyncio.wait_for(self._try(), self.renew_deadline):
                    self.leading = True
                    log.info("leader election: %s is the leader", self.identity)
                    return
            except (KubeError, TimeoutError) as exc:
                log.warning("leader election: %s", exc or "no answer within the renew deadline")
            await asyncio.sleep(self.retry_period)

    async def hold(self) -> None:
        """Renew until leadership is lost: another replica took the Lease, or no renewal succeeded within the
        renew deadline (each attempt is cut off at what is left of it). Returns then, `leading` False."""
        last_ok = time.monotonic()  # acquire() has just renewed
        while True:
            await asyncio.sleep(self.retry_period)
            attempt = time.monotonic()
            left = self.renew_deadline - (attempt - last_ok)
            if left <= 0:
                log.error("leader election: no renewal of lease %s for %.1fs; giving up", self.name,
                          attempt - last_ok)  # fmt: skip
                break
            try:
                if await asyncio.wait_for(self._try(), left):
                    last_ok = attempt  # the renewTime written is no older than this
                    continue
                log.error("leader election: another replica took lease %s", self.name)
                break
            except TimeoutError:
                log.warning("leader election: renewal got no answer within %.1fs", left)
            except KubeError as exc:
                log.warning("leader election: renewal failed: %s", exc)
        self.leading = False

    async def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        with contextlib.suppress(KubeError, TimeoutError):
            async with asyncio.timeout(self.renew_deadline):
                await self._release()

    async def _release(self) -> None:
        lease = await self.kube.get(LEASE_API, "Lease", self.name, self.namespace)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
            await self.kube.replace(lease)
            log.info("leader election: released lease %s", self.name)
