"""The cost ledger of one Qwen3Deployment: measured GPU-seconds and tokens, in time buckets, and the report.

Pure: time comes in as epoch seconds, pods and counters as plain values. The shell (cost/loop.py) lists pods,
scrapes vLLM's counters and persists the ledger in `status.cost.ledger`, so the totals survive a restart.

- GPU-seconds: every pod that holds GPUs (scheduled and not terminated; starting, ready or draining) accrues
  GPUs x seconds from the later of the time it was scheduled and the time it was last accounted.
- Tokens: the increase of `vllm:prompt_tokens_total` and `vllm:generation_tokens_total` per pod; a counter
  lower than last seen means the pod's engine restarted, and its whole value is new.
- Serving GPU-seconds: a pod's interval counts as serving when it generated tokens in it or had a running
  request when scraped (sampled at the loop's interval).
- Buckets: 5 minutes wide for the last hour, merged into hour buckets up to a day back, dropped after.
- Requests and the latency objective: the increase of `vllm:time_to_first_token_seconds_count` per pod counts
  the requests that got a first token; with `spec.autoscaling.slo`, the increase of its bucket at the objective
  counts those that got it in time. vLLM measures from the request's arrival at the engine, so time queued in the
  engine counts; time held at a router while a replica wakes, and requests given up before their first token, are
  not in it. The histogram's buckets are vLLM's: an objective between two boundaries is measured at the lower one
  (`slo_bound`), which can only understate attainment, and status says which.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from qwenfleet.api.cost import CostLedger, CostWindow, DeploymentCost, SloStatus, SloWindow
from qwenfleet.enginemetrics.parse import EngineSample

BUCKET_SECONDS = 300
HOUR = 3600
DAY = 86400
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


@dataclass(frozen=True)
class Totals:
    """Measured amounts over some span."""

    gpu_seconds: float = 0.0
    serving_gpu_seconds: float = 0.0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0
    requests: float = 0.0
    """Requests that got their first token."""
    timed: float = 0.0
    """Of those, the ones counted while the deployment had a latency objective."""
    on_time: float = 0.0
    """Of those, the ones whose first token came within the objective (at `slo_bound`)."""

    def values(self) -> tuple[float, ...]:
        """The figures in field order (what `as_list` rounds); not `dataclasses.astuple`, which deep-copies each
        and is ten times slower on a path taken for every bucket of every deployment every 10 s."""
        return (self.gpu_seconds, self.serving_gpu_seconds, self.prompt_tokens, self.output_tokens, self.requests,
                self.timed, self.on_time)  # fmt: skip

    def __add__(self, other: Totals) -> Totals:
        return Totals(*map(operator.add, self.values(), other.values()))

    def as_list(self) -> list[float]:
        """[gpuSeconds, servingGpuSeconds, promptTokens, outputTokens, requests, timed, onTime], rounded for
        status."""
        return [round(self.gpu_seconds, 1), round(self.serving_gpu_seconds, 1),
                *(float(round(v)) for v in self.values()[2:])]  # fmt: skip

    @staticmethod
    def from_list(values: Iterable[float]) -> Totals:
        """The inverse of `as_list` (missing trailing values, as in a ledger written before they existed, are
        zero)."""
        v = [*list(values)[:FIELDS], *[0.0] * FIELDS]
        return Totals(*(float(x) for x in v[:FIELDS]))


FIELDS = len(fields(Totals))


def slo_bound(ttft_seconds: float, counters: Iterable[EngineSample]) -> float | None:
    """The largest histogram boundary at or below the objective's `ttft_seconds` (what is measurable of it), from
    the first replica that reports the histogram; None when none does, or the objective is below every bucket."""
    for c in counters:
        if c.ttft:
            below = [le for le, _ in c.ttft if le <= ttft_seconds * (1 + 1e-9)]
            return max(below) if below else None
    return None


@dataclass(frozen=True)
class PodSeen:
    """What the ledger has already counted of one pod."""

    name: str
    accounted_until: float
    prompt: float
    output: float
    requests: float = 0.0
    on_time: float = 0.0


@dataclass(frozen=True)
class PodObservation:
    """One pod as listed and scraped now. `prompt`/`output` are None when the scrape failed; `on_time` is None
    without an objective (or when the pod's histogram lacks its bucket)."""

    name: str
    gpus: int
    holds_from: float | None
    prompt: float | None = None
    output: float | None = None
    running: float = 0.0
    requests: float | None = None
    on_time: float | None = None


@dataclass(frozen=True)
class Ledger:
    """Totals since creation, recent buckets (start, totals) and what was counted of each live pod."""

    total: Totals = Totals()
    buckets: tuple[tuple[int, Totals], ...] = ()
    pods: tuple[PodSeen, ...] = ()
    updated: float = 0.0
    bound: float | None = None
    """The TTFT bucket (seconds) the pods' `on_time` counters were read at; None without an objective."""


def counter_delta(previous: float | None, current: float) -> float:
    """The increase of a counter since last seen; a lower value means it reset (the pod restarted)."""
    if previous is None or current < previous:
        return current
    return current - previous


def bucket_key(start: float, now: float) -> int:
    """The bucket a moment belongs to: 5-minute buckets within the last hour, hour buckets before."""
    if start >= now - HOUR - BUCKET_SECONDS:
        return int(start // BUCKET_SECONDS * BUCKET_SECONDS)
    return int(start // HOUR * HOUR)


def compact(buckets: Iterable[tuple[int, Totals]], now: float) -> tuple[tuple[int, Totals], ...]:
    """Old 5-minute buckets merged into hour buckets; buckets older than a day (and an hour) dropped."""
    merged: dict[int, Totals] = {}
    for start, totals in buckets:
        if start < now - DAY - HOUR:
            continue
        key = bucket_key(start, now)
        merged[key] = merged.get(key, Totals()) + totals
    return tuple(sorted(merged.items()))


def advance(ledger: Ledger, now: float, pods: Iterable[PodObservation], bound: float | None = None) -> Ledger:
    """Account every pod's GPU time and counter increase up to `now`; forget pods that are gone. `bound` is the
    TTFT bucket the pods' `on_time` was read at: when it differs from the ledger's (an objective set, changed or
    removed), this pass only takes the pods' counts as the new baseline."""
    seen = {p.name: p for p in ledger.pods}
    rebase = bound != ledger.bound
    added = Totals()
    kept: list[PodSeen] = []
    for pod in pods:
        if pod.holds_from is None or pod.gpus <= 0:
            continue
        old = seen.get(pod.name)
        start = pod.holds_from if old is None else max(pod.holds_from, old.accounted_until)
        gpu_seconds = max(0.0, now - start) * pod.gpus
        last = old or PodSeen(pod.name, start, 0.0, 0.0)
        prompt, output, requests, on_time = last.prompt, last.output, last.requests, last.on_time
        new_prompt = new_output = new_requests = timed = new_on_time = 0.0
        if pod.prompt is not None and pod.output is not None:
            new_prompt = counter_delta(old.prompt if old else None, pod.prompt)
            new_output = counter_delta(old.output if old else None, pod.output)
            prompt, output = pod.prompt, pod.output
        if pod.requests is not None:
            new_requests = counter_delta(old.requests if old else None, pod.requests)
            reset = old is not None and pod.requests < old.requests  # the engine restarted: all of it is new
            baseline = rebase and old is not None and not reset  # counts at another bucket: only note where they are
            if pod.on_time is not None and bound is not None and not baseline:
                timed = new_requests
                new_on_time = min(timed, counter_delta(None if old is None or reset else old.on_time, pod.on_time))
            requests, on_time = pod.requests, last.on_time if pod.on_time is None else pod.on_time
        serving = gpu_seconds if (new_output > 0 or new_prompt > 0 or pod.running > 0) else 0.0
        added += Totals(gpu_seconds, serving, new_prompt, new_output, new_requests, timed, new_on_time)
        kept.append(PodSeen(pod.name, max(now, start), prompt, output, requests, on_time))
    buckets = [*ledger.buckets, (bucket_key(now, now), added)]
    return Ledger(ledger.total + added, compact(buckets, now), tuple(sorted(kept, key=lambda p: p.name)), now, bound)


def window(ledger: Ledger, now: float, seconds: int) -> Totals:
    """Totals of the buckets that start within the last `seconds` (to bucket resolution)."""
    out = Totals()
    for start, totals in ledger.buckets:
        if start >= now - seconds:
            out += totals
    return out


def usd_per_million(usd: float, tokens: float) -> float | None:
    """Dollars per million tokens, or None when nothing was served."""
    return round(usd / tokens * 1e6, 4) if tokens > 0 else None


def summary(totals: Totals, gpu_hour_usd: float) -> CostWindow:
    """One window of status.cost: GPU-hours, USD, tokens, realised USD per 1M tokens, utilisation."""
    usd = totals.gpu_seconds / HOUR * gpu_hour_usd
    return CostWindow(
        gpu_hours=round(totals.gpu_seconds / HOUR, 4),
        usd=round(usd, 4),
        prompt_tokens=int(totals.prompt_tokens),
        output_tokens=int(totals.output_tokens),
        usd_per_million_output_tokens=usd_per_million(usd, totals.output_tokens),
        usd_per_million_tokens=usd_per_million(usd, totals.prompt_tokens + totals.output_tokens),
        utilization=round(totals.serving_gpu_seconds / totals.gpu_seconds, 4) if totals.gpu_seconds else None,
        requests=int(totals.requests),
    )


def attainment(totals: Totals) -> SloWindow:
    """One window of status.slo: requests timed against the objective, those on time, and their share."""
    share = round(totals.on_time / totals.timed, 4) if totals.timed else None
    return SloWindow(requests=int(totals.timed), on_time=int(totals.on_time), attainment=share)


def slo_report(ledger: Ledger, now: float, ttft_seconds: float, target: float) -> SloStatus:
    """The whole of status.slo: the objective, the bucket it is measured at, and each window's attainment."""
    return SloStatus(
        ttft_seconds=ttft_seconds,
        attainment_target=target,
        measured_at_seconds=ledger.bound,
        last_hour=attainment(window(ledger, now, HOUR)),
        last_day=attainment(window(ledger, now, DAY)),
        since_creation=attainment(ledger.total),
    )


def report(ledger: Ledger, now: float, gpu_hour_usd: float, estimate: float | None) -> DeploymentCost:
    """The whole of status.cost: windows, the planner's estimate beside the realised figure, the ledger."""
    last_day = summary(window(ledger, now, DAY), gpu_hour_usd)
    realised = last_day.usd_per_million_output_tokens
    return DeploymentCost(
        gpu_hour_usd=gpu_hour_usd,
        last_hour=summary(window(ledger, now, HOUR), gpu_hour_usd),
        last_day=last_day,
        since_creation=summary(ledger.total, gpu_hour_usd),
        estimated_usd_per_million_output_tokens=estimate,
        realised_to_estimate=round(realised / estimate, 3) if realised is not None and estimate else None,
        ledger=CostLedger.model_validate(dump(ledger)),
    )


def dump(ledger: Ledger) -> dict[str, Any]:
    """The ledger as status stores it (compact lists, so it stays small)."""
    out: dict[str, Any] = {
        "updated": round(ledger.updated, 3),
        "total": ledger.total.as_list(),
        "buckets": [[float(start), *totals.as_list()] for start, totals in ledger.buckets],
        "pods": [
            {
                "name": p.name,
                "accountedUntil": round(p.accounted_until, 3),
                "prompt": p.prompt,
                "output": p.output,
                "requests": p.requests,
                "onTime": p.on_time,
            }
            for p in ledger.pods
        ],
    }
    if ledger.bound is not None:
        out["ttftBound"] = ledger.bound
    return out


def load(stored: Mapping[str, Any] | None) -> Ledger:
    """The ledger from status.cost.ledger (an empty one when absent)."""
    if not stored:
        return Ledger()
    return Ledger(
        total=Totals.from_list(stored.get("total") or []),
        buckets=tuple((int(b[0]), Totals.from_list(b[1:])) for b in stored.get("buckets") or [] if b),
        pods=tuple(
            PodSeen(
                str(p["name"]),
                float(p["accountedUntil"]),
                float(p.get("prompt", 0)),
                float(p.get("output", 0)),
                float(p.get("requests", 0)),
                float(p.get("onTime", 0)),
            )
            for p in stored.get("pods") or []
        ),
        updated=float(stored.get("updated") or 0.0),
        bound=None if stored.get("ttftBound") is None else float(stored["ttftBound"]),
    )


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of a Kubernetes timestamp, or None."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs the pod's containers request (limits of the GPU extended resources)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += sum(int(limits.get(r, 0)) for r in GPU_RESOURCES)
    return total


def holds_gpus_since(pod: Mapping[str, Any]) -> float | None:
    """When the pod was bound to a node (and so holds its GPUs), or None: pending, or terminated."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime")) or parse_time(status.get("startTime"))
    return parse_time(status.get("startTime")) if (pod.get("spec") or {}).get("nodeName") else None


def observe(pod: Mapping[str, Any], counters: EngineSample | None, bound: float | None = None) -> PodObservation:
    """A pod and its scraped counters as the ledger takes them; `bound`: the TTFT bucket the objective is
    measured at (`slo_bound`), None without an objective."""
    return PodObservation(
        name=str((pod.get("metadata") or {}).get("name", "")),
        gpus=pod_gpus(pod),
        holds_from=holds_gpus_since(pod),
        prompt=None if counters is None else counters.prompt_tokens,
        output=None if counters is None else counters.generation_tokens,
        running=0.0 if counters is None else counters.running,
        requests=None if counters is None or not counters.ttft else counters.first_tokens(),
        on_time=None if counters is None or bound is None else counters.within(bound),
    )


def bucket_series(stored: Mapping[str, Any] | None, gpu_hour_usd: float) -> list[tuple[float, float | None]]:
    """(bucket start, realised USD per 1M output tokens in it) for each stored bucket; None where nothing served."""
    out: list[tuple[float, float | None]] = []
    for start, totals in load(stored).buckets:
        usd = totals.gpu_seconds / HOUR * gpu_hour_usd
        out.append((float(start), usd_per_million(usd, totals.output_tokens)))
    return out
