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
from pathlib import Path

from qwenfleet.devcluster import versions
from qwenfleet.devcluster.build import BuildError, check_go, go_env

GOTOOLS_DIR = Path(__file__).resolve().parent / "gotools"
HELM = "v4.3.1"


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
