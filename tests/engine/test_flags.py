"""Every vLLM flag qwenfleet can put on a command line parses with the pinned vLLM's own `vllm serve` parser.

The command lines are the planner's arguments for every catalog model x GPU x precision (and the planner's
options that add flags: an FP8 KV cache, thinking off by default, the longest context with YaRN), with the
renderer's additions (`--host`, `--port`, and `--distributed-executor-backend ray` for multi-node replicas), plus
one line per flag of the extraArgs allow-list with a sample value. They are deduplicated and parsed in one run of
the engine's interpreter (tests/engine/vllm_parse.py); a flag vLLM does not know, a bad value, a deprecated flag
or an unregistered parser name fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qwenfleet.catalog import GPUS, MODELS, Precision
from qwenfleet.catalog.engine import EXTRA_ARG_FLAGS
from qwenfleet.devcluster import engine
from qwenfleet.planner import PlanInfeasible, PlanRequest, plan

SAMPLE_VALUES = {
    "--max-num-batched-tokens": "8192",
    "--block-size": "16",
    "--seed": "0",
    "--max-logprobs": "20",
    "--scheduling-policy": "priority",
    "--long-prefill-token-threshold": "1024",
    "--uvicorn-log-level": "warning",
    "--generation-config": "vllm",
    "--override-generation-config": '{"temperature": 0.6}',
    "--speculative-config": '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}',
    "--cudagraph-capture-sizes": "8",
}
"""A value for each allow-listed flag that takes one (the others are switches)."""


def _rendered(p: Any) -> list[str]:
    """`vllm serve` + the arguments the model-server container gets (render/modelserver.vllm_args)."""
    extra = ["--distributed-executor-backend", "ray"] if p.multi_node else []
    return ["serve", *p.vllm_args, "--host", "0.0.0.0", "--port", "8000", *extra]


def planned_argvs() -> list[list[str]]:
    seen: set[tuple[str, ...]] = set()
    for model in MODELS:
        for gpu in GPUS:
            for precision in Precision:
                if precision not in model.repos:
                    continue
                variants = [
                    {},
                    {"kv_cache_fp8": True},
                    {"thinking_default": False},
                    {"max_model_len": model.context.max},
                ]
                for options in variants:
                    try:
                        p = plan(PlanRequest(model=model.name, gpu=gpu.name, precision=precision, **options))
                    except PlanInfeasible:
                        continue
                    seen.add(tuple(_rendered(p)))
    return [list(argv) for argv in sorted(seen)]


def extra_argvs() -> list[list[str]]:
    base = _rendered(plan(PlanRequest(model="Qwen3-0.6B", gpu="L4-24GB")))
    return [[*base, flag, *([SAMPLE_VALUES[flag]] if flag in SAMPLE_VALUES else [])] for flag in EXTRA_ARG_FLAGS]


def parse_with_vllm(argvs: list[list[str]]) -> dict[str, Any]:
    script = Path(__file__).with_name("vllm_parse.py")
    done = subprocess.run([str(engine.python()), str(script)], input=json.dumps(argvs), capture_output=True,
                          text=True, env=engine.engine_env(), timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def installed() -> None:
    if not engine.installed():
        pytest.skip("the real engine is not installed: run `make engine` (or `qwenfleet dev engine`)")


def test_every_flag_takes_a_value_when_the_allow_list_says_so() -> None:
    switches = {"--enable-prefix-caching", "--no-enable-prefix-caching", "--enable-chunked-prefill",
                "--no-enable-chunked-prefill", "--enforce-eager", "--disable-log-stats", "--enable-log-requests",
                "--disable-custom-all-reduce"}  # fmt: skip
    assert set(EXTRA_ARG_FLAGS) == switches | set(SAMPLE_VALUES)


@pytest.mark.usefixtures("installed")
def test_every_rendered_and_allowed_flag_parses_with_the_pinned_vllm() -> None:
    argvs = planned_argvs()
    assert len(argvs) > 20  # the catalog's breadth reached the parser
    result = parse_with_vllm(argvs + extra_argvs())
    assert result["tool_parsers"] > 0 and result["reasoning_parsers"] > 0
    failures = [f"{f['error']} <- {' '.join(f['argv'][1:])}" for f in result["failures"]]
    assert failures == []


@pytest.mark.usefixtures("installed")
def test_the_parser_run_can_fail() -> None:
    result = parse_with_vllm([["serve", "m", "--no-such-flag"], ["serve", "m", "--tool-call-parser", "nope"]])
    assert len(result["failures"]) == 2
