"""Skip server-side applies that cannot change anything: the steady state costs no API writes.

A child is applied again only when the intent (the manifest we would send) changed, or when the object was
seen to change in a way that could matter: a new generation (someone edited its spec), other labels,
annotations or owner references, or deletion. A status update by another controller does not count. For kinds
without a generation (Services, ConfigMaps, RBAC), any new resourceVersion counts. Kinds the operator does not
watch are always applied.

Every child carries the digest of the intent it was applied with (annotation `qwenfleet.dev/applied-intent`).
A restarted operator has no memory of its applies; it takes the watched object's digest as its own when it
equals the current intent and no other field manager owns anything in the object's spec (an edit by someone
else, or a scale, would have made them an owner): a restart sends nothing for the children the watch has
listed before their owner's first reconcile.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from qwenfleet.kube import FIELD_MANAGER, Kube

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
INTENT_ANNOTATION = "qwenfleet.dev/applied-intent"
OWNER_LABEL = "qwenfleet.dev/deployment"
"""The label naming a child's Qwen3Deployment: `known` finds children by it without a scan."""


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


def _newer(obj: Obj, than: Obj) -> bool:
    """Whether `obj` is at least as recent as `than`, by resourceVersion (the API server's are increasing integers,
    its storage revisions; when either is not a number, the later-arriving object wins)."""
    a = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    b = str((than.get("metadata") or {}).get("resourceVersion") or "")
    return not (a.isdigit() and b.isdigit()) or int(a) >= int(b)


def _scope(key: Key, obj: Obj) -> tuple[str, ...]:
    """apiVersion, kind, namespace and owning deployment: where `known` looks for an object."""
    return (*key[:3], str(((obj.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL, "")))


def intent_hash(manifest: Obj) -> str:
    """A digest of what we would send."""
    return hashlib.blake2b(json.dumps(manifest, sort_keys=True).encode(), digest_size=16).hexdigest()


@dataclass
class _Applied:
    intent: str
    signature: str
    label_keys: tuple[str, ...]
    annotation_keys: tuple[str, ...]


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


def foreign_spec_owner(obj: Obj) -> bool:
    """Whether a field manager other than ours owns a field of the spec (status writers do not count)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource") == "status":
            continue
        if "f:spec" in (entry.get("fieldsV1") or {}):
            return True
    return False


def with_intent(manifest: Obj, intent: str) -> Obj:
    """The manifest with its intent digest as an annotation."""
    meta = manifest["metadata"]
    return {
        **manifest,
        "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}), INTENT_ANNOTATION: intent}},
    }


class CachingApplier:
    """`apply` like Kube.apply, skipping the request when neither our intent nor the object changed."""

    def __init__(self, kube: Kube, watched_kinds: frozenset[str]) -> None:
        self.kube = kube
        self.watched_kinds = watched_kinds
        self._applied: dict[Key, _Applied] = {}
        self._seen: dict[Key, Obj] = {}  # the last watch event's object (metadata and status only)
        self._names: dict[tuple[str, ...], set[str]] = {}  # (apiVersion, kind, namespace, owner) -> names seen
        self.skipped = 0
        self.sent = 0
        self._checked: dict[tuple[str, ...], object] = {}
        self._sent_at: dict[Key, float] = {}  # monotonic time of the last apply actually sent, per object

    def checked(self, what: tuple[str, ...], version: object) -> bool:
        """Whether `what` was already checked at `version` in this process (see `remember`)."""
        return self._checked.get(what) == version

    def remember(self, what: tuple[str, ...], version: object) -> None:
        """Record a check of something no watch reports (e.g. a cluster-scoped object), so it is made once."""
        self._checked[what] = version

    def observe(self, obj: Obj, deleted: bool = False) -> None:
        """A watch event for a child: remember its resourceVersion and status."""
        key = _key(obj)
        if deleted:
            self._seen.pop(key, None)
            self._applied.pop(key, None)
            self._sent_at.pop(key, None)
            scope = _scope(key, obj)
            names = self._names.get(scope)
            if names is not None:
                names.discard(key[3])
                if not names:
                    del self._names[scope]
            return
        before = self._seen.get(key)
        if before is not None and not _newer(obj, before):
            return  # an apply's answer that arrived after the watch showed a later state
        self._names.setdefault(_scope(key, obj), set()).add(key[3])
        meta = obj.get("metadata") or {}
        slim_meta = {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "resourceVersion": meta.get("resourceVersion"), "generation": meta.get("generation"),
                     "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
                     "ownerReferences": meta.get("ownerReferences")}  # fmt: skip
        self._seen[key] = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": slim_meta,
                           "status": obj.get("status") or {}, "foreign": foreign_spec_owner(obj)}  # fmt: skip

    def since_sent(self, api_version: str, kind: str, namespace: str, name: str) -> float | None:
        """Seconds since this process last sent an apply of the object (None: never)."""
        sent = self._sent_at.get((api_version, kind, namespace, name))
        return None if sent is None else time.monotonic() - sent

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool | None:
        """Whether the watch has seen the object (None for kinds this applier does not watch)."""
        if kind not in self.watched_kinds:
            return None
        return (api_version, kind, namespace, name) in self._seen

    def seen(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object as the watch last showed it (metadata, labels, annotations and status), or None."""
        return self._seen.get((api_version, kind, namespace, name))

    def known(self, api_version: str, kind: str, namespace: str, match: dict[str, str]) -> list[str] | None:
        """Names of the objects the watch has seen with all of `match`'s labels (None for unwatched kinds).

        `match` names the owning deployment (OWNER_LABEL); objects without that label are found with "" there."""
        if kind not in self.watched_kinds:
            return None
        scope = (api_version, kind, namespace, match.get(OWNER_LABEL, ""))
        return sorted(
            name
            for name in self._names.get(scope, ())
            if all(self._seen[(*scope[:3], name)]["metadata"]["labels"].get(k) == v for k, v in match.items())
        )

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
        before = self._applied.get(key)
        seen = self._seen.get(key)
        if (before is None and seen is not None and manifest["kind"] in self.watched_kinds and not seen["foreign"]
                and seen["metadata"]["annotations"].get(INTENT_ANNOTATION) == intent):  # fmt: skip
            # applied with this intent before a restart, and nobody else has touched the spec since
            before = self._applied[key] = _Applied(
                intent, signature(seen, label_keys, annotation_keys), label_keys, annotation_keys
            )
        if (before and seen and before.intent == intent and manifest["kind"] in self.watched_kinds
                and signature(seen, before.label_keys, before.annotation_keys) == before.signature):  # fmt: skip
            self.skipped += 1
            return seen
        result = await self.kube.apply(manifest)
        self.sent += 1
        self._sent_at[key] = time.monotonic()
        self._applied[key] = _Applied(
            intent, signature(result, label_keys, annotation_keys), label_keys, annotation_keys
        )
        self.observe(result)
        latest = self._seen.get(key)
        return latest if latest is not None and not _newer(result, latest) else result
