"""The one reading of vLLM's /metrics, and the scraper the autoscaler and the cost loop share."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from qwenfleet.enginemetrics.parse import EngineSample, parse
from qwenfleet.enginemetrics.scrape import Scraper

TWO_ENGINES = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 50.0
vllm:num_requests_running{engine="0",model_name="m"} 8.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 7.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
vllm:generation_tokens_total{engine="0",model_name="m"} 900.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 1200.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 9.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 9.0
vllm:num_requests_running NaN
vllm:num_requests_running{engine="2",model_name="m"} not-a-number
process_cpu_seconds_total 12.0
"""


def test_one_parse_sums_each_series_over_engines_and_skips_the_rest() -> None:
    s = parse(TWO_ENGINES)
    assert (s.waiting, s.running, s.kv) == (4.0, 8.0, 0.75)  # waiting_by_reason is another series
    assert (s.finished, s.generation_tokens, s.prompt_tokens) == (9.0, 900.0, 1200.0)
    assert s.ttft == ((0.5, 4.0), (float("inf"), 9.0))
    assert s.first_tokens() == 9.0 and s.within(0.5) == 4.0


def test_an_empty_or_foreign_exposition_reads_as_idle() -> None:
    assert parse("") == EngineSample()
    assert parse("# comment only\nhttp_requests_total 5\n") == EngineSample()


def test_a_value_followed_by_a_timestamp_is_read() -> None:
    assert parse("vllm:num_requests_waiting 2 1700000000000\n").waiting == 2.0


class Pods:
    """Two model servers on loopback: one answers slowly with a sample, one with 500."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {"/ok": 0, "/bad": 0}
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)

    async def metrics(self, request: web.Request) -> web.Response:
        self.hits["/ok"] += 1
        await asyncio.sleep(0.05)
        return web.Response(text=f"vllm:num_requests_waiting {self.hits['/ok']}\n")


async def test_callers_within_their_max_age_share_one_scrape() -> None:
    pods = Pods()
    now = [100.0]
    async with TestServer(pods.app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        scraper = Scraper(session, port=server.port, clock=lambda: now[0])
        # two loops asking at once: one request, both get its answer
        first, second = await asyncio.gather(scraper.samples(["127.0.0.1"]), scraper.samples(["127.0.0.1"]))
        assert pods.hits["/ok"] == 1 and first == second == {"127.0.0.1": EngineSample(waiting=1.0)}
        now[0] += 4.0
        # the cost loop takes a sample up to its interval old: the autoscaler's, 4 s old
        assert (await scraper.samples(["127.0.0.1"], max_age=10.0))["127.0.0.1"].waiting == 1.0
        assert pods.hits["/ok"] == 1 and scraper.scrapes == 1
        # the autoscaler wants it fresh: a new request
        assert (await scraper.samples(["127.0.0.1"]))["127.0.0.1"].waiting == 2.0
        assert scraper.scrapes == 2


async def test_a_pod_that_does_not_answer_is_left_out_and_its_failure_shared() -> None:
    async with aiohttp.ClientSession() as session:
        scraper = Scraper(session, port=1, timeout=0.5, clock=lambda: 0.0)  # nothing listens on port 1
        assert await scraper.samples(["127.0.0.1"]) == {}
        assert await scraper.samples(["127.0.0.1"], max_age=10.0) == {}
        assert scraper.scrapes == 1
