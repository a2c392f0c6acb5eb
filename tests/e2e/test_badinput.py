"""The bad-input corpus (tests/badinput/corpus) against the real API server and the running operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.kube import Kube, KubeError
from tests.e2e.operator_proc import OperatorProcess, wait_for

CORPUS = sorted((Path(__file__).resolve().parents[1] / "badinput" / "corpus").glob("*.yaml"))
API = "qwenfleet.dev/v1alpha1"


def _case(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    lines = path.read_text().splitlines()
    expect = json.loads(lines[1].removeprefix("# expect: "))
    return yaml.safe_load(path.read_text()), expect


def test_the_corpus_is_large_and_mixed() -> None:
    expectations = [_case(p)[1] for p in CORPUS]
    kinds = {_case(p)[0]["kind"] for p in CORPUS}
    assert len(CORPUS) >= 50 and kinds == {"Qwen3Deployment", "Qwen3Router"}
    assert sum("rejected" in e for e in expectations) >= 30 and sum("reason" in e for e in expectations) >= 5


@pytest.mark.parametrize("path", [p for p in CORPUS if "rejected" in _case(p)[1]], ids=lambda p: p.stem)
async def test_rejected_by_the_api_server_with_a_clear_message(kube: Kube, namespace: str, path: Path) -> None:
    obj, expect = _case(path)
    obj["metadata"]["namespace"] = namespace
    with pytest.raises(KubeError) as refused:  # as `kubectl create` / client-side `kubectl apply` send it
        await kube.create(obj, field_validation="Strict")
    assert refused.value.status in (400, 422), refused.value
    assert expect["rejected"] in refused.value.message, refused.value.message
    assert await kube.get(API, obj["kind"], obj["metadata"]["name"], namespace) is None


async def test_accepted_inputs_are_reported_with_the_right_reason_and_nothing_applied(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    cases = [_case(p) for p in CORPUS if "reason" in _case(p)[1]]
    for i, (obj, _) in enumerate(cases):
        obj["metadata"] = {"name": f"bad-{i}", "namespace": namespace}
        await kube.create(obj, field_validation="Strict")
    wrong: list[str] = []

    async def all_reported() -> bool:
        wrong.clear()
        for obj, expect in cases:
            current = await kube.get(API, obj["kind"], obj["metadata"]["name"], namespace)
            conditions = ((current or {}).get("status") or {}).get("conditions", [])
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            if not ready or ready["status"] != "False" or ready["reason"] != expect["reason"]:
                wrong.append(f"{obj['metadata']['name']} {obj['spec']}: {ready and ready['reason']}")
        return not wrong

    await wait_for(all_reported, 60, "every accepted bad input reported", detail=lambda: wrong)
    for obj, _ in cases:  # nothing was applied for any of them
        deployment = await kube.get("apps/v1", "Deployment", obj["metadata"]["name"], namespace)
        assert deployment is None, obj["metadata"]["name"]
        assert (
            (await kube.get(API, obj["kind"], obj["metadata"]["name"], namespace) or {})
            .get("status", {})
            .get("conditions")
        )
    assert operator.proc is not None and operator.proc.poll() is None, "the operator must not crash"
    log = operator.log_path.read_text()
    assert "Traceback" not in log and "crashed" not in log, log[-3000:]
