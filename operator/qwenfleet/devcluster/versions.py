"""Pinned versions of the local control plane and where its build and run state live."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"
RECIPE_VERSION = "3"
"""Bump when the cache layout changes; the build steps and data lists are part of the stamp already."""

KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
KARPENTER = "v1.14.1"
GO = "go1.26.8"


@dataclass(frozen=True)
class ThirdPartyCRDs:
    """CRD files taken from a Go module's source in the module cache (never committed)."""

    module: str
    version: str
    files: tuple[str, ...]


THIRD_PARTY_CRDS = (
    ThirdPartyCRDs(
        "sigs.k8s.io/karpenter",
        KARPENTER,
        (
            "pkg/apis/crds/karpenter.sh_nodepools.yaml",
            "pkg/apis/crds/karpenter.sh_nodeclaims.yaml",
            "pkg/apis/crds/karpenter.sh_nodeoverlays.yaml",
            "kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml",
        ),
    ),
    # v0.10.0's module zip is not served by the proxy; v0.9.0 has the same leaderworkerset.x-k8s.io/v1 API.
    ThirdPartyCRDs("sigs.k8s.io/lws", "v0.9.0", ("config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml",)),
    ThirdPartyCRDs("github.com/kedacore/keda/v2", "v2.21.0", ("config/crd/bases/keda.sh_scaledobjects.yaml",)),
    # Inference gateways: the InferencePool a Qwen3Router with an Endpoint Picker renders per backend, and the
    # Gateway API kinds its example Gateway and HTTPRoute use.
    ThirdPartyCRDs(
        "sigs.k8s.io/gateway-api-inference-extension",
        "v1.6.0",
        ("config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",),
    ),
    ThirdPartyCRDs(
        "sigs.k8s.io/gateway-api",
        "v1.6.3",
        (
            "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml",
            "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
            "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
        ),
    ),
    ThirdPartyCRDs(
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",),
    ),
)

KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/qwenfleet` (default `~/.cache/qwenfleet`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwenfleet"


def state_root() -> Path:
    """`$XDG_STATE_HOME/qwenfleet` (default `~/.local/state/qwenfleet`): run directories of dev clusters."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "qwenfleet"


def bin_dir() -> Path:
    """The versioned directory the binaries are built into."""
    key = f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_karpenter-{KARPENTER}_{GO}"
    return cache_root() / "cp-bin" / key


def recipe_digest(recipe: str = "") -> str:
    """What the stamp must match: the wrapper modules' go.mod/go.sum files, the recipe version and `recipe`
    (the build steps, as the builder describes them)."""
    digest = hashlib.sha256(f"{RECIPE_VERSION}\n{recipe}\n{THIRD_PARTY_CRDS!r}\n{KWOK_STAGES!r}\n".encode())
    for path in sorted([*GOMOD_DIR.glob("*/go.mod"), *GOMOD_DIR.glob("*/go.sum")]):
        digest.update(f"{path.parent.name}/{path.name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
