"""The adapter sync: every ready replica of a Qwen3Deployment with adapters gets `spec.adapters` loaded, live.

Each tick reads a replica's /v1/models, unloads what the spec no longer has and loads what it lacks through
vLLM's runtime endpoints, then writes `status.adapters`, `status.adapterSummary` and the AdaptersLoaded condition.
A load vLLM refuses is reported with vLLM's message and retried on later ticks; the other adapters keep serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from pydantic import ValidationError

from qwenfleet.adapters import (
    ReplicaResult,
    actions,
    adapter_statuses,
    adapters_condition,
    load_error_message,
    loaded_adapters,
    summary,
    wanted_adapters,
)
from qwenfleet.api.base import API_VERSION
from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.api.status import merge_conditions
from qwenfleet.controller.conditions import now_rfc3339
from qwenfleet.kube import Kube
from qwenfleet.render.names import HTTP_PORT

log = logging.getLogger(__name__)
Obj = dict[str, Any]
TIMEOUT_SECONDS = 30.0
"""One load: vLLM reads the adapter's tensors before it answers."""
INTERVAL_SECONDS = 5.0


async def _sync_replica(session: aiohttp.ClientSession, ip: str, wanted: dict[str, str]) -> ReplicaResult | None:
    """Bring one replica's adapters to `wanted`; None when it does not answer (not counted)."""
    base = f"http://{ip}:{HTTP_PORT}"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with session.get(f"{base}/v1/models", timeout=timeout) as response:
            if response.status != 200:
                return None
            loaded = loaded_adapters(await response.json(content_type=None))
        todo = actions(wanted, loaded)
        result = ReplicaResult(loaded={n for n in loaded if n in wanted and n not in todo.unload})
        for name in todo.unload:
            async with session.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": name},
                                    timeout=timeout) as response:  # fmt: skip
                if response.status not in (200, 404):
                    log.warning("unload %s on %s: HTTP %d %s", name, ip, response.status, await response.text())
        for name, path in todo.load:
            async with session.post(f"{base}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path},
                                    timeout=timeout) as response:  # fmt: skip
                if response.status == 200:
                    result.loaded.add(name)
                else:
                    result.errors[name] = load_error_message(response.status, await response.text())
        return result
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("adapters on %s: %s", ip, exc)
        return None


async def sync_adapters(kube: Kube, session: aiohttp.ClientSession, body: Obj, ips: list[str]) -> bool:
    """One tick for one deployment; true when it still has adapters to keep (else its loop may stop)."""
    try:
        spec = Qwen3DeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return False
    status = body.get("status") or {}
    if not spec.adapters and not status.get("adapters"):
        return spec.serves_adapters
    wanted = wanted_adapters(spec.adapters)
    results = [r for r in await asyncio.gather(*(_sync_replica(session, ip, wanted) for ip in ips)) if r]
    statuses = adapter_statuses(spec.adapters, results)
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    conds = [adapters_condition(statuses)] if spec.adapters else []
    current = list(status.get("conditions") or [])
    if not spec.adapters:  # the last adapter went: its condition goes too
        current = [c for c in current if c.get("type") != "AdaptersLoaded"]
    conditions = merge_conditions(current, conds, generation, now_rfc3339())
    patch: Obj = {
        "adapters": [s.to_wire() for s in statuses] or None,
        "adapterSummary": summary(statuses) if statuses else None,
        "conditions": conditions,
    }
    if _differs(status, patch):
        await kube.patch_status(API_VERSION, "Qwen3Deployment", meta["namespace"], meta["name"], patch)
        body["status"] = {**status, **{k: v for k, v in patch.items() if v is not None}}
    return spec.serves_adapters


def _differs(status: Obj, patch: Obj) -> bool:
    def strip(conds: list[Obj]) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds)

    if strip(status.get("conditions") or []) != strip(patch["conditions"]):
        return True
    return any(status.get(k) != patch[k] for k in ("adapters", "adapterSummary"))
