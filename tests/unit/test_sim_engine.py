"""The simulated engine: batching limits, KV capacity, preemption, step time, determinism."""

from __future__ import annotations

import random

from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.engine import Engine, PerfModel, SimRequest, output_length, prompt_tokens

PERF = PerfModel(max_num_seqs=4, kv_tokens=4096, max_model_len=2048, decode_base_seconds=0.02,
                 decode_per_seq_seconds=0.001, prefill_tokens_per_second=10_000)  # fmt: skip


def _drain(engine: Engine, limit: int = 10_000) -> float:
    now = 0.0
    for _ in range(limit):
        if engine.idle:
            return now
        now += engine.step(now).seconds
    raise AssertionError("engine did not drain")


def test_running_batch_is_bounded_by_max_num_seqs() -> None:
    engine = Engine(PERF)
    for i in range(10):
        engine.add(SimRequest(f"r{i}", prompt_tokens=10, output_tokens=50, arrival=0.0))
    engine.step(0.0)
    assert len(engine.running) == 4 and len(engine.waiting) == 6
    _drain(engine)
    assert engine.idle


def test_requests_wait_when_the_kv_cache_is_full() -> None:
    engine = Engine(PERF)
    for i in range(3):
        engine.add(SimRequest(f"r{i}", prompt_tokens=1500, output_tokens=10, arrival=0.0))
    engine.step(0.0)
    assert len(engine.running) == 2 and len(engine.waiting) == 1
    assert 0.7 < engine.kv_usage <= 1.0


def test_growing_outputs_preempt_the_newest_request_and_still_finish() -> None:
    engine = Engine(PERF)
    for i in range(4):
        engine.add(SimRequest(f"r{i}", prompt_tokens=400, output_tokens=900, arrival=0.0))
    produced: dict[str, int] = {}
    now = 0.0
    preempted: list[str] = []
    while not engine.idle:
        result = engine.step(now)
        now += result.seconds
        preempted += result.preempted
        for rid, n in result.tokens.items():
            produced[rid] = produced.get(rid, 0) + n
    assert engine.preemptions > 0 and preempted
    assert produced == {f"r{i}": 900 for i in range(4)}  # recompute: no token is delivered twice


def test_decode_step_time_grows_with_the_batch() -> None:
    assert PERF.step_seconds(64, 0) > PERF.step_seconds(8, 0) > PERF.step_seconds(1, 0)
    assert PERF.step_seconds(0, 10_000) == 1.0


def test_time_to_first_token_includes_queueing() -> None:
    engine = Engine(PERF)
    for i in range(8):
        engine.add(SimRequest(f"r{i}", prompt_tokens=100, output_tokens=100, arrival=0.0))
    reqs = list(engine.waiting)
    _drain(engine)
    first = sorted(r.first_token_at or 0 for r in reqs)
    assert first[-1] > first[0] * 5


def test_perf_model_matches_the_plan_throughput() -> None:
    p = plan(PlanRequest("Qwen3-8B", "H100-80GB"))
    perf = PerfModel.from_plan(p)
    batch = min(p.max_num_seqs, p.kv_cache_tokens // 2048)
    assert abs(batch / perf.step_seconds(batch, 0) - p.decode_tokens_per_second) < 1.0


def test_deterministic_with_a_seed() -> None:
    a = [output_length(random.Random(7), 4096) for _ in range(5)]
    b = [output_length(random.Random(7), 4096) for _ in range(5)]
    assert a == b and all(1 <= x <= 4096 for x in a)
    assert prompt_tokens("x" * 400) == 100
