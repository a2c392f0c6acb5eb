"""End-to-end fixtures: one real control plane per test run, a fresh namespace per test, the operator.

Set QWENFLEET_TEST_KUBECONFIG to run against another cluster (kind, a real one) instead of starting one.
If no cluster can be had, the tests fail with the reason; they never skip silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qwenfleet.devcluster import build
from qwenfleet.devcluster.cluster import DevCluster
from qwenfleet.kube import Kube, make_api_client
from tests.e2e.operator_proc import OperatorProcess


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster | None]:
    """The dev cluster started for this run (None with QWENFLEET_TEST_KUBECONFIG)."""
    if os.environ.get("QWENFLEET_TEST_KUBECONFIG"):
        yield None
        return
    try:
        build.build()
        cluster = DevCluster(tmp_path_factory.mktemp("devcluster"), profile="default", karpenter=True, time_scale=10.0)
        cluster.start()
    except Exception as exc:
        pytest.fail(f"no cluster for the end-to-end tests: {exc} (set QWENFLEET_TEST_KUBECONFIG to use another)")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(dev_cluster: DevCluster | None) -> Path:
    """The cluster under test: QWENFLEET_TEST_KUBECONFIG, or a dev cluster started for this run."""
    external = os.environ.get("QWENFLEET_TEST_KUBECONFIG")
    if external:
        return Path(external)
    assert dev_cluster is not None
    return dev_cluster.kubeconfig


@pytest.fixture(scope="session")
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    """An API client (the operator's own wrapper) for the cluster under test."""
    client = Kube(await make_api_client(str(kubeconfig)))
    yield client
    await client.close()


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    """A fresh namespace, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await kube.delete("v1", "Namespace", name)


@pytest.fixture(scope="session")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """`qwenfleet run --all-namespaces` against the cluster under test, for the whole run."""
    proc = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def session_operator_paused(operator: OperatorProcess) -> Iterator[None]:
    """Stop the suite's cluster-wide operator so only the ones under test reconcile; restart it afterwards."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()
