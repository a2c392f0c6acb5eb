"""The simulator against the real vLLM engine with LoRA: `--enable-lora --max-loras 2 --max-lora-rank 16`, adapter
a1 from the start, runtime loading on. The same requests to both, compared as test_conformance compares them:
status codes, bodies (by shape where they carry ids, times or generated text, else exactly), and metric families.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.conftest import Adapters
from tests.engine.test_conformance import HELLO, NO_THINK, NOT_MODELLED_METRICS, M, both, call, diff, families

CHAT_A1 = {"model": "a1", "messages": HELLO, "max_tokens": 8, "chat_template_kwargs": NO_THINK}


def _ids(answer: Any) -> list[str]:
    return [card["id"] for card in answer.json()["data"]]


def test_the_models_list_has_each_adapter_after_the_base_model(
    real_lora: str, sim_lora: str, adapters: Adapters
) -> None:
    r, s = both(real_lora, sim_lora, "GET", "/v1/models")
    assert r.status == s.status == 200 and _ids(r) == _ids(s) == [M, "a1"]
    assert diff("lora models", r.json(), s.json()) == {}
    card, mine = r.json()["data"][1], s.json()["data"][1]
    for key in ("id", "object", "owned_by", "root", "parent", "max_model_len"):
        assert card[key] == mine[key], key
    assert card["root"] == str(adapters.a1) and card["parent"] == M and card["max_model_len"] is None


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_request_to_an_adapter_is_answered_under_its_name(real_lora: str, sim_lora: str, path: str) -> None:
    body = CHAT_A1 if "chat" in path else {"model": "a1", "prompt": "Hello", "max_tokens": 8}
    r, s = both(real_lora, sim_lora, "POST", path, body)
    assert r.status == s.status == 200, (r.body, s.body)
    assert r.json()["model"] == s.json()["model"] == "a1"
    assert diff("chat no think" if "chat" in path else "completion", r.json(), s.json()) == {}


def _steps(a: Adapters) -> list[tuple[str, str, Any, bytes | None]]:
    """(what, route, body, raw body) in order: each answer depends on the ones before."""
    load, unload = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
    return [
        ("load a2", load, {"lora_name": "a2", "lora_path": str(a.a2)}, None),
        ("load a2 again", load, {"lora_name": "a2", "lora_path": str(a.a2)}, None),
        ("load in place", load, {"lora_name": "a2", "lora_path": str(a.a2), "load_inplace": True}, None),
        ("base model name", load, {"lora_name": M, "lora_path": str(a.a2)}, None),
        ("rank above the maximum", load, {"lora_name": "big", "lora_path": str(a.big)}, None),
        ("no tensors", load, {"lora_name": "notensors", "lora_path": str(a.notensors)}, None),
        ("missing path", load, {"lora_name": "ghost", "lora_path": str(a.a2.parent / "ghost")}, None),
        ("no lora_path", load, {"lora_name": "x"}, None),
        ("no fields", load, {}, None),
        ("empty fields", load, {"lora_name": "", "lora_path": ""}, None),
        ("name not a string", load, {"lora_name": 1, "lora_path": "/x"}, None),
        ("bad json", load, None, b"{nope"),
        ("over max_loras", load, {"lora_name": "a3", "lora_path": str(a.a2)}, None),
        ("unload a3", unload, {"lora_name": "a3"}, None),
        ("unload a2", unload, {"lora_name": "a2"}, None),
        ("unload unknown", unload, {"lora_name": "zzz"}, None),
        ("unload the base model", unload, {"lora_name": M}, None),
        ("unload empty name", unload, {"lora_name": ""}, None),
        ("unload no name", unload, {}, None),
    ]


def test_loading_and_unloading_adapters_answers_as_vllm(real_lora: str, sim_lora: str, adapters: Adapters) -> None:
    for what, path, body, raw in _steps(adapters):
        r, s = both(real_lora, sim_lora, "POST", path, body, raw)
        assert r.status == s.status, (what, r.body, s.body)
        assert r.headers.get("content-type") == s.headers.get("content-type"), what
        if r.status == 200:
            assert r.body == s.body and "content-type" not in r.headers, what  # FastAPI's bare Response
        else:
            assert r.json() == s.json(), what
    assert _ids(call(real_lora, "GET", "/v1/models")) == _ids(call(sim_lora, "GET", "/v1/models")) == [M, "a1"]


def test_the_models_list_follows_loads_and_unloads(real_lora: str, sim_lora: str, adapters: Adapters) -> None:
    for side in (real_lora, sim_lora):
        assert (
            call(side, "POST", "/v1/load_lora_adapter", {"lora_name": "a2", "lora_path": str(adapters.a2)}).status
            == 200
        )
        listed = call(side, "GET", "/v1/models").json()["data"]
        assert [c["id"] for c in listed] == [M, "a1", "a2"] and listed[2]["root"] == str(adapters.a2), side
        answer = call(side, "POST", "/v1/chat/completions", {**CHAT_A1, "model": "a2"})
        assert answer.status == 200 and answer.json()["model"] == "a2", side
        assert call(side, "POST", "/v1/unload_lora_adapter", {"lora_name": "a2"}).status == 200
        assert [c["id"] for c in call(side, "GET", "/v1/models").json()["data"]] == [M, "a1"], side
        gone = call(side, "POST", "/v1/chat/completions", {**CHAT_A1, "model": "a2"})
        assert gone.status == 404 and gone.json()["error"]["message"] == (
            f"The model `a2` does not exist. Valid aliases: {M}."
        ), side


def _lora_series(base: str) -> list[dict[str, str]]:
    text = call(base, "GET", "/metrics").body.decode()
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        if family.name == "vllm:lora_requests_info"
        for sample in family.samples
    ]


def test_lora_requests_info_names_the_adapters_in_flight(real_lora: str, sim_lora: str) -> None:
    for side in (real_lora, sim_lora):
        assert call(side, "POST", "/v1/chat/completions", CHAT_A1).status == 200, side
        deadline = time.monotonic() + 30
        while {"max_lora": "2", "running_lora_adapters": "", "waiting_lora_adapters": ""} not in _lora_series(side):
            assert time.monotonic() < deadline, (side, _lora_series(side))
            time.sleep(0.2)
        series = _lora_series(side)
        assert {"max_lora": "2", "running_lora_adapters": "a1", "waiting_lora_adapters": "a1"} in series, side
        # The token counters stay under the base model's name.
        text = call(side, "GET", "/metrics").body.decode()
        names = {
            s.labels.get("model_name")
            for f in text_string_to_metric_families(text)
            if f.name == "vllm:generation_tokens"
            for s in f.samples
        }
        assert names == {M}, side


def test_metrics_have_the_same_families_with_lora(real_lora: str, sim_lora: str) -> None:
    for side in (real_lora, sim_lora):
        call(side, "POST", "/v1/chat/completions", CHAT_A1)
    r, s = both(real_lora, sim_lora, "GET", "/metrics")
    a, b = families(r.body.decode()), families(s.body.decode())
    extra = {name for name in set(a) - set(b) if name.startswith(tuple(NOT_MODELLED_METRICS))}
    assert {k: v for k, v in a.items() if k not in extra} == b
    assert a["vllm:lora_requests_info"] == ("gauge", ("max_lora", "running_lora_adapters", "waiting_lora_adapters"))
