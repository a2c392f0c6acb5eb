"""`qwenfleet cost` from statuses: the JSON view, the tables and the plot, without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from qwenfleet.cost import ledger as lg
from qwenfleet.cost.cli import plot, summarise, tables
from qwenfleet.cost.ledger import Ledger, PodObservation
from qwenfleet.cost.routing import BackendPrice, report

T0 = 1_800_000_000.0


def _objs() -> dict[str, list[dict[str, Any]]]:
    led = Ledger()
    for step in range(1, 13):
        pod = PodObservation("p", 1, T0, prompt=step * 1000, output=step * 400, requests=step * 10, on_time=step * 9)
        led = lg.advance(led, T0 + step * 300, [pod], bound=2.5)
    cost = lg.report(led, T0 + 3600, 2.0, 0.5).to_patch()
    slo = lg.slo_report(led, T0 + 3600, 2.5, 0.99).to_patch()
    ref = {"name": "ref", "inputPerMillionUSD": 1, "outputPerMillionUSD": 4}
    tokens = {"d/prompt/non_thinking": 12000.0, "d/output/non_thinking": 4800.0}
    router_cost = report(tokens, {"d": BackendPrice(1.0, 1, 2.0)}, ref).to_patch()
    return {
        "deployments": [{"metadata": {"namespace": "ns", "name": "d"}, "spec": {},
                         "status": {"cost": cost, "slo": slo}}],
        "routers": [{"metadata": {"namespace": "ns", "name": "r"}, "spec": {"costReference": ref},
                     "status": {"cost": router_cost}}],
    }  # fmt: skip


def test_json_view_drops_the_ledger_and_tables_show_the_figures() -> None:
    view = summarise(_objs())
    dep = view["deployments"][0]
    assert "ledger" not in dep["cost"]
    assert dep["cost"]["sinceCreation"]["outputTokens"] == 4800
    assert view["routers"][0]["costReference"]["name"] == "ref"
    console = Console(width=250, record=True)
    for table in tables(view):
        console.print(table)
    text = console.export_text()
    assert "ns/d" in text and "4,800" in text and "at ref" in text and "sinceCreation" in text
    assert dep["slo"]["sinceCreation"] == {"requests": 120, "onTime": 108, "attainment": 0.9}
    assert "90.00% (aim 99.00%)" in text and "120" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cost.png"
    plot(_objs(), str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"
