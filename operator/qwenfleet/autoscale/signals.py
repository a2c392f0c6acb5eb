"""Signals: each ready replica's vLLM /metrics, scraped directly from its pod IP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from qwenfleet.render.names import HTTP_PORT

SCRAPE_TIMEOUT_SECONDS = 2.0
GAUGES = {"vllm:num_requests_waiting": "waiting", "vllm:num_requests_running": "running",
          "vllm:kv_cache_usage_perc": "kv"}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One replica's load."""

    waiting: float
    running: float
    kv: float
    generation_tokens: float
    finished: float = 0.0
    """vllm:request_success_total: requests this replica finished since it started."""


def parse_metrics(text: str) -> Sample:
    """The load figures from vLLM's Prometheus text (summed over engines)."""
    values = {"waiting": 0.0, "running": 0.0, "kv": 0.0, "tokens": 0.0, "finished": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in GAUGES:
                values[GAUGES[sample.name]] += sample.value
            elif sample.name == "vllm:generation_tokens_total":
                values["tokens"] += sample.value
            elif sample.name == "vllm:request_success_total":
                values["finished"] += sample.value
    return Sample(values["waiting"], values["running"], values["kv"], values["tokens"], values["finished"])


async def scrape(session: aiohttp.ClientSession, ip: str, port: int = HTTP_PORT) -> Sample | None:
    """One replica's sample, or None if it did not answer in time."""
    try:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        async with session.get(f"http://{ip}:{port}/metrics", timeout=timeout) as response:
            if response.status != 200:
                return None
            return parse_metrics(await response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def scrape_all(session: aiohttp.ClientSession, ips: list[str]) -> dict[str, Sample]:
    """Samples of every replica that answered, by pod IP."""
    results = await asyncio.gather(*(scrape(session, ip) for ip in ips))
    return {ip: r for ip, r in zip(ips, results, strict=True) if r is not None}
