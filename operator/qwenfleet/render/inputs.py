"""What the renderers are given: the owner, its validated spec, the plan and the reconcile's decisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.api.plan import Plan
from qwenfleet.catalog import GPUSpec, get_gpu
from qwenfleet.render.names import COMPILE_CACHE_DIR, MODEL_DIR, cache_pvc_name, labels


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the children (for owner references and names)."""

    name: str
    namespace: str
    uid: str
    kind: str = "Qwen3Deployment"
    api_version: str = "qwenfleet.dev/v1alpha1"

    def reference(self) -> dict[str, object]:
        """A controller owner reference to this object."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Capabilities:
    """What the cluster offers, discovered by the shell once and passed in."""

    service_monitor: bool = False
    karpenter: bool = False
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    monitoring_namespace: str = "monitoring"


@dataclass(frozen=True)
class DeploymentInput:
    """Everything needed to render a Qwen3Deployment's children."""

    owner: Owner
    spec: Qwen3DeploymentSpec
    plan: Plan
    replicas: int
    cache_ready: bool = True
    capabilities: Capabilities = field(default_factory=Capabilities)

    @property
    def gpu(self) -> GPUSpec:
        """The catalog entry of the GPU type."""
        return get_gpu(self.spec.gpu)

    @property
    def cache_enabled(self) -> bool:
        """True when one Job fills a shared PVC that the pods read."""
        return self.spec.caches_weights

    @property
    def user_pvc(self) -> str | None:
        """The user's own weights PVC, if the weights come from one."""
        weights = self.spec.weights
        return weights.pvc.claim_name if weights and weights.pvc else None

    @property
    def repo(self) -> str:
        """The Hugging Face repository the weights come from."""
        hf = self.spec.weights.hugging_face if self.spec.weights else None
        return hf.repo if hf and hf.repo else self.plan.repo

    @property
    def revision(self) -> str:
        """The revision of the repository."""
        hf = self.spec.weights.hugging_face if self.spec.weights else None
        return hf.revision if hf else "main"

    @property
    def model_path(self) -> str:
        """What `vllm serve` loads: a path in a mounted volume, or the repository id."""
        weights = self.spec.weights
        if weights and weights.pvc:
            return f"{MODEL_DIR}{weights.pvc.path}".rstrip("/") or MODEL_DIR
        if self.cache_enabled:
            return f"{MODEL_DIR}/{self.repo}"
        return self.repo

    @property
    def weights_volume_claim(self) -> str | None:
        """The PVC mounted read-only at /models, if any."""
        return self.user_pvc or self.cache_pvc

    @property
    def cache_pvc(self) -> str | None:
        """The cache PVC of this checkpoint (repository and revision), when the cache is on."""
        return cache_pvc_name(self.owner.name, self.repo, self.revision) if self.cache_enabled else None

    @property
    def compile_cache_dir(self) -> str | None:
        """VLLM_CACHE_ROOT on the weight cache volume, when the compile cache is kept there."""
        return COMPILE_CACHE_DIR if self.spec.cache and self.spec.cache.compiles_once else None

    @property
    def token_secret(self) -> tuple[str, str] | None:
        """(secret, key) of the Hugging Face token, if one is referenced."""
        hf = self.spec.weights.hugging_face if self.spec.weights else None
        ref = hf.token_secret_ref if hf else None
        return (ref.name, ref.key) if ref else None


def owned_metadata(inp: DeploymentInput, name: str, component: str) -> dict[str, object]:
    """Metadata of a namespaced child: our labels and a controller reference to the Qwen3Deployment."""
    return {
        "name": name,
        "namespace": inp.owner.namespace,
        "labels": labels(inp.owner.name, component),
        "ownerReferences": [inp.owner.reference()],
    }
