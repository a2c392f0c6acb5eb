"""The simulated engine, in virtual time: batching limits, KV capacity, preemption, prefix caching, step time."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenfleet.catalog import ThinkingMode
from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.answer import Channel, Transcript, shape_answer
from qwenfleet.sim.engine import BLOCK_TOKENS, Engine, FinishReason, PerfModel, SimRequest, StepResult
from qwenfleet.sim.kv_cache import KVCache

PERF = PerfModel(
    max_num_seqs=4,
    kv_tokens=4096,
    max_model_len=2048,
    weight_seconds=0.02,
    kv_seconds_per_token=1e-6,
    prefill_tokens_per_second=10_000,
    max_num_batched_tokens=2048,
    overhead_seconds=0.0,
)


def _request(rid: str, prompt: int = 10, output: int = 50, **kw: object) -> SimRequest:
    return SimRequest(rid, prompt_tokens=prompt, output_tokens=output, **kw)  # type: ignore[arg-type]


def _drain(engine: Engine, now: float = 0.0, limit: int = 100_000) -> tuple[float, list[StepResult]]:
    steps = []
    for _ in range(limit):
        if engine.idle:
            return now, steps
        result = engine.step(now)
        assert result.scheduled_tokens > 0, "the engine stalled"
        steps.append(result)
        now = result.end
    raise AssertionError("engine did not drain")


def test_running_batch_is_bounded_by_max_num_seqs() -> None:
    engine = Engine(PERF)
    for i in range(10):
        engine.add_request(_request(f"r{i}"))
    first = engine.step(0.0)
    assert len(engine.running) == 4 and len(engine.waiting) == 6
    _, steps = _drain(engine, first.end)
    assert engine.idle and max(len(s.tokens) for s in steps) == 4
    assert sum(s.generation_tokens for s in [first, *steps]) == 10 * 50


def test_requests_wait_when_the_kv_cache_is_full() -> None:
    engine = Engine(PERF)  # 256 blocks of 16 tokens
    for i in range(3):
        engine.add_request(_request(f"r{i}", prompt=1500, output=10))
    engine.step(0.0)  # budget 2048: r0 whole, r1 a chunk of 548
    engine.step(1.0)  # r1's remaining 952; r2 (94 blocks) no longer fits the 256 - 2 * 95 free blocks
    assert [r.id for r in engine.running] == ["r0", "r1"] and [r.id for r in engine.waiting] == ["r2"]
    assert 0.7 < engine.kv_usage <= 1.0
    _drain(engine)
    assert engine.kv_usage == 0.0


def test_chunked_prefill_respects_the_token_budget() -> None:
    engine = Engine(PERF)
    engine.add_request(_request("long", prompt=1900, output=5))
    engine.add_request(_request("short", prompt=300, output=5))
    first = engine.step(0.0)
    assert first.scheduled_tokens == 2048 and first.tokens == {"long": 1}  # 1900, and a 148-token chunk of 300
    second = engine.step(first.end)
    assert second.tokens == {"long": 1, "short": 1}
    assert second.scheduled_tokens == 1 + 152


def test_growing_outputs_preempt_the_newest_request_and_still_finish() -> None:
    engine = Engine(PERF)
    for i in range(4):
        engine.add_request(_request(f"r{i}", prompt=400, output=900))
    produced: dict[str, int] = {}
    preempted: list[str] = []
    _, steps = _drain(engine)
    for step in steps:
        preempted += step.preempted
        for rid, n in step.tokens.items():
            produced[rid] = produced.get(rid, 0) + n
    assert engine.preemptions > 0 and preempted[0] == "r3"  # the most recently admitted goes first
    assert produced == {f"r{i}": 900 for i in range(4)}  # recompute: no token is delivered twice


def test_preemption_recomputes_from_the_prefix_cache() -> None:
    engine = Engine(PERF)
    for i in range(4):
        engine.add_request(_request(f"r{i}", prompt=400, output=900))
    _, steps = _drain(engine)
    assert sum(s.prefix_hits for s in steps) > 0  # freed blocks keep their hashes until evicted


def test_decode_step_time_grows_with_the_batch_and_the_context() -> None:
    p = plan(PlanRequest("Qwen3-8B", "H100-80GB"))
    perf = PerfModel.from_plan(p)
    assert perf.step_seconds(64) > perf.step_seconds(8) > perf.step_seconds(1)
    assert perf.batch_seconds(8, 8 * 4000) > perf.batch_seconds(8, 8 * 100)
    assert perf.step_seconds(64) / 64 < perf.step_seconds(1)  # batching still pays per token
    assert PERF.step_seconds(0, 10_000, 0) == pytest.approx(0.02 + 1.0)


def test_mixture_of_experts_reads_more_experts_for_larger_batches() -> None:
    perf = PerfModel.from_plan(plan(PlanRequest("Qwen3-30B-A3B", "H100-80GB")))
    assert 0 < perf.dense_share < 1
    assert perf.weight_read_seconds(1) < perf.weight_read_seconds(16) < perf.weight_read_seconds(256)
    assert perf.weight_read_seconds(4096) == pytest.approx(perf.weight_seconds, rel=1e-3)


PLANS = [("Qwen3-8B", "H100-80GB"), ("Qwen3-8B", "L4-24GB"), ("Qwen3-30B-A3B", "H100-80GB"),
         ("Qwen3-235B-A22B", "H100-80GB")]  # fmt: skip


@pytest.mark.parametrize(("model", "gpu"), PLANS)
def test_perf_model_matches_the_plan_throughput_at_its_reference_batch(model: str, gpu: str) -> None:
    p = plan(PlanRequest(model, gpu))
    perf = PerfModel.from_plan(p)
    batch = max(1, min(p.max_num_seqs, p.kv_cache_tokens // 2048))
    assert batch / perf.step_seconds(batch) == pytest.approx(p.decode_tokens_per_second, rel=1e-3)
    assert perf.kv_tokens == p.kv_cache_tokens and perf.max_num_seqs == p.max_num_seqs


def test_token_budget_follows_vllm_defaults_per_gpu() -> None:
    assert PerfModel.from_plan(plan(PlanRequest("Qwen3-8B", "H100-80GB"))).max_num_batched_tokens == 8192
    assert PerfModel.from_plan(plan(PlanRequest("Qwen3-8B", "L4-24GB"))).max_num_batched_tokens == 2048
    assert PerfModel.from_plan(plan(PlanRequest("Qwen3-8B", "A100-80GB"))).max_num_batched_tokens == 2048


def test_time_to_first_token_includes_queueing() -> None:
    engine = Engine(PERF)
    requests = [_request(f"r{i}", prompt=100, output=100) for i in range(8)]
    for r in requests:
        engine.add_request(r)
    _drain(engine)
    first = sorted(r.first_token_at or 0 for r in requests)
    assert first[-1] > first[0] * 5
    late = max(requests, key=lambda r: r.first_token_at or 0)
    assert late.queue_seconds > 0 and late.e2e_seconds >= late.queue_seconds + late.inference_seconds - 1e-9


def test_shared_prefixes_hit_the_cache_and_cut_the_prefill() -> None:
    hashes = tuple(range(1, 1 + 1000 // BLOCK_TOKENS))
    engine = Engine(PERF)
    a = _request("a", prompt=1000, output=2, prompt_hashes=hashes)
    engine.add_request(a)
    _drain(engine)
    b = _request("b", prompt=1000, output=2, prompt_hashes=hashes, arrival=10.0)
    engine.add_request(b)
    first = engine.step(10.0)
    assert first.prefix_hits == (999 // BLOCK_TOKENS) * BLOCK_TOKENS and b.cached_tokens == first.prefix_hits
    assert first.scheduled_tokens == 1000 - first.prefix_hits
    assert (b.first_token_at or 0) - 10.0 < (a.first_token_at or 0)
    without = Engine(PERF, prefix_caching=False)
    without.add_request(_request("a", prompt=1000, output=2, prompt_hashes=hashes))
    _drain(without)
    without.add_request(_request("b", prompt=1000, output=2, prompt_hashes=hashes))
    assert without.step(0.0).prefix_hits == 0


def test_abort_frees_the_blocks_and_the_slot() -> None:
    engine = Engine(replace(PERF, max_num_seqs=1))
    engine.add_request(_request("a", prompt=500, output=1000))
    engine.add_request(_request("b", prompt=10, output=5))
    engine.step(0.0)
    assert engine.kv_usage > 0 and [r.id for r in engine.waiting] == ["b"]
    aborted = engine.abort_request("a")
    assert aborted is not None and engine.kv_usage == 0.0 and engine.abort_request("a") is None
    _drain(engine)
    assert engine.idle


def test_rejects_requests_that_cannot_fit() -> None:
    engine = Engine(PERF)
    with pytest.raises(ValueError, match="does not fit"):
        engine.add_request(_request("big", prompt=2000, output=100))
    engine.add_request(_request("x"))
    with pytest.raises(ValueError, match="duplicate"):
        engine.add_request(_request("x"))


def _trace(seed: int) -> list[tuple[float, dict[str, int]]]:
    rng = random.Random(seed)
    engine = Engine(PERF)
    for i in range(12):
        shape = shape_answer(rng, max_tokens=300, chat=True, thinking=None)
        engine.add_request(_request(f"r{i}", prompt=rng.randint(10, 400), output=shape.total))
    _, steps = _drain(engine)
    return [(s.end, s.tokens) for s in steps]


def test_deterministic_with_a_seed() -> None:
    assert _trace(7) == _trace(7)
    assert _trace(7) != _trace(8)
    a, b = Transcript(random.Random(3)), Transcript(random.Random(3))
    assert [a.next_piece() for _ in range(50)] == [b.next_piece() for _ in range(50)]


def test_answer_layout_with_thinking_and_limits() -> None:
    rng = random.Random(1)
    shape = shape_answer(rng, max_tokens=5000, chat=True, thinking=ThinkingMode.HYBRID)
    assert shape.channel(0) is Channel.HIDDEN and shape.channel(1) is Channel.REASONING
    assert shape.channel(shape.reasoning_end) is Channel.HIDDEN
    assert shape.channel(shape.reasoning_end + 1) is Channel.CONTENT
    if shape.finish_reason is FinishReason.STOP:
        assert shape.channel(shape.total - 1) is Channel.HIDDEN
    cut = shape_answer(rng, max_tokens=10, chat=True, thinking=ThinkingMode.THINKING)
    assert cut.total == 10 and cut.finish_reason is FinishReason.LENGTH and cut.channel(0) is Channel.REASONING
    forced = shape_answer(rng, max_tokens=77, chat=False, thinking=None, ignore_eos=True)
    assert forced.total == 77 and forced.finish_reason is FinishReason.LENGTH
    floor = shape_answer(random.Random(2), max_tokens=5000, chat=False, thinking=None, min_tokens=4000)
    assert floor.total >= 4000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 1500), st.integers(1, 600), st.floats(0, 5), st.integers(0, 3)), max_size=25),
    st.integers(1, 6),
    st.integers(16, 2048),
)
def test_every_request_gets_exactly_its_tokens(
    workload: list[tuple[int, int, float, int]], max_num_seqs: int, budget: int
) -> None:
    perf = replace(PERF, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)
    engine = Engine(perf)
    prefixes = [tuple(range(k * 1000, k * 1000 + 100)) for k in range(4)]  # a few shared prompt prefixes
    pending = sorted(((t, i, p, o, k) for i, (p, o, t, k) in enumerate(workload) if p + o <= 2048), reverse=True)
    expected = {f"r{i}": o for _, i, _, o, _ in pending}
    produced: dict[str, int] = {}
    now = 0.0
    for _ in range(100_000):
        while pending and (pending[-1][0] <= now or engine.idle):
            t, i, p, o, k = pending.pop()
            now = max(now, t)
            engine.add_request(_request(f"r{i}", prompt=p, output=o, arrival=t, prompt_hashes=prefixes[k][: p // 16]))
        if engine.idle and not pending:
            break
        result = engine.step(now)
        assert result.scheduled_tokens <= budget and len(engine.running) <= max_num_seqs
        assert 0.0 <= engine.kv_usage <= 1.0
        for rid, n in result.tokens.items():
            produced[rid] = produced.get(rid, 0) + n
        now = result.end
    assert produced == expected and engine.kv_usage == 0.0


def test_kv_cache_evicts_least_recently_freed_blocks_first() -> None:
    kv = KVCache(num_blocks=4, block_tokens=16)
    assert kv.allocate("a", 32) and kv.usage == 0.5
    kv.register("a", [11, 12], 2)
    kv.free("a")
    assert kv.usage == 0.0 and len(kv.cached_prefix([11, 12])) == 2
    assert kv.allocate("b", 48)  # takes the two never-used blocks, then a's tail block (12) first
    assert len(kv.cached_prefix([11, 12])) == 1
    assert not kv.allocate("c", 48)
