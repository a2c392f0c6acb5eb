"""`qwenfleet dev up/status/down` as a user runs them: a second, small cluster that must leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwenfleet.devcluster import build
from qwenfleet.devcluster.processes import leftovers

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
