"""The local control plane itself: a real v1.36 API server, our CRDs, kwok GPU nodes, scheduling, GC."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.kube import Kube, KubeError
from tests.e2e.operator_proc import wait_for

pytestmark = pytest.mark.e2e
CRDS = Path(__file__).resolve().parents[2] / "crds"


def _deployment(
    namespace: str, name: str, gpus: int, replicas: int = 1, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    pod = {
        "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        **(extra or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }


async def _pods(kube: Kube, namespace: str, app: str) -> list[dict[str, Any]]:
    return await kube.list("v1", "Pod", namespace, label_selector=f"app={app}")


async def test_server_is_v1_36(kube: Kube) -> None:
    version = await kube._call("GET", "/version")
    assert version["gitVersion"].startswith("v1.36.")


async def test_our_crds_are_established_and_explained(kube: Kube, kubeconfig: Path) -> None:
    for path in CRDS.glob("*.qwenfleet.dev.yaml"):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        crd = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        assert crd is not None
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    schema = yaml.safe_load((CRDS / "qwen3deployments.qwenfleet.dev.yaml").read_text())
    spec = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    explained = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "explain", "qwen3deployment.spec"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert spec["properties"]["gpu"]["description"] in " ".join(explained.split())
    assert "autoscaling" in explained and "maxModelLen" in explained


async def test_cel_rule_rejects_with_our_message(kube: Kube, namespace: str) -> None:
    bad = {
        "apiVersion": "qwenfleet.dev/v1alpha1",
        "kind": "Qwen3Deployment",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {
            "model": "Qwen3-8B",
            "gpu": "L4-24GB",
            "replicas": 2,
            "autoscaling": {"mode": "builtin", "maxReplicas": 3},
        },
    }
    with pytest.raises(KubeError) as err:
        await kube.apply(bad)
    assert err.value.status == 422 and "spec.replicas must be unset" in err.value.message
    bad["spec"] = {"model": "Qwen3-9B", "gpu": "L4-24GB"}
    with pytest.raises(KubeError) as err:
        await kube.apply(bad)
    assert err.value.status == 422 and "Unsupported value" in err.value.message and "Qwen3-8B" in err.value.message


async def test_gpu_pods_run_on_h100_nodes_with_loopback_ips(kube: Kube, namespace: str) -> None:
    await kube.apply(_deployment(namespace, "eight", 8, replicas=2))

    async def running() -> list[dict[str, Any]] | None:
        pods = await _pods(kube, namespace, "eight")
        ok = len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else None

    pods = await wait_for(running, 60, "two 8-GPU pods Running")
    nodes = set()
    for pod in pods:
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("127.1.0.0/16")
        node = await kube.get("v1", "Node", pod["spec"]["nodeName"])
        assert node is not None and node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        nodes.add(pod["spec"]["nodeName"])
    assert len(nodes) == 2  # eight GPUs each: one pod per H100 node
    await kube.delete("apps/v1", "Deployment", "eight", namespace)

    async def collected() -> bool:
        return not await _pods(kube, namespace, "eight") and not await kube.list("apps/v1", "Deployment", namespace)

    await wait_for(collected, 60, "ReplicaSet and pods garbage-collected")


async def test_more_gpus_than_any_node_stays_pending(kube: Kube, namespace: str) -> None:
    await kube.apply(_deployment(namespace, "sixteen", 16))

    async def unschedulable() -> str | None:
        pods = await _pods(kube, namespace, "sixteen")
        for cond in (pods[0]["status"].get("conditions") or []) if pods else []:
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond["message"])
        return None

    message = await wait_for(unschedulable, 60, "FailedScheduling")
    assert "nvidia.com/gpu" in message
    pods = await _pods(kube, namespace, "sixteen")
    assert pods[0]["status"]["phase"] == "Pending"


async def test_karpenter_provisions_a_node_for_a_pending_gpu_pod(kube: Kube, namespace: str) -> None:
    pool_name = f"pool-{namespace}"
    pool = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": pool_name},
        "spec": {
            "template": {
                "metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-L40S"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["g6e.12xlarge"]}
                    ],
                    "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                },
            },
            "limits": {"nvidia.com/gpu": "8"},
        },
    }
    await kube.apply(pool)
    try:
        extra = {"nodeSelector": {"karpenter.sh/nodepool": pool_name}}
        await kube.apply(_deployment(namespace, "l40s", 4, extra=extra))

        async def running() -> dict[str, Any] | None:
            pods = await _pods(kube, namespace, "l40s")
            return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

        pod = await wait_for(running, 90, "a Running pod on a Karpenter node")
        node = await kube.get("v1", "Node", pod["spec"]["nodeName"])
        assert node is not None
        assert node["metadata"]["labels"]["karpenter.sh/nodepool"] == pool_name
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
        assert node["spec"]["providerID"].startswith("kwok://")
        # Karpenter's nodes have no podCIDR: kwok gives their pods addresses from its --cidr, loopback too.
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("127.1.128.0/17")
    finally:
        await kube.delete("apps/v1", "Deployment", "l40s", namespace)
        await kube.delete("karpenter.sh/v1", "NodePool", pool_name)


async def test_nodes_carry_the_labels_taints_and_capacity_of_real_gpu_nodes(kube: Kube) -> None:
    by_name = {n["metadata"]["name"]: n for n in await kube.list("v1", "Node")}
    h100, l4, cpu = by_name["h100-80gb-0"], by_name["l4-24gb-0"], by_name["cpu-0"]
    assert {k: v for k, v in h100["metadata"]["labels"].items() if "gpu" in k or "instance-type" in k} == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81559",
        "nvidia.com/gpu.family": "hopper",
        "node.kubernetes.io/instance-type": "p5.48xlarge",
        "karpenter.k8s.aws/instance-gpu-name": "h100",
        "karpenter.k8s.aws/instance-gpu-count": "8",
        "karpenter.k8s.aws/instance-gpu-memory": "81920",
        "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia",
    }
    assert l4["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert l4["metadata"]["labels"]["nvidia.com/gpu.memory"] == "23034"
    assert l4["metadata"]["labels"]["karpenter.k8s.aws/instance-gpu-memory"] == "22888"
    for node in (h100, l4):
        assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
        assert node["metadata"]["labels"]["topology.kubernetes.io/zone"]
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert l4["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    # The profile's capacity survives kwok's node-initialize stage (which fills an empty capacity with 1k CPUs).
    assert cpu["status"]["capacity"]["cpu"] == "32" and "nvidia.com/gpu" not in cpu["status"]["capacity"]
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in by_name.values() if n["spec"].get("podCIDR")]
    assert len(cidrs) >= 5 and all(c.subnet_of(ipaddress.ip_network("127.1.0.0/16")) for c in cidrs)
    assert len(set(cidrs)) == len(cidrs)


async def test_third_party_crds_the_operator_renders_against_are_established(kube: Kube) -> None:
    for name in (
        "nodepools.karpenter.sh",
        "nodeclaims.karpenter.sh",
        "kwoknodeclasses.karpenter.kwok.sh",
        "leaderworkersets.leaderworkerset.x-k8s.io",
        "scaledobjects.keda.sh",
        "servicemonitors.monitoring.coreos.com",
    ):
        crd = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        assert crd is not None, name
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True", name
