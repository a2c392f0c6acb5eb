"""What a kubelet would mount into a dev-fleet pod: each PersistentVolumeClaim volume's host directory (the
dev provisioner's hostPath volumes) at the container's mount path, and the LoRA switch of the pod's env.

Simulated pods resolve the paths they are given through this map; a real engine runs in a private mount
namespace with each directory bind-mounted at its mount path (`bind_mounted`), as the pod would see it.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

from qwenfleet.kube import Kube

Obj = dict[str, Any]
LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def lora_runtime_updates(pod: Obj) -> bool:
    """Whether the model-server container is started with vLLM's runtime LoRA updating on."""
    container = (pod.get("spec") or {}).get("containers", [{}])[0]
    for env in container.get("env") or []:
        if env.get("name") == LORA_ENV:
            return str(env.get("value", "")).strip().lower() in ("1", "true")
    return False


async def host_mounts(kube: Kube, pod: Obj) -> dict[str, Path]:
    """Mount path -> host directory for the model-server container's PVC volumes that are bound."""
    spec = pod.get("spec") or {}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes") or []
              if v.get("persistentVolumeClaim")}  # fmt: skip
    namespace = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for mount in (spec.get("containers") or [{}])[0].get("volumeMounts") or []:
        claim = claims.get(mount.get("name"))
        if claim is None:
            continue
        pvc = await kube.get("v1", "PersistentVolumeClaim", claim, namespace)
        volume = ((pvc or {}).get("spec") or {}).get("volumeName")
        pv = await kube.get("v1", "PersistentVolume", volume) if volume else None
        host = (((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path")
        if host:
            await asyncio.to_thread(Path(host).mkdir, parents=True, exist_ok=True)  # DirectoryOrCreate
            out[str(mount["mountPath"])] = Path(host)
    return out


def bind_mounted(argv: list[str], mounts: dict[str, Path]) -> list[str]:
    """`argv` run in a private mount namespace with each host directory bind-mounted at its mount path."""
    if not mounts:
        return argv
    steps = [f"mkdir -p {shlex.quote(m)} && mount --bind {shlex.quote(str(h))} {shlex.quote(m)}"
             for m, h in sorted(mounts.items())]  # fmt: skip
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]
