"""`qwenfleet sim`: one simulated vLLM server for a model on a GPU, sized by the planner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from qwenfleet.catalog import Precision, UnknownGPUError, UnknownModelError
from qwenfleet.planner import PlanInfeasible, PlanRequest, plan
from qwenfleet.render.names import HTTP_PORT
from qwenfleet.sim.fleet import SimFleet


async def _serve(args: argparse.Namespace) -> None:
    p = plan(PlanRequest(model=args.model, gpu=args.gpu, precision=Precision(args.precision),
                         max_model_len=args.max_model_len))  # fmt: skip
    async with SimFleet(time_scale=args.time_scale) as fleet:
        server = await fleet.start_pod(
            "sim",
            args.host,
            args.port,
            p,
            seed=args.seed,
            cold_start_seconds=args.cold_start_seconds,
            max_num_seqs=args.max_num_seqs,
        )
        server.api_key = args.api_key
        pod = fleet.pods["sim"]
        ready = server.cold_start_seconds / args.time_scale
        print(f"simulated vLLM: {server.name} on {p.gpus_per_replica} x {p.gpu}, {p.kv_cache_tokens} KV tokens, "
              f"max_num_seqs {server.perf.max_num_seqs}, time x{args.time_scale:g}", flush=True)  # fmt: skip
        print(f"serving {pod.url}/v1 (health 200 in {ready:.1f} s); Ctrl-C stops", flush=True)
        await asyncio.Event().wait()


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 when the plan is infeasible or the address is taken."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except (PlanInfeasible, UnknownModelError, UnknownGPUError, OSError) as exc:
        print(f"qwenfleet sim: {exc}", file=sys.stderr)
        return 2
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet sim`."""
    p = sub.add_parser("sim", help="serve a simulated vLLM (OpenAI API, vLLM metrics) for a planned model",
                       description="Serve a simulated vLLM whose timing comes from the planner's Plan.")  # fmt: skip
    p.add_argument("--model", required=True, help="catalog model name, e.g. Qwen3-8B")
    p.add_argument("--gpu", required=True, help="GPU type, e.g. L4-24GB")
    p.add_argument("--precision", default="bf16", choices=[x.value for x in Precision])
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the planner's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=HTTP_PORT)
    p.add_argument("--time-scale", type=_positive, default=1.0,
                   help="simulated seconds per wall second (10 = ten times faster)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cold-start-seconds", type=float, default=None,
                   help="simulated load time before /health is 200 (default: the plan's estimate)")  # fmt: skip
    p.add_argument("--max-num-seqs", type=int, default=None, help="override the plan's max_num_seqs")
    p.add_argument("--api-key", default=None, help="as vLLM's: /v1 requests need `Authorization: Bearer KEY`")
    p.set_defaults(func=run)
