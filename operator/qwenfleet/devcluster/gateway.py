"""A real Envoy on loopback as an inference gateway: what a Gateway API Inference Extension gateway programs for an
HTTPRoute to an InferencePool, written as one static Envoy bootstrap.

- An ext_proc filter calls the pool's Endpoint Picker (one or several, all active) in FULL_DUPLEX_STREAMED mode.
- Requests the picker routed (it set `x-gateway-destination-endpoint`) go to that endpoint through an ORIGINAL_DST
  cluster keyed on the header.
- Requests without a pick go to the pool's endpoints round-robin: that is what FailOpen means once the picker is
  unreachable (`failure_mode_allow`). With FailClose, Envoy answers 500 itself.
- The pickers are health-checked with gRPC health (`envoy.service.ext_proc.v3.ExternalProcessor`), without panic
  routing: in FULL_DUPLEX_STREAMED mode Envoy 1.40 can fail open only before the first body chunk went out, and a
  picker that refuses connections is noticed after that, so without the health check FailOpen fails closed.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from qwenfleet.router.extproc import DESTINATION, PROCESSOR_SERVICE

Obj = dict[str, Any]
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"


def _endpoints(addresses: Sequence[str]) -> list[Obj]:
    out = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        out.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
    return out


def envoy_bootstrap(
    *,
    port: int,
    admin_port: int,
    pickers: Sequence[str],
    pool: Sequence[str],
    fail_open: bool = False,
    use_picker: bool = True,
    timeout_seconds: int = 600,
) -> Obj:
    """The bootstrap of a gateway on 127.0.0.1:`port` for one InferencePool (`pool`: its endpoints, ip:port) picked
    by `pickers` (ip:port of Endpoint Pickers). `use_picker=False` is plain round-robin over the pool."""
    routes: list[Obj] = [{"match": {"prefix": "/"}, "route": {"cluster": "pool", "timeout": "0s"}}]
    filters: list[Obj] = []
    clusters: list[Obj] = [{
        "name": "pool", "type": "STATIC", "lb_policy": "ROUND_ROBIN", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "pool", "endpoints": [{"lb_endpoints": _endpoints(pool)}]},
    }]  # fmt: skip
    if use_picker:
        picked = {"headers": [{"name": DESTINATION, "present_match": True}], "prefix": "/"}
        routes.insert(0, {"match": picked, "route": {"cluster": "picked", "timeout": "0s"}})
        filters.append({
            "name": "envoy.filters.http.ext_proc",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": f"{timeout_seconds}s"},
                "failure_mode_allow": fail_open,
                "message_timeout": f"{timeout_seconds}s",
                "max_message_timeout": f"{timeout_seconds}s",
                "processing_mode": {
                    "request_header_mode": "SEND", "response_header_mode": "SEND",
                    "request_body_mode": "FULL_DUPLEX_STREAMED", "response_body_mode": "FULL_DUPLEX_STREAMED",
                    "request_trailer_mode": "SEND", "response_trailer_mode": "SEND",
                },
            },
        })  # fmt: skip
        clusters.append({
            "name": "picked", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "5s",
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION},
        })  # fmt: skip
        # the pickers are health-checked over gRPC and a cluster with none healthy fails at once ("no healthy
        # upstream", no panic routing): Envoy fails open only before the first body chunk went to a picker, and a
        # refused connection is noticed only after that
        clusters.append({
            "name": "epp", "type": "STATIC", "lb_policy": "ROUND_ROBIN", "connect_timeout": "2s",
            "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
            "health_checks": [{"timeout": "1s", "interval": "1s", "no_traffic_interval": "1s",
                               "unhealthy_threshold": 1, "healthy_threshold": 1,
                               "grpc_health_check": {"service_name": PROCESSOR_SERVICE}}],
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }},
            "load_assignment": {"cluster_name": "epp", "endpoints": [{"lb_endpoints": _endpoints(pickers)}]},
        })  # fmt: skip
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})  # fmt: skip
    manager = {
        "@type": f"{HCM}.HttpConnectionManager",
        "stat_prefix": "gateway",
        "request_timeout": "0s",
        "route_config": {"virtual_hosts": [{"name": "pool", "domains": ["*"], "routes": routes}]},
        "http_filters": filters,
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": manager}]}],
            }],
            "clusters": clusters,
        },
    }  # fmt: skip


@contextlib.contextmanager
def run_envoy(envoy: Path, bootstrap: Obj, work: Path, admin_port: int, *, concurrency: int = 1) -> Iterator[
        subprocess.Popen[bytes]]:  # fmt: skip
    """Envoy with `bootstrap`, ready (its admin answers /ready) until the block ends; its log is work/envoy.log."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    log = (work / "envoy.log").open("wb")
    cmd = [str(envoy), "-c", str(config), "--concurrency", str(concurrency), "--log-level", "warning",
           "--base-id", str(admin_port), "--disable-hot-restart"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {proc.returncode}: {(work / 'envoy.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready",
                                                                      timeout=1) as answer:  # fmt: skip
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("envoy did not become ready within 30s")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
