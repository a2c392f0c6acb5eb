"""The only place that talks to the Kubernetes API server."""

from qwenfleet.kube.lazyclient import install as _install_lazy_client

_install_lazy_client()  # before kubernetes_asyncio is first imported

from qwenfleet.kube.client import FIELD_MANAGER, Kube, KubeError, WatchExpired, make_api_client  # noqa: E402

__all__ = ["FIELD_MANAGER", "Kube", "KubeError", "WatchExpired", "make_api_client"]
