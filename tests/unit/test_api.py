"""API models: camelCase wire format, defaults, and the cross-field rules the CEL rules mirror."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from qwenfleet.api import Qwen3DeploymentSpec, Qwen3RouterSpec
from qwenfleet.api.crd import render_crds
from qwenfleet.api.deployment import _AWQ_RULE, _CACHE_RULE, _REPLICAS_RULE

BASE = {"model": "Qwen3-8B", "gpu": "L4-24GB"}


def test_defaults_and_camel_case_round_trip() -> None:
    spec = Qwen3DeploymentSpec.model_validate(
        BASE | {"autoscaling": {"mode": "builtin", "maxReplicas": 3}, "maxModelLen": 8192}
    )
    assert spec.precision == "bf16" and spec.thinking_by_default
    wire = spec.to_wire()
    assert wire["maxModelLen"] == 8192 and wire["autoscaling"]["targetQueueDepth"] == 4  # type: ignore[index]
    assert Qwen3DeploymentSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"replicas": 2, "autoscaling": {"mode": "builtin", "maxReplicas": 3}}, _REPLICAS_RULE["message"]),
        ({"replicas": 2, "autoscaling": {"mode": "keda", "maxReplicas": 3}}, _REPLICAS_RULE["message"]),
        ({"precision": "awq", "model": "Qwen3-30B-A3B"}, _AWQ_RULE["message"]),
        ({"weights": {"pvc": {"claimName": "w"}}, "cache": {"mode": "pvc"}}, _CACHE_RULE["message"]),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must not exceed"),
        ({"weights": {}}, "exactly one source"),
        ({"weights": {"pvc": {"claimName": "w"}, "huggingFace": {}}}, "exactly one source"),
        ({"nodePool": {"provisioner": "karpenter"}}, "needs nodeClassRef"),
        (
            {
                "nodePool": {
                    "provisioner": "karpenter",
                    "sharedPoolName": "gpus",
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "g"},
                }
            },
            "sets both nodeClassRef and sharedPoolName",
        ),
        ({"model": "Qwen3-4B-Thinking-2507", "thinkingByDefault": False}, "always think"),
        ({"model": "Qwen3-30B-A3B-Thinking-2507", "thinkingByDefault": False}, "always think"),
        ({"model": "Qwen3-9B"}, "unknown model 'Qwen3-9B'"),
        ({"gpu": "T4"}, "unknown GPU 'T4'"),
        ({"precision": "int3"}, "Input should be 'bf16', 'fp8' or 'awq'"),
        ({"replicas": -1}, "greater than or equal to 0"),
        ({"maxModelLen": 10}, "greater than or equal to 256"),
        ({"overrides": {"tensorParallelSize": 3}}, "Input should be 1, 2, 4 or 8"),
        (
            {"overrides": {"extraArgs": [{"name": "--tensor-parallel-size", "value": "2"}]}},
            "unknown vLLM flag",
        ),
        ({"overrides": {"extraArgs": [{"name": "--seed", "value": "1; rm -rf /"}]}}, "String should match"),
        ({"overrides": {"image": "Not An Image!"}}, "String should match"),
        ({"unknownField": 1}, "Extra inputs are not permitted"),
        (
            {"weights": {"huggingFace": {"tokenSecretRef": {"name": "Bad_Name", "key": "t"}}}},
            "String should match",
        ),
    ],
)
def test_bad_specs_are_rejected_with_a_clear_message(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Qwen3DeploymentSpec.model_validate(BASE | patch)


def test_good_variants_are_accepted() -> None:
    for patch in (
        {"replicas": 0},
        {"autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 4}},
        {"precision": "awq", "model": "Qwen3-32B"},
        {"weights": {"pvc": {"claimName": "weights", "path": "/qwen3-8b"}}},
        {"weights": {"huggingFace": {"revision": "a1b2c3", "tokenSecretRef": {"name": "hf", "key": "token"}}}},
        {"nodePool": {"provisioner": "karpenter", "nodeClassRef": {"group": "karpenter.k8s.aws",
                                                                   "kind": "EC2NodeClass", "name": "gpu"}}},
        {"scheduling": {"nodeSelector": {"topology.kubernetes.io/zone": "us-east-1a"},
                        "tolerations": [{"key": "dedicated", "operator": "Exists"}]}},
    ):  # fmt: skip
        Qwen3DeploymentSpec.model_validate(BASE | patch)


ROUTER = {
    "backends": [
        {"name": "small", "aliases": ["qwen3-small"], "spilloverTo": "big", "fallback": "big"},
        {"name": "big", "aliases": ["qwen3-big"]},
    ],
    "defaultBackend": "small",
    "rules": [{"name": "thinking", "match": {"thinking": True}, "backend": "big"}],
}


def test_router_spec_defaults() -> None:
    spec = Qwen3RouterSpec.model_validate(ROUTER)
    assert spec.replicas == 2 and spec.scale_from_zero.enabled and spec.scale_from_zero.hold_seconds == 120
    assert spec.backends[0].spillover_queue_per_replica == 8.0


@pytest.mark.parametrize(
    "patch",
    [
        {"defaultBackend": "missing"},
        {"rules": [{"name": "r", "match": {}, "backend": "missing"}]},
        {"backends": [{"name": "small", "fallback": "nowhere"}]},
        {"backends": [{"name": "a", "aliases": ["x"]}, {"name": "small", "aliases": ["x"]}]},
        {"backends": [{"name": "small", "aliases": ["auto"]}]},
        {"backends": []},
    ],
)
def test_router_references_must_resolve(patch: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Qwen3RouterSpec.model_validate(ROUTER | patch)


def test_thinking_off_is_accepted_where_a_model_can_answer_without_thinking() -> None:
    for model in ("Qwen3-8B", "Qwen3-4B-Instruct-2507"):
        assert not Qwen3DeploymentSpec.model_validate(
            BASE | {"model": model, "thinkingByDefault": False}
        ).thinking_by_default
    assert Qwen3DeploymentSpec.model_validate(BASE | {"model": "Qwen3-4B-Thinking-2507"}).thinking_by_default


def test_the_crd_carries_the_new_rules_for_the_api_server() -> None:
    text = json.dumps(yaml.safe_load(render_crds()["qwen3deployments.qwenfleet.dev.yaml"]))
    assert "!has(self.nodeClassRef) || !has(self.sharedPoolName)" in text
    assert "self.thinkingByDefault ||" in text and "Qwen3-235B-A22B-Thinking-2507" in text
