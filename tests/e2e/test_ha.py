"""High availability: two operators under leader election; only the Lease holder reconciles, and a standby
takes over when the leader is killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import API, KIND, _wait_ready

LEASE = "qwenfleet-operator"


async def _holder(kube: Kube, namespace: str) -> str | None:
    lease = await kube.get("coordination.k8s.io/v1", "Lease", LEASE, namespace)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _candidate(kubeconfig: Path, tmp_path: Path, name: str, namespace: str) -> OperatorProcess:
    args = (f"--namespace={namespace}", "--leader-election", f"--lease-namespace={namespace}")
    return OperatorProcess(kubeconfig, tmp_path, args=args, name=name, env={"POD_NAME": name})


async def test_only_the_leader_reconciles_and_a_standby_takes_over(
    kube: Kube, kubeconfig: Path, namespace: str, session_operator_paused: None, tmp_path: Path
) -> None:
    a = _candidate(kubeconfig, tmp_path, "op-a", namespace)
    b = _candidate(kubeconfig, tmp_path, "op-b", namespace)
    a.start()
    try:
        await wait_for(lambda: _is(kube, namespace, "op-a"), 20, "op-a holding the Lease")
        b.start()
        body: dict[str, Any] = {"apiVersion": API, "kind": KIND, "metadata": {"name": "ha", "namespace": namespace},
                                "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 1}}  # fmt: skip
        await kube.apply(body)
        await _wait_ready(kube, namespace, "ha")
        assert a.metric("qwenfleet_leader") == 1 and b.metric("qwenfleet_leader") == 0
        assert b.reconcile_count() == 0, "the standby must not reconcile"

        a.stop(signal.SIGKILL)  # no chance to release the Lease
        killed = time.monotonic()
        await wait_for(lambda: _is(kube, namespace, "op-b"), 30, "op-b taking the Lease")
        takeover = time.monotonic() - killed
        assert takeover < 20, f"takeover took {takeover:.1f}s"
        body["spec"]["replicas"] = 2
        await kube.apply(body)

        async def two() -> bool:
            obj = await kube.get(API, KIND, "ha", namespace)
            return ((obj or {}).get("status") or {}).get("desiredReplicas") == 2

        await wait_for(two, 30, "the new leader reconciling a spec change")
        assert b.metric("qwenfleet_leader") == 1

        b.stop(signal.SIGTERM)  # a clean stop releases the Lease at once
        assert await _holder(kube, namespace) is None
        await kube.delete(API, KIND, "ha", namespace)
    finally:
        a.stop()
        b.stop()


async def _is(kube: Kube, namespace: str, who: str) -> bool:
    return await _holder(kube, namespace) == who
