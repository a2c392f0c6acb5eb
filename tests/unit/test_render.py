"""Renderers: the children a Qwen3Deployment gets, checked field by field."""

from __future__ import annotations

import json
from typing import Any

from qwenfleet.api import Qwen3DeploymentSpec
from qwenfleet.catalog import Precision
from qwenfleet.controller.deployment import desired_replicas
from qwenfleet.planner import PlanRequest, plan, plan_request
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children
from qwenfleet.render.names import PLAN_ANNOTATION, bounded, nodepool_name
from qwenfleet.render.nodepool import gpu_limit

OWNER = Owner(name="qwen", namespace="team-a", uid="1234")


def _input(spec: dict[str, Any], replicas: int = 1, **kw: Any) -> DeploymentInput:
    parsed = Qwen3DeploymentSpec.model_validate(spec)
    return DeploymentInput(owner=OWNER, spec=parsed, plan=plan(plan_request(parsed)), replicas=replicas, **kw)


def _by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_single_node_model_gets_a_deployment_and_its_companions() -> None:
    children = desired_children(_input({"model": "Qwen3-30B-A3B", "gpu": "H100-80GB"}, replicas=2))
    kinds = [c["kind"] for c in children]
    assert kinds == ["Service", "PodDisruptionBudget", "NetworkPolicy", "Deployment"]
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "1234"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "qwenfleet"
    dep = _by_kind(children)["Deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = dep["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert vllm["args"][0] == "Qwen/Qwen3-30B-A3B" and "--port" in vllm["args"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert vllm["securityContext"]["runAsNonRoot"] and vllm["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert (
        vllm["startupProbe"]["failureThreshold"] * 10
        >= 2 * json.loads(dep["spec"]["template"]["metadata"]["annotations"][PLAN_ANNOTATION])["coldStartSeconds"]
    )
    assert vllm["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert all(e["name"] != "HF_TOKEN" for e in vllm["env"])


def test_hf_token_only_from_a_secret_reference() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB",
            "weights": {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "token"}}}}  # fmt: skip
    dep = _by_kind(desired_children(_input(spec)))["Deployment"]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}


def test_multi_node_replica_gets_a_leader_worker_set() -> None:
    children = _by_kind(desired_children(_input({"model": "Qwen3-235B-A22B", "gpu": "A100-40GB"})))
    assert "Deployment" not in children
    lws = children["LeaderWorkerSet"]
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert "--pipeline-parallel-size 2" in leader["args"][0] and "leader" in leader["args"][0]
    assert "LWS_LEADER_ADDRESS" in worker["args"][0] and "readinessProbe" not in worker
    assert leader["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert children["Service"]["spec"]["selector"]["qwenfleet.dev/role"] == "leader"


def test_model_cache_renders_pvc_and_one_job_and_gates_pods() -> None:
    spec = {"model": "Qwen3-235B-A22B", "gpu": "H100-80GB", "precision": "fp8",
            "cache": {"mode": "pvc", "storageClassName": "fast"}}  # fmt: skip
    children = _by_kind(desired_children(_input(spec, replicas=0, cache_ready=False)))
    pvc, job = children["PersistentVolumeClaim"], children["Job"]
    assert pvc["spec"]["storageClassName"] == "fast" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert int(pvc["spec"]["resources"]["requests"]["storage"].removesuffix("Gi")) >= 236
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["activeDeadlineSeconds"] >= 3600
    assert "hf download Qwen/Qwen3-235B-A22B-FP8" in job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    dep = children["Deployment"]
    assert dep["spec"]["replicas"] == 0
    vllm = dep["spec"]["template"]["spec"]["containers"][0]
    assert vllm["args"][0] == "/models/Qwen/Qwen3-235B-A22B-FP8"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in vllm["env"]
    # vLLM's compile cache sits on the same volume, writable; the weights' own mount stays read-only
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "weights", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"], "readOnly": False}} in (
        pod["volumes"]
    )
    assert {"name": "weights", "mountPath": "/models", "readOnly": True} in vllm["volumeMounts"]
    assert {"name": "weights", "mountPath": "/cache-rw"} in vllm["volumeMounts"]
    assert {"name": "VLLM_CACHE_ROOT", "value": "/cache-rw/.vllm"} in vllm["env"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"  # no chown of 236 GB per start
    planned = json.loads(dep["spec"]["template"]["metadata"]["annotations"][PLAN_ANNOTATION])
    assert (
        planned["coldStartSeconds"]
        < plan(PlanRequest("Qwen3-235B-A22B", "H100-80GB", Precision.FP8)).cold_start_seconds
    )


def test_without_a_writable_cache_nothing_writes_to_the_weights() -> None:
    for cache in ({"mode": "pvc", "accessMode": "ReadOnlyMany"}, {"mode": "pvc", "compileCache": False}):
        spec = {"model": "Qwen3-8B", "gpu": "L4-24GB", "cache": cache}
        pod = _by_kind(desired_children(_input(spec)))["Deployment"]["spec"]["template"]["spec"]
        assert pod["volumes"][-1]["persistentVolumeClaim"]["readOnly"] is True
        assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "weights"] == ["/models"]
        assert all(e["name"] != "VLLM_CACHE_ROOT" for e in pod["containers"][0]["env"])


def test_user_pvc_is_mounted_read_only_and_never_rendered() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB", "weights": {"pvc": {"claimName": "mine", "path": "/qwen3-8b"}}}
    children = desired_children(_input(spec))
    assert all(c["kind"] != "PersistentVolumeClaim" for c in children)
    pod = _by_kind(children)["Deployment"]["spec"]["template"]["spec"]
    assert {"name": "weights", "persistentVolumeClaim": {"claimName": "mine", "readOnly": True}} in pod["volumes"]
    assert pod["containers"][0]["args"][0] == "/models/qwen3-8b"


def test_karpenter_nodepool() -> None:
    node_class = {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    spec = {"model": "Qwen3-235B-A22B", "gpu": "H100-80GB", "precision": "fp8",
            "autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 3},
            "nodePool": {"provisioner": "karpenter", "nodeClassRef": node_class}}  # fmt: skip
    children = _by_kind(desired_children(_input(spec)))
    pool = children["NodePool"]
    assert pool["metadata"]["name"] == nodepool_name("team-a", "qwen") and "ownerReferences" not in pool["metadata"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "16"}  # 3 replicas x 4 GPUs on whole 8-GPU nodes
    reqs = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert reqs["node.kubernetes.io/instance-type"] == ["p5.48xlarge"]
    assert pool["spec"]["template"]["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]
    pod = children["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["karpenter.sh/nodepool"] == pool["metadata"]["name"]


def test_gpu_limit_rounds_up_to_whole_nodes() -> None:
    assert gpu_limit(2, [1, 8]) == 8
    assert gpu_limit(16, [8]) == 16
    assert gpu_limit(1, [1]) == 1


def test_keda_scaled_object_targets_the_custom_resource() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB", "autoscaling": {"mode": "keda", "maxReplicas": 5}}
    scaled = _by_kind(desired_children(_input(spec)))["ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "qwenfleet.dev/v1alpha1", "kind": "Qwen3Deployment",
                                                "name": "qwen"}  # fmt: skip
    assert "vllm:num_requests_waiting" in scaled["spec"]["triggers"][0]["metadata"]["query"]


def test_service_monitor_only_when_the_crd_exists() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB"}
    assert "ServiceMonitor" not in _by_kind(desired_children(_input(spec)))
    caps = Capabilities(service_monitor=True)
    assert "ServiceMonitor" in _by_kind(desired_children(_input(spec, capabilities=caps)))


def test_extra_args_are_appended_after_planner_args() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB", "overrides": {"extraArgs": [{"name": "--enable-prefix-caching"}]}}
    args = _by_kind(desired_children(_input(spec)))["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--enable-prefix-caching"


def test_replica_writer_per_mode() -> None:
    none = Qwen3DeploymentSpec.model_validate({"model": "Qwen3-8B", "gpu": "L4-24GB", "replicas": 3})
    assert desired_replicas(none, {}) == 3
    builtin = Qwen3DeploymentSpec.model_validate(
        {"model": "Qwen3-8B", "gpu": "L4-24GB", "autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 4}}
    )
    assert desired_replicas(builtin, {}) == 0
    assert desired_replicas(builtin, {"autoscaler": {"desiredReplicas": 9}}) == 4
    assert desired_replicas(builtin, {"autoscaler": {"desiredReplicas": 2}}) == 2


def test_long_names_are_bounded() -> None:
    long = "x" * 80
    assert len(bounded(long)) == 63 and bounded(long) != bounded(long + "y")


def test_network_policy_admits_only_routers_gateways_monitoring_and_the_operator_on_the_serving_port() -> None:
    single = _by_kind(desired_children(_input({"model": "Qwen3-0.6B", "gpu": "L4-24GB"})))["NetworkPolicy"]["spec"]
    assert single["policyTypes"] == ["Ingress"]
    assert single["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "model-server"
    [rule] = single["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    peers = [json.dumps(p, sort_keys=True) for p in rule["from"]]
    assert len(peers) == 4 and any('component": "router"' in p for p in peers)
    assert any('"qwenfleet.dev/inference-gateway": "true"' in p for p in peers)  # gateways' pods, by label
    assert any('component": "operator"' in p and 'name": "qwenfleet"' in p for p in peers)  # the chart's labels
    assert all("ipBlock" not in p for p in peers) and all(p != "{}" for p in peers)  # never everyone
    multi = _by_kind(desired_children(_input({"model": "Qwen3-235B-A22B", "gpu": "A100-40GB"})))["NetworkPolicy"]
    assert len(multi["spec"]["ingress"]) == 2  # plus the replica's own group (Ray, NCCL) on any port


def test_each_checkpoint_gets_its_own_cache() -> None:
    base = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "cache": {"mode": "pvc"}}
    variants = [base, base | {"precision": "fp8"}, base | {"model": "Qwen3-14B"},
                base | {"weights": {"huggingFace": {"revision": "abc123"}}}]  # fmt: skip
    names = set()
    for spec in variants:
        children = _by_kind(desired_children(_input(spec, cache_ready=True)))
        pvc = children["PersistentVolumeClaim"]["metadata"]["name"]
        job = children["Job"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        pod = children["Deployment"]["spec"]["template"]["spec"]
        claim = next(v for v in pod["volumes"] if v["name"] == "weights")["persistentVolumeClaim"]["claimName"]
        assert pvc == job == claim
        names.add(pvc)
    assert len(names) == len(variants), "precision, model and revision each have their own cache"
    again = _by_kind(desired_children(_input(base | {"gpu": "H100-80GB"})))["PersistentVolumeClaim"]
    assert again["metadata"]["name"] in names, "the same checkpoint on another GPU reuses its cache"


def test_a_shared_pool_is_selected_but_never_rendered() -> None:
    spec = {"model": "Qwen3-8B", "gpu": "L4-24GB", "nodePool": {"provisioner": "karpenter", "sharedPoolName": "gpus"}}
    children = _by_kind(desired_children(_input(spec)))
    assert "NodePool" not in children
    assert children["Deployment"]["spec"]["template"]["spec"]["nodeSelector"]["karpenter.sh/nodepool"] == "gpus"


def test_the_workload_kind_is_the_plans() -> None:
    multi = _input({"model": "Qwen3-235B-A22B", "gpu": "A100-40GB"})
    single = _input({"model": "Qwen3-8B", "gpu": "L4-24GB"})
    assert multi.plan.workload_kind == "LeaderWorkerSet" and single.plan.workload_kind == "Deployment"
    assert desired_children(multi)[-1]["kind"] == "LeaderWorkerSet"
    assert desired_children(single)[-1]["kind"] == "Deployment"
