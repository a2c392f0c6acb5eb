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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

BUCKET_SECONDS = 300
HOUR = 3600
DAY = 86400
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
WINDOWS = (("lastHour", HOUR), ("lastDay", DAY))


@dataclass(frozen=True)
class Totals:
    """Measured amounts over some span."""

    gpu_seconds: float = 0.0
    serving_gpu_seconds: float = 0.0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.gpu_seconds + other.gpu_seconds,
            self.serving_gpu_seconds + other.serving_gpu_seconds,
            self.prompt_tokens + other.prompt_tokens,
            self.output_tokens + other.output_tokens,
        )

    def as_list(self) -> list[float]:
        """[gpuSeconds, servingGpuSeconds, promptTokens, outputTokens], rounded for status."""
        return [round(self.gpu_seconds, 1), round(self.serving_gpu_seconds, 1),
                float(round(self.prompt_tokens)), float(round(self.output_tokens))]  # fmt: skip

    @staticmethod
    def from_list(values: Iterable[float]) -> Totals:
        """The inverse of `as_list` (missing trailing values are zero)."""
        v = [*list(values)[:4], 0.0, 0.0, 0.0, 0.0]
        return Totals(float(v[0]), float(v[1]), float(v[2]), float(v[3]))


@dataclass(frozen=True)
class PodSeen:
    """What the ledger has already counted of one pod."""

    name: str
    accounted_until: float
    prompt: float
    output: float


@dataclass(frozen=True)
class PodObservation:
    """One pod as listed and scraped now. `prompt`/`output` are None when the scrape failed."""

    name: str
    gpus: int
    holds_from: float | None
    prompt: float | None = None
    output: float | None = None
    running: float = 0.0


@dataclass(frozen=True)
class Ledger:
    """Totals since creation, recent buckets (start, totals) and what was counted of each live pod."""

    total: Totals = Totals()
    buckets: tuple[tuple[int, Totals], ...] = ()
    pods: tuple[PodSeen, ...] = ()
    updated: float = 0.0


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


def advance(ledger: Ledger, now: float, pods: Iterable[PodObservation]) -> Ledger:
    """Account every pod's GPU time and counter increase up to `now`; forget pods that are gone."""
    seen = {p.name: p for p in ledger.pods}
    added = Totals()
    kept: list[PodSeen] = []
    for pod in pods:
        if pod.holds_from is None or pod.gpus <= 0:
            continue
        old = seen.get(pod.name)
        start = pod.holds_from if old is None else max(pod.holds_from, old.accounted_until)
        gpu_seconds = max(0.0, now - start) * pod.gpus
        prompt = old.prompt if old else 0.0
        output = old.output if old else 0.0
        new_prompt = new_output = 0.0
        if pod.prompt is not None and pod.output is not None:
            new_prompt = counter_delta(old.prompt if old else None, pod.prompt)
            new_output = counter_delta(old.output if old else None, pod.output)
            prompt, output = pod.prompt, pod.output
        serving = gpu_seconds if (new_output > 0 or new_prompt > 0 or pod.running > 0) else 0.0
        added += Totals(gpu_seconds, serving, new_prompt, new_output)
        kept.append(PodSeen(pod.name, max(now, start), prompt, output))
    buckets = [*ledger.buckets, (bucket_key(now, now), added)]
    return Ledger(ledger.total + added, compact(buckets, now), tuple(sorted(kept, key=lambda p: p.name)), now)


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


def summary(totals: Totals, gpu_hour_usd: float) -> dict[str, Any]:
    """One window of status.cost: GPU-hours, USD, tokens, realised USD per 1M tokens, utilisation."""
    usd = totals.gpu_seconds / HOUR * gpu_hour_usd
    return {
        "gpuHours": round(totals.gpu_seconds / HOUR, 4),
        "usd": round(usd, 4),
        "promptTokens": int(totals.prompt_tokens),
        "outputTokens": int(totals.output_tokens),
        "usdPerMillionOutputTokens": usd_per_million(usd, totals.output_tokens),
        "usdPerMillionTokens": usd_per_million(usd, totals.prompt_tokens + totals.output_tokens),
        "utilization": round(totals.serving_gpu_seconds / totals.gpu_seconds, 4) if totals.gpu_seconds else None,
    }


def report(ledger: Ledger, now: float, gpu_hour_usd: float, estimate: float | None) -> dict[str, Any]:
    """The whole of status.cost: windows, the planner's estimate beside the realised figure, the ledger."""
    out: dict[str, Any] = {"gpuHourUSD": gpu_hour_usd}
    for name, seconds in WINDOWS:
        out[name] = summary(window(ledger, now, seconds), gpu_hour_usd)
    out["sinceCreation"] = summary(ledger.total, gpu_hour_usd)
    out["estimatedUSDPerMillionOutputTokens"] = estimate
    realised = out["lastDay"]["usdPerMillionOutputTokens"]
    out["realisedToEstimate"] = round(realised / estimate, 3) if realised is not None and estimate else None
    out["ledger"] = dump(ledger)
    return out


def dump(ledger: Ledger) -> dict[str, Any]:
    """The ledger as status stores it (compact lists, so it stays small)."""
    return {
        "updated": round(ledger.updated, 3),
        "total": ledger.total.as_list(),
        "buckets": [[float(start), *totals.as_list()] for start, totals in ledger.buckets],
        "pods": [
            {"name": p.name, "accountedUntil": round(p.accounted_until, 3), "prompt": p.prompt, "output": p.output}
            for p in ledger.pods
        ],
    }


def load(stored: Mapping[str, Any] | None) -> Ledger:
    """The ledger from status.cost.ledger (an empty one when absent)."""
    if not stored:
        return Ledger()
    return Ledger(
        total=Totals.from_list(stored.get("total") or []),
        buckets=tuple((int(b[0]), Totals.from_list(b[1:])) for b in stored.get("buckets") or [] if b),
        pods=tuple(
            PodSeen(str(p["name"]), float(p["accountedUntil"]), float(p.get("prompt", 0)), float(p.get("output", 0)))
            for p in stored.get("pods") or []
        ),
        updated=float(stored.get("updated") or 0.0),
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


def parse_counters(text: str) -> tuple[float, float, float]:
    """(prompt tokens, generation tokens, running requests) from vLLM's Prometheus text, summed over engines."""
    prompt = output = running = 0.0
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1]) if "}" not in line else float(line.rsplit("}", 1)[1].split()[0])
        except (IndexError, ValueError):
            continue
        if not math.isfinite(value):
            continue
        if name == "vllm:prompt_tokens_total":
            prompt += value
        elif name == "vllm:generation_tokens_total":
            output += value
        elif name == "vllm:num_requests_running":
            running += value
    return prompt, output, running


def observe(pod: Mapping[str, Any], counters: tuple[float, float, float] | None) -> PodObservation:
    """A pod and its scraped counters as the ledger takes them."""
    prompt, output, running = counters if counters else (None, None, 0.0)
    return PodObservation(
        name=str((pod.get("metadata") or {}).get("name", "")),
        gpus=pod_gpus(pod),
        holds_from=holds_gpus_since(pod),
        prompt=prompt,
        output=output,
        running=running or 0.0,
    )


def bucket_series(stored: Mapping[str, Any] | None, gpu_hour_usd: float) -> list[tuple[float, float | None]]:
    """(bucket start, realised USD per 1M output tokens in it) for each stored bucket; None where nothing served."""
    out: list[tuple[float, float | None]] = []
    for start, totals in load(stored).buckets:
        usd = totals.gpu_seconds / HOUR * gpu_hour_usd
        out.append((float(start), usd_per_million(usd, totals.output_tokens)))
    return out
