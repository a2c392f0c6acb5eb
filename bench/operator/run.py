"""`make bench-operator`: how fast the operator converges 100 and 1000 Qwen3Deployments, against a floor.

For each size N, on a fresh local control plane with audit logging:
1. floor: the same child objects the operator creates (Deployment, Service, PodDisruptionBudget,
   NetworkPolicy and ServiceMonitor per deployment) applied directly with one client, 64 requests in flight;
   then a pause until the controllers have caught up with them (every Deployment observed, and 10 s), so
   their backlog does not fall into the operator's run;
2. operator: N Qwen3Deployments created while no operator runs, then `qwenfleet run` started; time from its
   start until every status is current (observedGeneration, Ready=True and Progressing=RolloutComplete, which
   needs the Deployment controller to have seen the child), seen through one watch; then every child is
   checked to exist;
3. steady state: the API server's audit log counts the operator's write requests over a window longer than
   one full resync (every deployment is reconciled at least once in it): writes per no-op resync;
4. the operator's resident memory at the end;
5. restart: the operator is stopped and started again on the converged objects; the audit log counts its
   writes until 15 s after its first full pass (every object reconciled once, from its log), which is timed
   from the new process's start.
Writes while converging are counted from the start until the steady-state window opens (15 s after
convergence: Events posted just after it count). They and RSS are also given per deployment. Writes
bench/results/operator.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.controller.operator import RESYNC_SECONDS
from qwenfleet.devcluster import build
from qwenfleet.devcluster.cluster import DevCluster
from qwenfleet.kube import Kube, WatchExpired, make_api_client
from qwenfleet.planner import plan, plan_request
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
    the same objects the operator creates here, ServiceMonitor included when its CRD is installed, labelled as
    managed by the benchmark (so the operator measured next does not watch them)."""
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
            # not ours: the operator measured next watches only what it manages, not the floor's copies
            child["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "bench-floor"
            children.append(child)
    started = time.monotonic()
    await _bounded([kube.apply(c) for c in children])
    return time.monotonic() - started


async def _quiet(kube: Kube, namespace: str, n: int) -> float:
    """Wait until the controllers have caught up with the floor's objects (every Deployment observed, then 10 s
    for the rest), so their backlog does not slow the operator's run that follows. Seconds."""
    started = time.monotonic()
    while time.monotonic() - started < 600:
        deployments = await kube.list("apps/v1", "Deployment", namespace)
        observed = sum((d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation")
                       for d in deployments)  # fmt: skip
        if observed >= n:
            await asyncio.sleep(10)
            break
        await asyncio.sleep(3)
    return time.monotonic() - started


def _settled(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    conds = {c["type"]: c for c in st.get("conditions") or []}
    return bool(st.get("observedGeneration") == obj["metadata"].get("generation")
                and conds.get("Ready", {}).get("status") == "True"
                and conds.get("Progressing", {}).get("reason") == "RolloutComplete")  # fmt: skip


class Convergence:
    """Which deployments are settled, from one watch (a poll that lists thousands of objects every few seconds
    would load the API server the operator is measured against)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.settled: set[str] = set()
        self.done = asyncio.Event()

    def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind != "DELETED" and _settled(obj):
            self.settled.add(name)
        else:
            self.settled.discard(name)
        if len(self.settled) >= self.n:
            self.done.set()


async def _follow(kube: Kube, namespace: str, handler: Convergence) -> None:
    """The benchmark's own view of the deployments' statuses: list, then watch from there (again on 410)."""
    while True:
        version = ""
        async for page, listed_at in kube.list_pages(API, "Qwen3Deployment", namespace):
            version = listed_at
            for obj in page:
                handler("ADDED", obj)
        with contextlib.suppress(WatchExpired):
            while True:
                async for kind, obj in kube.watch(API, "Qwen3Deployment", namespace, version):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        handler(kind, obj)


async def _children_complete(kube: Kube, namespace: str, n: int) -> bool:
    """Every deployment has each of its children (checked once, at the end)."""
    for api_version, kind in CHILD_KINDS:
        if (
            len(await kube.list(api_version, kind, namespace, label_selector="app.kubernetes.io/managed-by=qwenfleet"))
            < n
        ):
            return False
    return True


def _writes(audit: Path, since: float, until: float) -> Counter[str]:
    """Write requests the operator sent between two wall-clock times, from the audit log, by verb and resource."""
    count: Counter[str] = Counter()
    for line in audit.read_text().splitlines():
        event = json.loads(line)
        agent = event.get("userAgent", "")
        if not agent.startswith("qwenfleet/"):
            continue
        stamp = event.get("requestReceivedTimestamp", "")
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()  # to the microsecond: the
        if since <= when <= until:  # bench's own creation of the objects just before the start does not count
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


def _start_operator(cluster: DevCluster, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "qwenfleet.cli", "run", "--all-namespaces", f"--kubeconfig={cluster.kubeconfig}",
           "--metrics-port=0", "--health-port=0"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def _full_pass_logged(log_path: Path, n: int) -> bool:
    """Whether the operator logged that its queue drained with at least n objects passed once."""
    for line in log_path.read_text(errors="replace").splitlines():
        if "reconcile queue drained:" in line and int(line.split("drained:")[1].split()[0]) >= n:
            return True
    return False


async def _restart(cluster: DevCluster, operator: subprocess.Popen[bytes], n: int, work: Path) -> tuple[
        subprocess.Popen[bytes], dict[str, Any]]:  # fmt: skip
    """Stop the operator, start it again on n converged deployments: time to its first full pass, its writes."""
    operator.send_signal(signal.SIGTERM)
    operator.wait(60)
    log_path = work / f"operator-{n}-restart.log"
    started, started_wall = time.monotonic(), time.time()
    again = _start_operator(cluster, log_path)
    while not _full_pass_logged(log_path, n):
        if again.poll() is not None or time.monotonic() - started > 600:
            raise RuntimeError(f"no full pass after the restart; see {log_path}")
        await asyncio.sleep(0.2)
    first_pass = time.monotonic() - started
    await asyncio.sleep(15)
    until = time.time()
    await asyncio.sleep(3)
    writes = _writes(cluster.audit_log, started_wall, until)
    return again, {"firstFullPassSeconds": round(first_pass, 1), "writes": dict(writes)}


async def measure(n: int, work: Path) -> dict[str, Any]:
    """One size on a fresh cluster."""
    cluster = DevCluster(work / f"cluster-{n}", profile="default", audit=True)
    cluster.start()
    operator: subprocess.Popen[bytes] | None = None
    kube = Kube(await make_api_client(str(cluster.kubeconfig)))
    try:
        floor_seconds = await floor(kube, n)
        print(f"n={n}: floor {floor_seconds:.1f}s; controllers caught up {await _quiet(kube, 'floor', n):.0f}s later",
              flush=True)  # fmt: skip
        await _namespace(kube, "bench")
        bodies = [{"apiVersion": API, "kind": "Qwen3Deployment", "metadata": {"name": f"q-{i}", "namespace": "bench"},
                   "spec": SPEC} for i in range(n)]  # fmt: skip
        await _bounded([kube.apply(b) for b in bodies])
        started, started_wall = time.monotonic(), time.time()
        convergence = Convergence(n)
        watch = asyncio.ensure_future(_follow(kube, "bench", convergence))
        operator = _start_operator(cluster, work / f"operator-{n}.log")
        while not convergence.done.is_set():
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited; see {work / f'operator-{n}.log'}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(convergence.done.wait(), 1)
        converge = time.monotonic() - started
        watch.cancel()
        if not await _children_complete(kube, "bench", n):
            raise RuntimeError("every status is settled but children are missing")
        print(f"n={n}: converged in {converge:.1f}s (floor {floor_seconds:.1f}s)", flush=True)
        await asyncio.sleep(15)  # let the last events drain
        window_start = time.time()
        await asyncio.sleep(RESYNC_SECONDS + 15)  # every deployment resyncs at least once
        window_end = time.time()
        await asyncio.sleep(3)  # the audit batch flushes within a second
        writes = _writes(cluster.audit_log, window_start, window_end)
        converging = _writes(cluster.audit_log, started_wall, window_start)  # with what trails (Events)
        rss = _rss_mb(operator.pid)
        operator, restart = await _restart(cluster, operator, n, work)
        print(f"n={n}: restart {restart}", flush=True)
        return {"convergeSeconds": round(converge, 1), "floorSeconds": round(floor_seconds, 1),
                "ratio": round(converge / floor_seconds, 2), "writesPerNoopResync": round(sum(writes.values()) / n, 3),
                "writesInWindow": dict(writes), "rssMB": rss, "rssMBPerDeployment": round(rss / n, 3),
                "writesWhileConverging": dict(converging),
                "writesWhileConvergingPerDeployment": round(sum(converging.values()) / n, 2),
                "restart": restart}  # fmt: skip
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
    result["framework"] = f"kopf {version('kopf')}, kubernetes-asyncio {version('kubernetes-asyncio')}"
    result["method"] = __doc__.split("\n\n")[1] if __doc__ else ""
    out = ROOT / "bench" / "results" / "operator.json"
    if {100, 1000} <= set(sizes):
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
