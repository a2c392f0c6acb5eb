"""`python -m bench.autoscale.footprint`: what SLO mode costs the operator per deployment, at a full history.

SLO mode keeps two days of minutes per deployment and, each time a minute closes, looks for a period and prices
the headroom. This measures, for one deployment with a full history fed as the operator feeds it (one decision
every 10 s): the memory its forecast holds, the CPU of one minute of decisions (six, one of them closing the
minute), and the size and time of its checkpoint; then what that makes at 1,000 SLO deployments. Writes
bench/results/slo-footprint.json. Times are CPU seconds on this machine (best of `REPEATS`).
"""

from __future__ import annotations

import json
import math
import time
import tracemalloc

from bench.autoscale.run import ROOT
from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.forecast import BUCKET_SECONDS, HISTORY_BUCKETS, Forecast, Slo
from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS
from qwenfleet.autoscale.policy import Observation, Settings, State, decide

DEPLOYMENTS = 1000
AUTOSCALE_INTERVAL = 10.0
"""`qwenfleet run --autoscale-interval`'s default."""
REPEATS = 5
SETTINGS = Settings(min_replicas=1, max_replicas=20, target_queue=4, scale_down_delay=300, idle_to_zero=900,
                    concurrency=39, slo=Slo(2.5, 0.99), cold_start=39.0, replica_rate=1.2,
                    max_num_seqs=256)  # fmt: skip


def _rate(minute: int) -> float:
    """A busy day: bursts of 20/s for 10 minutes in every 30, 2/s otherwise, with some noise (each minute's rate
    its own number, as measured rates are)."""
    return (20.0 if minute % 30 < 10 else 2.0) * (1.0 + 0.05 * math.sin(minute * 7.1))


def _observation(t: float) -> Observation:
    rate = _rate(int(t // BUCKET_SECONDS))
    return Observation(ready=4, waiting=0.0, running=rate * 3, kv_usage=0.5, kv_total=2.0, active=True,
                       arrivals=rate * AUTOSCALE_INTERVAL, finished=rate * AUTOSCALE_INTERVAL)  # fmt: skip


def full_state() -> State:
    """A deployment's state after two days of decisions (the history built directly, then one real minute)."""
    buckets = [_rate(m) for m in range(HISTORY_BUCKETS)]
    t = HISTORY_BUCKETS * BUCKET_SECONDS
    state = State(desired=4, forecast=Forecast(buckets=buckets, bucket_start=t, last_time=t))
    for k in range(1, 7):
        state = decide(t + k * AUTOSCALE_INTERVAL, _observation(t + k * AUTOSCALE_INTERVAL), SETTINGS, state).state
    return state


def _minute_of_decisions(state: State) -> float:
    """CPU seconds of the decisions of one minute, one of which closes it."""
    start = state.forecast.bucket_start or 0.0
    began = time.process_time()
    for k in range(1, int(BUCKET_SECONDS / AUTOSCALE_INTERVAL) + 1):
        t = start + k * AUTOSCALE_INTERVAL
        state = decide(t, _observation(t), SETTINGS, state).state
    return time.process_time() - began


def main() -> None:
    """Measure, write bench/results/slo-footprint.json, print the figures."""
    tracemalloc.start()
    state = full_state()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(state.forecast.buckets) == HISTORY_BUCKETS and state.forecast.period == 30
    minute = min(_minute_of_decisions(state) for _ in range(REPEATS))
    now = state.forecast.last_time or 0.0
    began = time.process_time()
    data = checkpoint.to_data(state.forecast, "plan", now, 1.8e9)
    saved = time.process_time() - began
    assert data is not None
    began = time.process_time()
    restored = checkpoint.from_data(data, "plan", now + 30, 1.8e9 + 30)
    loaded = time.process_time() - began
    assert restored.period == state.forecast.period
    checkpoint_bytes = len(data[checkpoint.DATA_KEY].encode())
    doc = {
        "command": "python -m bench.autoscale.footprint",
        "historyMinutes": HISTORY_BUCKETS,
        "decisionEverySeconds": AUTOSCALE_INTERVAL,
        "perDeployment": {
            "stateBytes": held,
            "cpuSecondsPerMinute": round(minute, 5),
            "checkpointBytes": checkpoint_bytes,
            "checkpointWriteCpuSeconds": round(saved, 5),
            "checkpointReadCpuSeconds": round(loaded, 5),
        },
        f"at{DEPLOYMENTS}": {
            "stateMB": round(held * DEPLOYMENTS / 1e6, 1),
            "coresForDecisions": round(minute * DEPLOYMENTS / BUCKET_SECONDS, 3),
            "checkpointWritesPerSecond": round(DEPLOYMENTS / CHECKPOINT_SECONDS, 2),
            "checkpointMBPerInterval": round(checkpoint_bytes * DEPLOYMENTS / 1e6, 1),
        },
    }
    (ROOT / "bench" / "results" / "slo-footprint.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
