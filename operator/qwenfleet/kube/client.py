"""The one Kubernetes client (kubernetes_asyncio): server-side apply, reads, status patches, deletes."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from qwenfleet.kube.resources import Resource, resource_of

FIELD_MANAGER = "qwenfleet"
Obj = dict[str, Any]
Page = list[Obj]
"""One page of a paged list."""


class KubeError(Exception):
    """An API call that failed, with the HTTP status and the server's message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """True for 404."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """True for 409."""
        return self.status == 409


def _error(exc: ApiException) -> KubeError:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return KubeError(int(exc.status or 0), str(body.get("reason") or exc.reason), str(body.get("message") or exc.body))


async def make_api_client(kubeconfig: str | None = None, connections: int | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, else the in-cluster service account, with at most `connections`
    connections to the API server."""
    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
    # A small pool: each idle TLS connection holds over 100 kB of buffers, and the API server gains nothing
    # from more parallel requests than this from one client.
    configuration.connection_pool_maxsize = connections or CONNECTIONS
    api = client.ApiClient(configuration)
    # kubernetes_asyncio's session trusts the environment: aiohttp then looks up ~/.netrc and the proxy variables
    # in a worker thread for every request, a third of each call's cost. The API server's address and proxy come
    # from the kubeconfig or the service account (configuration.proxy is still honoured), never from there.
    rest = api.rest_client
    trusting = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=trusting.connector, trust_env=False, read_bufsize=2**21)
    trusting.detach()
    api.user_agent = USER_AGENT  # tells our requests apart in API server audit logs and metrics
    return api


USER_AGENT = "qwenfleet/0.1.0"
CONNECTIONS = 16
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""Every request but a watch: a hung connection fails the call (and the reconcile retries) instead of holding a
pool slot for ever."""
WATCH_SECONDS = 300
"""The API server ends each watch after this long (and we reconnect from the last resourceVersion)."""


THROTTLED_RETRIES = 5
MAX_RETRY_AFTER_SECONDS = 30.0


def retry_after(exc: ApiException) -> float:
    """Seconds a 429 asks to wait: its Retry-After header, else the Status's details.retryAfterSeconds, else 1;
    at most MAX_RETRY_AFTER_SECONDS."""
    headers: Mapping[str, str] = exc.headers or {}
    value: object = headers.get("Retry-After")
    if value is None:
        try:
            value = ((json.loads(exc.body or "{}") or {}).get("details") or {}).get("retryAfterSeconds")
        except (TypeError, ValueError, AttributeError):
            value = None
    try:
        seconds = float(str(value)) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return max(0.0, min(MAX_RETRY_AFTER_SECONDS, seconds))


class WatchExpired(Exception):
    """The resourceVersion a watch started from is too old (410 Gone): list again."""


class Kube:
    """Thin, typed-enough access to the API for the kinds in `resources`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Requests wait their turn here, first come first served, never in aiohttp's pool: there a request that
        # waits for a connection can lose it, again and again, to requests that find one idle (under a steady
        # stream of them some waited a full minute, then timed out).
        self._turns = asyncio.Semaphore(api.configuration.connection_pool_maxsize)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(THROTTLED_RETRIES + 1):
            try:
                async with self._turns:
                    result = await self.api.call_api(
                        path,
                        method,
                        query_params=query or [],
                        header_params=headers,
                        body=body,
                        response_types_map={200: "object", 201: "object", 202: "object"},
                        auth_settings=["BearerToken"],
                        _return_http_data_only=True,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                break
            except ApiException as exc:
                if exc.status == 429 and attempt < THROTTLED_RETRIES:
                    # throttled (API priority and fairness): wait as long as the server asks, outside the turns
                    await asyncio.sleep(retry_after(exc) * (1.0 + 0.1 * random.random()))
                    continue
                raise _error(exc) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the API server is unreachable or restarting
                raise KubeError(0, "Unavailable", f"{type(exc).__name__}: {exc}") from None
        return result if isinstance(result, dict) else {}

    async def apply(self, manifest: Mapping[str, Any], *, field_validation: str | None = None) -> Obj:
        """Server-side apply with our field manager, forcing ownership of every field we send.

        `field_validation="Strict"` makes unknown or duplicate fields an error instead of dropping them.
        """
        res = resource_of(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        path = res.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if field_validation:
            query.append(("fieldValidation", field_validation))
        return await self._call(
            "PATCH", path, body=dict(manifest), query=query, content_type="application/apply-patch+yaml"
        )

    async def create(self, manifest: Mapping[str, Any], *, field_validation: str | None = None) -> Obj:
        """Create an object (409 when it exists)."""
        res = resource_of(manifest["apiVersion"], manifest["kind"])
        query = [("fieldValidation", field_validation)] if field_validation else []
        path = res.path(manifest["metadata"].get("namespace"))
        return await self._call("POST", path, body=dict(manifest), query=query)

    async def replace(self, obj: Mapping[str, Any]) -> Obj:
        """Replace an object; its metadata.resourceVersion makes this fail with 409 if it changed meanwhile."""
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return await self._call("PUT", res.path(meta.get("namespace"), meta["name"]), body=dict(obj))

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """One object, or None when it does not exist."""
        try:
            return await self._call("GET", resource_of(api_version, kind).path(namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[Obj]:
        """Objects of a kind, optionally in one namespace and matching a label selector."""
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self._call("GET", resource_of(api_version, kind).path(namespace), query=query)
        items: list[Obj] = result.get("items", [])
        return items

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Changes of a kind after `resource_version`: (ADDED | MODIFIED | DELETED | BOOKMARK, object), until the
        server ends the watch (after about WATCH_SECONDS). Raises WatchExpired when the version is too old."""
        res = resource_of(api_version, kind)
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", resource_version),
                 ("timeoutSeconds", str(WATCH_SECONDS))]  # fmt: skip
        if label_selector:
            query.append(("labelSelector", label_selector))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
        try:
            response = await self.api.call_api(
                res.path(namespace), "GET", query_params=query, header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=False,
                _request_timeout=timeout,
            )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeError(0, "Unavailable", f"{type(exc).__name__}: {exc}") from None
        async with response:
            if response.status == 410:
                raise WatchExpired(resource_version)
            if response.status != 200:
                failure = ApiException(status=response.status, reason=response.reason)
                failure.body = await response.text()
                raise _error(failure)
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind_of_event = event.get("type", "")
                    obj = event.get("object") or {}
                    if kind_of_event == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(resource_version)
                        raise KubeError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message")))
                    yield kind_of_event, obj
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise KubeError(0, "Unavailable", f"watch ended: {type(exc).__name__}: {exc}") from None

    async def list_pages(
        self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> AsyncIterator[tuple[Page, str]]:
        """Objects of a kind, 500 at a time (each with its apiVersion and kind, which lists leave out), each page with
        the list's resourceVersion: a watch from the last page's version misses nothing."""
        res = resource_of(api_version, kind)
        token = ""
        while True:
            query = [("limit", "500")] + ([("labelSelector", label_selector)] if label_selector else [])
            if token:
                query.append(("continue", token))
            result = await self._call("GET", res.path(namespace), query=query)
            meta = result.get("metadata") or {}
            items = [{**item, "apiVersion": api_version, "kind": kind} for item in result.get("items", [])]
            yield items, str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or ""
            if not token:
                return

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete with background propagation; False when it was already gone."""
        res: Resource = resource_of(api_version, kind)
        try:
            await self._call("DELETE", res.path(namespace, name), body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> Obj:
        """Replace our status fields with a merge patch on the status subresource."""
        path = resource_of(api_version, kind).path(namespace, name, "status")
        return await self._call("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

    async def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: Obj) -> Obj:
        """A JSON merge patch of the main resource."""
        path = resource_of(api_version, kind).path(namespace, name)
        return await self._call("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def crd_exists(self, name: str) -> bool:
        """True when a CustomResourceDefinition of that name is installed."""
        return await self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) is not None

    async def close(self) -> None:
        """Close the underlying HTTP session."""
        await self.api.close()
