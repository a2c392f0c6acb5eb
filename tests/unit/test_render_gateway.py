"""A Qwen3Router's Endpoint Picker as rendered: the gRPC port on the pod and Service, one InferencePool per backend
(selector, target port, picker reference, failure mode), leaders only for multi-node backends, nothing when off."""

from __future__ import annotations

from typing import Any

from qwenfleet.api.router import EPP_PORT, Qwen3RouterSpec
from qwenfleet.render import Owner
from qwenfleet.render.names import HTTP_PORT, ROLE_LABEL
from qwenfleet.render.router import POOL_API, pool_name, render_inference_pools, render_router

OWNER = Owner(name="chat", namespace="team", uid="u-1", kind="Qwen3Router")
BASE: dict[str, Any] = {"backends": [{"name": "small"}, {"name": "large"}], "defaultBackend": "small"}


def _spec(**picker: Any) -> Qwen3RouterSpec:
    return Qwen3RouterSpec.model_validate({**BASE, "endpointPicker": picker} if picker else BASE)


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def test_without_the_picker_there_is_no_grpc_port_and_no_pool() -> None:
    children = _by_kind(render_router(OWNER, _spec()))
    container = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert not any(a.startswith("--epp-port") for a in container["args"])
    assert [p["name"] for p in children["Service"]["spec"]["ports"]] == ["http"]
    assert render_inference_pools(OWNER, _spec()) == []


def test_the_picker_adds_its_grpc_port_to_the_pod_and_the_service() -> None:
    children = _by_kind(render_router(OWNER, _spec(enabled=True)))
    container = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert f"--epp-port={EPP_PORT}" in container["args"]
    assert {"name": "grpc-epp", "containerPort": EPP_PORT, "protocol": "TCP"} in container["ports"]
    grpc_port = next(p for p in children["Service"]["spec"]["ports"] if p["name"] == "grpc-epp")
    assert grpc_port["port"] == EPP_PORT and grpc_port["appProtocol"] == "kubernetes.io/h2c"


def test_one_pool_per_backend_picked_by_the_routers_service() -> None:
    pools = render_inference_pools(OWNER, _spec(enabled=True, failureMode="FailOpen", port=9100),
                                   multi_node=frozenset({"large"}))  # fmt: skip
    assert [p["metadata"]["name"] for p in pools] == [pool_name("chat", "small"), pool_name("chat", "large")]
    small, large = pools
    assert small["apiVersion"] == POOL_API and small["kind"] == "InferencePool"
    assert small["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert small["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/instance": "small", "app.kubernetes.io/component": "model-server",
        "qwenfleet.dev/deployment": "small",
    }  # fmt: skip
    assert large["spec"]["selector"]["matchLabels"][ROLE_LABEL] == "leader"  # only leaders answer HTTP
    assert ROLE_LABEL not in small["spec"]["selector"]["matchLabels"]
    assert small["spec"]["targetPorts"] == [{"number": HTTP_PORT}]
    assert small["spec"]["endpointPickerRef"] == {"group": "", "kind": "Service", "name": "chat",
                                                  "port": {"number": 9100}, "failureMode": "FailOpen"}  # fmt: skip


def test_pools_can_be_left_to_the_user() -> None:
    assert render_inference_pools(OWNER, _spec(enabled=True, inferencePools=False)) == []


def test_an_external_backends_key_is_mounted_and_it_gets_no_pool() -> None:
    api = {"baseURL": "https://api.example.com/v1", "model": "m", "apiKeySecretRef": {"name": "vendor", "key": "token"},
           "prices": {"inputPerMillionUSD": 1, "outputPerMillionUSD": 2}}  # fmt: skip
    spec = Qwen3RouterSpec.model_validate({**BASE, "backends": [*BASE["backends"], {"name": "vendor", "external": api}],
                                           "endpointPicker": {"enabled": True}})  # fmt: skip
    pod = _by_kind(render_router(OWNER, spec))["Deployment"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "external-vendor")
    assert volume["secret"] == {"secretName": "vendor", "items": [{"key": "token", "path": "key"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "external-vendor")
    assert mount["mountPath"] == "/etc/qwenfleet/external/vendor" and mount["readOnly"]
    assert [p["metadata"]["name"] for p in render_inference_pools(OWNER, spec)] == ["chat-small", "chat-large"]
