"""The simulator against the real vLLM engine: the same requests to both, compared by shape.

Generated text, ids, timestamps and latencies differ by nature; what must agree is everything a client or a
scraper relies on: routes, status codes, JSON key paths and value types, SSE framing, error bodies, metric
families with their types and label names, and what /metrics does with a query string. Every difference that
remains is listed in ALLOWED below with its reason; an unlisted difference fails.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwenfleet.cost.ledger import slo_bound
from qwenfleet.enginemetrics.parse import EngineSample, parse

M = "Qwen3-0.6B"
HELLO = [{"role": "user", "content": "Hello there"}]
NO_THINK = {"enable_thinking": False}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}

# ------------------------------------------------------------------------------------------ the allow-list
ALLOWED: dict[tuple[str, str], str] = {
    ("*", "choices[].stop_reason"): "int when generation ends on a stop token that is not the tokenizer's EOS "
    "(<|endoftext|> for Qwen3), null otherwise; which one a random-weight model emits is chance",
    ("*", "choices[].delta.content"): "the finish chunk's delta is empty when the last token is end-of-sequence "
    'and carries the last token\'s text otherwise ("" for a partial UTF-8 byte): generated text',
    ("chat think", "choices[].message.content"): "null while the answer is still reasoning at max_tokens, a "
    "string once </think> was generated: decided by the generated text",
    ("chat think", "choices[].message.reasoning"): "null when the model closes the reasoning at once: generated text",
    ("tools required", "choices[].message.tool_calls"): "random weights never close the <tool_call> JSON within "
    "max_tokens, so the real engine has no call to parse; the named-tool case compares the call's shape",
    ("tools required", "choices[].message.tool_calls[]"): "as above",
    ("tools required", "choices[].message.tool_calls[].id"): "as above",
    ("tools required", "choices[].message.tool_calls[].type"): "as above",
    ("tools required", "choices[].message.tool_calls[].function"): "as above",
    ("tools required", "choices[].message.tool_calls[].function.name"): "as above",
    ("tools required", "choices[].message.tool_calls[].function.arguments"): "as above",
}
"""(case, key path) -> why the real engine and the simulator may differ there. "*" is every case."""

NOT_MODELLED_ROUTES = {
    "/detokenize": "token ids are the simulator's estimate; nothing in qwenfleet detokenizes",
    "/generative_scoring": "scoring API, not served by the fleet's model servers",
    "/invocations": "SageMaker entry point",
    "/is_scaling_elastic_ep": "elastic expert parallelism, not used",
    "/scale_elastic_ep": "elastic expert parallelism, not used",
    "/kv_event_sources": "KV-cache events for external routers, not used",
    "/v1/chat/completions/batch": "batch chat API, not used by the router or clients of the fleet",
    "/v1/messages": "Anthropic Messages API, not routed by qwenfleet",
    "/v1/messages/count_tokens": "Anthropic Messages API, not routed by qwenfleet",
    "/v1/responses": "OpenAI Responses API, not routed by qwenfleet",
    "/v1/responses/{response_id}": "OpenAI Responses API, not routed by qwenfleet",
    "/v1/responses/{response_id}/cancel": "OpenAI Responses API, not routed by qwenfleet",
    "/v1/systemone": "not routed by qwenfleet",
}
"""Real routes the simulator does not serve, each with why nothing in qwenfleet needs it."""

NOT_MODELLED_METRICS = {
    "http_": "prometheus-fastapi-instrumentator's HTTP metrics of the API server process",
    "process_": "the engine process's own CPU, memory and file descriptors",
    "python_": "the engine interpreter's GC and version",
}
"""Metric family prefixes only the real server exposes, each with why (none is a vllm: family)."""


# ------------------------------------------------------------------------------------------ HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(base: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def both(
    real: str, sim: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[Answer, Answer]:
    return call(real, method, path, body, raw), call(sim, method, path, body, raw)


# ------------------------------------------------------------------------------------------ shapes


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "object"}[type(value)]


def shape(value: Any, path: str = "", out: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Every key path (lists as `[]`, their elements merged) with the set of value types seen there."""
    out = {} if out is None else out
    if path:
        out.setdefault(path, set()).add(_kind(value))
    if isinstance(value, dict):
        for key, item in value.items():
            shape(item, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list):
        for item in value:
            shape(item, f"{path}[]", out)
    return out


def diff(case: str, real: Any, sim: Any) -> dict[str, tuple[list[str], list[str]]]:
    """Key paths whose types differ between the real engine and the simulator, minus the allow-list."""
    a, b = shape(real), shape(sim)
    out = {}
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path) and (case, path) not in ALLOWED and ("*", path) not in ALLOWED:
            out[path] = (sorted(a.get(path, {"absent"})), sorted(b.get(path, {"absent"})))
    return out


# ------------------------------------------------------------------------------------------ routes


def test_health_ping_version_load_and_models(real: str, sim: str) -> None:
    for method, path in (("GET", "/health"), ("GET", "/ping"), ("POST", "/ping")):
        r, s = both(real, sim, method, path)
        assert (r.status, r.body) == (s.status, s.body) == (200, b""), path
    r, s = both(real, sim, "GET", "/version")
    assert r.json() == s.json() and r.headers["content-type"] == s.headers["content-type"]
    r, s = both(real, sim, "GET", "/load")
    assert r.status == s.status == 200 and diff("load", r.json(), s.json()) == {}
    r, s = both(real, sim, "GET", "/v1/models")
    assert diff("models", r.json(), s.json()) == {}
    card, mine = r.json()["data"][0], s.json()["data"][0]
    for key in ("id", "object", "owned_by", "max_model_len", "parent"):
        assert card[key] == mine[key], key
    # `root` differs by design: the real engine serves the tiny checkpoint in place of the plan's repository.
    for method, path in (("POST", "/health"), ("GET", "/v1/chat/completions"), ("GET", "/nothing")):
        r, s = both(real, sim, method, path)
        assert (r.status, r.json()) == (s.status, s.json()), (method, path)


def test_every_real_route_is_served_or_listed_as_not_modelled(real: str, sim: str) -> None:
    spec = call(real, "GET", "/openapi.json").json()
    missing = set()
    for path, methods in spec["paths"].items():
        method = next(iter(methods)).upper()
        answer = call(sim, method, path.replace("{response_id}", "x"), {} if method == "POST" else None)
        if answer.status == 404 and answer.json() == {"detail": "Not Found"}:
            missing.add(path)
    assert missing == set(NOT_MODELLED_ROUTES)


# ------------------------------------------------------------------------------------------ completions

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat think": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 16}),
    "chat no think": ("/v1/chat/completions",
                      {"model": M, "messages": HELLO, "max_tokens": 16, "chat_template_kwargs": NO_THINK}),
    "completion": ("/v1/completions", {"model": M, "prompt": "Hello", "max_tokens": 8}),
    "tools auto no call": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 8, "tools": TOOLS,
                                                    "chat_template_kwargs": NO_THINK}),
    "tools required": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 24, "tools": TOOLS,
                                                "tool_choice": "required", "chat_template_kwargs": NO_THINK}),
    "tools named": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 400, "tools": TOOLS,
                                             "tool_choice": NAMED, "chat_template_kwargs": NO_THINK, "seed": 3}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_response_bodies_have_the_same_shape(real: str, sim: str, case: str) -> None:
    path, body = CASES[case]
    r, s = both(real, sim, "POST", path, body)
    assert r.status == s.status == 200, (r.body, s.body)
    assert r.headers["content-type"] == s.headers["content-type"]
    assert diff(case, r.json(), s.json()) == {}


def test_reasoning_tokens_are_counted_for_chat_only(real: str, sim: str) -> None:
    for side in (real, sim):
        think = call(side, "POST", *CASES["chat think"]).json()["usage"]
        quiet = call(side, "POST", *CASES["chat no think"]).json()["usage"]
        text = call(side, "POST", *CASES["completion"]).json()["usage"]
        assert 0 < think["completion_tokens_details"]["reasoning_tokens"] <= think["completion_tokens"], side
        assert quiet["completion_tokens_details"] == {"reasoning_tokens": 0}, side
        assert text["completion_tokens_details"] is None, side


def test_a_named_tool_choice_returns_the_call(real: str, sim: str) -> None:
    for side in (real, sim):
        choice = call(side, "POST", *CASES["tools named"]).json()["choices"][0]
        calls = choice["message"]["tool_calls"]
        assert choice["message"]["content"] == "" and len(calls) == 1, side
        assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("chatcmpl-tool-"), side
        assert calls[0]["type"] == "function" and isinstance(calls[0]["function"]["arguments"], str), side
        assert choice["finish_reason"] in ("stop", "length"), side  # named: "stop", never "tool_calls"


def test_lora_routes_are_absent_without_runtime_updating(real: str, sim: str) -> None:
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        r, s = both(real, sim, "POST", path, {"lora_name": "a2", "lora_path": "/nowhere"})
        assert (r.status, r.json()) == (s.status, s.json()) == (404, {"detail": "Not Found"}), path


# ------------------------------------------------------------------------------------------ several choices (n)

N_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat n": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 6, "n": 3, "ignore_eos": True}),
    "completion n": ("/v1/completions", {"model": M, "prompt": "Hello", "max_tokens": 6, "n": 3, "ignore_eos": True}),
}


@pytest.mark.parametrize("case", sorted(N_CASES))
def test_n_choices_count_the_prompt_once_and_sum_the_outputs(real: str, sim: str, case: str) -> None:
    path, body = N_CASES[case]
    r, s = both(real, sim, "POST", path, body)
    assert r.status == s.status == 200, (r.body, s.body)
    assert diff(case, r.json(), s.json()) == {}
    single = call(sim, "POST", path, {**body, "n": 1}).json()["usage"]["prompt_tokens"]
    for answer in (r.json(), s.json()):
        assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
        use = answer["usage"]
        assert use["completion_tokens"] == 18 and use["total_tokens"] == use["prompt_tokens"] + 18  # max_tokens x 3
    assert s.json()["usage"]["prompt_tokens"] == single


@pytest.mark.parametrize("usage", [True, False])
def test_streamed_choices_have_the_same_chunks(real: str, sim: str, usage: bool) -> None:
    body: dict[str, Any] = {"model": M, "prompt": "Hello", "max_tokens": 4, "n": 2, "stream": True, "ignore_eos": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    r, s = both(real, sim, "POST", "/v1/completions", body)
    a, b = events(r), events(s)
    assert a[-1] == b[-1] == "[DONE]"
    for chunks in (a[:-1], b[:-1]):
        finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
        assert sorted(c["choices"][0]["index"] for c in finishes) == [0, 1]
        assert all(("system_fingerprint" in c) is not usage for c in finishes)
        if usage:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert diff("sse n", {"chunks": a[:-1]}, {"chunks": b[:-1]}) == {}


@pytest.mark.parametrize(("n", "extra"), [(0, {}), (-1, {}), (3, {"temperature": 0})])
def test_a_bad_n_is_refused_alike(real: str, sim: str, n: int, extra: dict[str, Any]) -> None:
    r, s = both(real, sim, "POST", "/v1/completions", {"model": M, "prompt": "x", "max_tokens": 2, "n": n, **extra})
    assert r.status == s.status == 400 and r.json() == s.json()


# ------------------------------------------------------------------------------------------ streaming


def events(answer: Answer) -> list[Any]:
    """The SSE events of a stream: parsed chunks, and the string "[DONE]"."""
    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    text = answer.body.decode()
    assert text.endswith("\n\n")
    out: list[Any] = []
    for frame in text.split("\n\n")[:-1]:
        assert frame.startswith("data: "), frame
        data = frame.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def framing(chunks: list[Any], *, chat: bool, usage: bool) -> dict[str, list[Any]]:
    """Split a stream into its parts, asserting the order vLLM sends them in."""
    assert chunks[-1] == "[DONE]" and "[DONE]" not in chunks[:-1]
    body = chunks[:-1]
    parts: dict[str, list[Any]] = {"role": [], "delta": [], "finish": [], "usage": []}
    if chat:
        parts["role"].append(body.pop(0))
        assert parts["role"][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if usage:
        parts["usage"].append(body.pop())
        assert parts["usage"][0]["choices"] == []
    parts["finish"].append(body.pop())
    assert parts["finish"][0]["choices"][0]["finish_reason"] is not None
    assert all(c["choices"][0]["finish_reason"] is None for c in body)
    parts["delta"] = body
    return parts


STREAMS: dict[str, tuple[str, dict[str, Any], bool, bool]] = {
    "sse chat usage": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 12, "stream": True,
                       "chat_template_kwargs": NO_THINK, "stream_options": {"include_usage": True}}, True, True),
    "sse chat": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 12, "stream": True,
                 "chat_template_kwargs": NO_THINK}, True, False),
    "sse chat think": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 6, "stream": True,
                       "stream_options": {"include_usage": True}}, True, True),
    "sse completion usage": ("/v1/completions", {"model": M, "prompt": "Hello", "max_tokens": 8, "stream": True,
                             "stream_options": {"include_usage": True}}, False, True),
    "sse completion": ("/v1/completions", {"model": M, "prompt": "Hello", "max_tokens": 8, "stream": True},
                       False, False),
    "sse continuous usage": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 6, "stream": True,
                             "chat_template_kwargs": NO_THINK,
                             "stream_options": {"include_usage": True, "continuous_usage_stats": True}}, True, True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_streams_have_the_same_framing_and_chunk_shapes(real: str, sim: str, case: str) -> None:
    path, body, chat, usage = STREAMS[case]
    r, s = both(real, sim, "POST", path, body)
    a, b = framing(events(r), chat=chat, usage=usage), framing(events(s), chat=chat, usage=usage)
    for part in ("role", "finish", "usage"):
        assert len(a[part]) == len(b[part])
        for x, y in zip(a[part], b[part], strict=True):
            assert diff(case, x, y) == {}, part
    if a["delta"] and b["delta"]:
        assert diff(case, {"chunks": a["delta"]}, {"chunks": b["delta"]}) == {}
    if case == "sse chat think":  # both start in the reasoning
        assert "reasoning" in (a["delta"] + a["finish"])[0]["choices"][0]["delta"]
        assert "reasoning" in (b["delta"] + b["finish"])[0]["choices"][0]["delta"]


def test_a_streamed_named_tool_call_has_the_same_deltas(real: str, sim: str) -> None:
    path, body = CASES["tools named"]
    r, s = both(real, sim, "POST", path, {**body, "stream": True, "max_tokens": 40})
    a, b = framing(events(r), chat=True, usage=False), framing(events(s), chat=True, usage=False)
    head_a, head_b = a["delta"][0]["choices"][0]["delta"], b["delta"][0]["choices"][0]["delta"]
    assert diff("sse tools head", head_a, head_b) == {}
    assert head_a["tool_calls"][0]["function"] == head_b["tool_calls"][0]["function"] == {"name": "get_weather"}
    assert diff("sse tools arguments", a["delta"][1]["choices"][0]["delta"], b["delta"][1]["choices"][0]["delta"]) == {}


# ------------------------------------------------------------------------------------------ errors

ERRORS: dict[str, tuple[str, Any, bytes | None]] = {
    "bad json": ("/v1/chat/completions", None, b"{nope"),
    "not an object": ("/v1/chat/completions", [1], None),
    "missing messages": ("/v1/chat/completions", {"model": M}, None),
    "max_tokens negative": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": -1}, None),
    "max_tokens zero": ("/v1/completions", {"model": M, "prompt": "x", "max_tokens": 0}, None),
    "max_tokens not a number": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": "x"}, None),
    "max_tokens over max_model_len": ("/v1/chat/completions", {"model": M, "messages": HELLO, "max_tokens": 50000},
                                      None),
    "prompt too long": ("/v1/chat/completions",
                        {"model": M, "messages": [{"role": "user", "content": "word " * 50000}], "max_tokens": 5},
                        None),
    "unknown model": ("/v1/chat/completions", {"model": "nope", "messages": HELLO}, None),
    "unknown model completion": ("/v1/completions", {"model": "nope", "prompt": "x"}, None),
    "completion without prompt": ("/v1/completions", {"model": M}, None),
    "completion bad json": ("/v1/completions", None, b"["),
    "temperature not a number": ("/v1/chat/completions", {"model": M, "messages": HELLO, "temperature": "hot"}, None),
    "top_p a list": ("/v1/completions", {"model": M, "prompt": "x", "top_p": [1]}, None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_have_the_same_status_and_body(real: str, sim: str, case: str) -> None:
    path, body, raw = ERRORS[case]
    r, s = both(real, sim, "POST", path, body, raw)
    assert r.status == s.status and r.status in (400, 404)
    assert r.headers["content-type"] == s.headers["content-type"] == "application/json"
    assert r.json() == s.json()


def test_a_max_tokens_past_the_room_left_is_clamped_not_refused(real: str, sim: str) -> None:
    body = {"model": M, "prompt": "Hello", "max_tokens": 40960, "ignore_eos": False}
    r, s = both(real, sim, "POST", "/v1/completions", {**body, "max_tokens": 40960})
    assert r.status == s.status == 200


# ------------------------------------------------------------------------------------------ metrics


def families(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(text):
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le", "quantile"}
        out[family.name] = (family.type, tuple(sorted(labels)))
    return out


def test_metrics_have_the_same_vllm_families_types_and_labels(real: str, sim: str) -> None:
    call(sim, "POST", *CASES["completion"])  # both have served requests by now (or do now)
    call(real, "POST", *CASES["completion"])
    r, s = both(real, sim, "GET", "/metrics")
    assert r.headers["content-type"] == s.headers["content-type"]
    a, b = families(r.body.decode()), families(s.body.decode())
    extra = {name for name in set(a) - set(b) if name.startswith(tuple(NOT_MODELLED_METRICS))}
    assert {k: v for k, v in a.items() if k not in extra} == b


def test_metrics_ignore_the_query_string(real: str, sim: str) -> None:
    for side in (real, sim):
        whole = families(call(side, "GET", "/metrics").body.decode())
        named = families(call(side, "GET", "/metrics?name[]=vllm:num_requests_waiting").body.decode())
        assert set(named) == set(whole) and len(named) > 20, side


# ------------------------------------------------------------------------------------------ cancellation


def _sample(base: str, name: str, **labels: str) -> float:
    return _value(call(base, "GET", "/metrics").body.decode(), name, **labels)


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# A stream that outlasts any wait here on both sides: the simulator runs at x100 and would finish 3,000 tokens in half
# a second; the context is 40,960 tokens, and every such stream is closed (aborted) long before its end.
LONG = 40_000


def _disconnect_after_first_chunk(base: str) -> None:
    """Start a long stream, read one chunk, hang up."""
    body = {"model": M, "messages": HELLO, "max_tokens": LONG, "ignore_eos": True, "stream": True,
            "chat_template_kwargs": NO_THINK}  # fmt: skip
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        r.readline()


def test_a_client_disconnect_aborts_the_request_and_counts_as_vllm_counts_it(real: str, sim: str) -> None:
    for side in (real, sim):
        aborted = _sample(side, "vllm:request_success_total", finished_reason="abort")
        _disconnect_after_first_chunk(side)
        deadline = time.monotonic() + 30
        while _sample(side, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sample(side, "vllm:num_requests_running") == 0, side  # the engine dropped it
        generated = _sample(side, "vllm:generation_tokens_total")
        call(side, "POST", *CASES["completion"])  # another engine step or two after the abort
        assert _sample(side, "vllm:generation_tokens_total") - generated < 100, side  # no more tokens for it
        # vLLM 0.32 records a finished reason only for requests that finish inside the engine: an abort is not one
        assert _sample(side, "vllm:request_success_total", finished_reason="abort") == aborted, side


# ------------------------------------------------------------------------------------------ KV cache use


def _open_stream(base: str, word: str) -> Any:
    """A long stream with its own prompt (no shared prefix), left open after its first chunk."""
    body = {"model": M, "messages": [{"role": "user", "content": f"{word} " * 40}], "max_tokens": LONG,
            "ignore_eos": True, "stream": True, "chat_template_kwargs": NO_THINK}  # fmt: skip
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    response = urllib.request.urlopen(req, timeout=60)
    response.readline()
    return response


def _running_and_kv(base: str) -> tuple[float, float]:
    """Requests running and KV cache use, from one scrape."""
    text = call(base, "GET", "/metrics").body.decode()
    return _value(text, "vllm:num_requests_running"), _value(text, "vllm:kv_cache_usage_perc")


def _running_at_least(base: str, n: int, above: float = 0.0, timeout: float = 30.0) -> float:
    """The KV cache use once the engine reports `n` requests running and the use is above `above` (the stream's
    first chunk, the role, can come before the request is scheduled, and the gauges follow the engine's steps)."""
    deadline = time.monotonic() + timeout
    running, kv = _running_and_kv(base)
    while (running < n or kv <= above) and time.monotonic() < deadline:
        time.sleep(0.2)
        running, kv = _running_and_kv(base)
    assert running >= n and kv > above, (base, running, kv, above)
    return kv


def test_kv_cache_use_is_a_fraction_that_grows_with_the_sequences_held(real: str, sim: str) -> None:
    # SLO mode learns a replica's concurrency as num_requests_running over kv_cache_usage_perc: that holds only if
    # the usage is a share of the whole cache (0 to 1) that grows with each sequence the engine holds
    for side in (real, sim):
        streams = [_open_stream(side, "apple")]
        try:
            one = _running_at_least(side, 1)
            streams.append(_open_stream(side, "river"))
            two = _running_at_least(side, 2, above=one)
            assert 0 < one < two <= 1, (side, one, two)
        finally:
            for stream in streams:
                stream.close()


# ------------------------------------------------------------------------------------------ time to first token


def _ttft(base: str) -> EngineSample:
    return parse(call(base, "GET", "/metrics").body.decode())


def test_the_ttft_histogram_counts_each_request_once_at_the_same_buckets(real: str, sim: str) -> None:
    # status.slo and qwenfleet_deployment_slo_requests are read from this histogram by cost.ledger: a request
    # with a first token counts once (streamed, whole, or hung up on after its first chunk), and the buckets an
    # objective is measured at are the engine's
    buckets = []
    for side in (real, sim):
        before = _ttft(side)
        call(side, "POST", *CASES["completion"])
        call(side, "POST", *STREAMS["sse chat"][:2])
        _disconnect_after_first_chunk(side)
        deadline = time.monotonic() + 30
        after = _ttft(side)
        while after.first_tokens() < before.first_tokens() + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = _ttft(side)
        assert after.first_tokens() - before.first_tokens() == 3, side
        bound = slo_bound(2.5, [after])
        assert bound == 2.5, side  # vLLM's bucket at the common 2.5 s objective
        on_time = after.within(bound)
        assert on_time is not None and 0 <= on_time - (before.within(bound) or 0.0) <= 3, side
        buckets.append([le for le, _ in after.ttft])
    assert buckets[0] == buckets[1]
    assert slo_bound(2.0, [_ttft(real)]) == 1.0  # between two buckets: measured at the lower one


def test_the_one_metrics_reading_moves_the_same_on_both(real: str, sim: str) -> None:
    # enginemetrics.parse is what the autoscaler, the cost ledger and the router read: after one completion each
    # counter it reads has moved on the real engine as on the simulator, and an idle engine shows no queue
    for side in (real, sim):
        before = _ttft(side)
        call(side, "POST", *CASES["completion"])
        deadline = time.monotonic() + 30
        after = _ttft(side)
        while after.finished < before.finished + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = _ttft(side)
        assert after.finished == before.finished + 1, side
        assert after.prompt_tokens > before.prompt_tokens and after.generation_tokens > before.generation_tokens, side
        assert after.waiting == 0 and after.running == 0 and 0 <= after.kv <= 1, (side, after)
