"""Token usage of an answer as the router sees it: `usage` of a JSON body or of a stream's last usage chunk.

Pure. Real vLLM reports reasoning tokens (`usage.completion_tokens_details.reasoning_tokens`) with the qwen3
reasoning parser; an answer with reasoning tokens counts as thinking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TAIL_BYTES = 4096


@dataclass(frozen=True)
class Usage:
    """Tokens of one answer."""

    prompt: int
    output: int
    reasoning: int

    @property
    def mode(self) -> str:
        """thinking when the answer carried reasoning tokens, else non_thinking."""
        return "thinking" if self.reasoning > 0 else "non_thinking"


def _usage(obj: Any) -> Usage | None:
    use = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(use, dict):
        return None
    details = use.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else 0
    try:
        return Usage(int(use.get("prompt_tokens") or 0), int(use.get("completion_tokens") or 0), int(reasoning or 0))
    except (TypeError, ValueError):
        return None


def usage_of_body(body: bytes) -> Usage | None:
    """Usage of a whole JSON answer, or None."""
    try:
        return _usage(json.loads(body))
    except (ValueError, RecursionError):
        return None


def usage_of_stream_tail(tail: bytes) -> Usage | None:
    """Usage in the last bytes of an answer: the last `"usage": {...}` object (an SSE stream's usage chunk with
    include_usage, or the end of a JSON body), or None."""
    text = tail.decode(errors="replace")
    at = text.rfind('"usage"')
    while at >= 0:
        brace = text.find("{", at)
        if brace >= 0:
            try:
                obj, _ = json.JSONDecoder().raw_decode(text, brace)
            except (ValueError, RecursionError):
                obj = None
            found = _usage({"usage": obj})
            if found is not None:
                return found
        at = text.rfind('"usage"', 0, at)
    return None
