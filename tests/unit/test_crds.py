"""CRDs: generated from api/, committed under crds/, structural, with subresources, columns and CEL rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from qwenfleet.api.cel import cel
from qwenfleet.api.crd import render_crds, structural_schema

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_generator() -> None:
    rendered = render_crds()
    committed = {p.name: p.read_text() for p in CRD_DIR.glob("*.qwenfleet.dev.yaml")}
    assert committed == rendered, "crds/ drifted from operator/qwenfleet/api: run `make crds`"


class _Leaf(BaseModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [cel("self.a > 0", "a must be > 0")]})
    a: int = Field(default=1, ge=0, description="A number.")


class _Root(BaseModel):
    leaf: _Leaf | None = Field(default=None, description="The leaf.")
    kind: str = Field(default="x", json_schema_extra={"const": "x"})
    tags: dict[str, str] = Field(default_factory=dict, description="Tags.")


def test_rewriter_golden() -> None:
    assert structural_schema(_Root) == {
        "properties": {
            "leaf": {
                "properties": {"a": {"default": 1, "description": "A number.", "minimum": 0, "type": "integer"}},
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.a > 0", "message": "a must be > 0", "reason": "FieldValueInvalid"}
                ],
                "description": "The leaf.",
            },
            "kind": {"default": "x", "type": "string", "enum": ["x"]},
            "tags": {"additionalProperties": {"type": "string"}, "description": "Tags.", "type": "object"},
        },
        "type": "object",
    }


def _walk(node: Any, path: str, problems: list[str]) -> None:
    if not isinstance(node, dict):
        return
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs", "propertyNames", "patternProperties"):
        if bad in node:
            problems.append(f"{path}: {bad}")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            problems.append(f"{path}: {bound} must be a boolean in OpenAPI v3.0")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for name, sub in node.get("properties", {}).items():
        if path.startswith(".spec") and "description" not in sub:
            problems.append(f"{path}.{name}: no description")
        _walk(sub, f"{path}.{name}", problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", problems)


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(render_crds()[name])
    return doc


def test_schemas_are_structural_and_described() -> None:
    for name in render_crds():
        version = _load(name)["spec"]["versions"][0]
        root = version["schema"]["openAPIV3Schema"]
        problems: list[str] = []
        for part in ("spec", "status"):
            _walk(root["properties"][part], f".{part}", problems)
        assert problems == [], name


def test_deployment_crd_shape() -> None:
    doc = _load("qwen3deployments.qwenfleet.dev.yaml")
    names = doc["spec"]["names"]
    assert (names["shortNames"], names["categories"]) == (["q3d"], ["qwenfleet"])
    version = doc["spec"]["versions"][0]
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    assert version["subresources"]["status"] == {}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Model", "GPU", "TP", "Replicas", "Queue", "Ready", "Age"} <= columns
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    messages = " ".join(r["message"] for r in spec["x-kubernetes-validations"])
    assert "spec.replicas must be unset" in messages and "precision awq is offered only" in messages
    assert "replicas" not in spec.get("required", []) and "default" not in spec["properties"]["replicas"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "default" not in str(version["schema"]["openAPIV3Schema"]["properties"]["status"])


def test_router_crd_shape() -> None:
    doc = _load("qwen3routers.qwenfleet.dev.yaml")
    assert doc["spec"]["names"]["shortNames"] == ["q3r"]
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["backends"]["maxItems"] == 32
    assert any("must name an entry of spec.backends" in r["message"] for r in spec["x-kubernetes-validations"])
