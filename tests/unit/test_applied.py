"""Skipping no-op applies: only an unchanged intent on an unchanged object is skipped."""

from __future__ import annotations

from typing import Any

from qwenfleet.controller.applied import CachingApplier, observed_view


class DictCache:
    """The applier's cache as kopf's indexes hold it: the latest watch event's view of each object."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def watched(self, kind: str) -> bool:
        return kind in self.kinds

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def names(self, kind: str, namespace: str, owner: str) -> list[str]:
        return [k[2] for k in self.objects if k[:2] == (kind, namespace)]


def make(kube: Any, kinds: frozenset[str]) -> CachingApplier:
    """An applier over a DictCache; `observe(obj, deleted)` is a watch event reaching both."""
    cache = DictCache(kinds)
    applier = CachingApplier(kube, cache)

    def observe(obj: dict[str, Any], deleted: bool = False) -> None:
        key = (obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        if deleted:
            cache.objects.pop(key, None)
        else:
            cache.objects[key] = observed_view(obj)
        applier.noticed(obj, deleted)

    applier.observe = observe  # type: ignore[attr-defined]
    return applier


class RecordingKube:
    """Stands in for the API server's apply: counts requests, bumps resourceVersion on change."""

    def __init__(self) -> None:
        self.requests = 0
        self.rv = 0
        self.stored: dict[str, Any] = {}

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        if manifest.get("spec") != self.stored.get("spec"):
            self.rv += 1
            self.stored = dict(manifest)
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": str(self.rv)}}


def _svc(port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}, "spec": {"port": port}}


async def test_same_intent_on_an_unchanged_object_sends_nothing() -> None:
    kube = RecordingKube()
    applier = make(kube, frozenset({"Service"}))
    await applier.apply(_svc(80))
    for _ in range(5):
        await applier.apply(_svc(80))
    assert kube.requests == 1 and applier.skipped == 5


async def test_a_new_intent_or_an_observed_change_is_applied() -> None:
    kube = RecordingKube()
    applier = make(kube, frozenset({"Service"}))
    applied = await applier.apply(_svc(80))
    await applier.apply(_svc(81))  # the spec changed
    assert kube.requests == 2
    edited = {**applied, "metadata": {**applied["metadata"], "resourceVersion": "99"}}
    applier.observe(edited)  # someone edited the object (a Service has no generation: resourceVersion counts)
    await applier.apply(_svc(81))
    assert kube.requests == 3
    applier.observe(edited, deleted=True)  # deleted: must be recreated
    await applier.apply(_svc(81))
    assert kube.requests == 4


async def test_kinds_without_a_watch_are_always_applied() -> None:
    kube = RecordingKube()
    applier = make(kube, frozenset())
    for _ in range(3):
        await applier.apply(_svc(80))
    assert kube.requests == 3 and applier.skipped == 0


def _deployment(generation: int, rv: str, ready: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "generation": generation, "resourceVersion": rv},
            "spec": {"replicas": 1}, "status": {"readyReplicas": ready}}  # fmt: skip


class DeploymentKube(RecordingKube):
    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        return _deployment(1, "5")


async def test_a_status_update_by_a_controller_is_not_drift_but_a_spec_edit_is() -> None:
    kube = DeploymentKube()
    applier = make(kube, frozenset({"Deployment"}))
    intent = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
              "spec": {"replicas": 1}}  # fmt: skip
    await applier.apply(intent)
    revised = _deployment(1, "6", ready=1)
    revised["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}  # not ours
    applier.observe(revised)  # the controller wrote status and its own annotation: same generation
    current = await applier.apply(intent)
    assert kube.requests == 1 and current["status"]["readyReplicas"] == 1  # skipped, with the fresh status
    applier.observe(_deployment(2, "7"))  # someone edited the spec
    await applier.apply(intent)
    assert kube.requests == 2
    assert applier.exists("apps/v1", "Deployment", "n", "d") is True
    assert applier.exists("apps/v1", "StatefulSet", "n", "d") is None


async def test_a_restarted_applier_adopts_its_own_unchanged_apply_but_not_a_foreign_edit() -> None:
    kube = RecordingKube()
    first = make(kube, frozenset({"Service"}))
    applied = await first.apply(_svc(80))
    ours = [{"manager": "qwenfleet", "operation": "Apply", "fieldsV1": {"f:spec": {"f:port": {}}}},
            {"manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}}]  # fmt: skip
    listed = {**applied, "metadata": {**applied["metadata"], "managedFields": ours}}
    restarted = make(kube, frozenset({"Service"}))
    restarted.observe(listed)  # the watch lists it after the restart
    await restarted.apply(_svc(80))
    assert kube.requests == 1 and restarted.skipped == 1
    await restarted.apply(_svc(81))  # a new intent is applied
    assert kube.requests == 2
    edited = [*ours, {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:port": {}}}}]
    again = make(kube, frozenset({"Service"}))
    again.observe({**listed, "metadata": {**listed["metadata"], "managedFields": edited}})
    await again.apply(_svc(80))  # someone else owns part of the spec: apply
    assert kube.requests == 3


class RacingKube(RecordingKube):
    """The watch shows the object's next state (its controller's status report) before the apply's answer."""

    def __init__(self, applier_ref: list[CachingApplier]) -> None:
        super().__init__()
        self.applier_ref = applier_ref

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        answer = await super().apply(manifest)
        answer["metadata"]["generation"] = 1
        reported = {**answer, "metadata": {**answer["metadata"], "resourceVersion": str(self.rv + 1)},
                    "status": {"observedGeneration": 1}}  # fmt: skip
        self.applier_ref[0].observe(reported)  # the watch event, handled while the apply's answer is in flight
        return answer


async def test_an_apply_answer_older_than_the_watch_does_not_hide_the_later_state() -> None:
    ref: list[CachingApplier] = []
    kube = RacingKube(ref)
    applier = make(kube, frozenset({"Deployment"}))
    ref.append(applier)
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
                "spec": {"replicas": 0}}  # fmt: skip
    returned = await applier.apply(manifest)
    assert returned["status"] == {"observedGeneration": 1}  # the reconcile sees the report, not the stale answer
    again = await applier.apply(manifest)
    assert again["status"] == {"observedGeneration": 1} and kube.requests == 1


async def test_an_object_deleted_before_a_new_kinds_list_is_applied_again_once_answers_are_forgotten() -> None:
    """A kind whose watch starts after an apply (its CRD was just installed) never shows the object that was deleted
    before its list; the operator forgets the apply answers once the list is in, and the next pass restores it."""
    kube = RecordingKube()
    applier = make(kube, frozenset({"Service"}))
    await applier.apply(_svc(80))
    assert kube.requests == 1
    kube.stored.clear()  # deleted by someone before the watch listed: no event reaches the applier
    await applier.apply(_svc(80))
    assert kube.requests == 1  # the answer still stands in for the cache
    applier.forget_answers("Service")
    await applier.apply(_svc(80))
    assert kube.requests == 2  # the (empty) cache decides: applied again
