"""`qwenfleet dev up/status/down` as a user runs them: a second, small cluster that must leave nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from qwenfleet.devcluster import build, demo
from qwenfleet.devcluster.processes import leftovers
from qwenfleet.kube import Kube, make_api_client
from qwenfleet.render.names import nodepool_name

pytestmark = pytest.mark.e2e


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "qwenfleet.cli", "dev", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_up_status_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    build.build()
    run_dir = tmp_path / "dev"
    up = _dev("up", "--profile=karpenter", "--no-operator", f"--run-dir={run_dir}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export KUBECONFIG={run_dir / 'admin.kubeconfig'}" in up.stdout
        state = json.loads((run_dir / "state.json").read_text())
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} <= set(state["pids"])
        version = subprocess.run(
            ["kubectl", f"--kubeconfig={run_dir / 'admin.kubeconfig'}", "get", "--raw=/version"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert json.loads(version)["gitVersion"].startswith("v1.36.")
        status = _dev("status", f"--run-dir={run_dir}")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "nodes: 1 (1 Ready)" in status.stdout
        again = _dev("up", "--no-operator", f"--run-dir={run_dir}")
        assert again.returncode == 1 and "already running" in again.stdout
    finally:
        down = _dev("down", f"--run-dir={run_dir}")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process left" in down.stdout
    assert leftovers(run_dir, state["ports"]) == []
    assert _dev("status", f"--run-dir={run_dir}").returncode == 1


async def test_up_demo_with_karpenter_gets_its_gpu_nodes_from_karpenter(tmp_path: Path) -> None:
    """`dev up --demo --karpenter` starts with one CPU node and no GPU node: the demo's sizes must bring their
    own GPU nodes through Karpenter NodePools, become Ready, and serve through the router.

    Like every test here it runs a second cluster, so it relies on the suite's cluster having no model-server
    pods alive meanwhile (each test deletes its namespace) and on the e2e lock against other runs."""
    build.build()
    run_dir = tmp_path / "dev"
    cmd = [sys.executable, "-m", "qwenfleet.cli", "dev", "up", "--demo", "--karpenter", f"--run-dir={run_dir}"]
    try:
        up = subprocess.run(cmd, capture_output=True, text=True, timeout=420, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "The fleet is up" in up.stdout and "kubectl get nodepools,nodes" in up.stdout
        state = json.loads((run_dir / "state.json").read_text())
        assert state["profile"] == "karpenter" and "karpenter" in state["pids"]
        url = re.search(r"answers at (http://[0-9.:]+)/v1", up.stdout)
        assert url, up.stdout
        kube = Kube(await make_api_client(str(run_dir / "admin.kubeconfig")))
        try:
            await _check_demo_on_karpenter_nodes(kube, url[1])
        finally:
            await kube.close()
    finally:
        down = _dev("down", f"--run-dir={run_dir}")
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(run_dir, state["ports"]) == []


async def _check_demo_on_karpenter_nodes(kube: Kube, url: str) -> None:
    node_list = await kube.list("v1", "Node")
    by_name = {n["metadata"]["name"]: n for n in node_list}
    profile_nodes = [n for n in node_list if "karpenter.sh/nodepool" not in n["metadata"]["labels"]]
    assert [n["metadata"]["name"] for n in profile_nodes] == ["cpu-0"]  # the only node not from Karpenter
    pools = {p["metadata"]["name"] for p in await kube.list("karpenter.sh/v1", "NodePool")}
    sizes = {d["metadata"]["name"] for d in demo.fleet() if d["kind"] == "Qwen3Deployment"}
    assert pools == {nodepool_name("default", name) for name in sizes}
    pods = await kube.list("v1", "Pod", "default", label_selector="app.kubernetes.io/component=model-server")
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    # qwen3-large rests at zero replicas; the other two run at least one each
    assert {p["metadata"]["labels"]["qwenfleet.dev/deployment"] for p in running} >= sizes - {"qwen3-large"}
    for pod in running:
        node = by_name.get(pod["spec"]["nodeName"]) or await kube.get("v1", "Node", pod["spec"]["nodeName"])
        assert node is not None
        owner = pod["metadata"]["labels"]["qwenfleet.dev/deployment"]
        assert node["metadata"]["labels"]["karpenter.sh/nodepool"] == nodepool_name("default", owner)
        assert int(node["status"]["capacity"]["nvidia.com/gpu"]) >= 1
    body = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        assert "qwen3-small" in r.headers["x-qwenfleet-route"]
        assert (await r.json())["usage"]["completion_tokens"] >= 1
