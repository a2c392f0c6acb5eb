"""What a stopped dev cluster may not leave behind: processes started in its run directory, bound ports."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

PORT_OWNERS = {
    "etcd": "etcd",
    "etcd-peer": "etcd",
    "apiserver": "kube-apiserver",
    "kcm": "kube-controller-manager",
    "scheduler": "kube-scheduler",
    "kwok": "kwok",
    "karpenter-metrics": "karpenter",
    "karpenter-health": "karpenter",
}
"""Which component listens on each port recorded in the state file."""


BINARIES = frozenset({"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "karpenter-kwok"})


def processes_in(run_dir: Path) -> dict[int, str]:
    """Live component processes of the cluster in `run_dir`, pid -> command line.

    Every component is started with `run_dir` as its working directory; a process there counts when it runs one
    of our binaries or names the run directory in its arguments (so a shell that merely sits there does not).
    """
    found: dict[int, str] = {}
    target = run_dir.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(proc / "cwd").resolve() != target:
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if Path(proc / "exe").resolve().name in BINARIES or str(target) in cmd:
                found[int(proc.name)] = cmd
    return found


def port_in_use(port: int) -> bool:
    """True when something listens on 127.0.0.1:`port` (a socket in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def leftovers(run_dir: Path, ports: dict[str, int]) -> list[str]:
    """Everything of a stopped cluster that is still there, described for a person (empty: all gone)."""
    left = [f"process {pid}: {cmd[:120]}" for pid, cmd in sorted(processes_in(run_dir).items())]
    left += [f"port {port} ({name}) still bound" for name, port in sorted(ports.items()) if port_in_use(port)]
    return left
