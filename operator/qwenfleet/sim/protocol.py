"""vLLM's OpenAI protocol as data: request validation and response bodies. Pure, no I/O.

Validation follows vLLM's order and wording where it matters to clients: a malformed body or bad parameter
is a 400 `BadRequestError`, an unknown model a 404 `NotFoundError`, and every error body is
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from qwenfleet.api.plan import Plan
from qwenfleet.catalog import ThinkingMode, get_model
from qwenfleet.sim.perf import vllm_arg
from qwenfleet.sim.tokens import TemplateError, render_chat, tokenize


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: HTTPStatus, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    @property
    def type(self) -> str:
        """OpenAI error type, as vLLM names it."""
        return {
            HTTPStatus.BAD_REQUEST: "BadRequestError",
            HTTPStatus.NOT_FOUND: "NotFoundError",
            HTTPStatus.SERVICE_UNAVAILABLE: "ServiceUnavailableError",
        }.get(self.status, "InternalServerError")

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": int(self.status)}}


def bad_request(message: str, param: str | None = None) -> APIError:
    """A 400."""
    return APIError(HTTPStatus.BAD_REQUEST, message, param)


@dataclass(frozen=True)
class ServedModel:
    """What a vLLM server started from a Plan exposes: its name, context and thinking behaviour."""

    name: str
    root: str
    max_model_len: int
    thinking: ThinkingMode
    think_by_default: bool

    @classmethod
    def from_plan(cls, plan: Plan) -> ServedModel:
        """Read `--served-model-name` and `--default-chat-template-kwargs` from the plan's vLLM arguments."""
        kwargs = json.loads(vllm_arg(plan.vllm_args, "--default-chat-template-kwargs") or "{}")
        return cls(
            name=vllm_arg(plan.vllm_args, "--served-model-name") or plan.repo,
            root=plan.repo,
            max_model_len=plan.max_model_len,
            thinking=get_model(plan.model).thinking,
            think_by_default=bool(kwargs.get("enable_thinking", True)),
        )


@dataclass(frozen=True)
class Generation:
    """A validated completion request."""

    chat: bool
    prompt: list[str]
    """Prompt token pieces (after the chat template)."""
    max_tokens: int
    max_tokens_param: int | None
    stream: bool
    include_usage: bool
    continuous_usage: bool
    thinking: bool
    min_tokens: int
    ignore_eos: bool
    seed: int | None


def parse_generation(raw: bytes, served: ServedModel, *, chat: bool) -> Generation:
    """Validate a /v1/chat/completions or /v1/completions body; raise APIError as vLLM would answer."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"JSON decode error: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("Input should be a valid dictionary or object to extract fields from")
    stream = _optional(body, "stream", bool) or False
    options = body.get("stream_options")
    if options is not None and not stream:
        raise bad_request("Stream options can only be defined when `stream=True`.", "stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    n = _optional(body, "n", int)
    if n is not None and n != 1:
        raise bad_request("n must be 1 on this server (the simulator generates one choice)", "n")
    max_tokens = _optional(body, "max_completion_tokens" if chat else "max_tokens", int)
    if chat and max_tokens is None:
        max_tokens = _optional(body, "max_tokens", int)
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    min_tokens = _optional(body, "min_tokens", int) or 0
    if min_tokens < 0 or (max_tokens is not None and min_tokens > max_tokens):
        raise bad_request(f"min_tokens must be between 0 and max_tokens, got {min_tokens}.", "min_tokens")
    seed = _optional(body, "seed", int)
    ignore_eos = _optional(body, "ignore_eos", bool) or False
    if chat and (not isinstance(body.get("messages"), list) or not all(isinstance(m, dict) for m in body["messages"])):
        raise bad_request("messages: Input should be a valid list of message objects", "messages")
    model = body.get("model")
    if model is not None and model != served.name:
        raise APIError(HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist.", "model")
    thinking = False
    if chat:
        prompt, thinking = _chat_prompt(body, served)
    else:
        prompt = _completion_prompt(body)
    room = served.max_model_len - len(prompt)
    if room <= 0:
        raise bad_request(
            f"This model's maximum context length is {served.max_model_len} tokens. However, your request has "
            f"{len(prompt)} input tokens. Please reduce the length of the input messages.",
            "input_tokens",
        )
    if max_tokens is not None and max_tokens > room:
        raise bad_request(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
            f"length is {served.max_model_len} tokens and your request has {len(prompt)} input tokens "
            f"({max_tokens} > {served.max_model_len} - {len(prompt)}).",
            "max_tokens",
        )
    opts = options or {}
    return Generation(
        chat=chat,
        prompt=prompt,
        max_tokens=max_tokens or room,
        max_tokens_param=max_tokens,
        stream=stream,
        include_usage=bool(opts.get("include_usage", True)) if options is not None else False,
        continuous_usage=bool(opts.get("continuous_usage_stats", False)),
        thinking=thinking,
        min_tokens=min_tokens,
        ignore_eos=ignore_eos,
        seed=seed,
    )


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad_request(f"{key}: Input should be a valid integer", key)
    if kind is bool and not isinstance(value, bool):
        raise bad_request(f"{key}: Input should be a valid boolean", key)
    return value


def _chat_prompt(body: dict[str, Any], served: ServedModel) -> tuple[list[str], bool]:
    messages: list[dict[str, Any]] = body["messages"]
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise bad_request("chat_template_kwargs: Input should be a valid dictionary", "chat_template_kwargs")
    enable = bool(kwargs.get("enable_thinking", served.think_by_default))
    thinks = wants_thinking(served.thinking, enable, messages)
    tools = body.get("tools")
    try:
        text = render_chat(
            messages, thinking=served.thinking, enable_thinking=enable, tools=tools if isinstance(tools, list) else None
        )
    except TemplateError as exc:
        raise bad_request(str(exc), "messages") from None
    return tokenize(text), thinks


def wants_thinking(mode: ThinkingMode, enable_thinking: bool, messages: list[dict[str, Any]]) -> bool:
    """Qwen3's rules: Thinking-2507 always thinks, Instruct-2507 never; a hybrid model thinks unless the hard
    switch (enable_thinking false) is off or the latest /think or /no_think in a user or system message is
    /no_think."""
    if mode is ThinkingMode.THINKING:
        return True
    if mode is ThinkingMode.INSTRUCT or not enable_thinking:
        return False
    latest = True
    for message in messages:
        if message.get("role") not in ("user", "system"):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        on, off = text.rfind("/think"), text.rfind("/no_think")
        if on >= 0 or off >= 0:
            latest = on > off
    return latest


def _completion_prompt(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        pieces = tokenize(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        pieces = [f"<{t}>" for t in prompt]
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise bad_request("a list of several prompts is not supported by this server; send one prompt", "prompt")
    else:
        raise bad_request("prompt: Input should be a valid string or list of token ids", "prompt")
    if not pieces:
        raise bad_request("The prompt cannot be empty.", "prompt")
    return pieces


# ---------------------------------------------------------------------------------------------- responses


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """An OpenAI usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def chat_completion(
    rid: str, created: int, model: str, *, content: str | None, reasoning: str | None, finish: str, use: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed chat.completion."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [],
        "reasoning": reasoning,
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": use,
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def text_completion(
    rid: str, created: int, model: str, *, text: str, finish: str, use: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed text_completion."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": use,
        "kv_transfer_params": None,
    }


def chunk(
    rid: str,
    created: int,
    model: str,
    *,
    chat: bool,
    delta: dict[str, Any] | None = None,
    text: str = "",
    finish: str | None = None,
    use: dict[str, Any] | None = None,
    final_usage: bool = False,
) -> bytes:
    """One SSE event: a chunk carrying a delta (chat) or text (completions), or, with `final_usage`, the usage
    chunk with no choices."""
    if final_usage:
        choices: list[dict[str, Any]] = []
    elif chat:
        choices = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    else:
        choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    if finish is not None and choices:
        choices[0]["stop_reason"] = None
    body = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": use,
    }
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def model_card(served: ServedModel, created: int) -> dict[str, Any]:
    """GET /v1/models."""
    card = {
        "id": served.name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": served.root,
        "parent": None,
        "max_model_len": served.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{served.name}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }
    return {"object": "list", "data": [card]}
