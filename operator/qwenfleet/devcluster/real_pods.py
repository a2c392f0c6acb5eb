"""Real vLLM engines for the dev fleet's model-server pods that ask for one.

A Qwen3Deployment annotated `qwenfleet.dev/dev-engine: vllm` has its pods served by a real `vllm serve` (the CPU
build of the pinned release) started from the pod's own rendered container command and args, with only the
substitutions `engine.engine_argv` documents. The fleet agent then plays the kubelet for that container:
- readiness is vLLM's own `/health`: the pod is Ready only while it answers 200;
- the engine exiting ends the container: the pod turns unready, `restartCount` goes up, `lastState` records the
  exit, and the engine is started again after the kubelet's back-off (10 s, doubling, at most 300 s);
- the pod going away stops the engine (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from qwenfleet.devcluster import engine
from qwenfleet.devcluster.podvolumes import LORA_ENV, bind_mounted, lora_runtime_updates
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render.names import GROUP, HTTP_PORT

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ENGINE_ANNOTATION = f"{GROUP}/dev-engine"
"""On a Qwen3Deployment in the dev fleet: `vllm` serves its pods with the real engine instead of the simulator."""
REAL_ENGINE = "vllm"
BACKOFF_START_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
STOP_GRACE_SECONDS = 10.0


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backoff_seconds(restarts: int) -> float:
    """The kubelet's crash-loop back-off before restart number `restarts + 1`."""
    return float(min(BACKOFF_START_SECONDS * 2.0 ** max(restarts - 1, 0), BACKOFF_MAX_SECONDS))


def container_status(
    pod: Obj,
    *,
    running: bool,
    ready: bool,
    restarts: int,
    started_at: str | None,
    last_exit: Obj | None,
    now: str,
) -> Obj:
    """The pod status a kubelet would report for the engine's container (merge-patch body of `status`)."""
    status = pod.get("status") or {}
    container = pod["spec"]["containers"][0]
    state: Obj = (
        {"running": {"startedAt": started_at or now}}
        if running
        else {"waiting": {"reason": "CrashLoopBackOff" if restarts else "ContainerCreating"}}
    )
    entry: Obj = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": running,
        "restartCount": restarts,
        "state": state,
    }
    if last_exit:
        entry["lastState"] = {"terminated": last_exit}
    flag = "True" if ready else "False"
    conditions = []
    for cond in status.get("conditions") or []:
        if cond.get("type") not in ("Ready", "ContainersReady") or cond.get("status") == flag:
            conditions.append(cond)
            continue
        changed = {**cond, "status": flag, "lastTransitionTime": now}
        if not ready:
            changed["reason"] = "ContainersNotReady"
        else:
            changed.pop("reason", None)
        conditions.append(changed)
    return {"conditions": conditions, "containerStatuses": [entry]}


@dataclass
class EnginePod:
    """One pod's engine: its process and what the kubelet would remember about its container."""

    key: str
    namespace: str
    name: str
    ip: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    restarts: int = 0
    last_exit: Obj | None = None
    restart_at: float = 0.0
    ready: bool = False
    reported: Obj = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """The pod's own settings that reach the engine (vLLM's runtime LoRA switch)."""

    def start(self) -> None:
        """Start (or restart) the engine process."""
        self.process = engine.spawn(self.argv, self.log_path, self.env)
        self.pgid_path.write_text(str(self.process.pid))  # `dev down` kills what a killed agent left behind
        self.started_at = now_rfc3339()
        log.info("real vLLM for %s on %s:%d (pid %d): %s", self.key, self.ip, HTTP_PORT, self.process.pid,
                 " ".join(self.argv))  # fmt: skip

    def reap(self) -> bool:
        """True when the engine has just exited; records the exit and schedules the restart."""
        if self.process is None or self.process.poll() is None:
            return False
        code = self.process.returncode
        self.last_exit = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now_rfc3339(),
        }
        self.process = None
        self.restarts += 1
        self.ready = False
        self.restart_at = time.monotonic() + backoff_seconds(self.restarts)
        log.warning("real vLLM for %s exited with %s; restart %d in %.0fs (log: %s)", self.key, code,
                    self.restarts, backoff_seconds(self.restarts), self.log_path)  # fmt: skip
        return True

    @property
    def pgid_path(self) -> Path:
        """Where the engine's process group id is kept while it runs."""
        return self.log_path.with_suffix(".pgid")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the engine's process group: SIGTERM, then SIGKILL after `grace` seconds."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(timeout=grace if grace > 0 else None)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            kill_group(proc.pid)  # the engine's own children (EngineCore) may outlive its API server
        self.pgid_path.unlink(missing_ok=True)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group if anything of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_leftovers(log_dir: Path) -> None:
    """Kill the engines a dead fleet agent left behind (their `.pgid` files are still in `log_dir`)."""
    for path in log_dir.glob("*.pgid"):
        with contextlib.suppress(ValueError, OSError):
            kill_group(int(path.read_text()))
        path.unlink(missing_ok=True)


def wants_real_engine(pod: Obj, deployments: dict[tuple[str, str], Obj]) -> bool:
    """Whether the pod's Qwen3Deployment asks for the real engine."""
    meta = pod["metadata"]
    owner = deployments.get((meta["namespace"], (meta.get("labels") or {}).get(f"{GROUP}/deployment", "")))
    annotations = ((owner or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(ENGINE_ANNOTATION) == REAL_ENGINE


class RealEngines:
    """The real engines of the dev fleet, by pod key."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.pods: dict[str, EnginePod] = {}
        self._session: aiohttp.ClientSession | None = None

    def start_pod(self, key: str, pod: Obj, ip: str, mounts: dict[str, Path] | None = None) -> None:
        """Start the engine of a new pod from its container's command and args; with LoRA on (the pod's env),
        its PVC volumes bind-mounted where the pod mounts them (`mounts`: mount path -> host directory), so the
        adapter folders the operator names are where vLLM looks."""
        container = pod["spec"]["containers"][0]
        argv = engine.engine_argv(container.get("command") or [], container.get("args") or [], ip, HTTP_PORT)
        env = {}
        if lora_runtime_updates(pod):
            env[LORA_ENV] = "True"
            argv = bind_mounted(argv, mounts or {})
        meta = pod["metadata"]
        safe = key.replace("/", "_")
        item = EnginePod(key, meta["namespace"], meta["name"], ip, argv, self.log_dir / f"{safe}.log", env=env)
        self.pods[key] = item
        item.start()

    def stop_pod(self, key: str) -> None:
        """Stop the engine of a pod that is gone."""
        item = self.pods.pop(key, None)
        if item:
            item.stop()
            log.info("stopped real vLLM for %s", key)

    async def _healthy(self, item: EnginePod) -> bool:
        if item.process is None:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        try:
            async with self._session.get(f"http://{item.ip}:{HTTP_PORT}/health") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def tick(self, kube: Kube, pods: dict[str, Obj]) -> None:
        """Reap, restart, probe and report every engine; `pods` are the current pod objects by key."""
        items = [self.pods[k] for k in pods if k in self.pods]
        for item in items:
            item.reap()
            if item.process is None and time.monotonic() >= item.restart_at:
                item.start()
        health = await asyncio.gather(*(self._healthy(item) for item in items))
        for item, healthy in zip(items, health, strict=True):
            item.ready = healthy
            pod = pods[item.key]
            patch = container_status(
                pod,
                running=item.process is not None,
                ready=item.ready,
                restarts=item.restarts,
                started_at=item.started_at,
                last_exit=item.last_exit,
                now=now_rfc3339(),
            )
            if _same(patch, pod.get("status") or {}):
                continue
            try:
                await kube.patch_status("v1", "Pod", item.namespace, item.name, patch)
            except KubeError as exc:
                if not exc.not_found:
                    log.warning("cannot report %s: %s", item.key, exc)

    async def close(self) -> None:
        """Stop every engine at once (the dev fleet has nothing to drain)."""
        for item in self.pods.values():
            item.stop(grace=0)
        self.pods.clear()
        if self._session:
            await self._session.close()


def _same(patch: Obj, status: Obj) -> bool:
    """Whether the pod already reports what `patch` would write (ignoring transition times)."""

    def ready_flags(s: Obj) -> dict[str, str]:
        return {c["type"]: c.get("status", "") for c in s.get("conditions") or []}

    def container(s: Obj) -> tuple[Any, ...]:
        cs = (s.get("containerStatuses") or [{}])[0]
        return cs.get("ready"), cs.get("restartCount"), sorted((cs.get("state") or {}).keys())

    return ready_flags(patch) == ready_flags(status) and container(patch) == container(status)
