"""What the policy needs from an OpenAI request body and headers. Pure."""

from __future__ import annotations

import math
from typing import Any

from qwenfleet.router.policy import RouteRequest

TIER_HEADER = "x-qwenfleet-tier"


class BadRequest(ValueError):
    """A body the router cannot route (the client's error: 400)."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def route_request(body: Any, headers: dict[str, str], *, chat: bool) -> RouteRequest:
    """Parse the routing-relevant parts of a chat or completions body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages must be a list of objects")
        texts = [_text(m.get("content")) for m in messages]
        users = [_text(m.get("content")) for m in messages if m.get("role") in ("user", "system")]
        last = users[-1] if users else ""
        kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise BadRequest("chat_template_kwargs must be an object")
        if "enable_thinking" in kwargs:
            thinking = bool(kwargs["enable_thinking"])
        else:
            thinking = "/think" in last and "/no_think" not in last
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            texts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, int)) for p in prompt):
            texts = [" ".join(map(str, prompt))]  # several prompts, or token ids
        else:
            raise BadRequest("prompt must be a string or a non-empty list of strings or token ids")
        thinking = False
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise BadRequest("max_tokens must be a positive integer")
    joined = "\n".join(texts)
    return RouteRequest(
        model=model,
        thinking=thinking,
        tools=bool(body.get("tools")),
        prompt_tokens=math.ceil(len(joined) / 4),
        max_tokens=max_tokens,
        tier=headers.get(TIER_HEADER),
        prefix=joined,
    )
