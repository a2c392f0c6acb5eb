"""kubernetes_asyncio's generated classes load on first use: the same classes, far fewer modules at start-up."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import qwenfleet.controller.main  # noqa: F401  (installs the lazy packages first)
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
import kubernetes_asyncio.client.models as models
assert type(sys.modules["kubernetes_asyncio.client"]).__name__ == "LazyPackage"
loaded = sum(1 for m in sys.modules if m.startswith("kubernetes_asyncio.client.models."))
assert loaded < 50, loaded
assert client.V1ObjectMeta.__module__ == "kubernetes_asyncio.client.models.v1_object_meta"
assert models.V1Pod is client.V1Pod
assert client.CoreV1Api.__module__ == "kubernetes_asyncio.client.api.core_v1_api"
assert client.ApiClient and client.Configuration and config.load_kube_config and ApiException
assert "V1Deployment" in dir(client.models)
print("ok")
"""


def test_the_client_packages_resolve_names_lazily() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
