"""Requests a router sent elsewhere count as arrivals for the backend they were meant for: the router's counter, the
cost loop's parse of it, and the autoscaler's delta per router pod."""

from __future__ import annotations

from prometheus_client import generate_latest

from qwenfleet.autoscale.loop import overflow_since
from qwenfleet.cost.loop import parse_router
from qwenfleet.router.app import RouterMetrics
from qwenfleet.router.policy import Route


def test_a_spillover_or_a_fallback_is_counted_for_its_target_and_a_direct_request_is_not() -> None:
    metrics = RouterMetrics()
    metrics.count_overflow(Route("premium-api", "rule:chat>spillover", "qwen3-30b"))
    metrics.count_overflow(Route("qwen3-4b", "alias>wake>fallback", "qwen3-30b", meanwhile="qwen3-4b"))
    metrics.count_overflow(Route("qwen3-4b", "alias>wake>fallback", "qwen3-235b", meanwhile="qwen3-4b"))
    metrics.count_overflow(Route("qwen3-30b", "alias", "qwen3-30b"))
    sample = parse_router(generate_latest(metrics.registry).decode())
    assert sample.overflow == {"qwen3-30b": 2.0, "qwen3-235b": 1.0}


def test_the_autoscaler_adds_each_router_pods_increase_and_a_restarted_pod_counts_from_zero() -> None:
    before = {"127.1.0.1": 10.0, "127.1.0.2": 5.0}
    now = {"127.1.0.1": 14.0, "127.1.0.2": 2.0, "127.1.0.3": 3.0}  # .2 restarted, .3 is new
    assert overflow_since(before, now) == 4.0 + 2.0 + 3.0
    assert overflow_since(now, now) == 0.0
