"""The `qwenfleet` command line: plan, catalog, CRDs, the operator, the router, the simulator, the dev fleet."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from qwenfleet.api.crd import render_crds
from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.catalog import GPUS, MODELS, PRICE_SOURCE, Precision, UnknownGPUError, UnknownModelError
from qwenfleet.planner import PlanInfeasible, plan, plan_request

PLAN_KEYS = (
    "model",
    "precision",
    "gpu",
    "gpusPerReplica",
    "nodesPerReplica",
    "tensorParallelSize",
    "expertParallel",
    "maxModelLen",
    "kvCacheTokens",
    "maxConcurrentSequences",
    "vllmArgs",
    "coldStartSeconds",
    "costPerHourUSD",
)
"""Stable keys of `plan -o json`, printed first; the rest of the plan follows."""


def _console() -> Console:
    """A console that does not truncate tables when output goes to a pipe or file."""
    return Console() if sys.stdout.isatty() else Console(width=200)


class UsageError(Exception):
    """Bad input on the command line: exit 2 with one line."""


def _cmd_plan(args: argparse.Namespace) -> int:
    try:
        precision = Precision(args.precision)
    except ValueError:
        raise UsageError(f"unknown precision {args.precision!r}; expected bf16, fp8 or awq") from None
    if args.file:
        doc = yaml.safe_load(Path(args.file).read_text()) or {}
        spec_doc = doc.get("spec", doc) if isinstance(doc, dict) else {}
    else:
        if not args.model or not args.gpu:
            raise UsageError("give a model and --gpu, or -f a Qwen3Deployment")
        spec_doc = {"model": args.model, "gpu": args.gpu, "precision": precision.value}
        if args.max_model_len:
            spec_doc["maxModelLen"] = args.max_model_len
        overrides: dict[str, Any] = {}
        if args.tensor_parallel_size:
            overrides["tensorParallelSize"] = args.tensor_parallel_size
        if args.kv_cache_fp8:
            overrides["kvCacheDtype"] = "fp8"
        if overrides:
            spec_doc["overrides"] = overrides
        if args.price is not None:
            spec_doc["pricing"] = {"gpuHourUsd": args.price}
    try:  # the request the controller builds for the same spec: the plan equals status.plan
        request = plan_request(Qwen3DeploymentSpec.model_validate(spec_doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"spec.{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}") from None
    result = plan(request).to_wire()
    ordered = {k: result[k] for k in PLAN_KEYS} | {k: v for k, v in result.items() if k not in PLAN_KEYS}
    if args.output == "json":
        print(json.dumps(ordered, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(ordered, sort_keys=False), end="")
    else:
        table = Table(title=f"{result['model']} on {result['gpu']} ({result['precision']})", show_header=False)
        for key, value in ordered.items():
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            table.add_row(key, str(shown))
        _console().print(table)
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    console = _console()
    if args.what == "models":
        table = Table("model", "params", "active", "thinking", "context", "precisions")
        for m in MODELS:
            table.add_row(
                m.name,
                f"{m.arch.params_total / 1e9:.1f}B",
                f"{m.arch.params_active / 1e9:.1f}B",
                m.thinking.value,
                f"{m.context.native}/{m.context.max}",
                ", ".join(p.value for p in m.precisions),
            )
    else:
        table = Table("gpu", "memory MiB", "arch", "fp8", "per node", "$/GPU-h", caption=PRICE_SOURCE)
        for g in GPUS:
            table.add_row(
                g.name,
                str(g.memory_mib),
                f"{g.architecture} {g.compute_capability}",
                "yes" if g.fp8_w8a8 else "no",
                ",".join(map(str, g.gpus_per_node)),
                f"{g.price_per_gpu_hour_usd:.2f}",
            )
    console.print(table)
    return 0


def _write_files(directory: str, files: dict[str, str]) -> int:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        print(out / name)
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from qwenfleet.docsgen import render_docs

    return _write_files(args.out, render_docs())


def _cmd_crds(args: argparse.Namespace) -> int:
    return _write_files(args.out, render_crds())


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per capability."""
    parser = argparse.ArgumentParser(prog="qwenfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="size a Qwen3 model on a GPU type")
    p.add_argument("model", nargs="?", help="catalog model name, e.g. Qwen3-235B-A22B")
    p.add_argument("--gpu", help="GPU type, e.g. H100-80GB")
    p.add_argument("-f", "--file", help="plan a Qwen3Deployment manifest (its spec) instead of the flags")
    p.add_argument("--precision", default="bf16", help="bf16 (default), fp8 or awq")
    p.add_argument("--max-model-len", type=int, default=None, help="context length in tokens")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="force a TP size")
    p.add_argument("--price", type=float, default=None, help="USD per GPU-hour, replacing the catalog's")
    p.add_argument("--kv-cache-fp8", action="store_true", help="FP8 KV cache")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.set_defaults(func=_cmd_plan)

    c = sub.add_parser("catalog", help="list the Qwen3 models or GPU types qwenfleet knows")
    c.add_argument("what", choices=("models", "gpus"))
    c.set_defaults(func=_cmd_catalog)

    d = sub.add_parser("docs", help="write the generated documentation pages (API reference, sizing table)")
    d.add_argument("--out", default="docs", help="directory (default: docs)")
    d.set_defaults(func=_cmd_docs)

    k = sub.add_parser("crds", help="write the CustomResourceDefinitions")
    k.add_argument("--out", default="crds", help="directory (default: crds)")
    k.set_defaults(func=_cmd_crds)

    from qwenfleet.controller.main import register as register_run
    from qwenfleet.cost.cli import register as register_cost
    from qwenfleet.devcluster.cli import register as register_dev
    from qwenfleet.router.cli import register as register_router
    from qwenfleet.sim.cli import register as register_sim

    register_run(sub)
    register_cost(sub)
    register_router(sub)
    register_sim(sub)
    register_dev(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (UsageError, PlanInfeasible, UnknownModelError, UnknownGPUError) as exc:
        print(f"qwenfleet {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
