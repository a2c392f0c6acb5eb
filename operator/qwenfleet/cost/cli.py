"""`qwenfleet cost`: what each deployment and router really cost, from their status.cost (a table, JSON or a plot)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from qwenfleet.api.base import API_VERSION
from qwenfleet.cost.ledger import bucket_series
from qwenfleet.kube import Kube, make_api_client


async def fetch(kubeconfig: str | None, namespace: str | None) -> dict[str, list[dict[str, Any]]]:
    """Qwen3Deployments and Qwen3Routers (namespace None: all) with their status.cost."""
    kube = Kube(await make_api_client(kubeconfig))
    try:
        deployments = await kube.list(API_VERSION, "Qwen3Deployment", namespace)
        routers = await kube.list(API_VERSION, "Qwen3Router", namespace)
    finally:
        await kube.close()
    return {"deployments": deployments, "routers": routers}


def summarise(objs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The cost view `-o json` prints: name, namespace, status.cost without the ledger, and status.slo if any."""

    def one(obj: dict[str, Any]) -> dict[str, Any]:
        cost = {k: v for k, v in ((obj.get("status") or {}).get("cost") or {}).items() if k != "ledger"}
        meta = obj["metadata"]
        out = {"namespace": meta["namespace"], "name": meta["name"], "cost": cost}
        if (obj.get("status") or {}).get("slo"):
            out["slo"] = obj["status"]["slo"]
        if "costReference" in (obj.get("spec") or {}):
            out["costReference"] = obj["spec"]["costReference"]
        return out

    return {kind: [one(o) for o in objs[kind]] for kind in ("deployments", "routers")}


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(view: dict[str, list[dict[str, Any]]]) -> list[Table]:
    """One table of deployments (per window) and one of routers."""
    dep = Table(title="Qwen3Deployments: measured cost (idle and starting replicas included)")
    for col in ("namespace/name", "window", "GPU-h", "USD", "prompt tok", "output tok", "USD/1M out", "USD/1M all",
                "util", "est USD/1M out", "requests", "TTFT SLO met"):  # fmt: skip
        dep.add_column(col, justify="left" if col in ("namespace/name", "window") else "right")
    for d in view["deployments"]:
        cost, slo = d["cost"], d.get("slo") or {}
        for window in ("lastHour", "lastDay", "sinceCreation"):
            w = cost.get(window) or {}
            met = (slo.get(window) or {}).get("attainment")
            dep.add_row(
                f"{d['namespace']}/{d['name']}" if window == "lastHour" else "", window, _num(w.get("gpuHours")),
                _num(w.get("usd"), 2), f"{w.get('promptTokens', 0):,}", f"{w.get('outputTokens', 0):,}",
                _num(w.get("usdPerMillionOutputTokens")), _num(w.get("usdPerMillionTokens")),
                _num(w.get("utilization"), 2),
                _num(cost.get("estimatedUSDPerMillionOutputTokens")) if window == "lastHour" else "",
                f"{w.get('requests', 0):,}", "-" if met is None else f"{met:.2%} (aim {slo['attainmentTarget']:.2%})",
            )  # fmt: skip
    rt = Table(title="Qwen3Routers: what routing saved (since creation)")
    for col in ("namespace/name", "backend/mode", "prompt tok", "output tok", "reasoning tok", "USD", "share"):
        rt.add_column(col, justify="left" if col in ("namespace/name", "backend/mode") else "right")
    for r in view["routers"]:
        cost = r["cost"]
        first = f"{r['namespace']}/{r['name']}"
        for b in cost.get("backends") or []:
            rt.add_row(first, b["name"], f"{b['promptTokens']:,}", f"{b['outputTokens']:,}",
                       f"{b['reasoningTokens']:,}", _num(b["usd"], 4), "")  # fmt: skip
            first = ""
        for a in cost.get("adapters") or []:
            share = a.get("backendShare")
            rt.add_row("", f"  {a['backend']} adapter {a['adapter']}", f"{a['promptTokens']:,}",
                       f"{a['outputTokens']:,}", "", _num(a["usd"], 4),
                       f"{_num(share, 2)} of {a['backend']}" if share is not None else "")  # fmt: skip
        for m in cost.get("modes") or []:
            rt.add_row("", m["mode"], f"{m['promptTokens']:,}", f"{m['outputTokens']:,}", "", _num(m["usd"], 4),
                       f"{_num(m['tokenShare'], 2)} tok / {_num(m.get('costShare'), 2)} USD")  # fmt: skip
        rt.add_row("", "routed", "", "", "", _num(cost.get("usd"), 4), "")
        if cost.get("externalUSD") is not None:
            rt.add_row("", "of which external APIs", "", "", "", _num(cost.get("externalUSD"), 4),
                       f"{_num(cost['externalUSD'] / cost['usd'], 2) if cost.get('usd') else '-'} of USD")  # fmt: skip
        if cost.get("largestBackend"):
            basis = (f"{_num(cost.get('onLargestReplicaHours'), 3)} replica-h at planned throughput + idle "
                     f"{_num(cost.get('largestIdleUSD'), 2)}")  # fmt: skip
            rt.add_row("", f"all on {cost['largestBackend']}", "", "", "", _num(cost.get("onLargestUSD"), 4),
                       f"saved {_num(cost.get('savedVsLargestUSD'), 4)} ({basis})")  # fmt: skip
        if cost.get("referenceName"):
            rt.add_row("", f"all at {cost['referenceName']}", "", "", "", _num(cost.get("referenceUSD"), 4),
                       f"saved {_num(cost.get('savedVsReferenceUSD'), 4)}")  # fmt: skip
    return [dep, rt]


def plot(objs: dict[str, list[dict[str, Any]]], path: str) -> None:
    """The day's realised USD per 1M output tokens per deployment, against each router's reference output price."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'qwenfleet[bench]'") from None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for d in objs["deployments"]:
        cost = (d.get("status") or {}).get("cost") or {}
        series = bucket_series(cost.get("ledger"), cost.get("gpuHourUSD") or 0.0)
        points = [(datetime.fromtimestamp(t, UTC), v) for t, v in series if v is not None]
        if points:
            times: Any = [t for t, _ in points]  # matplotlib takes datetimes; its stubs say floats
            ax.plot(times, [v for _, v in points], marker="o", label=d["metadata"]["name"])
    for r in objs["routers"]:
        ref = (r.get("spec") or {}).get("costReference")
        if ref:
            ax.axhline(ref["outputPerMillionUSD"], linestyle="--", color="grey",
                       label=f"reference: {ref['name']} (output, user-set)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("realised USD per 1M output tokens (idle included)")
    ax.set_title("The day's realised cost per 1M output tokens, per bucket")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(args: argparse.Namespace) -> int:
    """Print the fleet's cost; optionally plot it."""
    namespace = None if args.all_namespaces else args.namespace
    objs = asyncio.run(fetch(args.kubeconfig, namespace))
    view = summarise(objs)
    if args.output == "json":
        json.dump(view, sys.stdout, indent=2)
        print()
    else:
        console = Console() if sys.stdout.isatty() else Console(width=200)
        for table in tables(view):
            console.print(table)
    if args.plot:
        plot(objs, args.plot)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet cost`."""
    p = sub.add_parser("cost", help="measured cost per deployment and router (from status.cost)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--namespace", "-n", default="default", help="namespace (default: default)")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--plot", metavar="FILE.png", help="write the day's realised cost per 1M tokens to FILE.png")
    p.set_defaults(func=run)
