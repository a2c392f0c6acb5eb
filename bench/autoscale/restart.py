"""`python -m bench.autoscale.restart`: what an operator restart costs SLO mode, with and without its checkpoint.

On the periodic bursty trace (a 10-minute burst every 30 minutes), each model, SLO mode at 0.99: the operator
stops at `RESTART_AT` for `DOWN_SECONDS` (no decisions meanwhile, as in a leader failover) and starts again

- `lost`: with a fresh memory, as before checkpoints (the period is relearnt after two periods);
- `crash`: from the last checkpoint the operator's cadence wrote (at the first closed minute, then every
  `CHECKPOINT_SECONDS`), the minutes since filled as the operator fills them;
- `graceful`: from the checkpoint written on stop;

against `none`, the run without a restart. The checkpoint goes through `autoscale.checkpoint` exactly as in the
operator. Writes bench/results/autoscale-restart.json and prints a table.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from bench.autoscale.run import MODELS, PEAK_REPLICAS, ROOT, SLO_TTFT_SECONDS, score
from bench.autoscale.simulate import Builtin, Model, needed_replicas, simulate
from bench.autoscale.traces import DURATION_SECONDS, make_trace
from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.forecast import Forecast, Slo
from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS
from qwenfleet.autoscale.policy import Observation, State
from qwenfleet.planner import plan

TRACE = "bursty"
ATTAINMENT = 0.99
RESTART_AT = 95 * 60
"""Five minutes before the fourth burst: the period (30 minutes) was learnt at the third."""
DOWN_SECONDS = 20
"""A leader failover: a 15 s Lease, then the new leader's start."""
WALL = 1_800_000_000.0
VARIANTS = ("none", "lost", "crash", "graceful")


class Restarted(Builtin):
    """SLO mode whose operator restarts once, its memory restored as `memory` says (see the module)."""

    def __init__(self, model: Model, max_replicas: int, slo: Slo, memory: str) -> None:
        super().__init__(model, max_replicas, slo)
        self.memory = memory
        self.plan_key = checkpoint.plan_key({"model": model.plan.model, "gpu": model.plan.gpu})
        self.saved: dict[str, str] | None = None
        self.saved_at: float | None = None
        self.saved_bucket: float | None = None
        self.restarted = False

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        if self.memory == "none" or t < RESTART_AT:
            self._checkpoint(t)
            return super().desired(t, obs, live, all_pods)
        if t < RESTART_AT + DOWN_SECONDS:
            return self.state.desired  # the operator is down: nothing decides
        if not self.restarted:
            self.restarted = True
            self.state = State(desired=self.state.desired, last_active=t, forecast=self._restored(t))
            obs = replace(obs, arrivals=None)  # a new process counts arrivals from its first scrape
        return super().desired(t, obs, live, all_pods)

    def _checkpoint(self, t: float) -> None:
        """The operator loop's cadence: the first closed minute, then every CHECKPOINT_SECONDS with a new one."""
        f = self.state.forecast
        due = self.saved_at is None or t - self.saved_at >= CHECKPOINT_SECONDS
        if f.buckets and f.bucket_start != self.saved_bucket and due:
            self.saved = checkpoint.to_data(f, self.plan_key, t, WALL + t)
            self.saved_at, self.saved_bucket = t, f.bucket_start

    def _restored(self, t: float) -> Forecast:
        if self.memory == "graceful":
            stop = float(RESTART_AT)
            saved = checkpoint.to_data(self.state.forecast, self.plan_key, stop, WALL + stop)
        elif self.memory == "crash":
            saved = self.saved
        else:
            return Forecast()
        return checkpoint.from_data(saved, self.plan_key, t, WALL + t)


def run() -> dict[str, Any]:
    """Each model on the bursty trace, SLO mode at 0.99, under each restart variant."""
    out: dict[str, Any] = {}
    for m_index, (name, request) in enumerate(MODELS.items()):
        model = Model.of(plan(request))
        trace = make_trace(TRACE, PEAK_REPLICAS * model.replica_rate(), seed=100 * m_index + 2)  # run.py's seed
        needed = needed_replicas(trace, model, DURATION_SECONDS)
        cap = int(needed.max()) + 2
        warm = int(needed[: int(model.cold_start) + 60].max())
        slo = Slo(SLO_TTFT_SECONDS, ATTAINMENT)
        out[name] = {}
        for variant in VARIANTS:
            policy = Restarted(model, cap, slo, variant)
            result = simulate(trace, model, policy, DURATION_SECONDS, warm=warm)
            after = result.ttft[trace.arrivals >= RESTART_AT]
            scored = score(trace, result)
            scored["sloAttainmentAfterRestart"] = round(float((after <= SLO_TTFT_SECONDS).mean()), 4)
            if variant == "crash" and policy.saved_at is not None:
                scored["checkpointAgeSeconds"] = RESTART_AT - policy.saved_at
            out[name][variant] = scored
    return out


def main() -> None:
    """Run, write bench/results/autoscale-restart.json, print the table."""
    results = run()
    doc = {
        "trace": TRACE,
        "attainmentKnob": ATTAINMENT,
        "restartAtSeconds": RESTART_AT,
        "downSeconds": DOWN_SECONDS,
        "checkpointSeconds": CHECKPOINT_SECONDS,
        "command": "python -m bench.autoscale.restart",
        "models": results,
    }
    (ROOT / "bench" / "results" / "autoscale-restart.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'model':16} {'restart':9} {'GPU-h':>7} {'SLO':>7} {'SLO after':>9} {'flaps':>5}")
    for name, variants in results.items():
        for variant, r in variants.items():
            print(f"{name:16} {variant:9} {r['gpuHours']:7.2f} {r['sloAttainment']:7.3f} "
                  f"{r['sloAttainmentAfterRestart']:9.3f} {r['flaps']:5}")  # fmt: skip


if __name__ == "__main__":
    main()
