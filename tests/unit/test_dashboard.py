"""The chart's Grafana dashboard and its Prometheus alert rules: valid JSON and YAML, every query valid PromQL
(parsed with Prometheus's grammar), and every query names only series the operator, the router or vLLM (its
stand-in, kept equal to vLLM by the conformance suite) export, or a rule records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from qwenfleet.controller import metrics
from qwenfleet.cost import ledger as lg
from qwenfleet.cost.loop import Book, CostLoop, RouterBook
from qwenfleet.planner import PlanRequest, plan
from qwenfleet.router.app import RouterMetrics
from qwenfleet.router.usage import Usage
from qwenfleet.sim.server import SimServer

CHART_FILES = Path(__file__).parents[2] / "charts/qwenfleet/files"
DASHBOARD = CHART_FILES / "dashboard.json"
ALERTS = CHART_FILES / "slo-alerts.yaml"


def _exported(registry: CollectorRegistry) -> set[str]:
    names = set()
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _series_names(expr: str) -> set[str]:
    """The series a PromQL query reads (from its syntax tree; a query Prometheus would refuse raises)."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _all_exported() -> set[str]:
    loop = CostLoop(kube=None, namespaces=None)  # type: ignore[arg-type]
    ledger = lg.Ledger(total=lg.Totals(10, 5, 100, 50, 20, 20, 19))
    loop.books[("ns", "d")] = Book("u", ledger, price=2.0, objective=(2.5, 0.99))
    written = {"backends": [{"name": "d", "usd": 1.0}], "onLargestUSD": 2.0, "referenceUSD": 3.0}
    loop.routers[("ns", "r")] = RouterBook("u", {}, {}, written)
    cost = CollectorRegistry()
    cost.register(loop)
    router = RouterMetrics()
    router.count_usage("d", Usage(1, 2, 1))
    router.requests.labels("d", "alias", "200").inc()
    router.ttfb.labels("d").observe(0.1)
    router.hold.labels("d").observe(12.0)
    router.inflight.labels("d").inc()
    metrics.observe_reconcile("ns", "d", 0.1, {"readyReplicas": 1})
    metrics.ERRORS.labels("ApplyFailed").inc(0)
    metrics.observe_slo("ns", "d", 1.0, 30, 73.0)
    metrics.CHECKPOINTS.labels(result="written").inc(0)
    sim = SimServer(plan(PlanRequest("Qwen3-0.6B", "H100-80GB")))
    try:
        return _exported(REGISTRY) | _exported(cost) | _exported(router.registry) | _exported(sim.metrics.registry)
    finally:
        metrics.forget("ns", "d")


def test_the_dashboard_is_valid_json_and_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    exported = _all_exported()
    for expr in exprs:
        names = _series_names(expr)
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported"


def test_the_checker_catches_a_series_nobody_exports_and_a_query_prometheus_refuses() -> None:
    assert _series_names('sum by (x) (rate(vllm:made_up_total{a="b"}[5m])) / 1e6') == {"vllm:made_up_total"}
    assert "vllm:made_up_total" not in _all_exported()
    with pytest.raises(ValueError):
        _series_names("sum by (x (rate(a[5m]))")


def test_the_slo_alert_rules_parse_and_read_only_exported_or_recorded_series() -> None:
    rules = [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]]
    available = _all_exported()
    for rule in rules:  # in order: a recording rule's series is available to the rules after it
        names = _series_names(rule["expr"])
        assert names and names <= available, f"{rule}: {sorted(names - available)}"
        if "record" in rule:
            assert re.fullmatch(r"namespace_deployment:qwenfleet_[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            available.add(rule["record"])
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == {"Qwen3DeploymentSLOFastBurn", "Qwen3DeploymentSLOSlowBurn"}
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"page", "ticket"} and alert["for"]
        assert {"summary", "description"} <= set(alert["annotations"])


def test_slo_series_go_with_their_deployment() -> None:
    metrics.observe_slo("team-a", "gone", 2.5, 30, 73.0)
    labels = {"namespace": "team-a", "name": "gone"}
    assert REGISTRY.get_sample_value("qwenfleet_autoscaler_period_minutes", labels) == 30
    assert REGISTRY.get_sample_value("qwenfleet_autoscaler_sequences_per_replica", labels) == 73.0
    metrics.forget("team-a", "gone")
    assert REGISTRY.get_sample_value("qwenfleet_autoscaler_arrival_rate", labels) is None
