"""The only place that talks to the Kubernetes API server."""

from qwenfleet.kube.client import FIELD_MANAGER, Kube, KubeError, make_api_client

__all__ = ["FIELD_MANAGER", "Kube", "KubeError", "make_api_client"]
