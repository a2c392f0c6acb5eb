"""One reading of vLLM's Prometheus text: the figures the autoscaler, the cost ledger and the router use.

The exposition of the pinned engine is about 56 kB (a few hundred lines, most of them histogram buckets); this
reads it line by line, keeps only the few series below and sums each over engines (a data-parallel server labels
one series per engine). Names and labels are the real engine's, checked by the conformance suite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
FINISHED = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
TTFT_BUCKET = f"{TTFT}_bucket"
_FIELDS = {WAITING: "waiting", RUNNING: "running", KV_USAGE: "kv", PROMPT_TOKENS: "prompt_tokens",
           GENERATION_TOKENS: "generation_tokens", FINISHED: "finished"}  # fmt: skip


@dataclass(frozen=True)
class EngineSample:
    """One replica's load and counters at one scrape, summed over its engines."""

    waiting: float = 0.0
    running: float = 0.0
    kv: float = 0.0
    """vllm:kv_cache_usage_perc, a fraction (0..1 per engine)."""
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    finished: float = 0.0
    """vllm:request_success_total: requests this replica finished since it started."""
    ttft: tuple[tuple[float, float], ...] = ()
    """vllm:time_to_first_token_seconds as (upper bound, cumulative count) pairs, ascending; +Inf last."""

    def first_tokens(self) -> float:
        """Requests that got their first token (the histogram's count)."""
        return self.ttft[-1][1] if self.ttft else 0.0

    def within(self, bound: float) -> float | None:
        """Requests whose first token came within `bound` seconds; None if `bound` is not one of the buckets."""
        return next((count for le, count in self.ttft if math.isclose(le, bound)), None)


def parse(text: str) -> EngineSample:
    """The sample in one /metrics answer; series it does not use, comments and malformed lines are skipped."""
    sums = dict.fromkeys(_FIELDS.values(), 0.0)
    ttft: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        name = line[:brace] if brace >= 0 else line.split(" ", 1)[0]
        field = _FIELDS.get(name)
        if field is None and name != TTFT_BUCKET:
            continue
        value = _value(line)
        if value is None:
            continue
        if field is not None:
            sums[field] += value
        elif (le := _label(line, "le")) is not None:
            try:
                bound = float(le)
            except ValueError:
                continue
            ttft[bound] = ttft.get(bound, 0.0) + value
    return EngineSample(**sums, ttft=tuple(sorted(ttft.items())))


def _value(line: str) -> float | None:
    """The sample value of one line (after the labels, before an optional timestamp), if finite."""
    rest = line.rsplit("}", 1)[1] if "}" in line else line.split(" ", 1)[1] if " " in line else ""
    try:
        value = float(rest.split()[0])
    except (IndexError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _label(line: str, name: str) -> str | None:
    """A label's value in one sample line of the Prometheus text format (vLLM's values hold no quotes)."""
    key = f'{name}="'
    at = line.find(key, 0, line.find("}"))
    if at < 0:
        return None
    start = at + len(key)
    return line[start : line.index('"', start)]
