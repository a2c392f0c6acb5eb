"""Planner: the documented sizing cases, the hard constraints, and properties over the whole catalog."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenfleet.catalog import GPUS, MODELS, Precision, get_gpu, get_model
from qwenfleet.planner import (
    GIB,
    Layout,
    PlanInfeasible,
    PlanRequest,
    _layout_problem,
    kv_bytes_per_token_per_gpu,
    overhead_bytes,
    plan,
)


def _plan(model: str, gpu: str, precision: Precision = Precision.BF16, **kw: object) -> object:
    return plan(PlanRequest(model=model, gpu=gpu, precision=precision, **kw))  # type: ignore[arg-type]


def test_235b_bf16_on_h100_is_eight_gpus_tp8() -> None:
    p = plan(PlanRequest("Qwen3-235B-A22B", "H100-80GB"))
    assert (p.gpus_per_replica, p.tensor_parallel_size, p.nodes_per_replica) == (8, 8, 1)
    assert not p.expert_parallel


def test_235b_fp8_on_h100_is_four_gpus() -> None:
    p = plan(PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.FP8))
    assert (p.gpus_per_replica, p.tensor_parallel_size, p.expert_parallel) == (4, 4, False)
    assert p.repo == "Qwen/Qwen3-235B-A22B-FP8"


def test_235b_fp8_on_eight_gpus_needs_expert_parallel() -> None:
    p = plan(PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.FP8, tensor_parallel_size=8))
    assert p.expert_parallel and "--enable-expert-parallel" in p.vllm_args


def test_30b_a3b_bf16_fits_one_h100() -> None:
    p = plan(PlanRequest("Qwen3-30B-A3B", "H100-80GB"))
    assert p.gpus_per_replica == 1 and p.kv_cache_tokens >= p.max_model_len


def test_06b_fits_one_l4() -> None:
    p = plan(PlanRequest("Qwen3-0.6B", "L4-24GB"))
    assert p.gpus_per_replica == 1 and p.max_model_len == 40_960


def test_30b_a3b_fp8_cannot_split_experts_at_tp4() -> None:
    model = get_model("Qwen3-30B-A3B")
    problem = _layout_problem(model, Precision.FP8, Layout(4, 1, False))
    assert problem is not None and "768 / TP 4 = 192 is not a multiple of 128" in problem
    assert _layout_problem(model, Precision.FP8, Layout(2, 1, False)) is None
    forced = plan(PlanRequest("Qwen3-30B-A3B", "L4-24GB", Precision.FP8, tensor_parallel_size=4))
    assert forced.expert_parallel and forced.tensor_parallel_size == 4


def test_dense_4b_fp8_fails_tp8_and_names_the_plan_without_override() -> None:
    with pytest.raises(PlanInfeasible, match=r"9728 / TP 8 .* without the override: 1 x H100-80GB"):
        plan(PlanRequest("Qwen3-4B", "H100-80GB", Precision.FP8, tensor_parallel_size=8))


def test_awq_not_offered_for_moe_names_what_works() -> None:
    with pytest.raises(PlanInfeasible) as err:
        plan(PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.AWQ))
    assert "no official awq checkpoint" in str(err.value)
    assert "fp8 (4 x H100-80GB)" in str(err.value) and "\n" not in str(err.value)


def test_fp8_needs_ada_or_newer() -> None:
    with pytest.raises(PlanInfeasible, match=r"compute capability 8\.9"):
        plan(PlanRequest("Qwen3-8B", "A100-80GB", Precision.FP8))
    assert plan(PlanRequest("Qwen3-8B", "L4-24GB", Precision.FP8)).gpus_per_replica == 1


def test_small_models_stop_at_native_context() -> None:
    with pytest.raises(PlanInfeasible, match="at most 40960 tokens"):
        plan(PlanRequest("Qwen3-0.6B", "L4-24GB", max_model_len=131_072))


def test_long_context_turns_on_yarn() -> None:
    p = plan(PlanRequest("Qwen3-14B", "H100-80GB", max_model_len=131_072))
    assert p.yarn_factor == 4.0
    overrides = json.loads(p.vllm_args[p.vllm_args.index("--hf-overrides") + 1])
    assert overrides["rope_scaling"] == {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
    }
    short = plan(PlanRequest("Qwen3-14B", "H100-80GB", max_model_len=65_536))
    assert short.yarn_factor == 2.0
    assert plan(PlanRequest("Qwen3-14B", "H100-80GB")).yarn_factor is None


def test_reasoning_parser_follows_thinking_mode() -> None:
    hybrid = plan(PlanRequest("Qwen3-8B", "L4-24GB", thinking_default=False)).vllm_args
    assert hybrid[hybrid.index("--reasoning-parser") + 1] == "qwen3"
    assert json.loads(hybrid[hybrid.index("--default-chat-template-kwargs") + 1]) == {"enable_thinking": False}
    thinking = plan(PlanRequest("Qwen3-4B-Thinking-2507", "L4-24GB")).vllm_args
    assert thinking[thinking.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert "--reasoning-parser" not in plan(PlanRequest("Qwen3-4B-Instruct-2507", "L4-24GB")).vllm_args
    assert all("--enable-reasoning" not in a for a in hybrid)


def test_multi_node_only_when_one_node_cannot_hold_a_replica() -> None:
    p = plan(PlanRequest("Qwen3-235B-A22B", "A100-40GB"))
    assert p.nodes_per_replica == 2 and p.pipeline_parallel_size == 2 and p.tensor_parallel_size == 8
    assert "--pipeline-parallel-size" in p.vllm_args
    assert plan(PlanRequest("Qwen3-32B", "A100-40GB")).nodes_per_replica == 1


def test_infeasible_everywhere_on_a_gpu_names_a_smaller_plan() -> None:
    with pytest.raises(PlanInfeasible, match=r"does not fit on up to 1 nodes of 8 x L4-24GB; smallest plan"):
        plan(PlanRequest("Qwen3-235B-A22B", "L4-24GB", max_nodes_per_replica=1))


def test_default_context_prefers_fewer_gpus() -> None:
    p = plan(PlanRequest("Qwen3-30B-A3B-Instruct-2507", "H100-80GB"))
    assert p.gpus_per_replica == 1 and 32_768 <= p.max_model_len < 262_144


def test_kv_heads_replicate_above_their_count() -> None:
    model = get_model("Qwen3-235B-A22B")
    assert kv_bytes_per_token_per_gpu(model, Layout(4, 1, False), False) == 94 * 2 * 128 * 2
    assert kv_bytes_per_token_per_gpu(model, Layout(8, 1, False), False) == 94 * 2 * 128 * 2
    assert kv_bytes_per_token_per_gpu(model, Layout(8, 1, False), True) == 94 * 2 * 128


def test_price_override_and_cost_per_token() -> None:
    base = plan(PlanRequest("Qwen3-8B", "L4-24GB"))
    cheap = plan(PlanRequest("Qwen3-8B", "L4-24GB", price_per_gpu_hour_usd=0.4))
    gpus = base.gpus_per_replica
    assert cheap.cost_per_hour_usd == pytest.approx(0.4 * gpus)
    assert base.cost_per_hour_usd == pytest.approx(get_gpu("L4-24GB").price_per_gpu_hour_usd * gpus)
    assert cheap.cost_per_million_output_tokens_usd < base.cost_per_million_output_tokens_usd


_CASES = st.tuples(
    st.sampled_from(MODELS),
    st.sampled_from(GPUS),
    st.sampled_from(list(Precision)),
    st.one_of(st.none(), st.sampled_from([4096, 8192, 32_768, 40_960, 65_536, 131_072, 262_144])),
    st.one_of(st.none(), st.sampled_from([1, 2, 4, 8])),
)


@settings(max_examples=300, deadline=None)
@given(_CASES)
def test_feasible_plans_respect_memory_heads_and_context(case: tuple[object, ...]) -> None:
    model, gpu, precision, max_len, tp = case
    try:
        p = plan(PlanRequest(model.name, gpu.name, precision, max_len, tp))  # type: ignore[attr-defined]
    except PlanInfeasible as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    m, g = get_model(p.model), get_gpu(p.gpu)
    assert m.arch.attention_heads % p.tensor_parallel_size == 0
    assert p.kv_cache_tokens >= p.max_model_len
    assert p.max_model_len <= m.context.max
    layout = Layout(p.tensor_parallel_size, p.pipeline_parallel_size, p.expert_parallel)
    used = (
        p.weight_bytes_per_gpu + overhead_bytes(m, g) + p.kv_cache_tokens * kv_bytes_per_token_per_gpu(m, layout, False)
    )
    assert used <= g.memory_bytes * p.gpu_memory_utilization + GIB * 0.01
    assert p.gpus_per_replica == p.tensor_parallel_size * p.pipeline_parallel_size
    assert p.tensor_parallel_size <= g.max_gpus_per_node
    assert p.cost_per_hour_usd > 0 and p.decode_tokens_per_second > 0


def test_shared_numbers_live_in_the_catalog_and_the_plan() -> None:
    from qwenfleet.api import Qwen3DeploymentSpec
    from qwenfleet.autoscale.loop import settings_for
    from qwenfleet.catalog.models import DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_MAX_NUM_SEQS
    from qwenfleet.planner import plan_request

    spec = Qwen3DeploymentSpec.model_validate(
        {"model": "Qwen3-8B", "gpu": "L4-24GB", "autoscaling": {"mode": "builtin", "maxReplicas": 2}}
    )
    p = plan(plan_request(spec))
    assert p.gpu_memory_utilization == DEFAULT_GPU_MEMORY_UTILIZATION and p.max_num_seqs == DEFAULT_MAX_NUM_SEQS
    assert 1 <= p.reference_concurrency <= p.max_num_seqs
    assert settings_for(spec, p.to_wire()).concurrency == p.reference_concurrency
    tuned = Qwen3DeploymentSpec.model_validate(
        {"model": "Qwen3-8B", "gpu": "L4-24GB", "overrides": {"maxNumSeqs": 3, "gpuMemoryUtilization": 0.8}}
    )
    q = plan(plan_request(tuned))
    assert q.max_num_seqs == 3 and q.reference_concurrency <= 3 and q.gpu_memory_utilization == 0.8


@pytest.mark.parametrize(
    ("spec_extra", "compiled_once", "downloads"),
    [
        ({}, False, True),  # the default: each pod downloads and compiles
        ({"cache": {"mode": "pvc"}}, True, False),  # one download; the compile cache on the same volume
        ({"cache": {"mode": "pvc", "compileCache": False}}, False, False),
        ({"cache": {"mode": "pvc", "accessMode": "ReadOnlyMany"}}, False, False),  # nowhere to write it
        ({"weights": {"pvc": {"claimName": "mine"}}}, False, False),  # the user's volume is never written
    ],
)
def test_cold_start_reflects_the_weight_and_compile_cache_options(
    spec_extra: dict[str, object], compiled_once: bool, downloads: bool
) -> None:
    from qwenfleet.api import Qwen3DeploymentSpec
    from qwenfleet.planner import COMPILE_FROM_CACHE_SECONDS, COMPILE_SECONDS, plan_request

    base = {"model": "Qwen3-30B-A3B", "gpu": "H100-80GB"}
    local = plan(PlanRequest("Qwen3-30B-A3B", "H100-80GB"))
    request = plan_request(Qwen3DeploymentSpec.model_validate({**base, **spec_extra}))
    assert (request.compile_cache, request.download_per_pod) == (compiled_once, downloads)
    p = plan(request)
    expected = local.cold_start_seconds
    expected -= (COMPILE_SECONDS - COMPILE_FROM_CACHE_SECONDS) if compiled_once else 0
    expected += local.download_seconds if downloads else 0
    assert abs(p.cold_start_seconds - expected) <= 1  # each figure is rounded up on its own
    assert any("download" in n for n in p.notes) == downloads
    assert any("compile cache" in n for n in p.notes) == compiled_once


def test_a_compile_cache_needs_a_writable_volume() -> None:
    from pydantic import ValidationError

    from qwenfleet.api import Qwen3DeploymentSpec

    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB",
            "cache": {"mode": "pvc", "accessMode": "ReadOnlyMany", "compileCache": True}}  # fmt: skip
    with pytest.raises(ValidationError, match="compileCache needs a writable cache volume"):
        Qwen3DeploymentSpec.model_validate(spec)
