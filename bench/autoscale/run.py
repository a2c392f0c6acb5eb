"""`make bench-autoscale`: static, HPA-style, builtin and oracle policies on the same traces and models.

Writes bench/results/autoscale.json and docs/autoscale-*.png, and prints a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.autoscale.simulate import HPA, Builtin, Model, Oracle, Static, flaps, needed_replicas, simulate
from bench.autoscale.traces import DURATION_SECONDS, TRACE_KINDS, make_trace
from qwenfleet.catalog import Precision
from qwenfleet.planner import PlanRequest, plan

ROOT = Path(__file__).resolve().parents[2]
SLO_TTFT_SECONDS = 2.5
PEAK_REPLICAS = 6
MODELS = {
    "Qwen3-4B": PlanRequest("Qwen3-4B", "L4-24GB"),
    "Qwen3-30B-A3B": PlanRequest("Qwen3-30B-A3B", "H100-80GB"),
    "Qwen3-235B-A22B": PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.FP8),
}


def run() -> dict[str, object]:
    """Every (trace, model, policy) combination."""
    results: dict[str, dict[str, dict[str, object]]] = {}
    series: dict[str, dict[str, np.ndarray]] = {}
    for m_index, (model_name, request) in enumerate(MODELS.items()):
        model = Model.of(plan(request))
        peak = PEAK_REPLICAS * model.replica_rate()
        for t_index, kind in enumerate(TRACE_KINDS):
            trace = make_trace(kind, peak, seed=100 * m_index + t_index)
            needed = needed_replicas(trace, model, DURATION_SECONDS)
            cap = int(needed.max()) + 2
            policies = {"static": Static(int(needed.max())), "hpa": HPA(cap), "builtin": Builtin(model, cap),
                        "oracle": Oracle(needed, model.cold_start)}  # fmt: skip
            key = f"{kind}/{model_name}"
            results[key] = {}
            for name, policy in policies.items():
                out = simulate(trace, model, policy, DURATION_SECONDS)
                ttft = np.where(np.isnan(out.ttft), np.inf, out.ttft)
                results[key][name] = {
                    "gpuHours": round(out.gpu_hours, 2),
                    "sloAttainment": round(float((ttft <= SLO_TTFT_SECONDS).mean()), 4),
                    "ttftP95Seconds": round(float(np.percentile(ttft, 95)), 2),
                    "ttftP99Seconds": round(float(np.percentile(ttft, 99)), 2),
                    "scaleEvents": len(out.scale_times) - 1,
                    "flaps": flaps(out.scale_times),
                }
                series[f"{key}/{name}"] = out.replicas_over_time
    _plot(series)
    return {
        "sloTtftSeconds": SLO_TTFT_SECONDS,
        "durationSeconds": DURATION_SECONDS,
        "models": {name: {"gpu": r.gpu, "precision": r.precision.value} for name, r in MODELS.items()},
        "traces": results,
    }


def _plot(series: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for kind in ("bursty", "spike", "diurnal"):
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for policy in ("static", "hpa", "builtin", "oracle"):
            values = series[f"{kind}/Qwen3-30B-A3B/{policy}"]
            ax.plot(np.arange(len(values)) / 60, values, label=policy, linewidth=1.2)
        ax.set(xlabel="minutes", ylabel="replicas", title=f"Qwen3-30B-A3B on H100, {kind} trace")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / f"autoscale-{kind}.png", dpi=90)
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
            print(f"{key:34} {name:8} {r['gpuHours']:7.1f} {r['sloAttainment']:7.3f} {r['ttftP95Seconds']:8.2f} "
                  f"{r['ttftP99Seconds']:8.2f} {r['scaleEvents']:6} {r['flaps']:5}")  # fmt: skip
    print(f"wrote {out} in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
