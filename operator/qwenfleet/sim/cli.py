"""`qwenfleet sim`: one simulated vLLM server for a model on a GPU, sized by the planner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from qwenfleet.catalog import Precision
from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.fleet import SimFleet


async def _serve(args: argparse.Namespace) -> None:
    p = plan(PlanRequest(model=args.model, gpu=args.gpu, precision=Precision(args.precision),
                         max_model_len=args.max_model_len))  # fmt: skip
    fleet = SimFleet(time_scale=args.time_scale)
    await fleet.start_pod("sim", args.host, args.port, p, seed=args.seed, cold_start_seconds=args.cold_start_seconds,
                          max_num_seqs=args.max_num_seqs)  # fmt: skip
    print(f"simulated vLLM for {p.model} on {p.gpus_per_replica} x {p.gpu} at http://{args.host}:{args.port}/v1")
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.close()


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet sim`."""
    p = sub.add_parser("sim", help="serve a simulated vLLM (OpenAI API, vLLM metrics) for a planned model")
    p.add_argument("--model", required=True)
    p.add_argument("--gpu", required=True)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cold-start-seconds", type=float, default=None, help="default: the plan's estimate")
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.set_defaults(func=run)
