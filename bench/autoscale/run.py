"""`make bench-autoscale`: static, HPA-style, builtin and oracle policies on the same traces and models.

Writes bench/results/autoscale.json and docs/autoscale-*.png, and prints a table.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.autoscale.bound import blind_bound
from bench.autoscale.simulate import (
    HPA,
    KEDA,
    Builtin,
    Model,
    Oracle,
    Policy,
    Reactive,
    Result,
    Spillover,
    Static,
    flaps,
    needed_replicas,
    simulate,
)
from bench.autoscale.traces import DURATION_SECONDS, TRACE_KINDS, Trace, make_trace, rate_profile
from qwenfleet.autoscale.forecast import Slo
from qwenfleet.catalog import Precision
from qwenfleet.planner import PlanRequest, plan

ROOT = Path(__file__).resolve().parents[2]
SLO_TTFT_SECONDS = 2.5
PEAK_REPLICAS = 6
MODELS = {
    "Qwen3-4B": PlanRequest("Qwen3-4B", "L4-24GB", compile_cache=True),
    "Qwen3-30B-A3B": PlanRequest("Qwen3-30B-A3B", "H100-80GB", compile_cache=True),
    "Qwen3-235B-A22B": PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.FP8, compile_cache=True),
}
"""Each deployment as `cache: {mode: pvc}` renders it: weights from the cache, vLLM's compile cache beside them."""
BOUND_TARGETS = (0.95, 0.99)
"""Attainments the reactive bound is asked the cheapest floor for."""

SPILLOVER_TO = {
    "Qwen3-4B": PlanRequest("Qwen3-1.7B", "L4-24GB"),
    "Qwen3-30B-A3B": PlanRequest("Qwen3-4B", "H100-80GB"),
    "Qwen3-235B-A22B": PlanRequest("Qwen3-30B-A3B", "H100-80GB"),
}
"""The warm smaller size each model's router spills to (one replica, paid for all along, in the GPU-hours)."""
SPILL_TRACES = ("bursty", "spike", "random-bursts")
"""The traces whose first surge no forecast sees coming: where serving degraded is the alternative to failing."""
SPILL_POLICIES = ("hpa", "builtin", *(f"slo@{a}" for a in (0.9, 0.95, 0.99, 0.999)))

HPA_GRID = [(target, window) for target in (1, 2, 4, 8) for window in (0, 60, 300)]
"""HPA targets (waiting requests per pod) and scale-down stabilisation windows (s) searched for the best HPA."""
SLO_ATTAINMENTS = (0.9, 0.95, 0.99, 0.999)
"""SLO mode's `attainment` knob along the frontier; 0.99 is the headline `slo` row."""


def score(trace: Trace, out: Result) -> dict[str, object]:
    ttft = np.where(np.isnan(out.ttft), np.inf, out.ttft)
    met = ttft <= SLO_TTFT_SECONDS
    degraded = out.degraded if len(out.degraded) else np.zeros(len(ttft), dtype=bool)
    spill = {}
    if degraded.any() or out.spill_gpu_hours:
        spill = {"attainmentWithDegraded": round(float(met.mean()), 4),
                 "degradedShare": round(float(degraded.mean()), 4),
                 "spilloverGpuHours": round(out.spill_gpu_hours, 2)}  # fmt: skip
    return {
        "gpuHours": round(out.gpu_hours, 2),
        "sloAttainment": round(float((met & ~degraded).mean()), 4),
        **spill,
        "ttftP95Seconds": _percentile(ttft, 95),
        "ttftP99Seconds": _percentile(ttft, 99),
        "scaleEvents": len(out.scale_times) - 1,
        "flaps": flaps(out.scale_times),
    }


def _percentile(ttft: np.ndarray, q: float) -> float | None:
    """The q-th percentile of time to first token in seconds; None when it falls on requests never served."""
    value = float(np.percentile(ttft, q))
    return round(value, 2) if math.isfinite(value) else None


def policies_for(model: Model, needed: np.ndarray, cap: int) -> dict[str, Policy]:
    """Every policy the benchmark compares, fresh, for one model on one trace (`needed`: replicas per second)."""
    slo = {f"slo@{a}": Builtin(model, cap, Slo(SLO_TTFT_SECONDS, a)) for a in SLO_ATTAINMENTS}
    grid = {f"hpa(target={t},window={w})": HPA(cap, t, w) for t, w in HPA_GRID}
    return {"static": Static(int(needed.max())), "hpa": HPA(cap), "keda": KEDA(cap), "builtin": Builtin(model, cap),
            **slo, **grid, "oracle": Oracle(needed, model.cold_start)}  # fmt: skip


def best_of_grid(scored: dict[str, dict[str, object]]) -> str:
    """The HPA grid point with the highest attainment (ties: fewer GPU-hours)."""
    grid = [name for name in scored if name.startswith("hpa(")]
    return max(grid, key=lambda n: (scored[n]["sloAttainment"], -float(scored[n]["gpuHours"])))  # type: ignore[arg-type]


def run() -> dict[str, object]:
    """Every (trace, model, policy) combination, the HPA grid and SLO mode's frontier."""
    results: dict[str, dict[str, dict[str, object]]] = {}
    frontier: dict[str, dict[str, dict[str, list[dict[str, object]]]]] = {}
    series: dict[str, np.ndarray] = {}
    for m_index, (model_name, request) in enumerate(MODELS.items()):
        model = Model.of(plan(request))
        peak = PEAK_REPLICAS * model.replica_rate()
        frontier[model_name] = {}
        for t_index, kind in enumerate(TRACE_KINDS):
            trace = make_trace(kind, peak, seed=100 * m_index + t_index)
            needed = needed_replicas(trace, model, DURATION_SECONDS)
            cap = int(needed.max()) + 2
            warm = int(needed[: int(model.cold_start) + 60].max())  # the fleet has been serving this load already
            policies = policies_for(model, needed, cap)
            key = f"{kind}/{model_name}"
            scored: dict[str, dict[str, object]] = {}
            for name, policy in policies.items():
                out = simulate(trace, model, policy, DURATION_SECONDS, warm=warm)
                scored[name] = score(trace, out)
                series[f"{key}/{name}"] = out.replicas_over_time
            if kind in SPILL_TRACES:
                spill = Spillover(Model.of(plan(SPILLOVER_TO[model_name])))
                fresh: dict[str, Policy] = {f"slo@{a}": Builtin(model, cap, Slo(SLO_TTFT_SECONDS, a))
                                            for a in SLO_ATTAINMENTS}  # fmt: skip
                fresh["hpa"] = HPA(cap)
                fresh["builtin"] = Builtin(model, cap)
                spilled = {}
                for name in SPILL_POLICIES:
                    out = simulate(trace, model, fresh[name], DURATION_SECONDS, warm=warm, spill=spill)
                    spilled[name] = score(trace, out)
            best = best_of_grid(scored)
            results[key] = {name: scored[name] for name in ("static", "hpa", "keda", "builtin")}
            results[key]["slo"] = scored["slo@0.99"]
            results[key]["hpaBestOfGrid"] = {"setting": best, **scored[best]}
            results[key]["oracle"] = scored["oracle"]
            results[key]["sloVsOracle"] = _ratios(scored["slo@0.99"], scored["oracle"])
            results[key]["sloVsBestHpa"] = _ratios(scored["slo@0.99"], scored[best])
            if kind in SPILL_TRACES:
                results[key]["withSpillover"] = {"to": SPILLOVER_TO[model_name].model, **spilled}
                oracle_hours = float(scored["oracle"]["gpuHours"])  # type: ignore[arg-type]
                results[key]["reactiveReference"] = _reactive_reference(
                    trace, model, needed, cap, warm, spill, oracle_hours
                )
                oracle_plan = Oracle(needed, model.cold_start).plan
                rate = rate_profile(kind, peak, seed=100 * m_index + t_index)
                results[key]["blindBound"] = {
                    str(target): {
                        side: blind_bound(trace.arrivals, rate, model, oracle_plan, oracle_hours, target,
                                          SLO_TTFT_SECONDS, kind == "bursty", s).to_json()
                        for side, s in (("alone", None), ("withSpillover", spill))
                    }
                    for target in BOUND_TARGETS
                }  # fmt: skip
            frontier[model_name][kind] = {
                "slo": [{"attainmentKnob": a, **_pick(scored[f"slo@{a}"])} for a in SLO_ATTAINMENTS],
                "hpaGrid": [{"target": t, "window": w, **_pick(scored[f"hpa(target={t},window={w})"])}
                            for t, w in HPA_GRID],
            }  # fmt: skip
            if kind in SPILL_TRACES:
                frontier[model_name][kind]["sloWithSpillover"] = [
                    {"attainmentKnob": a, **_pick(spilled[f"slo@{a}"]),
                     "attainmentWithDegraded": spilled[f"slo@{a}"]["attainmentWithDegraded"],
                     "degradedShare": spilled[f"slo@{a}"]["degradedShare"]}
                    for a in SLO_ATTAINMENTS
                ]  # fmt: skip
    _plot(series, frontier, results)
    return {
        "sloTtftSeconds": SLO_TTFT_SECONDS,
        "durationSeconds": DURATION_SECONDS,
        "models": {name: _model_entry(r) for name, r in MODELS.items()},
        "reactiveReference": "bursty, spike, random-bursts: a policy that knows each second exactly the replicas "
        "the current load needs, scales at once both ways (flaps allowed) and holds a warm floor; per floor its "
        "GPU-hours and attainment, alone and with the spillover, and the cheapest floor reaching 0.95 and 0.99. "
        "A reference, not a bound.",
        "blindBound": "bursty, spike, random-bursts: a lower bound (bench/autoscale/bound.py) on the GPU-hours "
        "any policy without foresight of surge onsets pays for 0.95 and 0.99: the warm replicas the requests "
        "arriving within one cold start of an unforeseeable onset need, held until the last such onset, on top "
        "of the oracle; alone and with the spillover replica.",
        "degradedServing": "withSpillover (bursty, spike, random-bursts): the router spills requests that arrive "
        "while the target's queue per ready replica is beyond 8 (all while none is ready) to one warm replica of a "
        "smaller size, as far as it has free sequences. gpuHours include that replica all along; sloAttainment "
        "counts only requests served within the SLO by the size asked for; attainmentWithDegraded also counts "
        "those the smaller size served within it; degradedShare is the share it served.",
        "traces": results,
        "frontier": frontier,
    }


def _model_entry(request: PlanRequest) -> dict[str, object]:
    return {"gpu": request.gpu, "precision": request.precision.value,
            "coldStartSeconds": plan(request).cold_start_seconds,
            "coldStartOptions": "weights read from the weight cache; vLLM's compile cache persisted on it"}  # fmt: skip


def _reactive_reference(
    trace: Trace, model: Model, needed: np.ndarray, cap: int, warm: int, spill: Spillover, oracle_gpu_hours: float
) -> dict[str, object]:
    """What no policy without foresight can beat: `Reactive` with each warm floor, alone and with spillover, and
    the cheapest floor that reaches each of BOUND_TARGETS (x the oracle's GPU-hours)."""
    floors: list[dict[str, object]] = []
    for floor in range(1, cap + 1):
        alone = score(trace, simulate(trace, model, Reactive(needed, model.concurrency, floor, cap),
                                       DURATION_SECONDS, warm=max(warm, floor)))  # fmt: skip
        spilled = score(trace, simulate(trace, model, Reactive(needed, model.concurrency, floor, cap),
                                         DURATION_SECONDS, warm=max(warm, floor), spill=spill))  # fmt: skip
        kept = ("gpuHours", "sloAttainment", "attainmentWithDegraded", "degradedShare")
        floors.append({"floor": floor, **_pick(alone), "withSpillover": {k: spilled[k] for k in kept}})
    cheapest: dict[str, object] = {}
    for target in BOUND_TARGETS:
        alone_ok = [f for f in floors if float(f["sloAttainment"]) >= target]  # type: ignore[arg-type]
        spill_ok = [f for f in floors if float(f["withSpillover"]["attainmentWithDegraded"]) >= target]  # type: ignore[index]
        first = min(alone_ok, key=lambda f: float(f["gpuHours"]), default=None)  # type: ignore[arg-type]
        first_spill = min(spill_ok, key=lambda f: float(f["withSpillover"]["gpuHours"]), default=None)  # type: ignore[index]
        cheapest[str(target)] = {
            "alone": None if first is None else {"floor": first["floor"], "gpuHours": first["gpuHours"],
                                                 "vsOracle": round(float(first["gpuHours"]) / oracle_gpu_hours, 2)},  # type: ignore[arg-type]
            "withSpillover": None if first_spill is None else {
                "floor": first_spill["floor"], "gpuHours": first_spill["withSpillover"]["gpuHours"],  # type: ignore[index]
                "vsOracle": round(float(first_spill["withSpillover"]["gpuHours"]) / oracle_gpu_hours, 2)},  # type: ignore[index]
        }  # fmt: skip
    return {"floors": floors, "cheapest": cheapest}


def _pick(r: dict[str, object]) -> dict[str, object]:
    return {k: r[k] for k in ("gpuHours", "sloAttainment", "flaps")}


def _ratios(a: dict[str, object], b: dict[str, object]) -> dict[str, float]:
    gpu = float(a["gpuHours"]) / max(1e-9, float(b["gpuHours"]))  # type: ignore[arg-type]
    return {"gpuHours": round(gpu, 2),
            "attainmentDelta": round(float(a["sloAttainment"]) - float(b["sloAttainment"]), 4)}  # type: ignore[arg-type]  # fmt: skip


def _plot(series: dict[str, np.ndarray], frontier: dict[str, Any], results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for kind in ("bursty", "spike", "diurnal", "random-bursts"):
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for policy in ("static", "hpa", "builtin", "slo@0.99", "oracle"):
            values = series[f"{kind}/Qwen3-30B-A3B/{policy}"]
            ax.plot(np.arange(len(values)) / 60, values, label=policy, linewidth=1.2)
        ax.set(xlabel="minutes", ylabel="replicas", title=f"Qwen3-30B-A3B on H100, {kind} trace")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / f"autoscale-{kind}.png", dpi=90)
        plt.close(fig)
    fig, axes = plt.subplots(len(frontier), len(TRACE_KINDS), figsize=(3.2 * len(TRACE_KINDS), 2.8 * len(frontier)))
    for row, (model_name, by_trace) in enumerate(frontier.items()):
        for col, kind in enumerate(TRACE_KINDS):
            ax = axes[row][col]
            slo = by_trace[kind]["slo"]
            ax.plot([p["gpuHours"] for p in slo], [p["sloAttainment"] for p in slo], "o-", label="SLO mode (knob)")
            spilled = by_trace[kind].get("sloWithSpillover")
            if spilled:
                ax.plot([p["gpuHours"] for p in spilled], [p["attainmentWithDegraded"] for p in spilled], "x--",
                        label="SLO mode + spillover (with degraded)")  # fmt: skip
            grid = by_trace[kind]["hpaGrid"]
            ax.scatter([p["gpuHours"] for p in grid], [p["sloAttainment"] for p in grid], s=12, c="grey",
                       label="HPA grid")  # fmt: skip
            for name, marker in (("oracle", "*"), ("static", "s"), ("keda", "^"), ("builtin", "D")):
                r = results[f"{kind}/{model_name}"][name]
                ax.scatter([r["gpuHours"]], [r["sloAttainment"]], marker=marker, s=40, label=name)
            ax.set_title(f"{model_name}, {kind}", fontsize=8)
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel("SLO attainment", fontsize=8)
            if row == len(frontier) - 1:
                ax.set_xlabel("GPU-hours", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "autoscale-frontier.png", dpi=80)
    plt.close(fig)


def main() -> None:
    """Run, write the results, print the table."""
    started = time.monotonic()
    results = run()
    out = ROOT / "bench" / "results" / "autoscale.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'trace/model':34} {'policy':8} {'GPU-h':>7} {'SLO':>7} {'p95':>8} {'p99':>8} {'events':>6} {'flaps':>5}")
    for key, policies in results["traces"].items():  # type: ignore[attr-defined]
        for name, r in policies.items():
            if "flaps" not in r:
                continue
            p95, p99 = (f"{v:8.2f}" if v is not None else "   never"
                        for v in (r["ttftP95Seconds"], r["ttftP99Seconds"]))  # fmt: skip
            print(f"{key:34} {name:8} {r['gpuHours']:7.1f} {r['sloAttainment']:7.3f} {p95} {p99} "
                  f"{r['scaleEvents']:6} {r['flaps']:5}")  # fmt: skip
    print(f"wrote {out} in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
