"""SLO mode's memory of a deployment as a ConfigMap, and back. Pure.

What SLO mode learns takes long to learn: a recurring pattern needs two whole periods of minute history (two
days for a daily one), the headroom prices its tail from 30 minutes or more, and a replica's real concurrency and
service time from hundreds of requests. Kept only in the operator's memory, all of it went at every restart,
upgrade or leader failover: no pre-warming for two periods, and the young-history headroom meanwhile. So the
autoscaler checkpoints it into a ConfigMap beside the deployment (owned by it, so it goes with it) and restores it
on its first decision.

- The minutes between the checkpoint and the restore are unknown. They are filled with what the forecast itself
  expected: the rate one period earlier when there is a period, else the last minute's. The pattern stays in phase;
  a gap longer than the history leaves only what was learnt of the replicas.
- What was learnt of a replica (KV cache, service time) belongs to one plan (model, GPU, parallelism, batch): a
  checkpoint made under another plan keeps the arrivals only. The loop applies the same rule in memory when the
  plan changes (`Forecast.without_replica_learning`).
- An unreadable or foreign checkpoint is a fresh start, never an error: it is a cache, not the user's data. A
  ConfigMap of that name that qwenfleet did not make is the user's: never read, never written (`is_ours`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from qwenfleet.autoscale.forecast import BUCKET_SECONDS, HISTORY_BUCKETS, Forecast, detect_period
from qwenfleet.render.names import GROUP, MANAGER, bounded, labels

FORMAT = 1
DATA_KEY = "forecast.json"
COMPONENT = "autoscaler-memory"
"""The ConfigMap's `app.kubernetes.io/component`: the operator's watches of its children leave it out."""


def configmap_name(deployment: str) -> str:
    """The checkpoint's ConfigMap for one Qwen3Deployment."""
    return bounded(f"{deployment}-autoscaler")


def plan_key(plan: Mapping[str, Any]) -> str:
    """What a replica's learnt concurrency and service time depend on, from the Plan in status."""
    parts = (
        "model",
        "precision",
        "gpu",
        "tensorParallelSize",
        "pipelineParallelSize",
        "maxNumSeqs",
        "maxModelLen",
        "kvCacheTokens",
    )
    return "/".join(str(plan.get(p, "")) for p in parts)


def to_data(forecast: Forecast, plan: str, mono_now: float, wall_now: float) -> dict[str, str] | None:
    """The ConfigMap data for `forecast` at monotonic `mono_now` (the forecast's clock), which is `wall_now` in
    seconds since the epoch; None before the forecast has seen a minute start."""
    if forecast.bucket_start is None:
        return None
    doc = {
        "format": FORMAT,
        "plan": plan,
        "savedAt": round(wall_now, 3),
        "bucketSeconds": BUCKET_SECONDS,
        "bucketStart": round(wall_now - (mono_now - forecast.bucket_start), 3),
        "bucketArrivals": round(forecast.bucket_count, 3),
        "arrivalsPerSecond": [round(b, 4) for b in forecast.buckets],
        "busy": [forecast.busy_request_seconds, forecast.busy_finished],
        "full": [forecast.full_request_seconds, forecast.full_finished],
        "kv": list(forecast.kv_sums),
    }
    return {DATA_KEY: json.dumps(doc, separators=(",", ":"))}


def from_data(data: Mapping[str, str] | None, plan: str, mono_now: float, wall_now: float) -> Forecast:
    """The forecast a checkpoint holds, brought forward to `wall_now` (monotonic `mono_now`); a fresh forecast
    when there is none or it cannot be read."""
    try:
        doc = json.loads((data or {})[DATA_KEY])
        if doc["format"] != FORMAT or float(doc["bucketSeconds"]) != BUCKET_SECONDS:
            return Forecast()
        buckets = [max(0.0, float(b)) for b in doc["arrivalsPerSecond"]][-HISTORY_BUCKETS:]
        start, saved_at = float(doc["bucketStart"]), float(doc["savedAt"])
        count = max(0.0, float(doc["bucketArrivals"]))
        learnt = _pair(doc["busy"]), _pair(doc["full"]), _pair(doc["kv"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return Forecast()
    if not all(map(math.isfinite, (start, saved_at, count))):
        return Forecast()
    forecast = Forecast()
    if doc.get("plan") == plan:
        (busy_s, busy_n), (full_s, full_n), kv = learnt
        forecast = replace(forecast, busy_request_seconds=busy_s, busy_finished=busy_n, full_request_seconds=full_s,
                           full_finished=full_n, kv_sums=kv)  # fmt: skip
    return _brought_forward(forecast, buckets, start, saved_at, count, mono_now, wall_now)


def _pair(value: Any) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise ValueError("a learnt sum is not a finite non-negative number")
    return a, b


def _brought_forward(
    forecast: Forecast, buckets: list[float], start: float, saved_at: float, count: float, mono: float, wall: float
) -> Forecast:
    """The history with the minutes since the checkpoint filled by the forecast's own expectation (see module)."""
    start = min(start, wall)  # the clocks of two operator pods may disagree a little
    saved_at = min(max(saved_at, start), wall)
    if wall - start > (HISTORY_BUCKETS + 1) * BUCKET_SECONDS:
        return forecast  # older than the whole history: nothing of it is still in reach
    period = detect_period(tuple(buckets))
    history = list(buckets)

    def expected() -> float:
        if period is not None and len(history) >= period:
            return history[-period]
        return history[-1] if history else count / max(saved_at - start, BUCKET_SECONDS)

    known = count
    while wall - start >= BUCKET_SECONDS:  # close the minute the checkpoint was in, and every one since
        unknown = max(0.0, start + BUCKET_SECONDS - max(saved_at, start))
        history.append((known + expected() * unknown) / BUCKET_SECONDS)
        start, known = start + BUCKET_SECONDS, 0.0
    unknown = max(0.0, wall - max(saved_at, start))
    history = history[-HISTORY_BUCKETS:]
    buckets_now = tuple(history)
    return replace(forecast, buckets=buckets_now, bucket_start=mono - (wall - start),
                   bucket_count=known + expected() * unknown, period=detect_period(buckets_now))  # fmt: skip


def is_ours(found: Mapping[str, Any] | None) -> bool:
    """Whether a ConfigMap of the checkpoint's name may be written: absent, or a checkpoint qwenfleet made. A
    ConfigMap of the user's that happens to have the name is never taken over (it would be owned by the
    deployment then, and deleted with it)."""
    if found is None:
        return True
    have = (found.get("metadata") or {}).get("labels") or {}
    return bool(have.get("app.kubernetes.io/component") == COMPONENT and have.get("app.kubernetes.io/managed-by")
                == MANAGER)  # fmt: skip


def configmap(namespace: str, deployment: str, uid: str, data: Mapping[str, str]) -> dict[str, Any]:
    """The checkpoint ConfigMap, owned by the Qwen3Deployment (garbage-collected with it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(deployment),
            "namespace": namespace,
            "labels": labels(deployment, COMPONENT),
            "ownerReferences": [
                {"apiVersion": f"{GROUP}/v1alpha1", "kind": "Qwen3Deployment", "name": deployment, "uid": uid}
            ],
        },
        "data": dict(data),
    }
