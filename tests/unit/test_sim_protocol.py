"""The simulator's protocol core: request validation like vLLM, Qwen3's thinking switches, the token estimate."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from qwenfleet.catalog import ThinkingMode
from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.protocol import APIError, ServedModel, parse_generation, wants_thinking
from qwenfleet.sim.tokens import block_hashes, count_tokens, render_chat, tokenize

SERVED = ServedModel("Qwen3-8B", "Qwen/Qwen3-8B", 4096, ThinkingMode.HYBRID, think_by_default=True)


def _chat(**body: Any) -> dict[str, Any]:
    return {"model": "Qwen3-8B", "messages": [{"role": "user", "content": "hello"}], **body}


def _parse(body: Any, *, chat: bool = True, raw: bytes | None = None) -> Any:
    return parse_generation(raw if raw is not None else json.dumps(body).encode(), SERVED, chat=chat)


def _error(body: Any, *, chat: bool = True, raw: bytes | None = None) -> APIError:
    with pytest.raises(APIError) as caught:
        _parse(body, chat=chat, raw=raw)
    return caught.value


def test_served_model_comes_from_the_plans_vllm_arguments() -> None:
    served = ServedModel.from_plan(plan(PlanRequest("Qwen3-8B", "L4-24GB", served_model_name="chat")))
    assert served.name == "chat" and served.root == "Qwen/Qwen3-8B" and served.think_by_default
    quiet = ServedModel.from_plan(plan(PlanRequest("Qwen3-8B", "L4-24GB", thinking_default=False)))
    assert not quiet.think_by_default


def test_a_valid_chat_request() -> None:
    gen = _parse(_chat(max_tokens=30, stream=True, stream_options={"include_usage": True}))
    assert gen.chat and gen.stream and gen.include_usage and gen.max_tokens == 30 and gen.thinking
    assert gen.prompt[0] == "<|im_start|>" and "".join(gen.prompt).endswith("<|im_start|>assistant\n")
    assert _parse(_chat(max_completion_tokens=7, max_tokens=99)).max_tokens == 7
    assert _parse(_chat(stream=True, stream_options={})).include_usage  # vLLM: true once the object is there
    defaulted = _parse(_chat())
    assert defaulted.max_tokens == 4096 - len(defaulted.prompt) and defaulted.max_tokens_param is None
    assert _parse({"messages": [{"role": "user", "content": "hi"}]}).chat  # model is optional in vLLM


@pytest.mark.parametrize(
    ("body", "raw", "status", "param"),
    [
        (None, b"{not json", HTTPStatus.BAD_REQUEST, "body.1"),
        ([1, 2], None, HTTPStatus.BAD_REQUEST, "body"),
        ({"model": "Qwen3-8B"}, None, HTTPStatus.BAD_REQUEST, "body.messages"),
        (_chat(model="gpt-4"), None, HTTPStatus.NOT_FOUND, "model"),
        (_chat(max_tokens=0), None, HTTPStatus.BAD_REQUEST, "max_tokens"),
        (_chat(max_tokens="ten"), None, HTTPStatus.BAD_REQUEST, "body.max_tokens"),
        (_chat(max_tokens=5000), None, HTTPStatus.BAD_REQUEST, "max_tokens"),
        (_chat(max_completion_tokens=5000), None, HTTPStatus.BAD_REQUEST, "max_completion_tokens"),
        (_chat(stream_options={"include_usage": True}), None, HTTPStatus.BAD_REQUEST, "stream_options"),
        ({"model": "Qwen3-8B", "messages": "hi"}, None, HTTPStatus.BAD_REQUEST, "body.messages"),
        (_chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), None, HTTPStatus.BAD_REQUEST,
         "messages"),
        (_chat(messages=[{"role": "user", "content": "word " * 5000}]), None, HTTPStatus.BAD_REQUEST, "input_tokens"),
    ],
)  # fmt: skip
def test_bad_requests_are_rejected_like_vllm(body: Any, raw: bytes | None, status: HTTPStatus, param: str) -> None:
    error = _error(body, raw=raw)
    assert error.status == status and error.param == param
    shape = error.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"} and shape["code"] == int(status)
    # Request validation (FastAPI) names its type after the status phrase and its param after the body path.
    kind = "Bad Request" if param.startswith("body") else "BadRequestError"
    assert shape["type"] == ("NotFoundError" if status == HTTPStatus.NOT_FOUND else kind)


def test_n_asks_for_several_choices_as_vllm_allows() -> None:
    assert _parse(_chat(n=3)).n == 3 and _parse(_chat()).n == 1
    zero = _error(_chat(n=0))
    assert (zero.status, zero.message, zero.param, zero.type) == (400, "n must be at least 1, got 0.", None,
                                                                  "BadRequestError")  # fmt: skip
    greedy = _error(_chat(n=3, temperature=0))
    assert greedy.message == "n must be 1 when using greedy sampling, got 3." and greedy.param is None
    assert _parse(_chat(n=1, temperature=0)).n == 1


def test_a_loaded_adapter_is_a_model_a_request_may_name() -> None:
    raw = json.dumps(_chat(model="a1")).encode()
    assert parse_generation(raw, SERVED, chat=True, adapters={"a1"}).adapter == "a1"
    assert _parse(_chat()).adapter is None
    error = _error(_chat(model="a1"))
    assert error.status == 404 and error.message == "The model `a1` does not exist. Valid aliases: Qwen3-8B."


def test_unknown_model_wins_over_prompt_problems() -> None:
    too_long = _chat(model="gpt-4", messages=[{"role": "user", "content": "word " * 5000}])
    assert _error(too_long).status == HTTPStatus.NOT_FOUND
    assert "cannot be greater than max_model_len=4096" in _error(_chat(max_tokens=5000)).message
    # Within max_model_len, a max_tokens past the room the prompt leaves is clamped, as vLLM 0.32 does.
    clamped = _parse(_chat(max_tokens=4096))
    assert clamped.max_tokens == 4096 - len(clamped.prompt) and clamped.max_tokens_param == 4096


def test_completion_prompts() -> None:
    assert _parse({"model": "Qwen3-8B", "prompt": "Once upon a time"}, chat=False).prompt == tokenize(
        "Once upon a time"
    )
    assert len(_parse({"prompt": [1, 2, 3]}, chat=False).prompt) == 3
    assert len(_parse({"prompt": ["just one"]}, chat=False).prompt) == 2
    assert _error({"prompt": ["a", "b"]}, chat=False).param == "prompt"
    assert _error({"prompt": ""}, chat=False).param == "prompt"
    assert not _parse({"prompt": "x /think"}, chat=False).thinking  # reasoning is parsed on chat only


def _msgs(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


def test_thinking_switches() -> None:
    hybrid = ThinkingMode.HYBRID
    assert wants_thinking(hybrid, True, _msgs("hi"))
    assert not wants_thinking(hybrid, False, _msgs("hi /think"))  # the hard switch wins
    assert not wants_thinking(hybrid, True, _msgs("hi /no_think"))
    assert wants_thinking(hybrid, True, _msgs("hi /no_think", "ok", "now /think"))  # the latest instruction wins
    assert not wants_thinking(hybrid, True, [{"role": "system", "content": "/no_think"}, *_msgs("hi")])
    assert wants_thinking(ThinkingMode.THINKING, False, _msgs("hi /no_think"))
    assert not wants_thinking(ThinkingMode.INSTRUCT, True, _msgs("hi /think"))
    off = _parse(_chat(chat_template_kwargs={"enable_thinking": False}))
    assert not off.thinking
    assert "</think>" in off.prompt and "</think>" not in _parse(_chat()).prompt
    quiet = ServedModel("Qwen3-8B", "Qwen/Qwen3-8B", 4096, ThinkingMode.HYBRID, think_by_default=False)
    body = json.dumps(_chat()).encode()
    assert not parse_generation(body, quiet, chat=True).thinking
    on = json.dumps(_chat(chat_template_kwargs={"enable_thinking": True})).encode()
    assert parse_generation(on, quiet, chat=True).thinking


def test_token_estimate() -> None:
    prose = "The quick brown fox jumps over the lazy dog while the cluster scales its replicas. " * 20
    assert 3.5 < len(prose) / count_tokens(prose) < 6
    assert tokenize("<|im_start|>user\nHi 42") == ["<|im_start|>", "user", "\n", "Hi", " ", "4", "2"]
    assert count_tokens("你好世界") == 4
    assert count_tokens("x" * 400) == 50


def test_chat_template_and_prefix_hashes() -> None:
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    one = tokenize(render_chat([system, *_msgs("first question")], thinking=ThinkingMode.HYBRID))
    two = tokenize(render_chat([system, *_msgs("other question")], thinking=ThinkingMode.HYBRID))
    a, b = block_hashes(one, 16), block_hashes(two, 16)
    assert len(a) == len(one) // 16 and a[0] == b[0] and a != b  # the shared system prompt is a shared prefix
    tools = render_chat(_msgs("hi"), thinking=ThinkingMode.HYBRID, tools=[{"type": "function"}])
    assert tools.startswith("<|im_start|>system\n# Tools") and "<tools>" in tools
    assert render_chat(_msgs("hi"), thinking=ThinkingMode.THINKING).endswith("<|im_start|>assistant\n<think>\n")
