"""The cost ledger: counter resets, GPU-seconds from pod intervals, windows, restart survival, USD per 1M."""

from __future__ import annotations

import pytest

from qwenfleet.api.cost import DeploymentCost
from qwenfleet.cost import ledger as lg
from qwenfleet.cost.ledger import Ledger, PodObservation, Totals

T0 = 1_800_000_000.0  # a multiple of 3600: bucket boundaries are easy to reason about


@pytest.mark.parametrize(
    ("previous", "current", "delta"),
    [
        (None, 50.0, 50.0),  # a new pod: its counter started at zero
        (10.0, 25.0, 15.0),
        (25.0, 25.0, 0.0),
        (1000.0, 40.0, 40.0),  # the engine restarted: everything now is new
        (40.0, 0.0, 0.0),
    ],
)
def test_counter_delta(previous: float | None, current: float, delta: float) -> None:
    assert lg.counter_delta(previous, current) == delta


def test_gpu_seconds_from_pod_intervals_and_tokens_from_counters() -> None:
    led = Ledger()
    # A 2-GPU pod scheduled at T0; a second pod pending (no GPUs held); seen first at T0+60.
    pods = [PodObservation("a", 2, T0, prompt=100, output=40), PodObservation("b", 2, None)]
    led = lg.advance(led, T0 + 60, pods)
    assert led.total.gpu_seconds == 120
    assert (led.total.prompt_tokens, led.total.output_tokens) == (100, 40)
    assert led.total.serving_gpu_seconds == 120
    # b is scheduled at T0+90; at T0+120 a has served nothing more, b's scrape failed.
    pods = [PodObservation("a", 2, T0, prompt=100, output=40), PodObservation("b", 2, T0 + 90)]
    led = lg.advance(led, T0 + 120, pods)
    assert led.total.gpu_seconds == 120 + 120 + 60
    assert led.total.serving_gpu_seconds == 120  # a was idle, b's interval unknown: not serving
    # a's engine restarted (counter reset); b now answers.
    pods = [PodObservation("a", 2, T0, prompt=30, output=5), PodObservation("b", 2, T0 + 90, prompt=7, output=3)]
    led = lg.advance(led, T0 + 180, pods)
    assert (led.total.prompt_tokens, led.total.output_tokens) == (137, 48)
    assert led.total.gpu_seconds == 300 + 240


def test_a_pod_that_goes_is_forgotten_and_a_terminated_pod_costs_nothing() -> None:
    led = lg.advance(Ledger(), T0 + 10, [PodObservation("a", 1, T0, 0, 0)])
    led = lg.advance(led, T0 + 20, [])
    assert led.pods == ()
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
           "status": {"phase": "Succeeded", "startTime": "2027-01-15T08:00:00Z"}}  # fmt: skip
    assert lg.observe(pod, None).holds_from is None
    assert lg.observe(pod, None).gpus == 4


def test_holds_gpus_from_scheduling_not_readiness() -> None:
    pod = {
        "spec": {"nodeName": "gpu-1"},
        "status": {
            "phase": "Pending",
            "startTime": "2027-01-15T08:00:05Z",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2027-01-15T08:00:00Z"}],
        },
    }
    assert lg.holds_gpus_since(pod) == lg.parse_time("2027-01-15T08:00:00Z")
    assert lg.holds_gpus_since({"status": {"phase": "Pending"}}) is None


def test_windows_and_compaction() -> None:
    led = Ledger()
    # One GPU busy for two days, accounted every 5 minutes.
    now = T0
    pod = PodObservation("a", 1, T0, prompt=0, output=0)
    for step in range(1, 2 * 24 * 12 + 1):
        now = T0 + step * 300
        pod = PodObservation("a", 1, T0, prompt=step * 10, output=step)
        led = lg.advance(led, now, [pod])
    assert led.total.gpu_seconds == pytest.approx(2 * 86400)
    hour = lg.window(led, now, lg.HOUR)
    day = lg.window(led, now, lg.DAY)
    assert hour.gpu_seconds == pytest.approx(3600, rel=0.1)
    assert day.gpu_seconds == pytest.approx(86400, rel=0.05)
    assert len(led.buckets) <= 13 + 25  # 5-minute buckets for an hour, hour buckets for a day


def test_report_usd_per_million_and_utilisation() -> None:
    led = Ledger(total=Totals(gpu_seconds=7200, serving_gpu_seconds=1800, prompt_tokens=3e6, output_tokens=1e6))
    out = lg.report(led, T0, gpu_hour_usd=2.5, estimate=1.0)
    total = out["sinceCreation"]
    assert total["gpuHours"] == 2.0
    assert total["usd"] == 5.0
    assert total["usdPerMillionOutputTokens"] == 5.0
    assert total["usdPerMillionTokens"] == 1.25
    assert total["utilization"] == 0.25
    assert out["lastDay"]["usdPerMillionOutputTokens"] is None  # no buckets: nothing served in the day
    DeploymentCost.model_validate(out)  # the report is what the API (and the CRD schema) says


def test_ledger_survives_a_round_trip_through_status() -> None:
    led = lg.advance(Ledger(), T0 + 30, [PodObservation("a", 8, T0, prompt=500, output=200, running=3)])
    stored = lg.report(led, T0 + 30, 1.0, None)["ledger"]
    again = lg.load(stored)
    assert again == led
    # After a restart the pod is accounted from where the ledger stopped, and its counters are not counted twice.
    later = lg.advance(again, T0 + 60, [PodObservation("a", 8, T0, prompt=600, output=250)])
    assert later.total.gpu_seconds == 8 * 60
    assert (later.total.prompt_tokens, later.total.output_tokens) == (600, 250)


def test_parse_counters_sums_engines_and_ignores_others() -> None:
    text = """# HELP vllm:prompt_tokens_total x
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 120.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 30.0
vllm:generation_tokens_total{engine="0",model_name="m"} 45.0
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 999.0
"""
    assert lg.parse_counters(text) == (150.0, 45.0, 2.0)
