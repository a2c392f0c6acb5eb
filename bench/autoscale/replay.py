"""`python -m bench.autoscale.replay LOG.csv [--model NAME]`: a recorded request log through every policy.

The log's per-minute arrival rate is the shape (bench/autoscale/recorded.py), scaled so that its busiest minute
needs the benchmark's peak of six replicas; arrivals are Poisson at that rate, each request's tokens drawn from
the log's own (when it has them). The same policies, knobs and scoring as `make bench-autoscale`; the table is
printed, nothing is written. Use it to pick `attainment` for your own traffic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.autoscale.recorded import rate_shape, read_log, scaled_rate
from bench.autoscale.run import MODELS, PEAK_REPLICAS, best_of_grid, policies_for, score
from bench.autoscale.simulate import Model, needed_replicas, simulate
from bench.autoscale.traces import trace_from_rate
from qwenfleet.autoscale.forecast import TYPICAL_OUTPUT_TOKENS
from qwenfleet.planner import plan


def main() -> None:
    """Replay one log and print each policy's GPU-hours, attainment and flaps."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="CSV with a header: arrival times, optionally prompt/output tokens")
    parser.add_argument("--model", choices=sorted(MODELS), default="Qwen3-30B-A3B")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    log = read_log(args.log)
    model = Model.of(plan(MODELS[args.model]))
    outputs = np.array(log.output_tokens)
    logged = (np.array(log.prompt_tokens), outputs) if outputs.any() else None
    mean_output = float(outputs.mean()) if logged is not None else TYPICAL_OUTPUT_TOKENS
    peak = PEAK_REPLICAS * model.replica_rate() * TYPICAL_OUTPUT_TOKENS / mean_output
    rate = np.array(scaled_rate(rate_shape(log), peak))
    trace = trace_from_rate(args.log.stem, rate, args.seed, logged)
    duration = len(rate)
    needed = needed_replicas(trace, model, duration)
    cap = int(needed.max()) + 2
    warm = int(needed[: int(model.cold_start) + 60].max())
    scored = {name: score(trace, simulate(trace, model, policy, duration, warm=warm))
              for name, policy in policies_for(model, needed, cap).items()}  # fmt: skip
    oracle = float(scored["oracle"]["gpuHours"])  # type: ignore[arg-type]
    print(f"{args.log.name}: {len(log.seconds)} logged requests over {log.seconds[-1] / 60:.0f} min, replayed as "
          f"{len(trace.arrivals)} at up to {peak:.1f}/s on {args.model} ({model.plan.gpu}, cold start "
          f"{model.cold_start} s)\n")  # fmt: skip
    print(f"{'policy':34} {'GPU-h':>7} {'x oracle':>8} {'SLO':>7} {'flaps':>5}")
    best = best_of_grid(scored)
    for name in ("static", "hpa", "keda", best, "builtin", *(n for n in scored if n.startswith("slo@")), "oracle"):
        r = scored[name]
        label = f"best HPA {name.removeprefix('hpa')}" if name == best else name
        print(f"{label:34} {r['gpuHours']:7.2f} {float(r['gpuHours']) / oracle:7.2f}x "  # type: ignore[arg-type]
              f"{r['sloAttainment']:7.3f} {r['flaps']:5}")  # fmt: skip


if __name__ == "__main__":
    main()
