"""The router's bad-request corpus (tests/badinput/requests): every hostile or malformed body gets the 4xx its
file names, with a message saying why, while every backend is ready (so the body alone decides)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.app import Router
from qwenfleet.router.policy import BackendState, Replica
from tests.unit.test_router_app import FakeDiscovery

CORPUS = sorted((Path(__file__).resolve().parents[1] / "badinput" / "requests").glob("router-*.txt"))
SPEC = Qwen3RouterSpec.model_validate(
    {"backends": [{"name": "small", "aliases": ["qwen3-small"]}], "defaultBackend": "small"}
)


def _case(path: Path) -> tuple[dict[str, Any], bytes]:
    what, expect, body = path.read_bytes().split(b"\n", 2)
    assert what.startswith(b"# ") and expect.startswith(b"# expect: ")
    return json.loads(expect.removeprefix(b"# expect: ")), body


def test_the_request_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 10
    assert all(400 <= _case(p)[0]["status"] < 500 for p in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
async def test_a_bad_request_body_gets_its_4xx(path: Path) -> None:
    expect, body = _case(path)
    states = {"small": BackendState("small", "Qwen3-0.6B", [Replica("small-0", "127.0.0.1:9")], desired=1)}
    router = Router(SPEC, FakeDiscovery(SPEC, states))
    async with TestClient(TestServer(router.app())) as client:
        response = await client.post(expect.get("path", "/v1/chat/completions"), data=body)
        payload = await response.json()
    assert response.status == expect["status"], payload
    assert expect["message"] in payload["error"]["message"]
