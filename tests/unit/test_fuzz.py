"""Fuzzing: any input either validates or fails with the expected, handled error, never anything else."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pydantic
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.catalog import GPUS, MODELS
from qwenfleet.planner import PlanInfeasible, plan, plan_request
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children
from qwenfleet.router.app import Router
from qwenfleet.router.discovery import Discovery
from qwenfleet.router.requests import BadRequest, route_request

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "model": st.sampled_from([m.name for m in MODELS]) | JSON,
    "gpu": st.sampled_from([g.name for g in GPUS]) | JSON,
    "precision": st.sampled_from(["bf16", "fp8", "awq", "int4"]) | JSON,
    "maxModelLen": st.integers(-10, 2_000_000) | JSON,
    "replicas": st.integers(-2, 2000) | JSON,
    "overrides": st.fixed_dictionaries({}, optional={
        "tensorParallelSize": st.sampled_from([1, 2, 3, 4, 8, 16]), "gpuMemoryUtilization": st.floats(0, 2),
        "maxNumSeqs": st.integers(-1, 10000), "kvCacheDtype": st.sampled_from(["auto", "fp8", "x"])}),
    "autoscaling": st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["none", "builtin", "keda", "x"]), "minReplicas": st.integers(-1, 5),
        "maxReplicas": st.integers(-1, 5)}),
}  # fmt: skip
SPECS = st.fixed_dictionaries({}, optional=FIELDS)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS)
def test_any_deployment_spec_validates_plans_and_renders_or_fails_cleanly(raw: dict[str, Any]) -> None:
    try:
        spec = Qwen3DeploymentSpec.model_validate(raw)
    except pydantic.ValidationError:
        return
    try:
        the_plan = plan(plan_request(spec))
    except PlanInfeasible as exc:
        assert str(exc)  # always says why
        return
    owner = Owner(name="fuzz", namespace="ns", uid="u")
    children = desired_children(DeploymentInput(owner=owner, spec=spec, plan=the_plan, replicas=1,
                                                capabilities=Capabilities()))  # fmt: skip
    assert children and all(c["metadata"]["name"] for c in children)
    for arg in the_plan.vllm_args:  # arguments come from validated values only
        assert not any(ch in arg for ch in ";|&`$\n")


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_router_spec_validates_or_fails_cleanly(raw: Any) -> None:
    with contextlib.suppress(pydantic.ValidationError):
        Qwen3RouterSpec.model_validate(raw)


BODIES = JSON | st.fixed_dictionaries({"model": st.sampled_from(["auto", "small", "nope"]) | JSON}, optional={
    "messages": st.lists(st.fixed_dictionaries({"role": JSON, "content": JSON}), max_size=3) | JSON,
    "prompt": JSON, "max_tokens": JSON, "chat_template_kwargs": JSON, "tools": JSON, "stream": JSON})  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(BODIES, st.booleans())
def test_any_request_body_routes_or_is_a_bad_request(body: Any, chat: bool) -> None:
    try:
        route_request(body, {}, chat=chat)
    except BadRequest as exc:
        assert str(exc)


class _NoReplicas(Discovery):
    def __init__(self, spec: Qwen3RouterSpec) -> None:
        super().__init__(kube=None, namespace="ns", spec=spec)  # type: ignore[arg-type]


SPEC = Qwen3RouterSpec.model_validate({
    "backends": [{"name": "small"}], "defaultBackend": "small", "scaleFromZero": {"enabled": False},
    "limits": {"maxBodyBytes": 4096},
})  # fmt: skip


DEEP = st.builds(lambda depth, opener, model: (f'{{"model": "{model}", "messages": ' + opener * depth).encode(),
                 st.integers(500, 20000), st.sampled_from(["[", '{"a": ', '[{"content": ']),
                 st.sampled_from(["auto", "small"]))  # fmt: skip
"""JSON nested deeper than any parser's recursion limit (closed or not): a client error like any other."""
DEEP_CLOSED = st.integers(500, 20000).map(
    lambda d: ('{"model": "auto", "messages": ' + "[" * d + "]" * d + "}").encode()
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=6000) | BODIES.map(lambda b: json.dumps(b).encode()) | DEEP | DEEP_CLOSED,
       st.dictionaries(st.sampled_from(["X-Qwenfleet-Tier", "Content-Type", "Authorization", "X-Other"]),
                       st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
       st.sampled_from(["/v1/chat/completions", "/v1/completions"]))  # fmt: skip
async def test_router_answers_client_errors_with_4xx_never_5xx(body: bytes, headers: dict[str, str], path: str) -> None:
    router = Router(SPEC, _NoReplicas(SPEC), api_keys=None)
    async with TestClient(TestServer(router.app())) as client:
        response = await client.post(path, data=body, headers=headers)
        status = response.status
        payload = await response.json()
    assert "error" in payload and payload["error"]["message"]
    if status >= 500:  # only a well-formed request for a backend with no replica may be refused with 503
        assert status == 503, (status, payload)
        route_request(json.loads(body), {}, chat=path.endswith("chat/completions"))
    else:
        assert status in (400, 404, 413), (status, payload)


async def test_router_is_not_ready_before_its_first_view_of_the_backends() -> None:
    discovery = _NoReplicas(SPEC)
    async with TestClient(TestServer(Router(SPEC, discovery).app())) as client:
        assert (await client.get("/health")).status == 503
        discovery.refreshed = True
        assert (await client.get("/health")).status == 200
