"""The operator's Prometheus metrics (prometheus-client), served on their own port."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILE_SECONDS = Histogram(
    "qwenfleet_reconcile_duration_seconds",
    "Time of one Qwen3Deployment reconcile.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter("qwenfleet_reconcile_errors_total", "Failed reconciles by reason.", ["reason"])
MANAGED = Gauge("qwenfleet_managed_deployments", "Qwen3Deployments this operator reconciles.")
DESIRED = Gauge("qwenfleet_desired_replicas", "Replicas wanted.", ["namespace", "name"])
READY = Gauge("qwenfleet_ready_replicas", "Replicas ready.", ["namespace", "name"])
LEADER = Gauge("qwenfleet_leader", "1 while this replica runs the handlers (holds the Lease), else 0.")
SLO_ARRIVALS = Gauge("qwenfleet_autoscaler_arrival_rate", "Requests per second SLO mode sees arriving now.",
                     ["namespace", "name"])  # fmt: skip
SLO_PERIOD = Gauge("qwenfleet_autoscaler_period_minutes",
                   "The period of the recurring load SLO mode found (0: none yet).", ["namespace", "name"])  # fmt: skip
SLO_SEQUENCES = Gauge(
    "qwenfleet_autoscaler_sequences_per_replica",
    "Sequences a replica's KV cache was seen to hold, which SLO mode staffs at (0: not learnt yet, the plan's figure).",
    ["namespace", "name"],
)
CHECKPOINTS = Counter(
    "qwenfleet_autoscaler_checkpoints_total",
    "SLO mode's checkpoints: restored (or fresh) on start, written, failed, or declined (a ConfigMap of the user's).",
    ["result"],
)
_tracked: set[tuple[str, str]] = set()
_slo_tracked: set[tuple[str, str]] = set()


_serving: set[int] = set()


def start(port: int | None) -> None:
    """Serve /metrics on `port` (0 or None: do not serve); once per process."""
    if port and port not in _serving:
        start_http_server(port)
        _serving.add(port)


def observe_reconcile(namespace: str, name: str, seconds: float, status: dict[str, Any]) -> None:
    """Record one reconcile and the replica counts its status shows."""
    RECONCILE_SECONDS.observe(seconds)
    _tracked.add((namespace, name))
    MANAGED.set(len(_tracked))
    DESIRED.labels(namespace, name).set(int(status.get("desiredReplicas") or 0))
    READY.labels(namespace, name).set(int(status.get("readyReplicas") or 0))


def observe_slo(namespace: str, name: str, rate: float, period: int | None, sequences: float | None) -> None:
    """Record what SLO mode believes of one deployment after a decision."""
    _slo_tracked.add((namespace, name))
    SLO_ARRIVALS.labels(namespace, name).set(rate)
    SLO_PERIOD.labels(namespace, name).set(period or 0)
    SLO_SEQUENCES.labels(namespace, name).set(sequences or 0.0)


def forget(namespace: str, name: str) -> None:
    """Drop a deployment's series when it goes away."""
    if (namespace, name) in _tracked:
        _tracked.discard((namespace, name))
        DESIRED.remove(namespace, name)
        READY.remove(namespace, name)
    MANAGED.set(len(_tracked))
    if (namespace, name) in _slo_tracked:
        _slo_tracked.discard((namespace, name))
        for gauge in (SLO_ARRIVALS, SLO_PERIOD, SLO_SEQUENCES):
            gauge.remove(namespace, name)
