"""`qwenfleet dev up --demo`: the demo fleet on Karpenter NodePools with --karpenter, and flag combinations
that could never bring the demo up refused before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from qwenfleet import cli
from qwenfleet.api import Qwen3Deployment
from qwenfleet.catalog import get_gpu
from qwenfleet.devcluster import build, demo, nodes
from qwenfleet.devcluster import cli as dev_cli
from qwenfleet.devcluster.cluster import DevCluster, State


def _deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Qwen3Deployment"]


def test_the_plain_demo_selects_existing_gpu_nodes() -> None:
    docs = demo.fleet()
    assert len(_deployments(docs)) == 3 and {d["kind"] for d in docs} == {"Qwen3Deployment", "Qwen3Router"}
    for doc in _deployments(docs):
        pool = Qwen3Deployment.model_validate(doc).spec.node_pool
        assert pool is None or pool.provisioner == "none"


def test_with_karpenter_every_demo_size_gets_a_pool_on_the_kwok_node_class() -> None:
    docs = demo.fleet(karpenter=True)
    assert [d["metadata"]["name"] for d in docs] == [d["metadata"]["name"] for d in demo.fleet()]
    for doc in _deployments(docs):
        pool = Qwen3Deployment.model_validate(doc).spec.node_pool  # the API's own rules accept it
        assert pool is not None and pool.provisioner == "karpenter"
        assert pool.node_class_ref is not None and pool.shared_pool_name is None
        assert pool.node_class_ref.model_dump(by_alias=True) == demo.KWOK_NODE_CLASS
    # the router is left as it is, and the demo file itself is not changed for the default path
    (router,) = [d for d in docs if d["kind"] == "Qwen3Router"]
    assert "nodePool" not in router["spec"]
    assert all("nodePool" not in d["spec"] for d in demo.fleet())


def test_the_demo_node_class_is_the_one_the_dev_cluster_creates(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path, karpenter=True)
    cluster.state = State(str(tmp_path), str(cluster.kubeconfig), "https://127.0.0.1:1")
    applied: list[dict[str, Any]] = []
    spawned: list[str] = []
    cluster.apply = applied.extend  # type: ignore[method-assign]
    cluster._spawn = lambda name, *a, **k: spawned.append(name)  # type: ignore[method-assign]
    cluster._start_karpenter()
    assert spawned == ["karpenter"]
    classes = [d for d in applied if d["kind"] == demo.KWOK_NODE_CLASS["kind"]]
    assert [c["apiVersion"].split("/")[0] for c in classes] == [demo.KWOK_NODE_CLASS["group"]]
    assert [c["metadata"]["name"] for c in classes] == [demo.KWOK_NODE_CLASS["name"]]


def test_karpenter_offers_an_instance_type_for_every_demo_gpu() -> None:
    offered = {(t["name"], k) for t in nodes.karpenter_instance_types() for k in t["resources"] if "gpu" in k}
    for doc in _deployments(demo.fleet(karpenter=True)):
        gpu = get_gpu(doc["spec"]["gpu"])
        assert any((name, gpu.resource_name) in offered for name in gpu.instance_types.values()), doc["spec"]["gpu"]


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["dev", "up", *argv])


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--demo", "--no-operator"], "--demo needs the operator"),
        (["--demo", "--profile=karpenter"], "'karpenter' profile has none: add --karpenter"),
    ],
)
def test_up_refuses_a_demo_that_could_never_be_ready_at_once(
    argv: list[str], reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_build(*a: object, **k: object) -> Path:
        raise AssertionError("refused flags must not build or start anything")

    monkeypatch.setattr(build, "build", no_build)
    assert dev_cli.up_refusal(_args(*argv)) is not None
    assert cli.main(["dev", "up", *argv, f"--run-dir={tmp_path / 'dev'}"]) == 2
    assert reason in capsys.readouterr().out
    assert not (tmp_path / "dev").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--demo"],
        ["--demo", "--karpenter"],
        ["--demo", "--karpenter", "--profile=karpenter"],
        ["--demo", "--profile=large"],
        ["--profile=karpenter", "--no-operator"],
        ["--karpenter"],
    ],
)
def test_up_accepts_flags_that_can_work(argv: list[str]) -> None:
    assert dev_cli.up_refusal(_args(*argv)) is None
