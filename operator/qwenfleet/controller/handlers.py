"""The kopf registrations: indexes that cache what the operator reads, and event handlers that queue its work.

Only `@kopf.index` and `@kopf.on.event` handlers, all `async def`, so kopf keeps no diff base, no progress and no
finalizer of its own on our objects (controller/kopfsettings.py drops what kopf would compute for them). Each
handler is a few dictionary operations: the reconcile runs in the operator's work queue, never in kopf's
per-object worker. The child kinds and pods are filtered by label on the API server, so only what we made
reaches the operator.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from qwenfleet.controller.applied import observed_view, owner_of
from qwenfleet.controller.indexes import (
    CHILD_RESOURCES,
    CHILD_SELECTOR,
    COMPONENT,
    CUSTOM_RESOURCES,
    OWNERS,
    POD_SELECTOR,
    PodRecord,
    child_index_id,
)
from qwenfleet.controller.kopfsettings import EXIT_SECONDS, assert_event_handlers_only, configure
from qwenfleet.controller.operator import Operator, slim
from qwenfleet.cost.loop import slim_pod
from qwenfleet.kube import Kube
from qwenfleet.render.status import pod_state

log = logging.getLogger(__name__)
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
LABEL_SELECTORS = {
    **{resource: CHILD_SELECTOR for resource in CHILD_RESOURCES},
    ("", "v1", "pods"): POD_SELECTOR,
}
"""Server-side filters per watched kind: our children and our pods only."""


def _deleted(type: str | None) -> bool:
    return type == "DELETED"


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    """A kopf registry whose handlers feed `op`."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf's watches use exactly the credentials our client loaded (service account or kubeconfig)."""
        return await connection_info(op.kube)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **indices: Any) -> None:
        """Settings, the indexes, and the optional CRDs installed now."""
        configure(settings, LABEL_SELECTORS)
        assert_event_handlers_only(registry)
        op.idx.bind(indices)
        await op.discover()
        op.health.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        """Let running passes finish and checkpoint (and give the Lease up: main.py)."""
        if op.on_cleanup is not None:
            await op.on_cleanup()
        else:
            await op.stand_down(EXIT_SECONDS, checkpoint=True)
        await op.health.stop()

    @kopf.on.probe(id="watches", registry=registry)
    async def watches(**_: Any) -> dict[str, Any]:
        """/healthz: red (HTTP 500) once a watch has failed for good; the log and the probe's error say which."""
        op.health.scan()
        problem = op.health.problems()
        if problem:
            log.error("unhealthy: %s", problem)
            raise kopf.PermanentError(problem)
        return {"alive": op.health.alive(), "leader": op.leading, "queued": op.queue.known()}

    async def deployments(body: kopf.Body, namespace: str | None, name: str | None, **_: Any) -> dict[Any, Any]:
        return {(namespace or "", name or ""): slim(body)}

    async def routers(body: kopf.Body, namespace: str | None, name: str | None, **_: Any) -> dict[Any, Any]:
        return {(namespace or "", name or ""): slim(body)}

    kopf.index(*CUSTOM_RESOURCES[0], id="deployments", registry=registry)(deployments)
    kopf.index(*CUSTOM_RESOURCES[1], id="routers", registry=registry)(routers)

    @kopf.on.event(*CUSTOM_RESOURCES[0], registry=registry)
    async def deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        op.deployment_changed(body, _deleted(type))

    @kopf.on.event(*CUSTOM_RESOURCES[1], registry=registry)
    async def router_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        op.router_changed(body, _deleted(type))

    @kopf.index("", "v1", "pods", id="pods", registry=registry)
    async def pods(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[Any, PodRecord]:
        raw = dict(body)
        component = labels.get(COMPONENT, "")
        name = str(body.metadata.name)
        state = pod_state(raw) if component == "model-server" else None
        return {owner_of(raw): PodRecord(name=name, component=component, state=state, slim=slim_pod(raw))}

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> None:
        op.pod_changed(*owner_of(dict(body)), labels.get(COMPONENT, ""))

    for group, version, plural in CHILD_RESOURCES:
        kopf.index(group, version, plural, id=child_index_id(plural), registry=registry)(_index_child)
        kopf.on.event(group, version, plural, id=f"{plural}_event", registry=registry)(_child_event(op))

    @kopf.on.event(*CRDS, registry=registry)
    async def crd_event(name: str | None, type: str | None, **_: Any) -> None:
        op.crd_changed(name or "", present=not _deleted(type))

    return registry


async def connection_info(kube: Kube) -> kopf.ConnectionInfo:
    """kopf's connection from the configuration of our API client."""
    c = kube.api.configuration
    header: Any = c.get_api_key_with_prefix("BearerToken")
    if inspect.isawaitable(header):
        header = await header
    scheme, _, token = str(header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=str(c.host),
        ca_path=c.ssl_ca_cert,
        insecure=not c.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=c.cert_file,
        private_key_path=c.key_file,
        proxy_url=c.proxy,
    )


async def _index_child(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """A child by (namespace, name), and its name under its owner."""
    raw = dict(body)
    view = observed_view(raw)
    namespace, owner = owner_of(raw)
    meta = view["metadata"]
    return {(meta["namespace"] or "", meta["name"]): view, (OWNERS, namespace, owner): meta["name"]}


def _child_event(op: Operator) -> Any:
    async def child_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        op.child_changed(body, _deleted(type))

    return child_event
