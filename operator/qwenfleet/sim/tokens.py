"""Prompt tokens without a tokenizer: a deterministic estimate and Qwen3's chat template. Pure, no I/O.

The estimate splits text the way byte-level BPE pre-tokenisers do (a word with its leading space, single
digits as Qwen's tokenizer does, punctuation runs, newlines, special tokens whole), then cuts long words into
pieces of at most eight characters and CJK text into single characters. English prose comes out at about four
characters per token (technical text and markup lower), near Qwen3's real tokenizer; exact counts differ.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

from qwenfleet.catalog import VOCAB_SIZE, ThinkingMode

WORD_PIECE = 8
PUNCT_PIECE = 2
SPACE_PIECE = 4
_PRETOKEN = re.compile(
    r"<\|[a-z_]+\|>|</?think>|</?tool_call>"
    r"|[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]"
    r"|\d"
    r"| ?[^\W\d]+"
    r"| ?[^\w\s]+"
    r"|\n+"
    r"|\s+",
    re.UNICODE,
)

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


def tokenize(text: str) -> list[str]:
    """Split text into token-sized pieces (see the module docstring)."""
    pieces: list[str] = []
    for pre in _PRETOKEN.findall(text):
        if len(pre) == 1 or (pre.startswith("<") and pre.endswith(">")):
            pieces.append(pre)
            continue
        body = pre.lstrip(" ")
        if body[:1].isalpha() or body[:1] == "_":
            size = WORD_PIECE
        elif not body or body.isspace():
            size = SPACE_PIECE if pre[0] != "\n" else 2
        else:
            size = PUNCT_PIECE
        pieces.extend(pre[i : i + size] for i in range(0, len(pre), size))
    return pieces


def count_tokens(text: str) -> int:
    """Estimated tokens of a text."""
    return len(tokenize(text))


def token_ids(pieces: Sequence[str]) -> list[int]:
    """Stable pseudo token ids (CRC-32 of each piece, folded into Qwen3's vocabulary)."""
    return [zlib.crc32(piece.encode()) % VOCAB_SIZE for piece in pieces]


def block_hashes(pieces: Sequence[str], block_tokens: int) -> tuple[int, ...]:
    """One hash per full block of tokens, each covering the whole prefix up to its block (prefix caching)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(pieces) - block_tokens + 1, block_tokens):
        previous = hash((previous, tuple(pieces[start : start + block_tokens])))
        hashes.append(previous)
    return tuple(hashes)


class TemplateError(ValueError):
    """A chat message the template cannot render."""


def message_text(content: Any) -> str:
    """The text of a message's content: a string, None, or a list of `{"type": "text", "text": ...}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise TemplateError("only text content parts are supported by this text-only model")
            texts.append(part["text"])
        return "\n".join(texts)
    raise TemplateError("message content must be a string or a list of content parts")


def render_chat(
    messages: Sequence[dict[str, Any]],
    *,
    thinking: ThinkingMode,
    enable_thinking: bool = True,
    tools: Sequence[Any] | None = None,
) -> str:
    """Qwen3's chat template (ChatML), with the generation prompt: what the model actually reads."""
    out: list[str] = []
    system = ""
    rest = list(messages)
    if rest and rest[0].get("role") == "system":
        system = message_text(rest.pop(0).get("content"))
    if tools:
        listing = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        system = (system + "\n\n" if system else "") + TOOLS_PREAMBLE + listing + TOOLS_POSTAMBLE
    if system:
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for message in rest:
        role = message.get("role")
        if not isinstance(role, str):
            raise TemplateError("every message needs a role")
        text = message_text(message.get("content"))
        if role == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
            role = "user"
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            text += f"\n<tool_call>\n{json.dumps(function, ensure_ascii=False)}\n</tool_call>"
        out.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    if thinking is ThinkingMode.THINKING:
        out.append("<think>\n")
    elif thinking is ThinkingMode.HYBRID and not enable_thinking:
        out.append("<think>\n\n</think>\n\n")
    return "".join(out)
