"""Skip server-side applies that cannot change anything: the steady state costs no API writes.

A child is applied again only when the intent (the manifest we would send) changed, or when the object was
seen to change in a way that could matter: a new generation (someone edited its spec), other labels,
annotations or owner references, or deletion. A status update by another controller does not count. For kinds
without a generation (Services, ConfigMaps, RBAC), any new resourceVersion counts. Kinds the operator does not
watch are always applied.

What the cluster holds comes from a `ChildCache`: in the operator, kopf's index of each child kind, complete
before the first reconcile pass. An apply's answer stands in for the cached object until the watch brings any
later event of that object (or for at most ANSWER_SECONDS): the cache may still show the state before the apply.
resourceVersions are opaque; they are only ever compared for equality.

Every child carries the digest of the intent it was applied with (annotation `qwenfleet.dev/applied-intent`).
A restarted operator has no memory of its applies; it takes the cached object's digest as its own when it
equals the current intent and no other field manager owns anything in the object's spec (an edit by someone
else, or a scale, would have made them an owner): a restart sends nothing for the children it already knows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from qwenfleet.kube import FIELD_MANAGER, Kube

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
INTENT_ANNOTATION = "qwenfleet.dev/applied-intent"
OWNER_LABEL = "qwenfleet.dev/deployment"
"""The label naming a child's Qwen3Deployment (or Qwen3Router): the cache finds children by it without a scan."""
NAMESPACE_LABEL = "qwenfleet.dev/namespace"
"""The label naming a cluster-scoped child's namespace."""


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


def intent_hash(manifest: Obj) -> str:
    """A digest of what we would send."""
    return hashlib.blake2b(json.dumps(manifest, sort_keys=True).encode(), digest_size=16).hexdigest()


def foreign_spec_owner(obj: Obj) -> bool:
    """Whether a field manager other than ours owns a field of the spec (status writers do not count)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource") == "status":
            continue
        if "f:spec" in (entry.get("fieldsV1") or {}):
            return True
    return False


def observed_view(obj: Obj) -> Obj:
    """What the applier and the reconcile read of a child: identity, generation, labels, annotations, owner
    references, status, and whether someone else owns part of its spec. No spec, no managedFields."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "generation": meta.get("generation"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": meta.get("ownerReferences"),
        },
        "status": dict(obj.get("status") or {}),
        "foreign": foreign_spec_owner(obj),
    }


def owner_of(obj: Obj) -> tuple[str, str]:
    """(namespace, name) of the Qwen3Deployment or Qwen3Router a child belongs to (a cluster-scoped one names its
    namespace in a label)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    return str(meta.get("namespace") or labels.get(NAMESPACE_LABEL, "")), str(labels.get(OWNER_LABEL, ""))


class ChildCache(Protocol):
    """Where the applier reads what the cluster holds of our children."""

    def watched(self, kind: str) -> bool:
        """Whether the cache follows this kind (else the applier always applies and callers must read)."""

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object's `observed_view`, or None when the cache has not seen it."""

    def names(self, kind: str, namespace: str, owner: str) -> Iterable[str]:
        """Names of the cached objects of a kind that belong to a deployment."""


@dataclass
class _Applied:
    intent: str
    signature: str
    label_keys: tuple[str, ...]
    annotation_keys: tuple[str, ...]


@dataclass
class _Answer:
    """An apply's answer, standing in for the cache until it shows a later event of the object."""

    view: Obj
    events: int
    at: float


ANSWER_SECONDS = 10.0


def signature(obj: Obj, label_keys: tuple[str, ...] = (), annotation_keys: tuple[str, ...] = ()) -> str:
    """What must stay the same for our last apply to still hold: the generation, the labels and annotations we
    set (not those other controllers add) and the owner references; else the resourceVersion (kinds without a
    generation)."""
    meta = obj.get("metadata") or {}
    if meta.get("generation") is None:
        return f"rv:{meta.get('resourceVersion')}"
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    mine = [meta.get("generation"), [labels.get(k) for k in label_keys],
            [annotations.get(k) for k in annotation_keys], meta.get("ownerReferences")]  # fmt: skip
    return intent_hash({"m": mine})


def with_intent(manifest: Obj, intent: str) -> Obj:
    """The manifest with its intent digest as an annotation."""
    meta = manifest["metadata"]
    return {
        **manifest,
        "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}), INTENT_ANNOTATION: intent}},
    }


class CachingApplier:
    """`apply` like Kube.apply, skipping the request when neither our intent nor the object changed."""

    def __init__(self, kube: Kube, cache: ChildCache) -> None:
        self.kube = kube
        self.cache = cache
        self._applied: dict[Key, _Applied] = {}
        self._answers: dict[Key, _Answer] = {}
        self._events: dict[Key, int] = {}  # watch events seen per object (counts, not versions)
        self._sent_at: dict[Key, float] = {}  # monotonic time of the last apply actually sent, per object
        self._checked: dict[tuple[str, ...], object] = {}
        self.skipped = 0
        self.sent = 0

    def checked(self, what: tuple[str, ...], version: object) -> bool:
        """Whether `what` was already checked at `version` in this process (see `remember`)."""
        return self._checked.get(what) == version

    def remember(self, what: tuple[str, ...], version: object) -> None:
        """Record a check of something no watch reports (e.g. a cluster-scoped object), so it is made once."""
        self._checked[what] = version

    def noticed(self, obj: Obj, deleted: bool = False) -> None:
        """A watch event of a child (after the cache has taken it): any apply's answer is superseded."""
        key = _key(obj)
        self._answers.pop(key, None)
        if deleted:
            self._events.pop(key, None)
            self._applied.pop(key, None)
            self._sent_at.pop(key, None)
        else:
            self._events[key] = self._events.get(key, 0) + 1

    def since_sent(self, api_version: str, kind: str, namespace: str, name: str) -> float | None:
        """Seconds since this process last sent an apply of the object (None: never)."""
        sent = self._sent_at.get((api_version, kind, namespace, name))
        return None if sent is None else time.monotonic() - sent

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool | None:
        """Whether the object is known to exist (None for kinds the cache does not follow)."""
        if not self.cache.watched(kind):
            return None
        return self.seen(api_version, kind, namespace, name) is not None

    def forget_answers(self, kind: str) -> None:
        """Read every object of `kind` from the cache from now on, not from the answers of applies sent before."""
        for key in [k for k in self._answers if k[1] == kind]:
            del self._answers[key]

    def seen(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object as last seen (our apply's answer, or the cache), or None."""
        key = (api_version, kind, namespace, name)
        answer = self._answers.get(key)
        if answer is not None:
            if answer.events == self._events.get(key, 0) and time.monotonic() - answer.at < ANSWER_SECONDS:
                return answer.view
            del self._answers[key]
        return self.cache.get(kind, namespace, name)

    def known(self, api_version: str, kind: str, namespace: str, match: dict[str, str]) -> list[str] | None:
        """Names of the cached objects with all of `match`'s labels (None for kinds the cache does not follow).

        `match` names the owning deployment (OWNER_LABEL)."""
        if not self.cache.watched(kind):
            return None
        found = []
        for name in self.cache.names(kind, namespace, match.get(OWNER_LABEL, "")):
            view = self.cache.get(kind, namespace, name)
            labels = (view or {}).get("metadata", {}).get("labels") or {}
            if view is not None and all(labels.get(k) == v for k, v in match.items()):
                found.append(name)
        return sorted(found)

    async def apply(self, manifest: Obj) -> Obj:
        """Server-side apply, unless the last apply of the same intent is still what the cluster holds."""
        key = _key(manifest)
        intent = intent_hash(manifest)
        manifest = with_intent(manifest, intent)
        meta = manifest["metadata"]
        label_keys, annotation_keys = (
            tuple(sorted(meta.get("labels") or {})),
            tuple(sorted(meta.get("annotations") or {})),
        )
        watched = self.cache.watched(key[1])
        before = self._applied.get(key)
        seen = self.seen(*key) if watched else None
        if (before is None and seen is not None and not seen["foreign"]
                and seen["metadata"]["annotations"].get(INTENT_ANNOTATION) == intent):  # fmt: skip
            # applied with this intent before a restart, and nobody else has touched the spec since
            before = self._applied[key] = _Applied(
                intent, signature(seen, label_keys, annotation_keys), label_keys, annotation_keys
            )
        if (before and seen and before.intent == intent
                and signature(seen, before.label_keys, before.annotation_keys) == before.signature):  # fmt: skip
            self.skipped += 1
            return seen
        events = self._events.get(key, 0)
        result = await self.kube.apply(manifest)
        self.sent += 1
        self._sent_at[key] = time.monotonic()
        self._applied[key] = _Applied(
            intent, signature(result, label_keys, annotation_keys), label_keys, annotation_keys
        )
        if not watched:
            return result
        if self._events.get(key, 0) != events:
            # the watch showed the object while the apply was in flight: that state is no older than the answer
            cached = self.cache.get(key[1], key[2], key[3])
            if cached is not None:
                return cached
        view = observed_view(result)
        self._answers[key] = _Answer(view, self._events.get(key, 0), time.monotonic())
        return view
