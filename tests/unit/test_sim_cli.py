"""`qwenfleet sim`: argument parsing, errors, and serving until cancelled."""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import aiohttp
import pytest

from qwenfleet.sim import cli


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qwenfleet")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def test_defaults_and_flags() -> None:
    args = _parse("--model", "Qwen3-8B", "--gpu", "L4-24GB")
    assert args.func is cli.run
    assert (args.precision, args.host, args.port, args.time_scale, args.seed) == ("bf16", "127.0.0.1", 8000, 1.0, 0)
    assert args.cold_start_seconds is None and args.max_model_len is None
    args = _parse("--model", "Qwen3-8B", "--gpu", "L4-24GB", "--precision", "fp8", "--time-scale", "10",
                  "--cold-start-seconds", "5", "--max-model-len", "8192", "--seed", "3")  # fmt: skip
    assert (args.precision, args.time_scale, args.cold_start_seconds, args.max_model_len, args.seed) == (
        "fp8", 10.0, 5.0, 8192, 3)  # fmt: skip
    with pytest.raises(SystemExit):
        _parse("--model", "Qwen3-8B", "--gpu", "L4-24GB", "--time-scale", "0")


def test_an_impossible_plan_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_parse("--model", "Qwen3-9000B", "--gpu", "L4-24GB")) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli.run(_parse("--model", "Qwen3-0.6B", "--gpu", "L4-24GB", "--precision", "awq")) == 2
    assert "no official awq checkpoint" in capsys.readouterr().err


async def test_serves_until_cancelled(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--model", "Qwen3-0.6B", "--gpu", "L4-24GB", "--port", "0", "--time-scale", "100",
                  "--cold-start-seconds", "0")  # fmt: skip
    task = asyncio.ensure_future(cli._serve(args))
    deadline = time.monotonic() + 5
    while not (found := re.search(r"serving (http://\S+)/v1", capsys.readouterr().out)):
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as http, http.get(f"{found.group(1)}/health") as r:
        assert r.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
