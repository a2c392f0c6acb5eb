"""`make bench-operator`: how fast the operator converges 100 and 1000 Qwen3Deployments, against a floor.

For each size N, on a fresh local control plane with audit logging:
1. floor: the same child objects the operator creates (Deployment, Service, PodDisruptionBudget,
   NetworkPolicy and ServiceMonitor per deployment) applied directly with one client, 64 requests in flight;
2. operator: N Qwen3Deployments created while no operator runs, then `qwenfleet run` started; time from its
   start until every child exists and every status is current (observedGeneration, Ready=True and
   Progressing=RolloutComplete, which needs the Deployment controller to have seen the child);
3. steady state: the API server's audit log counts the operator's write requests over a window longer than
   one full resync (every deployment is reconciled at least once in it): writes per no-op resync;
4. the operator's resident memory at the end.
Writes bench/results/operator.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.controller.deployment import plan_request
from qwenfleet.controller.handlers import RESYNC_SECONDS
from qwenfleet.devcluster import build
from qwenfleet.devcluster.cluster import DevCluster
from qwenfleet.kube import Kube, make_api_client
from qwenfleet.planner import plan
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children

ROOT = Path(__file__).resolve().parents[2]
API = "qwenfleet.dev/v1alpha1"
SPEC = {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 0}
CONCURRENCY = 64
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
               ("networking.k8s.io/v1", "NetworkPolicy"))  # fmt: skip


async def _bounded(coros: list[Any]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(c: Any) -> None:
        async with gate:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def _namespace(kube: Kube, name: str) -> None:
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def floor(kube: Kube, n: int) -> float:
    """Seconds to apply the children of n deployments directly (no owner, so nothing garbage-collects them):
    the same objects the operator creates here, ServiceMonitor included when its CRD is installed."""
    await _namespace(kube, "floor")
    caps = Capabilities(service_monitor=await kube.crd_exists("servicemonitors.monitoring.coreos.com"))
    spec = Qwen3DeploymentSpec.model_validate(SPEC)
    the_plan = plan(plan_request(spec))
    children = []
    for i in range(n):
        owner = Owner(name=f"q-{i}", namespace="floor", uid=f"00000000-0000-0000-0000-{i:012d}")
        inp = DeploymentInput(owner=owner, spec=spec, plan=the_plan, replicas=0, capabilities=caps)
        for child in desired_children(inp):
            child["metadata"].pop("ownerReferences", None)
            children.append(child)
    started = time.monotonic()
    await _bounded([kube.apply(c) for c in children])
    return time.monotonic() - started


async def _converged(kube: Kube, namespace: str, n: int) -> bool:
    for api_version, kind in CHILD_KINDS:
        if (
            len(await kube.list(api_version, kind, namespace, label_selector="app.kubernetes.io/managed-by=qwenfleet"))
            < n
        ):
            return False
    current = 0
    for obj in await kube.list(API, "Qwen3Deployment", namespace):
        st = obj.get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        settled = (conds.get("Ready", {}).get("status") == "True"
                   and conds.get("Progressing", {}).get("reason") == "RolloutComplete")  # fmt: skip
        current += st.get("observedGeneration") == obj["metadata"]["generation"] and settled
    return current == n


def _writes(audit: Path, since: float, until: float) -> Counter[str]:
    """Write requests the operator sent between two wall-clock times, from the audit log, by verb and resource."""
    count: Counter[str] = Counter()
    for line in audit.read_text().splitlines():
        event = json.loads(line)
        agent = event.get("userAgent", "")
        if not (agent.startswith("qwenfleet/") or agent.startswith("kopf/")):
            continue
        stamp = event.get("requestReceivedTimestamp", "")
        when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if since <= when <= until:
            ref = event.get("objectRef") or {}
            count[
                f"{event['verb']} {ref.get('resource', '')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
            ] += 1
    return count


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def measure(n: int, work: Path) -> dict[str, Any]:
    """One size on a fresh cluster."""
    cluster = DevCluster(work / f"cluster-{n}", profile="default", audit=True)
    cluster.start()
    operator: subprocess.Popen[bytes] | None = None
    kube = Kube(await make_api_client(str(cluster.kubeconfig)))
    try:
        floor_seconds = await floor(kube, n)
        await _namespace(kube, "bench")
        bodies = [{"apiVersion": API, "kind": "Qwen3Deployment", "metadata": {"name": f"q-{i}", "namespace": "bench"},
                   "spec": SPEC} for i in range(n)]  # fmt: skip
        await _bounded([kube.apply(b) for b in bodies])
        log = (work / f"operator-{n}.log").open("wb")
        cmd = [sys.executable, "-m", "qwenfleet.cli", "run", "--all-namespaces", f"--kubeconfig={cluster.kubeconfig}",
               "--metrics-port=0", "--health-port=0"]  # fmt: skip
        started, started_wall = time.monotonic(), time.time()
        operator = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: ASYNC220  (returns at once)
        while not await _converged(kube, "bench", n):
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited; see {work / f'operator-{n}.log'}")
            await asyncio.sleep(2)
        converge = time.monotonic() - started
        converged_wall = time.time()
        print(f"n={n}: converged in {converge:.1f}s (floor {floor_seconds:.1f}s)", flush=True)
        await asyncio.sleep(15)  # let the last events drain
        window_start = time.time()
        await asyncio.sleep(RESYNC_SECONDS + 15)  # every deployment resyncs at least once
        window_end = time.time()
        await asyncio.sleep(3)  # the audit batch flushes within a second
        writes = _writes(cluster.audit_log, window_start, window_end)
        converging = _writes(cluster.audit_log, started_wall - 1, converged_wall + 1)
        rss = _rss_mb(operator.pid)
        return {"convergeSeconds": round(converge, 1), "floorSeconds": round(floor_seconds, 1),
                "ratio": round(converge / floor_seconds, 2), "writesPerNoopResync": round(sum(writes.values()) / n, 3),
                "writesInWindow": dict(writes), "rssMB": rss,
                "writesWhileConverging": dict(converging)}  # fmt: skip
    finally:
        if operator and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            operator.wait(30)
        await kube.close()
        cluster.stop()


def main() -> None:
    """Both sizes; write the results."""
    build.build()
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100,1000").split(",")]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qwenfleet-bench-") as tmp:
        for n in sizes:
            result[f"n{n}"] = asyncio.run(measure(n, Path(tmp)))
            print(json.dumps(result[f"n{n}"]), flush=True)
    result["machine"] = f"{os.cpu_count()} cores; control plane, operator and load share them"
    result["method"] = __doc__.split("\n\n")[1] if __doc__ else ""
    out = ROOT / "bench" / "results" / "operator.json"
    if sizes == [100, 1000]:
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
