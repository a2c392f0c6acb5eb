"""The cost ledger: counter resets, GPU-seconds from pod intervals, windows, restart survival, USD per 1M."""

from __future__ import annotations

import pytest

from qwenfleet.api.cost import DeploymentCost, SloStatus
from qwenfleet.cost import ledger as lg
from qwenfleet.cost.ledger import Ledger, PodObservation, Totals
from qwenfleet.enginemetrics.parse import EngineSample, parse

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
    out = lg.report(led, T0, gpu_hour_usd=2.5, estimate=1.0).to_patch()
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
    stored = lg.report(led, T0 + 30, 1.0, None).to_patch()["ledger"]
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
    counters = parse(text)
    assert (counters.prompt_tokens, counters.generation_tokens, counters.running) == (150.0, 45.0, 2.0)
    assert counters.ttft == () and counters.first_tokens() == 0.0


TTFT_TEXT = """# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="m"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="2.5",model_name="m"} 8.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.5",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="1.0",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="2.5",model_name="m"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 2.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 10.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 17.5
vllm:inter_token_latency_seconds_bucket{engine="0",le="2.5",model_name="m"} 99.0
"""


def test_parse_counters_reads_the_ttft_histogram_summed_over_engines() -> None:
    counters = parse(TTFT_TEXT)
    assert counters.ttft == ((0.5, 4.0), (1.0, 6.0), (2.5, 10.0), (float("inf"), 12.0))
    assert counters.first_tokens() == 12.0
    assert counters.within(2.5) == 10.0
    assert counters.within(2.0) is None  # not a bucket: never guessed


@pytest.mark.parametrize(
    ("objective", "bound"),
    [(2.5, 2.5), (2.0, 1.0), (1.0, 1.0), (0.4, None), (600.0, 2.5)],
)
def test_an_objective_is_measured_at_the_largest_bucket_at_or_below_it(objective: float, bound: float | None) -> None:
    counters = parse(TTFT_TEXT)
    assert lg.slo_bound(objective, [EngineSample(), counters]) == bound  # the first replica with the histogram
    assert lg.slo_bound(objective, [EngineSample()]) is None


def _timed(name: str, requests: float, on_time: float | None) -> PodObservation:
    return PodObservation(name, 1, T0, prompt=requests * 10, output=requests, requests=requests, on_time=on_time)


def test_requests_and_those_on_time_are_counted_per_pod_with_resets() -> None:
    led = lg.advance(Ledger(), T0 + 10, [_timed("a", 10, 9), _timed("b", 4, 4)], bound=2.5)
    assert (led.total.requests, led.total.timed, led.total.on_time) == (14, 14, 13)
    led = lg.advance(led, T0 + 20, [_timed("a", 30, 19), _timed("b", 4, 4)], bound=2.5)
    assert (led.total.requests, led.total.timed, led.total.on_time) == (34, 34, 23)
    # a's engine restarted: its counts now are all new, not a negative change
    led = lg.advance(led, T0 + 30, [_timed("a", 5, 5), _timed("b", 6, 4)], bound=2.5)
    assert (led.total.requests, led.total.timed, led.total.on_time) == (41, 41, 28)
    report = lg.slo_report(led, T0 + 30, 2.5, 0.99).to_patch()
    assert report["sinceCreation"] == {"requests": 41, "onTime": 28, "attainment": round(28 / 41, 4)}
    assert report["lastHour"] == report["sinceCreation"] and report["measuredAtSeconds"] == 2.5
    SloStatus.model_validate(report)  # the report is what the API (and the CRD schema) says


def test_without_an_objective_requests_are_counted_but_not_timed_and_a_new_bucket_starts_afresh() -> None:
    led = lg.advance(Ledger(), T0 + 10, [_timed("a", 10, None)])
    assert (led.total.requests, led.total.timed, led.total.on_time) == (10, 0, 0)
    # the objective is set: this pass takes the counts at its bucket as the baseline, the next one counts
    led = lg.advance(led, T0 + 20, [_timed("a", 20, 15)], bound=1.0)
    assert (led.total.requests, led.total.timed, led.total.on_time) == (20, 0, 0)
    led = lg.advance(led, T0 + 30, [_timed("a", 30, 22), _timed("new", 3, 1)], bound=1.0)
    assert (led.total.requests, led.total.timed, led.total.on_time) == (33, 13, 8)
    # changed to another bucket: a baseline pass again (the old bucket's counts are not the new one's)
    led = lg.advance(led, T0 + 40, [_timed("a", 40, 40), _timed("new", 3, 3)], bound=2.5)
    assert (led.total.timed, led.total.on_time) == (13, 8)
    assert lg.slo_report(led, T0 + 40, 2.5, 0.99).to_patch()["lastHour"]["attainment"] == round(8 / 13, 4)


def test_a_scrape_without_the_bucket_times_nothing_and_no_requests_means_no_attainment() -> None:
    led = lg.advance(Ledger(), T0 + 10, [_timed("a", 10, None)], bound=2.5)
    assert (led.total.requests, led.total.timed) == (10, 0)
    assert lg.slo_report(Ledger(), T0, 2.5, 0.99).to_patch()["lastDay"] == {
        "requests": 0,
        "onTime": 0,
        "attainment": None,
    }


def test_observe_reads_the_requests_and_the_objective_bucket() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n", "containers": []},
        "status": {"startTime": "2027-01-15T08:00:00Z"},
    }
    seen = lg.observe(pod, parse(TTFT_TEXT), bound=1.0)
    assert (seen.requests, seen.on_time) == (12.0, 6.0)
    assert lg.observe(pod, parse(TTFT_TEXT)).on_time is None
    assert lg.observe(pod, None, bound=1.0).requests is None


def test_the_request_counts_survive_a_round_trip_and_an_older_ledger_loads() -> None:
    led = lg.advance(Ledger(), T0 + 10, [_timed("a", 10, 9)], bound=2.5)
    stored = lg.report(led, T0 + 10, 1.0, None).to_patch()["ledger"]
    assert lg.load(stored) == led
    DeploymentCost.model_validate(lg.report(led, T0 + 10, 1.0, None).to_patch())
    old = {"updated": T0, "total": [60.0, 0.0, 100.0, 40.0], "buckets": [[T0, 60.0, 0.0, 100.0, 40.0]],
           "pods": [{"name": "a", "accountedUntil": T0, "prompt": 100.0, "output": 40.0}]}  # fmt: skip
    loaded = lg.load(old)
    assert loaded.total == Totals(60.0, 0.0, 100.0, 40.0) and loaded.bound is None
    later = lg.advance(loaded, T0 + 10, [_timed("a", 10, 9)], bound=2.5)  # a pod first timed: a baseline pass
    assert (later.total.requests, later.total.timed) == (10, 0)


def test_totals_add_every_figure() -> None:
    one = Totals(*range(1, lg.FIELDS + 1))
    assert len(one.values()) == lg.FIELDS  # a new field must be added to values() too
    assert (one + one).values() == tuple(2.0 * v for v in one.values())
