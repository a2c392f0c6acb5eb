"""`qwenfleet dev build|up|down|status`: the simulated GPU fleet on a real local control plane."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qwenfleet.devcluster import build, demo, engine, nodes, tools, versions
from qwenfleet.devcluster.cluster import ClusterError, DevCluster, State, alive, default_run_dir, stop_state
from qwenfleet.devcluster.processes import PORT_OWNERS, leftovers


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir).resolve() if args.run_dir else default_run_dir()


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        path = build.build(force=args.force)
        helm = tools.ensure_helm() if args.with_tools else None
        envoy = tools.ensure_envoy() if args.with_tools else None
    except build.BuildError as exc:
        print(f"qwenfleet dev build: {exc}")
        return 1
    print(path)
    for tool in (helm, envoy):
        if tool:
            print(tool)
    return 0


def _profile(args: argparse.Namespace) -> str:
    return str(args.profile or ("karpenter" if args.karpenter else "default"))


def up_refusal(args: argparse.Namespace) -> str | None:
    """Why `dev up` with these flags could never bring the demo up (said before anything starts), or None."""
    if not args.demo:
        return "--real-engine serves the demo's small size: add --demo" if getattr(args, "real_engine", False) else None
    if args.no_operator:
        return "--demo needs the operator: drop --no-operator"
    profile = _profile(args)
    if not args.karpenter and not any(group.gpu for group in nodes.PROFILES[profile]):
        return (
            f"--demo needs GPU nodes, and the {profile!r} profile has none: add --karpenter (GPU nodes on demand)"
            " or choose a profile with GPU nodes"
        )
    return None


def _cmd_engine(args: argparse.Namespace) -> int:
    try:
        root = engine.ensure(force=args.force)
    except engine.EngineError as exc:
        print(f"qwenfleet dev engine: {exc}")
        return 1
    print(root)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    console = Console()
    refusal = up_refusal(args)
    if refusal:
        print(f"qwenfleet dev up: {refusal}")
        return 2
    try:
        build.build()
        if args.real_engine:
            engine.ensure()
        started = time.monotonic()
        profile = _profile(args)
        cluster = DevCluster(_run_dir(args), profile=profile, karpenter=args.karpenter, operator=not args.no_operator)
        state = cluster.start()
    except (ClusterError, build.BuildError, engine.EngineError) as exc:
        print(f"qwenfleet dev up: {exc}")
        return 1
    took = time.monotonic() - started
    console.print(f"Dev cluster ready in {took:.1f}s: {state.server} (Kubernetes {versions.KUBERNETES})")
    print(f"Run directory: {cluster.run_dir} (logs in {cluster.run_dir / 'logs'})")  # plain: paths never wrap
    if args.demo:
        return _demo(cluster.kubeconfig, console, karpenter=args.karpenter, real_engine=args.real_engine)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    if not args.no_operator:
        console.print(
            "The qwenfleet operator is running; try: kubectl apply -f manifests/examples/qwen3-30b-a3b-h100.yaml"
        )
    return 0


def _demo(kubeconfig: Path, console: Console, karpenter: bool = False, real_engine: bool = False) -> int:
    console.print("Deploying the demo fleet (manifests/demo/fleet.yaml): three Qwen3 sizes and a router")
    if karpenter:
        console.print("Each size gets a Karpenter NodePool; Karpenter's kwok provider brings up its GPU nodes")
    try:
        url = asyncio.run(demo.deploy(str(kubeconfig), console, karpenter=karpenter, real_engine=real_engine))
    except TimeoutError as exc:
        print(f"qwenfleet dev up: {exc}")
        return 1
    body = (
        '{"model": "auto", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64, '
        '"chat_template_kwargs": {"enable_thinking": false}}'
    )
    pools = "  kubectl get nodepools,nodes         # a NodePool per size; GPU nodes come as pods need them\n"
    pools = pools if karpenter else ""
    print(f"""
The fleet is up. The router (Qwen3Router qwen3) answers at {url}/v1

  export KUBECONFIG={kubeconfig}
  kubectl get q3d,q3r                 # three sizes; qwen3-large sits at zero until a thinking request
{pools}
  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{body}'

  python -c "import openai; c = openai.OpenAI(base_url='{url}/v1', api_key='none'); \\
print(c.chat.completions.create(model='auto', messages=[{{'role': 'user', 'content': 'Hi'}}]).choices[0].message)"

  (a prompt ending in /think, or "enable_thinking": true, goes to qwen3-large and wakes it from zero)

  kubectl get q3d -w                  # in one terminal: watch replicas follow the queue
  .venv/bin/qwenfleet dev load --rate 100 --seconds 120 --model medium   # in another: drive traffic

The response header x-qwenfleet-route says which size served a request and why. `make fleet-down` stops it.""")
    return 0


def _running(args: argparse.Namespace) -> State | None:
    state = State.load(_run_dir(args))
    if state is None or not state.pids:
        print("no dev cluster is running (make fleet starts one)")
        return None
    return state


def _cmd_load(args: argparse.Namespace) -> int:
    state = _running(args)
    if state is None:
        return 1
    kubeconfig = Path(state.run_dir) / "admin.kubeconfig"
    summary = Path(args.json) if args.json else None
    return asyncio.run(demo.load(str(kubeconfig), args.rate, args.seconds, args.model, args.thinking_share,
                                 args.namespace, summary))  # fmt: skip


def _cmd_down(args: argparse.Namespace) -> int:
    state = _running(args)
    if state is None:
        return 0
    stop_state(state)
    left = leftovers(Path(state.run_dir), state.ports)
    if left:
        print("dev cluster stopped, but these are left:\n  " + "\n  ".join(left))
        return 1
    print(f"dev cluster stopped; no process left, ports {', '.join(str(p) for p in state.ports.values())} free")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _running(args)
    if state is None:
        return 1
    table = Table("component", "pid", "alive", "ports", title=f"{state.server} ({state.profile} profile)")
    for name, pid in state.pids.items():
        ports = ", ".join(f"{port} ({key})" for key, port in state.ports.items() if PORT_OWNERS.get(key) == name)
        table.add_row(name, str(pid), "yes" if alive(pid) else "NO", ports)
    Console().print(table)
    print(f"nodes: {_node_summary(state)}")
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0 if all(alive(p) for p in state.pids.values()) else 1


def _node_summary(state: State) -> str:
    cluster = DevCluster(Path(state.run_dir))
    cluster.state = state
    try:
        items = cluster.request("GET", "/api/v1/nodes").get("items", [])
    except OSError as exc:
        return f"unknown (API server unreachable: {exc})"
    ready = sum(
        any(c["type"] == "Ready" and c["status"] == "True" for c in (n.get("status") or {}).get("conditions") or [])
        for n in items
    )
    gpus = sum(int((n.get("status") or {}).get("capacity", {}).get("nvidia.com/gpu", 0)) for n in items)
    return f"{len(items)} ({ready} Ready), {gpus} nvidia.com/gpu in all"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet dev ...`."""
    dev = sub.add_parser("dev", help="the simulated GPU fleet on a local control plane")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    b = dev_sub.add_parser("build", help="build the control-plane binaries (cached)")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--with-tools", action="store_true", help="also build helm, fetch Envoy (chart and gateway tests)")
    b.set_defaults(func=_cmd_build)
    eng = dev_sub.add_parser("engine", help="install the real vLLM engine (CPU build) and the tiny Qwen3 checkpoint")
    eng.add_argument("--force", action="store_true", help="reinstall even when cached")
    eng.set_defaults(func=_cmd_engine)
    up = dev_sub.add_parser("up", help="start the control plane and the simulated GPU nodes")
    up.add_argument("--karpenter", action="store_true", help="run Karpenter's kwok provider: nodes on demand")
    up.add_argument("--profile", choices=sorted(nodes.PROFILES), help="node profile (default: default)")
    up.add_argument("--no-operator", action="store_true", help="do not run the qwenfleet operator in the fleet")
    up.add_argument("--demo", action="store_true", help="also deploy three Qwen3 sizes and a router, and wait")
    up.add_argument("--real-engine", action="store_true",
                    help="with --demo: serve the small size with the real vLLM engine (installed once)")  # fmt: skip
    up.set_defaults(func=_cmd_up)
    load = dev_sub.add_parser("load", help="send chat requests through the demo router and show replicas")
    load.add_argument("--rate", type=float, default=20.0, help="requests per second (Poisson)")
    load.add_argument("--seconds", type=float, default=120.0)
    load.add_argument("--model", default="auto", help="model name or alias (default: auto)")
    load.add_argument("--thinking-share", type=float, default=0.1, help="share of requests asking for thinking")
    load.add_argument("--namespace", default=demo.NAMESPACE, help="namespace of the demo router (default: default)")
    load.add_argument("--json", metavar="FILE", help="also write the tokens received per backend to FILE")
    load.set_defaults(func=_cmd_load)
    down = dev_sub.add_parser("down", help="stop everything")
    down.set_defaults(func=_cmd_down)
    status = dev_sub.add_parser("status", help="show the components")
    status.set_defaults(func=_cmd_status)
    for p in (up, down, status, load):
        p.add_argument("--run-dir", help=f"state directory (default: {default_run_dir()})")
