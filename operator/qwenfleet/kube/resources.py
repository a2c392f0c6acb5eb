"""Where each kind lives in the API: the static REST mapping for the kinds qwenfleet reads and writes."""

from __future__ import annotations

from dataclasses import dataclass

from qwenfleet.api.base import API_VERSION


@dataclass(frozen=True)
class Resource:
    """An API resource: group/version, plural and scope."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path of the collection, or of one object (and one of its subresources)."""
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


_KNOWN = (
    Resource("v1", "Pod", "pods"),
    Resource("v1", "Service", "services"),
    Resource("v1", "Secret", "secrets"),
    Resource("v1", "ConfigMap", "configmaps"),
    Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Resource("v1", "PersistentVolume", "persistentvolumes", namespaced=False),
    Resource("v1", "Event", "events"),
    Resource("v1", "Namespace", "namespaces", namespaced=False),
    Resource("v1", "Node", "nodes", namespaced=False),
    Resource("v1", "ServiceAccount", "serviceaccounts"),
    Resource("apps/v1", "Deployment", "deployments"),
    Resource("batch/v1", "Job", "jobs"),
    Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Resource("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    Resource("coordination.k8s.io/v1", "Lease", "leases"),
    Resource("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
    Resource("karpenter.sh/v1", "NodePool", "nodepools", namespaced=False),
    Resource("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    Resource("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    Resource("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
    Resource("gateway.networking.k8s.io/v1", "Gateway", "gateways"),
    Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    Resource("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False),
    Resource(API_VERSION, "Qwen3Deployment", "qwen3deployments"),
    Resource(API_VERSION, "Qwen3Router", "qwen3routers"),
)
RESOURCES: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _KNOWN}


def resource_of(api_version: str, kind: str) -> Resource:
    """The resource of a known kind; KeyError for kinds qwenfleet never touches."""
    return RESOURCES[(api_version, kind)]
