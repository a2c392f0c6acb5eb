"""vLLM's OpenAI protocol as data: request validation and response bodies. Pure, no I/O.

Validation follows vLLM 0.32's order and wording (checked against the real engine by tests/engine): a body that
is not JSON, not an object, misses a required field or has a value of the wrong type is a 400 of type
`Bad Request` with a pydantic-style message and `param` `body.<field>` (FastAPI's request validation); a bad
value is a 400 `BadRequestError` whose message ends in `(parameter=..., value=...)`; an unknown model is a 404
`NotFoundError`. Every error body is `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from qwenfleet.api.plan import Plan
from qwenfleet.catalog import ThinkingMode, get_model
from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.sim.perf import vllm_arg
from qwenfleet.sim.tokens import TemplateError, render_chat, tokenize


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: HTTPStatus, message: str, param: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind

    @property
    def type(self) -> str:
        """OpenAI error type, as vLLM names it."""
        if self.kind is not None:
            return self.kind
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


_NO_VALUE = object()


def invalid_value(message: str, param: str, value: object = _NO_VALUE) -> APIError:
    """A 400 for a bad parameter value, worded as vLLM's `VLLMValidationError` prints itself."""
    extras = [f"parameter={param}"] + ([] if value is _NO_VALUE or value is None else [f"value={value}"])
    return APIError(HTTPStatus.BAD_REQUEST, f"{message} ({', '.join(extras)})", param)


def _summary(value: object) -> object:
    """How FastAPI's validation message shows an input: containers by size, strings cut at 200 characters."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "...[truncated]"
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


FieldError = tuple[str, tuple[str | int, ...], str, object]
"""One pydantic error: its type, location under `body`, message and input."""


def validation_error(kind: str, loc: tuple[str | int, ...], msg: str, value: object, **ctx: str) -> APIError:
    """A 400 from request validation, as vLLM's handler renders pydantic's first error."""
    param = ".".join(str(part) for part in ("body", *loc))
    error: dict[str, object] = {"type": kind, "loc": param, "msg": msg, "input": _summary(value)}
    if ctx:
        error["ctx"] = dict(ctx)
    return APIError(HTTPStatus.BAD_REQUEST, f"1 validation error:\n  {error}", param, kind="Bad Request")


def validation_errors(errors: list[FieldError]) -> APIError:
    """A 400 listing several validation errors (`param` is the first one's location), as vLLM renders them."""
    if len(errors) == 1:
        return validation_error(*errors[0])
    lines = []
    for kind, loc, msg, value in errors:
        where = ".".join(str(part) for part in ("body", *loc))
        lines.append(f"  { ({'type': kind, 'loc': where, 'msg': msg, 'input': _summary(value)}) }")
    param = ".".join(str(part) for part in ("body", *errors[0][1]))
    message = f"{len(errors)} validation errors:\n" + "\n".join(lines)
    return APIError(HTTPStatus.BAD_REQUEST, message, param, kind="Bad Request")


def unsupported_media_type() -> APIError:
    """vLLM's 400 for a JSON route called without `Content-Type: application/json`."""
    message = "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
    return APIError(HTTPStatus.BAD_REQUEST, message, kind="Bad Request")


@dataclass(frozen=True)
class ServedModel:
    """What a vLLM server started from a Plan exposes: its name, context and thinking behaviour."""

    name: str
    root: str
    max_model_len: int
    thinking: ThinkingMode
    think_by_default: bool
    fingerprint: str = f"vllm-{VLLM_VERSION}"
    """`system_fingerprint`: vLLM's version and a hash of the server's configuration."""

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
            fingerprint=f"vllm-{VLLM_VERSION}-{zlib.crc32(' '.join(plan.vllm_args).encode()):08x}",
        )


@dataclass(frozen=True)
class ToolCallPlan:
    """The call a request with `tool_choice` "required" or a named function makes (vLLM constrains the output to
    it with structured output, so even a model that would not call a tool does)."""

    name: str
    arguments: str
    """JSON text of the arguments, filled from the tool's parameter schema."""
    named: bool
    """A named tool_choice finishes with "stop", "required" with "tool_calls" (OpenAI's convention, as vLLM)."""


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
    tool_call: ToolCallPlan | None = None
    has_tools: bool = False
    n: int = 1
    """Choices to generate (each its own sequence; the prompt is counted once)."""
    adapter: str | None = None
    """The LoRA adapter asked for by name, None for the base model."""


def parse_generation(raw: bytes, served: ServedModel, *, chat: bool, adapters: Collection[str] = ()) -> Generation:
    """Validate a /v1/chat/completions or /v1/completions body; raise APIError as vLLM would answer.

    `adapters` are the LoRA adapters loaded: a request may name one as its model."""
    body = parse_body(raw)
    if chat and "messages" not in body:
        raise validation_error("missing", ("messages",), "Field required", body)
    stream = _optional(body, "stream", bool) or False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise validation_error("model_type", ("stream_options",), _DICT_MSG, options)
    n = _optional(body, "n", int)
    temperature = _optional(body, "temperature", float)
    for sampling in ("top_p", "presence_penalty", "frequency_penalty"):
        _optional(body, sampling, float)
    max_name = "max_tokens"
    max_tokens = _optional(body, "max_tokens", int)
    if chat and body.get("max_completion_tokens") is not None:
        max_name, max_tokens = "max_completion_tokens", _optional(body, "max_completion_tokens", int)
    min_tokens = _optional(body, "min_tokens", int) or 0
    seed = _optional(body, "seed", int)
    ignore_eos = _optional(body, "ignore_eos", bool) or False
    if chat and (not isinstance(body["messages"], list) or not all(isinstance(m, dict) for m in body["messages"])):
        raise validation_error("list_type", ("messages",), "Input should be a valid list", body["messages"])
    if options is not None and not stream:
        raise invalid_value("Stream options can only be defined when `stream=True`.", "stream_options")
    model = body.get("model")
    if model is not None and model != served.name and model not in adapters:
        raise APIError(
            HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist. Valid aliases: {served.name}.", "model"
        )
    if max_tokens is not None and max_tokens > served.max_model_len:
        raise invalid_value(
            f"{max_name}={max_tokens} cannot be greater than max_model_len={served.max_model_len}. "
            "Please request fewer output tokens.",
            max_name,
            max_tokens,
        )
    thinking = False
    tool_call = None
    if chat:
        prompt, thinking = _chat_prompt(body, served)
        tool_call = _tool_call(body)
    else:
        prompt = _completion_prompt(body)
    if len(prompt) > served.max_model_len:
        # vLLM tokenizes at most max_model_len + 1 tokens of an over-long prompt, hence "at least".
        count = served.max_model_len + 1
        raise invalid_value(
            f"This model's maximum context length is {served.max_model_len} tokens. However, your prompt contains "
            f"at least {count} input tokens, which exceeds this limit even without any output tokens. Please "
            "reduce the length of the input prompt.",
            "input_tokens",
            count,
        )
    if max_tokens is not None and max_tokens < 1:
        raise invalid_value(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
    if n is not None and n < 1:
        raise bad_request(f"n must be at least 1, got {n}.")
    if n is not None and n > 1 and temperature is not None and temperature < _GREEDY_EPSILON:
        raise bad_request(f"n must be 1 when using greedy sampling, got {n}.")
    if min_tokens < 0 or (max_tokens is not None and min_tokens > max_tokens):
        raise invalid_value(f"min_tokens must be between 0 and max_tokens, got {min_tokens}.", "min_tokens", min_tokens)
    # Like vLLM, a max_tokens beyond the room left by the prompt is clamped to it, not refused.
    room = max(1, served.max_model_len - len(prompt))
    opts = options or {}
    return Generation(
        chat=chat,
        prompt=prompt,
        max_tokens=min(max_tokens or room, room),
        max_tokens_param=max_tokens,
        stream=stream,
        include_usage=bool(opts.get("include_usage", True)) if options is not None else False,
        continuous_usage=bool(opts.get("continuous_usage_stats", False)),
        thinking=thinking,
        min_tokens=min_tokens,
        ignore_eos=ignore_eos,
        seed=seed,
        tool_call=tool_call,
        has_tools=bool(chat and isinstance(body.get("tools"), list) and body["tools"]),
        n=n or 1,
        adapter=model if model is not None and model != served.name else None,
    )


_GREEDY_EPSILON = 1e-5
"""vLLM samples greedily below this temperature."""


_DICT_MSG = "Input should be a valid dictionary or object to extract fields from"


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or the 400 FastAPI's validation gives."""
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise validation_error("json_invalid", (exc.pos,), "JSON decode error", {}, error=exc.msg) from None
    except UnicodeDecodeError:
        raise validation_error("json_invalid", (0,), "JSON decode error", {}, error="Invalid UTF-8") from None
    if not isinstance(body, dict):
        raise validation_error("model_attributes_type", (), _DICT_MSG, body)
    return body


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, str):
            msg = "Input should be a valid integer, unable to parse string as an integer"
            raise validation_error("int_parsing", (key,), msg, value)
        raise validation_error("int_type", (key,), "Input should be a valid integer", value)
    if kind is bool and not isinstance(value, bool):
        raise validation_error("bool_type", (key,), "Input should be a valid boolean", value)
    if kind is float and not isinstance(value, int | float):
        if isinstance(value, str):  # pydantic's lax mode: a numeric string is a number
            try:
                return float(value)
            except ValueError:
                msg = "Input should be a valid number, unable to parse string as a number"
                raise validation_error("float_parsing", (key,), msg, value) from None
        raise validation_error("float_type", (key,), "Input should be a valid number", value)
    return value


def _tool_call(body: dict[str, Any]) -> ToolCallPlan | None:
    """The forced tool call of `tool_choice` "required" or `{"type": "function", "function": {"name": ...}}`."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice in (None, "none", "auto"):
        return None
    functions = {
        t["function"]["name"]: t["function"]
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
    }
    if not functions:
        raise bad_request("tools: every tool needs a function with a name", "tools")
    if choice == "required":
        name, named = next(iter(functions)), False
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name, named = str(choice["function"].get("name")), True
        if name not in functions:
            raise invalid_value(f"Tool '{name}' has not been passed in `tools`.", "tool_choice")
    else:
        msg = "Input should be 'none', 'auto' or 'required'"
        raise validation_error("literal_error", ("tool_choice",), msg, choice)
    return ToolCallPlan(name, json.dumps(sample_arguments(functions[name].get("parameters"))), named)


def sample_arguments(schema: Any) -> Any:
    """A value that satisfies a simple JSON schema (the required properties of an object, by type)."""
    if not isinstance(schema, dict):
        return {}
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: sample_arguments(props.get(k)) for k in required if isinstance(k, str)}
    if kind == "array":
        return [sample_arguments(schema.get("items"))]
    return {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "null": None}.get(str(kind), "example")


def _chat_prompt(body: dict[str, Any], served: ServedModel) -> tuple[list[str], bool]:
    messages: list[dict[str, Any]] = body["messages"]
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise validation_error("dict_type", ("chat_template_kwargs",), "Input should be a valid dictionary", kwargs)
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
    if prompt is None or prompt in ("", []):
        raise invalid_value("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
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


def usage(
    prompt_tokens: int, completion_tokens: int, *, chat: bool, reasoning_tokens: int = 0, streamed: bool = False
) -> dict[str, Any]:
    """An OpenAI usage object as vLLM 0.32 writes it: chat counts reasoning tokens; a streamed usage leaves out
    the details that are null."""
    use: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if not streamed:
        use["prompt_tokens_details"] = None
    if chat:
        use["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    elif not streamed:
        use["completion_tokens_details"] = None
    return use


def tool_call_object(call_id: str, call: ToolCallPlan) -> dict[str, Any]:
    """One entry of a message's `tool_calls`."""
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_completion(
    rid: str,
    created: int,
    served: ServedModel,
    *,
    content: str | None,
    reasoning: str | None,
    finish: str,
    use: dict[str, Any],
    tool_calls: list[dict[str, Any]] | None = None,
    stop_reason: int | str | None = None,
) -> dict[str, Any]:
    """A non-streamed chat.completion (vLLM leaves `tool_calls` out of the message when there are none)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["reasoning"] = reasoning
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": served.name,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": served.fingerprint,
        "usage": use,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def text_completion(
    rid: str, created: int, served: ServedModel, *, text: str, finish: str, use: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed text_completion."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": served.name,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": served.fingerprint,
        "usage": use,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def chunk(
    rid: str,
    created: int,
    served: ServedModel,
    *,
    chat: bool,
    delta: dict[str, Any] | None = None,
    text: str = "",
    finish: str | None = None,
    use: dict[str, Any] | None = None,
    role: bool = False,
    last: bool = False,
    index: int = 0,
) -> bytes:
    """One SSE event of a streamed answer, keyed as vLLM 0.32 writes them.

    Chat: the `role` chunk (`prompt_token_ids` and `prompt_text` beside the choices), delta chunks, and the chunk
    with `finish` (it adds `stop_reason`). Completions: every chunk carries `text`, `stop_reason`,
    `prompt_token_ids` and `token_ids`. `use` appears only with `continuous_usage_stats`; `last` (the finish chunk
    when no usage chunk follows) adds `system_fingerprint`."""
    choice: dict[str, Any]
    if chat:
        choice = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        if finish is not None:
            choice["stop_reason"] = None
        if not role:
            choice["token_ids"] = None
    else:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None,
                  "prompt_token_ids": None, "token_ids": None}  # fmt: skip
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": served.name,
        "choices": [choice],
    }
    if use is not None:
        body["usage"] = use
    if role:
        body["prompt_token_ids"] = None
        body["prompt_text"] = None
    if last:
        body["system_fingerprint"] = served.fingerprint
    return _event(body)


def usage_chunk(rid: str, created: int, served: ServedModel, *, chat: bool, use: dict[str, Any]) -> bytes:
    """The final usage chunk of `stream_options.include_usage`: no choices."""
    return _event({
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": served.name,
        "choices": [],
        "usage": use,
        "system_fingerprint": served.fingerprint,
    })  # fmt: skip


DONE = b"data: [DONE]\n\n"


def permission(name: str, created: int) -> dict[str, Any]:
    """The one `permission` entry of a /v1/models card."""
    return {
        "id": f"modelperm-{zlib.crc32(name.encode()):016x}",
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


def model_card(served: ServedModel, created: int, adapters: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
    """GET /v1/models: the base model, then each LoRA adapter (name, path) with the base model as its parent,
    its path as root and no max_model_len."""
    cards = [
        {
            "id": served.name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": served.root,
            "parent": None,
            "max_model_len": served.max_model_len,
            "permission": [permission(served.name, created)],
        }
    ]
    for name, path in adapters:
        cards.append({
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": path,
            "parent": served.name,
            "max_model_len": None,
            "permission": [permission(name, created)],
        })  # fmt: skip
    return {"object": "list", "data": cards}
