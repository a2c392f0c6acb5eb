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
    prices = {"small": BackendPrice(0.5, 1, 2.0), "big": BackendPrice(4.0, 8, 50.0)}
    reference = {"name": "some API", "inputPerMillionUSD": 1.0, "outputPerMillionUSD": 10.0}
    out = report(totals, prices, reference).to_patch()
    assert out["usd"] == pytest.approx(4.5)
    by_name = {b["name"]: b for b in out["backends"]}
    assert by_name["big"]["reasoningTokens"] == 600_000
    assert by_name["small"]["usd"] == pytest.approx(0.5)
    assert out["largestBackend"] == "big"
    assert out["onLargestUSD"] == pytest.approx(8.0)
    assert out["savedVsLargestUSD"] == pytest.approx(3.5)
    assert out["referenceUSD"] == pytest.approx(4 * 1.0 + 2 * 10.0)
    assert out["savedVsReferenceUSD"] == pytest.approx(24 - 4.5)
    modes = {m["mode"]: m for m in out["modes"]}
    assert modes["thinking"]["costShare"] == pytest.approx(4 / 4.5, abs=1e-3)
    assert modes["non_thinking"]["tokenShare"] == pytest.approx(4 / 6, abs=1e-3)
    RouterCost.model_validate(out)


def test_without_a_reference_no_reference_figures_are_invented() -> None:
    out = report({"small/output/non_thinking": 10.0}, {"small": BackendPrice(None, 1, 1.0)}, None).to_patch()
    assert out["referenceUSD"] is None  # cleared from status, never a made-up figure
    assert out["usd"] == 0.0  # no price known yet: no made-up cost


def test_the_router_reconcile_does_not_own_status_cost() -> None:
    from qwenfleet.render.status import DEPLOYMENT_STATUS_FIELDS, ROUTER_STATUS_FIELDS

    assert "cost" not in ROUTER_STATUS_FIELDS and "cost" not in DEPLOYMENT_STATUS_FIELDS
    assert "backends" in ROUTER_STATUS_FIELDS
