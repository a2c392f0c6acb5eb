"""What the operator knows of the cluster: kopf's indexes, read through one object.

kopf keeps an index per watched kind (controller/handlers.py registers them) and fills every one before the first
handler runs, so a restarted operator knows every child before its first reconcile pass. An index maps a key to a
store of values; these are the keys and values:

- `deployments`, `routers`: (namespace, name) -> the custom resource without managedFields;
- `pods`: (namespace, owner) -> a PodRecord per pod (model servers and routers);
- one per child kind: (namespace, name) -> the child's `observed_view`, and (OWNERS, namespace, owner) -> its name.

Here they are plain mappings of keys to collections, so the same reads work on dicts in the unit tests.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from qwenfleet.autoscale import checkpoint
from qwenfleet.kube.resources import RESOURCES
from qwenfleet.render.status import PodState

Obj = dict[str, Any]
Key = tuple[str, str]
Index = Mapping[Any, Collection[Any]]
OWNERS = "\x00owner"
"""First element of an index key that lists a deployment's children of one kind by name."""
OWNED = {"app.kubernetes.io/managed-by": "qwenfleet"}
OWNED_SELECTOR = ",".join(f"{k}={v}" for k, v in OWNED.items())
COMPONENT = "app.kubernetes.io/component"
POD_SELECTOR = f"{OWNED_SELECTOR},{COMPONENT} in (model-server,router)"
"""The pods the operator reads: model servers (status, autoscaler, cost) and routers (cost)."""
CHILD_SELECTOR = f"{OWNED_SELECTOR},{COMPONENT}!={checkpoint.COMPONENT}"
"""The children the indexes keep: all we made, but for the autoscaler's checkpoints (read once, never watched)."""
CUSTOM_RESOURCES = (("qwenfleet.dev", "v1alpha1", "qwen3deployments"), ("qwenfleet.dev", "v1alpha1", "qwen3routers"))
CHILD_RESOURCES = (
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("apps", "v1", "deployments"),
    ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
    ("", "v1", "services"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("batch", "v1", "jobs"),
    ("", "v1", "persistentvolumeclaims"),
    ("monitoring.coreos.com", "v1", "servicemonitors"),
    ("keda.sh", "v1alpha1", "scaledobjects"),
    ("inference.networking.k8s.io", "v1", "inferencepools"),
    ("karpenter.sh", "v1", "nodepools"),  # cluster-scoped
)
"""Every kind of child, watched through kopf: those of an optional CRD from the moment it is installed."""
CHILD_KINDS = tuple(
    (r.api_version, r.kind)
    for group, version, plural in CHILD_RESOURCES
    for r in RESOURCES.values()
    if r.api_version == (f"{group}/{version}" if group else version) and r.plural == plural
)
"""(apiVersion, kind) of each child resource above, in the same order."""
BUILTIN_GROUPS = frozenset({"", "apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"})
OPTIONAL_CRDS = {
    f"{plural}.{group}": kind
    for (group, _, plural), (_, kind) in zip(CHILD_RESOURCES, CHILD_KINDS, strict=True)
    if group not in BUILTIN_GROUPS
}
"""CRD name -> kind, for the child kinds that come with an optional CRD."""
CRD_OF_KIND = {kind: crd for crd, kind in OPTIONAL_CRDS.items()}


def child_index_id(plural: str) -> str:
    """The kopf index (and handler id) of one child kind."""
    return f"child_{plural}"


@dataclass(frozen=True)
class PodRecord:
    """What the operator keeps of one of our pods: its state (model servers) and what the cost loop reads."""

    name: str
    component: str
    state: PodState | None
    slim: Obj


def _one(index: Index | None, key: Any) -> Any:
    store = index.get(key) if index is not None else None
    return next(iter(store), None) if store else None


@dataclass
class Indexes:
    """kopf's indexes (bound at start-up), and which optional CRDs are installed: the operator's cache."""

    deployments: Index | None = None
    routers: Index | None = None
    pods: Index | None = None
    children: dict[str, Index] = field(default_factory=dict)
    """kind -> its index."""
    installed: set[str] = field(default_factory=set)
    """Names of the optional CRDs installed (OPTIONAL_CRDS)."""

    def bind(self, indices: Mapping[str, Any]) -> None:
        """Take kopf's indexes from the keyword arguments of a handler."""
        self.deployments = indices["deployments"]
        self.routers = indices["routers"]
        self.pods = indices["pods"]
        for (_, _, plural), (_, kind) in zip(CHILD_RESOURCES, CHILD_KINDS, strict=True):
            self.children[kind] = indices[child_index_id(plural)]

    # -- the custom resources ---------------------------------------------------------------------------------

    def deployment(self, namespace: str, name: str) -> Obj | None:
        """A Qwen3Deployment as last watched, or None."""
        return _one(self.deployments, (namespace, name))  # type: ignore[no-any-return]

    def router(self, namespace: str, name: str) -> Obj | None:
        """A Qwen3Router as last watched, or None."""
        return _one(self.routers, (namespace, name))  # type: ignore[no-any-return]

    def all_deployments(self) -> Iterator[Obj]:
        """Every Qwen3Deployment watched."""
        for store in (self.deployments or {}).values():
            yield from store

    def all_routers(self) -> Iterator[Obj]:
        """Every Qwen3Router watched."""
        for store in (self.routers or {}).values():
            yield from store

    # -- pods ---------------------------------------------------------------------------------------------------

    def pod_records(self, key: Key) -> Collection[PodRecord]:
        """Our pods of one deployment or router."""
        return (self.pods or {}).get(key) or ()

    def pods_of(self, key: Key) -> list[PodState]:
        """The model-server pods of one deployment."""
        return [r.state for r in self.pod_records(key) if r.state is not None]

    def all_pods(self) -> Iterator[PodRecord]:
        """Every pod of ours."""
        for store in (self.pods or {}).values():
            yield from store

    # -- children (the applier's ChildCache) ----------------------------------------------------------------------

    def watched(self, kind: str) -> bool:
        """Whether the children of this kind are indexed (an optional kind only while its CRD is installed)."""
        if kind not in self.children:
            return False
        crd = CRD_OF_KIND.get(kind)
        return crd is None or crd in self.installed

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A child's observed view, or None."""
        return _one(self.children.get(kind), (namespace, name))  # type: ignore[no-any-return]

    def names(self, kind: str, namespace: str, owner: str) -> Iterable[str]:
        """Names of the children of a kind that belong to `owner`."""
        index = self.children.get(kind)
        return list((index.get((OWNERS, namespace, owner)) if index is not None else None) or ())
