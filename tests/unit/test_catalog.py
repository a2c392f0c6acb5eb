"""The catalog holds the published facts: parameter counts, checkpoints, context limits, GPU traits."""

from __future__ import annotations

import pytest

from qwenfleet.catalog import (
    GPUS,
    MODELS,
    Precision,
    ThinkingMode,
    UnknownGPUError,
    UnknownModelError,
    get_gpu,
    get_model,
)

PUBLISHED_PARAMS = {  # (total, active) in billions, from the model cards and the technical report
    "Qwen3-0.6B": (0.6, 0.6),
    "Qwen3-1.7B": (1.7, 1.7),
    "Qwen3-4B": (4.0, 4.0),
    "Qwen3-8B": (8.2, 8.2),
    "Qwen3-14B": (14.8, 14.8),
    "Qwen3-32B": (32.8, 32.8),
    "Qwen3-30B-A3B": (30.5, 3.3),
    "Qwen3-235B-A22B": (235.0, 22.0),
}


@pytest.mark.parametrize(("name", "published"), PUBLISHED_PARAMS.items())
def test_parameter_counts_match_published(name: str, published: tuple[float, float]) -> None:
    arch = get_model(name).arch
    assert arch.params_total / 1e9 == pytest.approx(published[0], rel=0.02)
    assert arch.params_active / 1e9 == pytest.approx(published[1], rel=0.03)


def test_embedding_is_vocab_times_hidden_doubled_when_untied() -> None:
    for model in MODELS:
        tied = model.name.startswith(("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B"))
        expected = 151_936 * model.arch.hidden_size * (1 if tied else 2)
        assert model.arch.params_embedding == pytest.approx(expected, rel=1e-3), model.name


def test_awq_only_for_dense_2504_from_4b() -> None:
    with_awq = {m.name for m in MODELS if Precision.AWQ in m.repos}
    assert with_awq == {"Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B"}
    assert all(Precision.FP8 in m.repos and Precision.BF16 in m.repos for m in MODELS)


def test_repos_follow_qwen_naming() -> None:
    assert get_model("Qwen3-235B-A22B").repos[Precision.FP8] == "Qwen/Qwen3-235B-A22B-FP8"
    assert get_model("Qwen3-32B").repos[Precision.AWQ] == "Qwen/Qwen3-32B-AWQ"
    assert get_model("Qwen3-30B-A3B-Instruct-2507").repos[Precision.BF16] == "Qwen/Qwen3-30B-A3B-Instruct-2507"


def test_context_limits() -> None:
    assert get_model("Qwen3-0.6B").context.max == 40_960
    assert get_model("Qwen3-1.7B").context.yarn_original is None
    assert get_model("Qwen3-14B").context.max == 131_072
    assert get_model("Qwen3-235B-A22B-Thinking-2507").context.native == 262_144


def test_thinking_modes() -> None:
    assert get_model("Qwen3-8B").thinking is ThinkingMode.HYBRID
    assert get_model("Qwen3-4B-Instruct-2507").thinking is ThinkingMode.INSTRUCT
    assert get_model("Qwen3-235B-A22B-Thinking-2507").thinking is ThinkingMode.THINKING
    assert {m.release for m in MODELS} == {"2504", "2507"}


def test_moe_architecture() -> None:
    arch = get_model("Qwen3-235B-A22B").arch
    assert (arch.experts, arch.experts_per_token, arch.moe_intermediate_size, arch.kv_heads) == (
        128,
        8,
        1536,
        4,
    )
    assert not get_model("Qwen3-32B").arch.is_moe


def test_lookup_is_forgiving_but_unknown_names_fail_clearly() -> None:
    assert get_model("qwen/qwen3-8b").name == "Qwen3-8B"
    assert get_gpu("h100-80gb").name == "H100-80GB"
    with pytest.raises(UnknownModelError, match=r"known models: Qwen3-0\.6B"):
        get_model("Qwen3-9B")
    with pytest.raises(UnknownGPUError, match="known GPUs"):
        get_gpu("T4")


def test_gpus() -> None:
    names = {g.name for g in GPUS}
    assert names == {
        "H100-80GB", "H200-141GB", "B200-192GB", "A100-40GB", "A100-80GB",
        "L40S-48GB", "L4-24GB", "A10G-24GB", "MI300X-192GB",
    }  # fmt: skip
    assert not get_gpu("A100-80GB").fp8_w8a8 and get_gpu("L4-24GB").fp8_w8a8
    assert get_gpu("MI300X-192GB").resource_name == "amd.com/gpu" and not get_gpu("MI300X-192GB").awq
    assert get_gpu("H100-80GB").product_label == "NVIDIA-H100-80GB-HBM3"
    assert all(g.price_per_gpu_hour_usd > 0 and g.memory_mib > 20_000 for g in GPUS)
