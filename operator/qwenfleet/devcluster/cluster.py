"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kwok (simulated nodes and pods), optionally Karpenter's kwok provider, and the LeaderWorkerSet stand-in."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qwenfleet.devcluster import build, nodes, pki, real_pods
from qwenfleet.devcluster.versions import bin_dir, state_root

REPO_CRDS = Path(__file__).resolve().parents[3] / "crds"
COMPONENT_ORDER = (
    "operator",
    "fleet-agent",
    "standins",
    "karpenter",
    "kwok",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


class ClusterError(RuntimeError):
    """The cluster could not be started; the message says which component and where its log is."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class State:
    """What `dev status` and `dev down` need from another process: pids, ports, paths."""

    run_dir: str
    kubeconfig: str
    server: str
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    karpenter: bool = False
    profile: str = "default"

    @classmethod
    def load(cls, run_dir: Path) -> State | None:
        """The state of the cluster in `run_dir`, if one was started there."""
        path = run_dir / "state.json"
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def save(self) -> None:
        """Write state.json into the run directory."""
        Path(self.run_dir, "state.json").write_text(json.dumps(asdict(self), indent=2))


def default_run_dir() -> Path:
    """Where `qwenfleet dev up` keeps certificates, data, logs and state."""
    return state_root() / "dev"


def alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


class DevCluster:
    """Start, use and stop one local control plane. Usable as a context manager."""

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        profile: str = "default",
        karpenter: bool = False,
        install_crds: bool = True,
        operator: bool = False,
        time_scale: float = 1.0,
        audit: bool = False,
    ) -> None:
        self.run_dir = (run_dir or default_run_dir()).resolve()
        self.profile = profile
        self.karpenter = karpenter
        self.install_crds = install_crds
        self.operator = operator
        self.time_scale = time_scale
        self.audit = audit
        self.bin = bin_dir()
        self.state: State | None = None

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.run_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        """The API server URL."""
        assert self.state is not None
        return self.state.server

    def __enter__(self) -> DevCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ start

    def start(self) -> State:
        """Start every component and wait until the cluster is usable."""
        if not build.is_warm(self.bin):
            raise ClusterError(f"control-plane binaries are not built in {self.bin}: run `qwenfleet dev build`")
        if self.karpenter and not build.has_karpenter(self.bin):
            raise ClusterError("the Karpenter kwok provider did not build; start without --karpenter")
        previous = State.load(self.run_dir)
        if previous and any(alive(p) for p in previous.pids.values()):
            raise ClusterError(f"a dev cluster is already running from {self.run_dir}: `qwenfleet dev down` first")
        self._reset_run_dir()
        pki_dir = self.run_dir / "pki"
        pki.write_pki(pki_dir)
        ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        self.kubeconfig.write_text(pki.kubeconfig(pki_dir, server))
        self.state = State(str(self.run_dir), str(self.kubeconfig), server, ports=ports,
                           karpenter=self.karpenter, profile=self.profile)  # fmt: skip
        try:
            self._spawn("etcd", self._etcd_args(ports))
            self._spawn("kube-apiserver", self._apiserver_args(ports, pki_dir))
            self._wait_http(f"{server}/readyz", "kube-apiserver", 60)
            self._spawn("kube-controller-manager", self._kcm_args(ports, pki_dir))
            self._spawn("kube-scheduler", self._scheduler_args(ports))
            self._spawn("kwok", self._kwok_args(ports))
            self._install_crds()
            self._create_storage_class()
            self._create_nodes()
            if self.karpenter:
                self._start_karpenter()
            standins = [sys.executable, "-m", "qwenfleet.devcluster.standins", f"--kubeconfig={self.kubeconfig}",
                        f"--storage-root={self.run_dir / 'volumes'}"]  # fmt: skip
            self._spawn("standins", standins, binary=False)
            agent = [sys.executable, "-m", "qwenfleet.devcluster.fleet_agent", f"--kubeconfig={self.kubeconfig}",
                     f"--time-scale={self.time_scale}", f"--log-dir={self.run_dir / 'logs' / 'engines'}"]  # fmt: skip
            self._spawn("fleet-agent", agent, binary=False)
            if self.operator:
                run = [sys.executable, "-m", "qwenfleet.cli", "run", "--all-namespaces",
                       f"--kubeconfig={self.kubeconfig}", "--metrics-port=0", "--health-port=0"]  # fmt: skip
                self._spawn("operator", run, binary=False)
            self._wait_nodes_ready()
        except BaseException:
            self.stop()
            raise
        return self.state

    def restart_apiserver(self, down_seconds: float = 0.0) -> None:
        """Kill the API server (SIGKILL), keep it down for `down_seconds`, start it again and wait until ready."""
        assert self.state is not None
        pid = self.state.pids["kube-apiserver"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(down_seconds)
        self._spawn("kube-apiserver", self._apiserver_args(self.state.ports, self.run_dir / "pki"))
        self._wait_http(f"{self.state.server}/readyz", "kube-apiserver", 60)

    def _reset_run_dir(self) -> None:
        for sub in ("etcd", "logs", "pki"):
            path = self.run_dir / sub
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, args: list[str], *, binary: bool = True, env: dict[str, str] | None = None) -> None:
        assert self.state is not None
        cmd = [str(self.bin / args[0]), *args[1:]] if binary else args
        log = (self.run_dir / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.run_dir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.state.pids[name] = proc.pid
        self.state.save()

    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        return ["etcd", f"--data-dir={self.run_dir / 'etcd'}", f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}", f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                "--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=8589934592"]  # fmt: skip

    def _apiserver_args(self, ports: dict[str, int], p: Path) -> list[str]:
        return [
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{ports['apiserver']}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/16",  # room for thousands of Services (bench-operator)
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",  # the kubernetes Endpoints would be 127.0.0.1, which validation rejects
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
            *self._audit_args(),
        ]

    @property
    def audit_log(self) -> Path:
        """Where the API server writes its audit log (with `audit=True`): every write request, as JSON lines."""
        return self.run_dir / "audit.log"

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.run_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
                      {"level": "None"}],
        }))  # fmt: skip
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s"]  # fmt: skip

    def _kcm_args(self, ports: dict[str, int], p: Path) -> list[str]:
        kc = str(self.kubeconfig)
        return ["kube-controller-manager", f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1", f"--secure-port={ports['kcm']}",
                "--leader-elect=false", f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}", "--use-service-account-credentials=false",
                "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-deployment-syncs=10", "--v=1"]  # fmt: skip

    def _scheduler_args(self, ports: dict[str, int]) -> list[str]:
        kc = str(self.kubeconfig)
        return ["kube-scheduler", f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}", "--leader-elect=false", "--v=1"]  # fmt: skip

    def _kwok_args(self, ports: dict[str, int]) -> list[str]:
        return ["kwok", f"--kubeconfig={self.kubeconfig}", f"--config={self.bin / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={nodes.pod_network()}.128.0/17", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}"]  # fmt: skip

    def _start_karpenter(self) -> None:
        assert self.state is not None
        types = self.run_dir / "instance-types.json"
        types.write_text(json.dumps(nodes.karpenter_instance_types(), indent=1))
        self.apply([{"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
                     "metadata": {"name": "default"}}])  # fmt: skip
        metrics, health = free_port(), free_port()
        self.state.ports |= {"karpenter-metrics": metrics, "karpenter-health": health}
        env = {"KUBECONFIG": str(self.kubeconfig), "DISABLE_LEADER_ELECTION": "true", "METRICS_PORT": str(metrics),
               "HEALTH_PROBE_PORT": str(health), "INSTANCE_TYPES_FILE_PATH": str(types),
               "BATCH_MAX_DURATION": "2s", "BATCH_IDLE_DURATION": "500ms", "LOG_LEVEL": "info"}  # fmt: skip
        self._spawn("karpenter", ["karpenter-kwok"], env=env)

    # ------------------------------------------------------------------------------------------ readiness

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.run_dir / "pki" / "ca.crt"))
        ctx.load_cert_chain(self.run_dir / "pki" / "admin.crt", self.run_dir / "pki" / "admin.key")
        return ctx

    def _wait_http(self, url: str, component: str, timeout: float) -> None:
        assert self.state is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, context=self._ssl(), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            pid = self.state.pids.get(component)
            if pid and not alive(pid):
                raise ClusterError(f"{component} exited; see {self.run_dir / 'logs' / (component + '.log')}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{component} not ready after {timeout:.0f}s; see {self.run_dir / 'logs'}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body: object = None, content_type: str = "application/json") -> Any:
        """One authenticated API call (used for setup; tests use the async client)."""
        assert self.state is not None
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.state.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, context=self._ssl(), timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        """Server-side apply manifests of the kinds setup needs (CRDs, nodes, cluster-scoped objects)."""
        for m in manifests:
            api = m["apiVersion"]
            base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
            plural = {"CustomResourceDefinition": "customresourcedefinitions", "Node": "nodes",
                      "KWOKNodeClass": "kwoknodeclasses", "StorageClass": "storageclasses"}[m["kind"]]  # fmt: skip
            path = f"{base}/{plural}/{m['metadata']['name']}?fieldManager=qwenfleet-dev&force=true"
            self.request("PATCH", path, m, "application/apply-patch+yaml")

    def _install_crds(self) -> None:
        files = sorted((self.bin / "crds").glob("*.yaml"))
        if self.install_crds:
            files += sorted(REPO_CRDS.glob("*.qwenfleet.dev.yaml"))
        crds = [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]
        self.apply(crds)
        deadline = time.monotonic() + 30
        for crd in crds:
            name = crd["metadata"]["name"]
            while True:
                obj = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
                if conds.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"CRD {name} not established")
                time.sleep(0.1)

    def _create_storage_class(self) -> None:
        self.apply([{
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "qwenfleet.dev/dev-hostpath",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }])  # fmt: skip

    def _create_nodes(self) -> None:
        # Created with their status in one request, as a kubelet registers: a node created first and given its
        # capacity afterwards races kwok's node-initialize stage, which fills an empty capacity with defaults.
        for manifest in nodes.profile_nodes(self.profile):
            self.request("POST", "/api/v1/nodes", manifest)

    def _wait_nodes_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            items = self.request("GET", "/api/v1/nodes").get("items", [])
            ready = [n for n in items if _node_ready(n)]
            expected = sum(group.count for group in nodes.PROFILES[self.profile])
            if len(ready) >= expected and len(ready) == len(items):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes not ready: {len(ready)}/{len(items)}; see {self.run_dir / 'logs/kwok.log'}")
            time.sleep(0.2)

    # ------------------------------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and make sure none is left."""
        state = self.state or State.load(self.run_dir)
        if state is None:
            return
        stop_state(state)
        self.state = None


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def stop_state(state: State, grace: float = 5.0) -> None:
    """Terminate the process groups recorded in `state`: clients first, then the API server, then etcd.

    Each tier gets SIGTERM and `grace` seconds, then SIGKILL. Stopping etcd together with the API server would
    leave the API server retrying etcd until it is killed; in tiers a warm `dev down` takes about a second.
    """
    servers = ("kube-apiserver", "etcd")
    clients = [c for c in COMPONENT_ORDER if c in state.pids and c not in servers]
    clients += [c for c in state.pids if c not in COMPONENT_ORDER]
    for tier in (clients, ["kube-apiserver"], ["etcd"]):
        pids = [state.pids[name] for name in tier if name in state.pids]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                _signal(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
            if not any(alive(p) for p in pids):
                break
        for pid in pids:  # whatever else runs in those process groups
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    real_pods.kill_leftovers(Path(state.run_dir) / "logs" / "engines")
    state.pids = {}
    state.save()


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
