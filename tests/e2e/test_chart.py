"""The Helm chart and the plain install on the real control plane: lint, apply, and the operator running with
the chart's own ServiceAccount token, which proves its RBAC is enough, and that it is no more than that."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.devcluster import install, tools
from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import _wait_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary built from its Go module (cached)."""
    return tools.ensure_helm()


def _kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True,
                          text=True, check=check, timeout=60)  # fmt: skip


def test_helm_lint_is_clean(helm: Path) -> None:
    cmd = [str(helm), "lint", "--strict", str(install.CHART)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout


def test_values_schema_rejects_two_replicas_without_leader_election(helm: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as bad:
        install.helm_template(helm, values=["replicaCount=2"])
    assert "leaderElection" in bad.value.stderr
    assert "--leader-election" in install.helm_template(helm, values=["replicaCount=2", "leaderElection.enabled=true"])


def test_the_slo_alerts_render_as_a_prometheus_rule_with_their_selector_labels(helm: Path) -> None:
    assert "PrometheusRule" not in install.helm_template(helm)  # off by default: it needs the CRD
    on = ["metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=kube-prometheus-stack"]
    rendered = install.helm_template(helm, values=on)
    rule = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # the rules file verbatim: Helm must not template Prometheus's own {{ $labels.* }}
    assert rule["spec"] == yaml.safe_load((install.CHART / "files" / "slo-alerts.yaml").read_text())
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert all("{{ $labels.deployment }}" in a["annotations"]["summary"] for a in alerts)


def test_install_manifests_match_the_chart(helm: Path) -> None:
    committed = (install.INSTALL / "qwenfleet.yaml").read_text()
    assert committed == install.render_install(helm), "manifests/install drifted from the chart: make manifests"


def test_kustomize_install_is_accepted_by_the_api_server(kubeconfig: Path) -> None:
    built = _kubectl(kubeconfig, "kustomize", str(install.INSTALL)).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built) if d)
    assert kinds.count("CustomResourceDefinition") == 2 and "Deployment" in kinds and "ClusterRole" in kinds
    try:
        _kubectl(kubeconfig, "apply", "--server-side", "--field-manager=qwenfleet-test", "-f", "-", stdin=built)
        status = _kubectl(kubeconfig, "-n", install.NAMESPACE, "get", "deployment", install.RELEASE, "-o", "name")
        assert status.stdout.strip() == f"deployment.apps/{install.RELEASE}"
    finally:  # everything but the CRDs, which the rest of the suite uses
        others = [d for d in yaml.safe_load_all(built) if d and d["kind"] != "CustomResourceDefinition"]
        _kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
                 stdin=yaml.safe_dump_all(others), check=False)  # fmt: skip


@pytest.fixture
async def release(kube: Kube, kubeconfig: Path, helm: Path) -> AsyncIterator[dict[str, str]]:
    """The chart installed (rendered and server-side applied) in a namespace labelled Pod Security restricted,
    watching one other namespace; removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    names = {"release": f"qf-{suffix}", "system": f"qf-system-{suffix}", "work": f"qf-work-{suffix}"}
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    for ns in (names["system"], names["work"]):
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": restricted}})
    rendered = install.helm_template(helm, release=names["release"], namespace=names["system"],
                                     values=[f"watchNamespaces={{{names['work']}}}"], include_crds=True)  # fmt: skip
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "--field-manager=helm", "-f", "-",
             stdin=rendered)  # fmt: skip
    names["sa"] = f"{names['release']}-qwenfleet"
    try:
        yield names
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            _kubectl(kubeconfig, "delete", kind, names["sa"], "--ignore-not-found", check=False)
        for ns in (names["work"], names["system"]):
            await kube.delete("v1", "Namespace", ns)


def _token_kubeconfig(kubeconfig: Path, namespace: str, sa: str, out: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
    token = _kubectl(kubeconfig, "-n", namespace, "create", "token", sa, "--duration=1h").stdout.strip()
    admin: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "dev", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "dev", "user": "sa"}}],
    }))  # fmt: skip
    return out


async def test_operator_runs_with_the_charts_service_account(
    kube: Kube, kubeconfig: Path, release: dict[str, str], session_operator_paused: None, tmp_path: Path
) -> None:
    system, work = release["system"], release["work"]

    async def admitted() -> bool:
        dep = await kube.get("apps/v1", "Deployment", release["sa"], system)
        return bool(dep and (dep.get("status") or {}).get("availableReplicas") == 1)

    await wait_for(admitted, 60, "the chart's operator Deployment available under Pod Security restricted")

    token_config = _token_kubeconfig(kubeconfig, system, release["sa"], tmp_path / "sa.kubeconfig")
    proc = OperatorProcess(token_config, tmp_path, args=(f"--namespace={work}",))
    proc.start()
    try:
        example = yaml.safe_load((ROOT / "manifests/examples/qwen3-0.6b-l4.yaml").read_text())
        example["metadata"]["namespace"] = work
        await kube.apply(example)
        await _wait_ready(kube, work, example["metadata"]["name"], timeout=120)
        await kube.delete("qwenfleet.dev/v1alpha1", "Qwen3Deployment", example["metadata"]["name"], work)

        async def gone() -> bool:
            return (
                await kube.get("qwenfleet.dev/v1alpha1", "Qwen3Deployment", example["metadata"]["name"], work) is None
            )

        await wait_for(gone, 60, "the deployment finalized by the ServiceAccount's operator")
    finally:
        proc.stop()
    log = proc.log_path.read_text()
    # a 403 anywhere but in a timestamp's milliseconds (",403 INFO")
    assert "Forbidden" not in log and not re.search(r"(?<![,\d])403\b", log), log[-3000:]

    # Outside the role: enumerating Secrets, reaching an unwatched namespace, granting itself more.
    denied = [
        ("get", "secrets", "-n", work),
        ("get", "pods", "-n", "default"),
        ("create", "clusterrolebinding", "escalate", "--clusterrole=cluster-admin", f"--serviceaccount={system}:x"),
        ("delete", "nodes", "--all"),
    ]
    for args in denied:
        result = _kubectl(token_config, *args, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (args, result.stderr)
