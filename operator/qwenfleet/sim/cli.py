"""`qwenfleet sim`: one simulated vLLM server for a model on a GPU, sized by the planner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from qwenfleet.catalog import Precision, UnknownGPUError, UnknownModelError
from qwenfleet.planner import PlanInfeasible, PlanRequest, plan
from qwenfleet.render.names import HTTP_PORT
from qwenfleet.sim.fleet import SimFleet
from qwenfleet.sim.lora import parse_lora_modules, runtime_updates_from_env


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
            enable_lora=args.enable_lora or bool(args.lora_modules) or None,
            max_loras=args.max_loras,
            max_lora_rank=args.max_lora_rank,
            lora_modules=dict(parse_lora_modules(args.lora_modules)) if args.lora_modules else None,
            lora_runtime_updates=runtime_updates_from_env(dict(os.environ)),
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
    except (PlanInfeasible, UnknownModelError, UnknownGPUError, OSError, ValueError) as exc:
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
    p.add_argument("--enable-lora", action="store_true", help="as vLLM's: serve LoRA adapters")
    p.add_argument("--max-loras", type=int, default=None, help="as vLLM's: adapters one batch may run (default 1)")
    p.add_argument("--max-lora-rank", type=int, default=None, help="as vLLM's: the highest adapter rank (default 16)")
    p.add_argument("--lora-modules", nargs="+", default=None, metavar="NAME=PATH",
                   help="as vLLM's: adapters loaded at start; VLLM_ALLOW_RUNTIME_LORA_UPDATING=True serves "
                   "/v1/load_lora_adapter and /v1/unload_lora_adapter")  # fmt: skip
    p.set_defaults(func=run)
