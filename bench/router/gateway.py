"""A real Envoy on loopback as the benchmark's inference gateway, until SIGTERM (for the benchmark only).

With `--picker`, Envoy asks that Endpoint Picker (ext_proc, FULL_DUPLEX_STREAMED) for every request, as a Gateway
API Inference Extension gateway does; without it, Envoy balances round-robin over `--pool`. Prints "ready" once
Envoy's admin answers /ready; Envoy's config and log are in `--work`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from qwenfleet.devcluster.gateway import envoy_bootstrap, run_envoy
from qwenfleet.devcluster.tools import ensure_envoy


def _stop(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds run_envoy, which stops Envoy


def main() -> None:
    """Run Envoy until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--pool", nargs="+", required=True, help="the replicas, ip:port")
    parser.add_argument("--picker", nargs="*", default=[], help="Endpoint Pickers, ip:port (none: round-robin)")
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy's worker threads")
    parser.add_argument("--work", type=Path, default=None, help="where Envoy's config and log go")
    a = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    work = a.work or Path(tempfile.mkdtemp(prefix="qwenfleet-bench-envoy-"))
    bootstrap = envoy_bootstrap(port=a.port, admin_port=a.admin_port, pickers=a.picker, pool=a.pool,
                                use_picker=bool(a.picker))  # fmt: skip
    with run_envoy(ensure_envoy(), bootstrap, work, a.admin_port, concurrency=a.concurrency) as envoy:
        print(f"ready (log: {work / 'envoy.log'})", flush=True)
        code = envoy.wait()
    sys.exit(f"envoy exited with {code}")


if __name__ == "__main__":
    main()
