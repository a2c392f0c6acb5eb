"""A lower bound on the GPU-hours any autoscaler without foresight of surge onsets pays for an attainment (and, with
an API to overflow to, on its total cost: `api_bound`).

A request that arrives within one cold start (less the SLO) of a surge's onset can meet the SLO only on capacity
that was warm before the onset: a replica asked for at the onset is not ready in time. W warm replicas admit at
most W x (concurrency + replica rate x window) requests in that window, and a warm spillover replica its own
share; every other request of the window misses. So an attainment A needs the smallest W for which the misses
so counted stay within (1 - A) of all requests. With onsets a policy cannot foresee (Poisson onsets, or a
period not yet seen twice), W must be warm whenever an onset may come; the cheapest such fleet holds
max(W, the oracle's count) at every second until the last blind onset, and the oracle's count after it: the
oracle's GPU-hours plus the replicas it lacks below W until then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.autoscale.simulate import Model, Spillover


@dataclass(frozen=True)
class Bound:
    """The smallest warm fleet for one attainment target, and what holding it costs at least."""

    warm_replicas: int | None
    gpu_hours: float | None
    vs_oracle: float | None = None
    """`gpu_hours` over the oracle's."""

    def to_json(self) -> dict[str, object]:
        """As bench/results/autoscale.json records it."""
        return {"warm_replicas": self.warm_replicas, "gpu_hours": self.gpu_hours, "vsOracle": self.vs_oracle}


def onsets(rate: np.ndarray, periodic: bool) -> list[int]:
    """Seconds where the rate jumps by more than a quarter of its range; for a periodic trace only the first two
    (a period counts once seen twice, so later onsets are foreseeable)."""
    jump = 0.25 * (float(rate.max()) - float(rate.min()))
    found = [int(s) for s in np.flatnonzero(np.diff(rate) > jump) + 1]
    return found[:2] if periodic else found


def blind_bound(
    arrivals: np.ndarray,
    rate: np.ndarray,
    model: Model,
    oracle_plan: np.ndarray,
    oracle_gpu_hours: float,
    target: float,
    slo_seconds: float,
    periodic: bool,
    spill: Spillover | None = None,
) -> Bound:
    """The least warm replicas and GPU-hours for `target` attainment (None when no count up to the oracle's
    peak reaches it)."""
    window = max(0.0, model.cold_start - slo_seconds)
    blind = onsets(rate, periodic)
    in_window = np.array([np.count_nonzero((arrivals >= s) & (arrivals < s + window)) for s in blind], dtype=float)
    per_replica = model.concurrency + model.replica_rate() * window
    spilled = 0.0 if spill is None else spill.replicas * (spill.model.concurrency + spill.model.replica_rate() * window)
    allowed = (1.0 - target) * len(arrivals)
    last = max(blind, default=0)
    for warm in range(int(oracle_plan.max()) + 1):
        missed = np.maximum(0.0, in_window - warm * per_replica - spilled).sum()
        if missed <= allowed:
            lacking = np.maximum(0, warm - oracle_plan[:last]).sum() * model.plan.gpus_per_replica
            spill_seconds = 0 if spill is None else len(rate) * spill.replicas * spill.model.plan.gpus_per_replica
            hours = round(oracle_gpu_hours + (lacking + spill_seconds) / 3600, 2)
            return Bound(warm, hours, round(hours / oracle_gpu_hours, 2))
    return Bound(None, None)


@dataclass(frozen=True)
class ApiBound:
    """The least total cost (GPU + API) for one attainment target when the router may overflow to a closed API,
    and the warm fleet that reaches it."""

    warm_replicas: int
    gpu_usd: float
    api_usd: float
    total_usd: float
    vs_oracle: float
    """`total_usd` over the oracle's GPU cost."""

    def to_json(self) -> dict[str, object]:
        """As bench/results/autoscale.json records it."""
        return {"warmReplicas": self.warm_replicas, "gpuUSD": self.gpu_usd, "apiUSD": self.api_usd,
                "totalUSD": self.total_usd, "totalVsOracleGpuCost": self.vs_oracle}  # fmt: skip


def api_bound(
    arrivals: np.ndarray,
    api_usd: np.ndarray,
    rate: np.ndarray,
    model: Model,
    oracle_plan: np.ndarray,
    oracle_gpu_hours: float,
    gpu_hour_usd: float,
    target: float,
    slo_seconds: float,
    periodic: bool,
) -> ApiBound:
    """`blind_bound` with the API beside the fleet (`api_usd`: each request's price there): with W warm replicas,
    the requests of each blind onset's window beyond what W admit must go to the API, the cheapest of them at
    best, less the (1 - `target`) share of all requests that may miss (the dearest of those); the fleet costs
    what `blind_bound` counts for W. The least total over W. One assumption beyond `blind_bound`'s: the fleet
    carries at least the oracle's GPU-hours, i.e. serving load a fleet could carry on the API instead never pays
    (the API costs 10-30x per request what a busy replica does at the benchmark's example prices)."""
    window = max(0.0, model.cold_start - slo_seconds)
    blind = onsets(rate, periodic)
    windows = [np.sort(api_usd[(arrivals >= s) & (arrivals < s + window)]) for s in blind]
    per_replica = model.concurrency + model.replica_rate() * window
    allowed = int((1.0 - target) * len(arrivals))
    last = max(blind, default=0)
    best: ApiBound | None = None
    for warm in range(int(oracle_plan.max()) + 1):
        left = [w[: max(0, len(w) - int(warm * per_replica))] for w in windows]
        overflowed = np.sort(np.concatenate(left)) if left else np.zeros(0)
        api = float(overflowed[: max(0, len(overflowed) - allowed)].sum())
        lacking = np.maximum(0, warm - oracle_plan[:last]).sum() * model.plan.gpus_per_replica
        gpu = (oracle_gpu_hours + lacking / 3600) * gpu_hour_usd
        total = gpu + api
        if best is None or total < best.total_usd:
            best = ApiBound(warm, round(gpu, 2), round(api, 2), round(total, 2),
                            round(total / (oracle_gpu_hours * gpu_hour_usd), 2))  # fmt: skip
    assert best is not None
    return best
