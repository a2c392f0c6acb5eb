"""`qwenfleet dev build`: the control-plane binaries from Go modules, built once and cached by version."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from qwenfleet.devcluster import versions
from qwenfleet.devcluster.versions import GOMOD_DIR, KWOK_STAGES, THIRD_PARTY_CRDS, bin_dir, recipe_digest

STAMP = ".complete"
OPTIONAL_FAILED = "optional-failed.txt"
K8S_VERSION_KEYS = (
    "k8s.io/component-base/version",
    "k8s.io/client-go/pkg/version",
)


class BuildError(RuntimeError):
    """A required component failed to build; the message names it and the log."""


@dataclass(frozen=True)
class Step:
    """One `go build` in one wrapper module."""

    name: str
    module_dir: str
    packages: tuple[str, ...]
    output: str
    ldflags: str = "-s -w"
    tags: str = ""
    optional: bool = False


def _k8s_ldflags() -> str:
    v = versions.KUBERNETES
    minor = v.split(".")[1]
    flags = ["-s", "-w"]
    for key in K8S_VERSION_KEYS:
        flags += [f"-X {key}.gitVersion={v}", f"-X {key}.gitMajor=1", f"-X {key}.gitMinor={minor}"]
    flags += [
        "-X k8s.io/component-base/version.gitTreeState=clean",
        "-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z",
    ]
    return " ".join(flags)


STEPS = (
    Step("etcd", "etcd", ("go.etcd.io/etcd/server/v3",), "etcd"),
    Step(
        "kube-apiserver, kube-controller-manager, kube-scheduler",
        "k8s",
        tuple(f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")),
        "",
        _k8s_ldflags(),
        "selinux,notest,grpcnotrace",
    ),
    Step("kwok", "kwok", ("sigs.k8s.io/kwok/cmd/kwok",), "kwok"),
    Step(
        "karpenter kwok provider",
        "karpenter",
        ("sigs.k8s.io/karpenter/kwok",),
        "karpenter-kwok",
        f"-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version={versions.KARPENTER}",
        optional=True,
    ),
)


GO_ENV = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
"""Local toolchain only (a newer `go` line fails instead of downloading Go), committed go.sum only, static."""


def go_env() -> dict[str, str]:
    """The environment every Go command runs with."""
    return {**os.environ, **GO_ENV}


def _digest() -> str:
    return recipe_digest(repr((STEPS, GO_ENV)))


def is_warm(directory: Path | None = None) -> bool:
    """True when the cached binaries match the current recipe."""
    stamp = (directory or bin_dir()) / STAMP
    return stamp.exists() and stamp.read_text().strip() == _digest()


def check_go() -> None:
    """Fail with a clear message unless the `go` the cache key names is installed."""
    if shutil.which("go") is None:
        raise BuildError(f"Go is not installed: the control plane is built from Go modules ({versions.GO} needed)")
    found = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, env=go_env(), check=False)
    if found.stdout.strip() != versions.GO:
        raise BuildError(f"the cache key names {versions.GO} but `go` is {found.stdout.strip() or found.stderr}")


def _run_logged(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> int:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode


def _build_step(step: Step, out_dir: Path, log: Path) -> int:
    target = str(out_dir / step.output) if step.output else f"{out_dir}/"
    cmd = ["go", "build", "-trimpath", f"-ldflags={step.ldflags}", "-o", target]
    if step.tags:
        cmd.insert(3, f"-tags={step.tags}")
    return _run_logged([*cmd, *step.packages], GOMOD_DIR / step.module_dir, log, go_env())


def module_dir(module: str, version: str, log: Path) -> Path:
    """Download a module (source only, nothing built) and return its directory in the module cache."""
    env = {**go_env(), "GOFLAGS": "-mod=mod"}
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True, text=True, env=env, check=False, cwd=GOMOD_DIR / "kwok",
    )  # fmt: skip
    with log.open("a") as out:
        out.write(result.stdout + result.stderr)
    info = json.loads(result.stdout or "{}")
    if not info.get("Dir"):
        raise BuildError(f"cannot download {module}@{version}: {info.get('Error') or result.stderr.strip()}")
    return Path(info["Dir"])


def _collect_data(out_dir: Path, log: Path) -> None:
    """Third-party CRDs and kwok's stage definitions, copied next to the binaries so `dev up` needs no Go."""
    crds = out_dir / "crds"
    crds.mkdir()
    sources = []
    for spec in THIRD_PARTY_CRDS:
        src = module_dir(spec.module, spec.version, log)
        for rel in spec.files:
            shutil.copyfile(src / rel, crds / Path(rel).name)
            sources.append({"file": Path(rel).name, "module": f"{spec.module}@{spec.version}", "path": rel})
    (crds / "SOURCES.json").write_text(json.dumps(sources, indent=2))
    kwok_src = module_dir("sigs.k8s.io/kwok", versions.KWOK, log)
    stages = "\n---\n".join((kwok_src / rel).read_text().strip() for rel in KWOK_STAGES)
    (out_dir / "kwok-stages.yaml").write_text(stages + "\n")


class _Heartbeat:
    """A plain progress line every `every` seconds when stdout is not a terminal (CI logs show life)."""

    def __init__(self, what: str, every: float = 30.0) -> None:
        self.what, self.every = what, every
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print(f"  ... still building {self.what} ({time.monotonic() - self.started:.0f}s)", flush=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def build(force: bool = False, console: Console | None = None) -> Path:
    """Build every component into the versioned cache directory (nothing when warm) and return it.

    Concurrent callers (two test runs, `dev up` during a build) serialise on a lock file; the second one finds the
    cache warm when it gets the lock and builds nothing.
    """
    target = bin_dir()
    if is_warm(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".lock-{target.name}").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not is_warm(target):
            _build(target, console or Console())
    return target


def _build(target: Path, console: Console) -> None:
    check_go()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    log = target.parent / f"build-{target.name}.log"
    log.write_text("")
    console.print(f"Building the local control plane into {target} (log: {log})", soft_wrap=True)
    started = time.monotonic()
    failed_optional: list[str] = []
    interactive = sys.stdout.isatty()
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, disable=not interactive) as progress:  # fmt: skip
            for step in STEPS:
                task = progress.add_task(f"building {step.name}", total=None)
                if not interactive:
                    print(f"building {step.name} ...", flush=True)
                t0 = time.monotonic()
                with _Heartbeat(step.name) if not interactive else _NoHeartbeat():
                    code = _build_step(step, work, log)
                took = time.monotonic() - t0
                progress.update(task, description=f"{step.name}: {'ok' if code == 0 else 'FAILED'} ({took:.0f}s)")
                progress.stop_task(task)
                if not interactive:
                    print(f"  {step.name}: {'ok' if code == 0 else 'FAILED'} in {took:.0f}s", flush=True)
                if code != 0:
                    if not step.optional:
                        raise BuildError(f"building {step.name} failed; see {log}")
                    failed_optional.append(step.name)
            _collect_data(work, log)
        (work / OPTIONAL_FAILED).write_text("\n".join(failed_optional))
        (work / STAMP).write_text(_digest())
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        if target.exists():
            target.rename(old)  # two renames: the complete directory is missing for microseconds, never half-there
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    skipped = f" (optional, failed: {', '.join(failed_optional)})" if failed_optional else ""
    console.print(f"Control plane built in {time.monotonic() - started:.0f}s: {target}{skipped}", soft_wrap=True)


class _NoHeartbeat:
    def __enter__(self) -> _NoHeartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def has_karpenter(directory: Path | None = None) -> bool:
    """True when the optional Karpenter kwok provider was built."""
    return ((directory or bin_dir()) / "karpenter-kwok").exists()
