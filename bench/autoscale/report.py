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


def goals_table(traces: dict[str, Row]) -> list[str]:
    """The goals, cell by cell, from SLO mode 0.99 (with the spillover on the surge traces where it counts)."""
    out = ["| goal | trace | Qwen3-4B | Qwen3-30B-A3B | Qwen3-235B-A22B |", "|---|---|---|---|---|"]
    for kind in ("steady", "diurnal", "spike"):
        cells = []
        for model in MODELS:
            r = traces[f"{kind}/{model}"]
            ok = r["slo"]["sloAttainment"] >= 0.99 and r["sloVsOracle"]["gpuHours"] <= 1.2
            verdict = "met" if ok else "missed" + _unreachable(r, "0.99", 1.2)
            cells.append(f"{r['slo']['sloAttainment']:.4f}, {r['sloVsOracle']['gpuHours']}x {verdict}")
        out.append(f"| >= 0.99, <= 1.2x oracle | {kind} | " + " | ".join(cells) + " |")
    for kind in ("bursty", "random-bursts"):
        cells = []
        for model in MODELS:
            r = traces[f"{kind}/{model}"]
            w = r["withSpillover"]["slo@0.99"]
            x = w["gpuHours"] / r["oracle"]["gpuHours"]
            ok = w["attainmentWithDegraded"] >= 0.95 and x <= 1.3
            verdict = "met" if ok else "missed" + _unreachable(r, "0.95", 1.3)
            cells.append(f"{w['attainmentWithDegraded']:.4f} ({100 * w['degradedShare']:.1f}% degraded), {x:.2f}x "
                         f"{verdict}")  # fmt: skip
        out.append(f"| >= 0.95 with degraded, <= 1.3x oracle | {kind} | " + " | ".join(cells) + " |")
    cells = [str(sum(traces[f"{k}/{m}"]["slo"]["flaps"] for k in TRACES)) for m in MODELS]
    out.append("| zero flaps | all five | " + " | ".join(cells) + " |")
    for kind in TRACES:
        cells = []
        for model in MODELS:
            r = traces[f"{kind}/{model}"]
            ratio, best = r["sloVsBestHpa"]["gpuHours"], r["hpaBestOfGrid"]
            ok = ratio <= 0.7 and r["slo"]["sloAttainment"] >= best["sloAttainment"]
            cells.append(f"{ratio}x ({r['slo']['sloAttainment']:.3f} vs {best['sloAttainment']:.3f}) "
                         f"{'met' if ok else 'missed'}")  # fmt: skip
        out.append(f"| <= 0.7x best HPA at >= its attainment | {kind} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    """Print every table."""
    results = json.loads((ROOT / "bench" / "results" / "autoscale.json").read_text())
    traces = results["traces"]
    for title, lines in (("policies", main_table(traces)), ("frontier", frontier_table(results["frontier"])),
                         ("spillover", spill_table(traces)), ("reactive reference", reference_table(traces)),
                         ("blind bound", blind_table(traces)),
                         ("goals", goals_table(traces))):  # fmt: skip
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
