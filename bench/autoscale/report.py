"""`python -m bench.autoscale.report`: the markdown tables of docs/autoscaling.md, from bench/results/autoscale.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("Qwen3-4B", "Qwen3-30B-A3B", "Qwen3-235B-A22B")
TRACES = ("steady", "diurnal", "bursty", "spike", "random-bursts")
SURGES = ("bursty", "spike", "random-bursts")
Row = dict[str, Any]


def _cell(r: Row) -> str:
    return f"{r['gpuHours']} h, {r['sloAttainment']:.3f}"


def _x(gpu: float, oracle: Row) -> str:
    return f"{gpu / oracle['gpuHours']:.2f}x"


def _spilled(r: Row, oracle: Row) -> str:
    return (f"{r['gpuHours']} h ({_x(r['gpuHours'], oracle)}), {r['sloAttainment']:.3f} / "
            f"{r['attainmentWithDegraded']:.3f}, {100 * r['degradedShare']:.1f}%")  # fmt: skip


def _header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _each(traces: dict[str, Row], kinds: tuple[str, ...]) -> list[tuple[str, str, Row]]:
    """(model, trace kind, results) in table order: by model, then by trace."""
    return [(model, kind, traces[f"{kind}/{model}"]) for model in MODELS for kind in kinds]


def main_table(traces: dict[str, Row]) -> list[str]:
    """Every policy per trace and model."""
    out = _header("trace / model", "static", "HPA (shipped)", "KEDA (shipped)", "best HPA of grid",
                  "builtin (queue)", "**SLO mode 0.99**", "oracle", "SLO / oracle", "SLO / best HPA",
                  "SLO flaps")  # fmt: skip
    for model, kind, r in _each(traces, TRACES):
        best = r["hpaBestOfGrid"]
        out.append(f"| {kind}/{model} | {_cell(r['static'])} | {_cell(r['hpa'])} | {_cell(r['keda'])} | "
                       f"{_cell(best)} ({best['setting'].removeprefix('hpa')}) | {_cell(r['builtin'])} | "
                       f"**{_cell(r['slo'])}** | {_cell(r['oracle'])} | {r['sloVsOracle']['gpuHours']}x | "
                       f"{r['sloVsBestHpa']['gpuHours']}x | {r['slo']['flaps']} |")  # fmt: skip
    return out


def frontier_table(frontier: dict[str, Any]) -> list[str]:
    """SLO mode's attainment knob: GPU-hours and attainment at each setting."""
    out = ["| model | trace | knob 0.9 | knob 0.95 | knob 0.99 | knob 0.999 |", "|---|---|---|---|---|---|"]
    for model in MODELS:
        for kind in TRACES:
            cells = []
            for p in frontier[model][kind]["slo"]:
                flaps = f" ({p['flaps']} flap{'s' if p['flaps'] > 1 else ''})" if p["flaps"] else ""
                cells.append(f"{_cell(p)}{flaps}")
            out.append(f"| {model} | {kind} | " + " | ".join(cells) + " |")
    return out


def spill_table(traces: dict[str, Row]) -> list[str]:
    """Surge traces behind the router's spillover to a warm smaller size."""
    out = _header("trace / model", "spills to", "SLO mode 0.99 alone", "SLO 0.9 + spillover", "SLO 0.99 + spillover",
                  "builtin (queue) + spillover", "HPA (shipped) + spillover")  # fmt: skip
    for model, kind, r in _each(traces, SURGES):
        w, o = r["withSpillover"], r["oracle"]
        out.append(f"| {kind}/{model} | {w['to']} | {r['slo']['gpuHours']} h "
                       f"({_x(r['slo']['gpuHours'], o)}), {r['slo']['sloAttainment']:.3f} | "
                       f"{_spilled(w['slo@0.9'], o)} | {_spilled(w['slo@0.99'], o)} | {_spilled(w['builtin'], o)} | "
                       f"{_spilled(w['hpa'], o)} |")  # fmt: skip
    return out


def _cheapest(c: Row | None) -> str:
    return "not reached" if c is None else f"floor {c['floor']}: {c['gpuHours']} h ({c['vsOracle']}x)"


def reference_table(traces: dict[str, Row]) -> list[str]:
    """The reactive reference: the cheapest warm floor that reaches 0.95 and 0.99, alone and with the spillover."""
    out = _header("trace / model", "oracle", "0.95 alone", "0.95 with spillover", "0.99 alone",
                  "0.99 with spillover", "SLO mode 0.99 + spillover")  # fmt: skip
    for model, kind, r in _each(traces, SURGES):
        c, o = r["reactiveReference"]["cheapest"], r["oracle"]
        out.append(f"| {kind}/{model} | {o['gpuHours']} h | {_cheapest(c['0.95']['alone'])} | "
                       f"{_cheapest(c['0.95']['withSpillover'])} | {_cheapest(c['0.99']['alone'])} | "
                       f"{_cheapest(c['0.99']['withSpillover'])} | "
                       f"{_spilled(r['withSpillover']['slo@0.99'], o)} |")  # fmt: skip
    return out


def _bound(b: Row) -> str:
    return "none up to the peak" if b["gpu_hours"] is None else f"{b['warm_replicas']} warm: >= {b['vsOracle']}x"


def blind_table(traces: dict[str, Row]) -> list[str]:
    """The lower bound for a policy without foresight of onsets, x the oracle's GPU-hours."""
    out = _header("trace / model", "0.95 alone", "0.95 with spillover", "0.99 alone", "0.99 with spillover")
    for model, kind, r in _each(traces, SURGES):
        b = r["blindBound"]
        cells = [_bound(b[t][side]) for t in ("0.95", "0.99") for side in ("alone", "withSpillover")]
        out.append(f"| {kind}/{model} | " + " | ".join(cells) + " |")
    return out


def _unreachable(r: Row, target: str, goal: float) -> str:
    """Whether the blind bound leaves the cost goal within reach of a policy without foresight."""
    if "blindBound" not in r:
        return ""
    ratios = [b["vsOracle"] for b in r["blindBound"][target].values()]
    least = min((x for x in ratios if x is not None), default=None)
    return f"; unreachable (bound >= {least}x)" if least is None or least > goal else f" (bound {least}x)"


def _settings(frontier: dict[str, Any], model: str, kind: str, spill: bool) -> list[Row]:
    """SLO mode's settings on one trace, alone (and behind the spillover): knob, GPU-hours, attainment (counting
    degraded answers behind the spillover), degraded share, flaps."""
    f = frontier[model][kind]
    out = [{"setting": f"knob {p['attainmentKnob']}", "gpuHours": p["gpuHours"], "attainment": p["sloAttainment"],
            "degraded": 0.0, "flaps": p["flaps"]} for p in f["slo"]]  # fmt: skip
    if spill:
        out += [{"setting": f"knob {p['attainmentKnob']} + spillover", "gpuHours": p["gpuHours"],
                 "attainment": p["attainmentWithDegraded"], "degraded": p["degradedShare"], "flaps": p["flaps"]}
                for p in f.get("sloWithSpillover", [])]  # fmt: skip
    return out


def _cheapest_setting(settings: list[Row], attainment: float) -> tuple[Row, bool]:
    """The cheapest flap-free setting reaching `attainment`, else the one reaching the most."""
    ok = [s for s in settings if s["attainment"] >= attainment and s["flaps"] == 0]
    if ok:
        return min(ok, key=lambda s: s["gpuHours"]), True
    return max(settings, key=lambda s: (s["attainment"], -s["gpuHours"])), False


def goals_table(traces: dict[str, Row], frontier: dict[str, Any]) -> list[str]:
    """The goals, cell by cell, each from SLO mode's cheapest flap-free setting (of the four `attainment` knobs,
    and on the surge traces with or without the spillover) that reaches the goal's attainment: what a user who
    sets the knob for that goal gets. The "policies" table holds knob 0.99 everywhere."""
    out = ["| goal | trace | Qwen3-4B | Qwen3-30B-A3B | Qwen3-235B-A22B |", "|---|---|---|---|---|"]
    goals = [(kind, 0.99, 1.2, False) for kind in ("steady", "diurnal", "spike")]
    goals += [(kind, 0.95, 1.3, True) for kind in ("bursty", "random-bursts")]
    for kind, target, cost, spill in goals:
        cells = []
        for model in MODELS:
            r = traces[f"{kind}/{model}"]
            best, reached = _cheapest_setting(_settings(frontier, model, kind, spill), target)
            x = best["gpuHours"] / r["oracle"]["gpuHours"]
            verdict = "met" if reached and x <= cost else "missed" + _unreachable(r, str(target), cost)
            degraded = f" ({100 * best['degraded']:.1f}% degraded)" if spill and best["degraded"] else ""
            cells.append(f"{best['setting']}: {best['attainment']:.4f}{degraded}, {x:.2f}x {verdict}")
        label = f">= {target}{' with degraded' if spill else ''}, <= {cost}x oracle"
        out.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    cells = [str(sum(traces[f"{k}/{m}"]["slo"]["flaps"] for k in TRACES)) for m in MODELS]
    out.append("| zero flaps (knob 0.99) | all five | " + " | ".join(cells) + " |")
    for kind in TRACES:
        cells = []
        for model in MODELS:
            r = traces[f"{kind}/{model}"]
            hpa = r["hpaBestOfGrid"]
            best, reached = _cheapest_setting(_settings(frontier, model, kind, False), hpa["sloAttainment"])
            ratio, floor = best["gpuHours"] / hpa["gpuHours"], r["oracle"]["gpuHours"] / hpa["gpuHours"]
            verdict = "met" if reached and ratio <= 0.7 else "missed" + ("; unreachable" if floor > 0.7 else "")
            cells.append(f"{best['setting']}: {ratio:.2f}x ({best['attainment']:.3f} vs {hpa['sloAttainment']:.3f}; "
                         f"oracle {floor:.2f}x) {verdict}")  # fmt: skip
        out.append(f"| <= 0.7x best HPA at >= its attainment | {kind} | " + " | ".join(cells) + " |")
    return out


def _usd(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.1f}"


def api_table(traces: dict[str, Row]) -> list[str]:
    """SLO mode (knob 0.99) behind the API overflow, per trace and model: attainment, API share, cost."""
    out = _header("trace / model", "attainment (SLO mode alone)", "API share: requests / tokens", "GPU cost",
                  "API cost", "total", "total / oracle's GPU cost", "oracle's GPU cost", "all on the API")  # fmt: skip
    for model, kind, r in _each(traces, TRACES):
        a = r["sloApiOverflow"]
        out.append(f"| {kind}/{model} | {a['sloAttainment']:.4f} ({r['slo']['sloAttainment']:.3f}) | "
                   f"{100 * a['apiRequestShare']:.1f}% / {100 * a['apiTokenShare']:.1f}% | {_usd(a['gpuCostUSD'])} | "
                   f"{_usd(a['apiCostUSD'])} | {_usd(a['totalUSD'])} | {a['totalVsOracleGpuCost']:.2f}x | "
                   f"{_usd(a['oracleGpuCostUSD'])} | {_usd(a['allOnApiUSD'])} "
                   f"({a['allOnApiUSD'] / a['oracleGpuCostUSD']:.1f}x) |")  # fmt: skip
    return out


def api_goal_table(traces: dict[str, Row]) -> list[str]:
    """The API goal per surge cell: the cheapest setting reaching the attainment, met or not, the bound, and the
    same with an autoscaler blind to the overflow."""
    out = _header("trace / model", "cheapest setting at >= 0.99", "attainment", "API share", "GPU / oracle",
                  "API / oracle", "**total / oracle**", "goal (<= 1.3x)", "bound with the API",
                  "autoscaler blind to the overflow")  # fmt: skip
    for model, kind, r in _each(traces, SURGES):
        g = r["apiOverflowGoal"]
        b, why, bound, c = g["best"], g.get("why"), g["blindBoundWithApi"], g["autoscalerBlind"]
        oracle = g["oracleGpuCostUSD"]
        verdict = "**met**" if g["met"] else "missed" + ("" if why["reachableByBound"] else "; unreachable")
        flaps = f" ({b['flaps']} flap{'s' if b['flaps'] > 1 else ''})" if b["flaps"] else ""
        out.append(f"| {kind}/{model} | knob {b['attainmentKnob']}, margin {b['marginSeconds']} s{flaps} | "
                   f"{b['sloAttainment']:.4f} | {100 * b['apiRequestShare']:.1f}% | "
                   f"{b['gpuCostUSD'] / oracle:.2f}x | {b['apiCostUSD'] / oracle:.2f}x | "
                   f"**{b['totalVsOracleGpuCost']:.2f}x** | {verdict} | {bound['warmReplicas']} warm: >= "
                   f"{bound['totalVsOracleGpuCost']}x | knob {c['attainmentKnob']}: {c['sloAttainment']:.4f}, "
                   f"{c['totalVsOracleGpuCost']:.2f}x{' met' if c['met'] else ''} |")  # fmt: skip
    return out


def main() -> None:
    """Print every table."""
    results = json.loads((ROOT / "bench" / "results" / "autoscale.json").read_text())
    traces = results["traces"]
    for title, lines in (("policies", main_table(traces)), ("frontier", frontier_table(results["frontier"])),
                         ("spillover", spill_table(traces)), ("reactive reference", reference_table(traces)),
                         ("blind bound", blind_table(traces)),
                         ("goals", goals_table(traces, results["frontier"])), ("API overflow", api_table(traces)),
                         ("API overflow goal", api_goal_table(traces))):  # fmt: skip
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
