"""LoRA adapters on running replicas: what each replica must load or unload, and the status that results. Pure.

vLLM (with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) lists its loaded adapters in /v1/models as entries with a
`parent` (the base model) and a `root` (the folder it was loaded from), and loads and unloads them through
`/v1/load_lora_adapter` and `/v1/unload_lora_adapter`. The operator compares that with `spec.adapters` on every
ready replica; an adapter whose folder changed is unloaded and loaded again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwenfleet.api.deployment import Adapter, AdapterStatus
from qwenfleet.api.status import Cond, ConditionType, Reason


def loaded_adapters(models: object) -> dict[str, str]:
    """Adapter name -> folder, from a replica's /v1/models answer (entries with a parent are adapters)."""
    data = models.get("data") if isinstance(models, dict) else None
    out: dict[str, str] = {}
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and entry.get("parent") and isinstance(entry.get("id"), str):
            out[entry["id"]] = str(entry.get("root") or "")
    return out


@dataclass(frozen=True)
class Actions:
    """What one replica must do: unload these names, then load these (name, folder) pairs."""

    unload: tuple[str, ...] = ()
    load: tuple[tuple[str, str], ...] = ()


def actions(wanted: Mapping[str, str], loaded: Mapping[str, str]) -> Actions:
    """Unload what is not wanted (or from another folder), load what is missing; in name order."""
    moved = {n for n, path in wanted.items() if n in loaded and loaded[n] != path}
    unload = tuple(sorted(n for n in loaded if n not in wanted or n in moved))
    load = tuple((n, wanted[n]) for n in sorted(wanted) if n not in loaded or n in moved)
    return Actions(unload, load)


def wanted_adapters(adapters: Sequence[Adapter]) -> dict[str, str]:
    """spec.adapters as name -> folder on the pods."""
    return {a.name: a.pod_path() for a in adapters}


@dataclass
class ReplicaResult:
    """One replica after a sync: the adapters it has loaded, and the load errors by adapter (vLLM's message)."""

    loaded: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)


def adapter_statuses(adapters: Sequence[Adapter], results: Sequence[ReplicaResult]) -> list[AdapterStatus]:
    """status.adapters: per adapter, on how many of the ready replicas it is loaded, and the first load error."""
    out = []
    for adapter in adapters:
        loaded = sum(1 for r in results if adapter.name in r.loaded)
        error = next((r.errors[adapter.name] for r in results if adapter.name in r.errors), "")
        out.append(AdapterStatus(name=adapter.name, loaded_replicas=loaded, replicas=len(results), message=error))
    return out


def summary(statuses: Sequence[AdapterStatus]) -> str:
    """`kubectl get` column: adapters loaded on every ready replica / adapters declared."""
    return f"{sum(1 for s in statuses if s.replicas and s.loaded_replicas == s.replicas)}/{len(statuses)}"


def load_error_message(status: int, body: str) -> str:
    """vLLM's own message from a refused load (an OpenAI error body, or its text)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return f"HTTP {status}: {body.strip()[:500]}"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {status}: {message if isinstance(message, str) else body.strip()[:500]}"


def adapters_condition(statuses: Sequence[AdapterStatus]) -> Cond:
    """AdaptersLoaded: True when every adapter is on every ready replica; False with vLLM's message when a load
    failed (the other adapters keep serving); Unknown while loads are under way or no replica is ready."""
    failed = [s for s in statuses if s.message]
    if failed:
        names = ", ".join(s.name for s in failed)
        return Cond(ConditionType.ADAPTERS_LOADED, False, Reason.ADAPTER_LOAD_FAILED, f"{names}: {failed[0].message}")
    waiting = [s.name for s in statuses if not s.replicas or s.loaded_replicas < s.replicas]
    if waiting:
        return Cond(
            ConditionType.ADAPTERS_LOADED,
            None,
            Reason.ADAPTERS_LOADING,
            f"not yet on every ready replica: {', '.join(waiting)}",
        )
    return Cond(
        ConditionType.ADAPTERS_LOADED,
        True,
        Reason.ADAPTERS_LOADED,
        f"{len(statuses)} adapter(s) on every ready replica",
    )
