"""The router's reading of token usage from answers, JSON and streamed, and its per-backend token counter."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from qwenfleet.router.app import RouterMetrics
from qwenfleet.router.usage import Usage, usage_of_body, usage_of_stream_tail

USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
         "completion_tokens_details": {"reasoning_tokens": 20}}  # fmt: skip


def test_usage_of_a_json_answer() -> None:
    body = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": USAGE}).encode()
    use = usage_of_body(body)
    assert use == Usage(12, 30, 20)
    assert use is not None and use.mode == "thinking"
    assert usage_of_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}') == Usage(3, 4, 0)
    assert usage_of_body(b"not json") is None
    assert usage_of_body(b'{"error": {}}') is None


def test_usage_of_a_stream_tail_skips_null_usage_and_finds_the_last_chunk() -> None:
    chunks = [{"choices": [{"delta": {"content": "a"}}], "usage": None}, {"choices": [], "usage": USAGE}]
    stream = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    assert usage_of_stream_tail(stream.encode()[-200:]) == Usage(12, 30, 20)
    no_usage = 'data: {"choices": [], "usage": null}\n\ndata: [DONE]\n\n'
    assert usage_of_stream_tail(no_usage.encode()) is None
    assert Usage(5, 5, 0).mode == "non_thinking"


def test_tokens_are_counted_by_backend_type_and_mode() -> None:
    metrics = RouterMetrics()
    metrics.count_usage("big", Usage(12, 30, 20))
    metrics.count_usage("small", Usage(5, 7, 0))
    metrics.count_usage("small", None)
    text = generate_latest(metrics.registry).decode()
    assert 'qwenfleet_router_tokens_total{backend="big",mode="thinking",type="reasoning"} 20.0' in text
    assert 'qwenfleet_router_tokens_total{backend="small",mode="non_thinking",type="output"} 7.0' in text
