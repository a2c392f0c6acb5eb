"""What routing saved: router token counters (resets, unscraped pods) and the priced report."""

from __future__ import annotations

import pytest

from qwenfleet.api.cost import RouterCost
from qwenfleet.cost.routing import BackendPrice, advance_counters, report


def test_counters_add_increases_handle_resets_and_keep_unscraped_pods() -> None:
    totals, seen = advance_counters({}, {}, {"r-1": {"small/output/non_thinking": 100.0}})
    assert totals == {"small/output/non_thinking": 100.0}
    totals, seen = advance_counters(totals, seen, {"r-1": {"small/output/non_thinking": 150.0}, "r-2": None})
    assert totals == {"small/output/non_thinking": 150.0}
    assert "r-2" not in seen
    totals, seen = advance_counters(totals, seen, {"r-1": None})  # r-1 did not answer: its baseline is kept
    assert seen == {"r-1": {"small/output/non_thinking": 150.0}}
    totals, seen = advance_counters(totals, seen, {"r-1": {"small/output/non_thinking": 20.0}})  # restarted
    assert totals == {"small/output/non_thinking": 170.0}


def test_report_prices_backends_modes_largest_and_reference() -> None:
    totals = {
        "small/prompt/non_thinking": 3e6, "small/output/non_thinking": 1e6,
        "big/prompt/thinking": 1e6, "big/output/thinking": 1e6, "big/reasoning/thinking": 6e5,
    }  # fmt: skip
    # big: 50 USD an hour; 1,000 output and 10,000 prompt tokens a second per replica
    prices = {"small": BackendPrice(0.5, 1, 2.0, 500, 5000), "big": BackendPrice(4.0, 8, 50.0, 1000, 10000)}
    reference = {"name": "some API", "inputPerMillionUSD": 1.0, "outputPerMillionUSD": 10.0}
    out = report(totals, prices, reference).to_patch()
    assert out["usd"] == pytest.approx(4.5)
    by_name = {b["name"]: b for b in out["backends"]}
    assert by_name["big"]["reasoningTokens"] == 600_000
    assert by_name["small"]["usd"] == pytest.approx(0.5)
    assert out["largestBackend"] == "big"
    # every routed token on big: (2e6 output / 1000 + 4e6 prompt / 10000) s = 2400 s = 2/3 replica-hour, 33.33 USD;
    # big's own tokens cost 4.0 USD realised, and their work (1e6/1000 + 1e6/10000 = 1100 s) 15.28 USD: no idle floor
    assert out["onLargestReplicaHours"] == pytest.approx(2400 / 3600, abs=1e-5)
    assert out["largestIdleUSD"] == 0.0
    assert out["onLargestUSD"] == pytest.approx(2400 / 3600 * 50, abs=1e-3)
    assert out["savedVsLargestUSD"] == pytest.approx(2400 / 3600 * 50 - 4.5, abs=1e-3)
    assert out["referenceUSD"] == pytest.approx(4 * 1.0 + 2 * 10.0)
    assert out["savedVsReferenceUSD"] == pytest.approx(24 - 4.5)
    modes = {m["mode"]: m for m in out["modes"]}
    assert modes["thinking"]["costShare"] == pytest.approx(4 / 4.5, abs=1e-3)
    assert modes["non_thinking"]["tokenShare"] == pytest.approx(4 / 6, abs=1e-3)
    RouterCost.model_validate(out)


@pytest.mark.parametrize(
    ("large_output", "large_realised", "medium_output", "medium_realised", "expect_saved_below"),
    [
        # the demo: one thinking answer (37 tokens) on a large backend idle for 40 minutes, a minute of medium load
        (37, 14_850.0, 1_000_000, 15.66, 0.0),
        # the large backend busy: its realised price near its planned one; routing to medium saves its GPU-hours
        (5_000_000, 20.0, 1_000_000, 2.0, None),
        # nothing on the large backend at all
        (0, None, 1_000_000, 15.66, 0.0),
    ],
)
def test_the_largest_backend_counterfactual_is_gpu_hours_never_an_idle_price_times_tokens(
    large_output: int, large_realised: float | None, medium_output: int, medium_realised: float,
    expect_saved_below: float | None,
) -> None:  # fmt: skip
    totals = {
        "large/output/thinking": float(large_output),
        "large/prompt/thinking": 20.0 * (large_output > 0),
        "medium/output/non_thinking": float(medium_output),
        "medium/prompt/non_thinking": 2.0 * medium_output,
    }
    large = BackendPrice(large_realised, 8, 32.0, decode_tokens_per_second=2400, prefill_tokens_per_second=24000)
    prices = {"large": large, "medium": BackendPrice(medium_realised, 1, 4.0, 600, 6000)}
    out = report(totals, prices, None).to_patch()
    spent = out["usd"]
    hours = (large_output + medium_output) / 2400 / 3600 + (
        20.0 * (large_output > 0) + 2.0 * medium_output
    ) / 24000 / 3600
    own_work = (large_output / 2400 + 20.0 * (large_output > 0) / 24000) / 3600 * 32.0
    idle = max(0.0, large_output / 1e6 * (large_realised or 0) - own_work)
    assert out["onLargestUSD"] == pytest.approx(hours * 32.0 + idle, abs=1e-3)
    # what GPU-hours explain: the work at planned throughput plus the idle floor the large backend had anyway;
    # the idle-dominated realised price times every routed token would be thousands of USD here
    assert out["onLargestUSD"] <= hours * 32.0 + out["backends"][0]["usd"] + 1e-3
    if large_realised:
        assert out["onLargestUSD"] < (large_output + medium_output) / 1e6 * large_realised
    if expect_saved_below is not None:
        assert out["savedVsLargestUSD"] < expect_saved_below  # an idle large backend: routing saved nothing
    else:
        assert out["savedVsLargestUSD"] > 0
    assert spent == pytest.approx(large_output / 1e6 * (large_realised or 0) + medium_output / 1e6 * medium_realised,
                                  abs=1e-3)  # fmt: skip


def test_without_a_planned_throughput_there_is_no_counterfactual() -> None:
    out = report({"big/output/thinking": 10.0}, {"big": BackendPrice(3.0, 8, 50.0)}, None).to_patch()
    assert out["largestBackend"] == "big" and out["onLargestUSD"] is None and out["savedVsLargestUSD"] is None


def test_without_a_reference_no_reference_figures_are_invented() -> None:
    out = report({"small/output/non_thinking": 10.0}, {"small": BackendPrice(None, 1, 1.0)}, None).to_patch()
    assert out["referenceUSD"] is None  # cleared from status, never a made-up figure
    assert out["usd"] == 0.0  # no price known yet: no made-up cost


def test_the_router_reconcile_does_not_own_status_cost() -> None:
    from qwenfleet.render.status import DEPLOYMENT_STATUS_FIELDS, ROUTER_STATUS_FIELDS

    assert "cost" not in ROUTER_STATUS_FIELDS and "cost" not in DEPLOYMENT_STATUS_FIELDS
    assert "backends" in ROUTER_STATUS_FIELDS


def test_an_external_api_is_priced_at_its_list_prices_and_is_the_all_on_the_api_reference() -> None:
    totals = {"premium/prompt/non_thinking": 2e6, "premium/output/non_thinking": 1e6,
              "small/prompt/non_thinking": 8e6, "small/output/non_thinking": 4e6}  # fmt: skip
    prices = {"premium": BackendPrice(15.0, 0, 0.0, usd_per_million_input=3.0, external=True),
              "small": BackendPrice(0.5, 1, 2.0, 500, 5000)}  # fmt: skip
    out = report(totals, prices, None).to_patch()
    rows = {b["name"]: b for b in out["backends"]}
    assert rows["premium"]["usd"] == pytest.approx(2 * 3.0 + 1 * 15.0) and rows["premium"]["external"] is True
    assert out["externalUSD"] == pytest.approx(21.0)
    assert out["usd"] == pytest.approx(21.0 + 4 * 0.5)
    assert out["largestBackend"] == "small"  # an API has no GPUs to count
    assert out["referenceName"] == "premium (external API)"  # without a costReference: all on the API
    assert out["referenceUSD"] == pytest.approx(10 * 3.0 + 5 * 15.0)
    assert out["savedVsReferenceUSD"] == pytest.approx(105.0 - 23.0)


def test_the_cost_loop_reads_a_router_pods_tokens_and_budget_gauge() -> None:
    from qwenfleet.cost.loop import parse_router

    text = ('qwenfleet_router_tokens_total{backend="premium",mode="non_thinking",type="output"} 12.0\n'
            "qwenfleet_router_external_budget_exhausted 1.0\n")  # fmt: skip
    sample = parse_router(text)
    assert sample.tokens == {"premium/output/non_thinking": 12.0} and sample.budget_exhausted
    assert not parse_router(text.replace("exhausted 1.0", "exhausted 0.0")).budget_exhausted
