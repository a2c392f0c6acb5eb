"""What a simulated model answers: how many tokens, why it stops, which are reasoning, and their text.

Pure and deterministic: every random choice comes from the `random.Random` handed in. Natural lengths are
geometric (memoryless, like a constant end-of-sequence probability per token) around the means below; a
request's `max_tokens`, `min_tokens` and `ignore_eos` then apply as in vLLM.

Token layout of a chat answer with thinking (hybrid Qwen3): `<think>`, reasoning..., `</think>`, content...,
end-of-sequence. Thinking-2507 has `<think>` in its prompt, so its answer starts with the reasoning. The tags
and the end-of-sequence token count as output tokens but carry no text, as with vLLM's reasoning parser.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from qwenfleet.catalog import ThinkingMode
from qwenfleet.sim.engine import FinishReason

CONTENT_MEAN_TOKENS = 256
"""Mean natural length of a chat answer (content)."""
REASONING_MEAN_TOKENS = 768
"""Mean natural length of the reasoning before it."""
COMPLETION_MEAN_TOKENS = 2048
"""Mean natural length of a raw text completion: without a chat turn to close, a model rambles on."""

WORDS = (
    "the", "model", "serves", "tokens", "quickly", "while", "cluster", "scales", "replicas", "on", "queue",
    "depth", "and", "every", "request", "finds", "a", "ready", "pod", "with", "enough", "cache", "for", "its",
    "prompt", "so", "answer", "streams", "back", "as", "soon", "first", "token", "is", "sampled", "from", "batch",
    "that", "scheduler", "keeps", "full", "of", "sequences", "in", "decode", "which", "why", "latency", "grows",
    "little", "load", "but", "throughput", "more", "until", "memory", "bandwidth", "limit", "step",
)  # fmt: skip


class Channel(StrEnum):
    """Where an output token's text goes."""

    REASONING = "reasoning"
    CONTENT = "content"
    HIDDEN = "hidden"
    """Think tags and end-of-sequence: counted, not shown."""


def natural_length(rng: random.Random, mean: int) -> int:
    """A geometric length of at least 1 with the given mean."""
    return max(1, int(rng.expovariate(1 / mean)) + 1)


@dataclass(frozen=True)
class AnswerShape:
    """The token layout of one answer."""

    total: int
    finish_reason: FinishReason
    reasoning_start: int = 0
    reasoning_end: int = 0
    """Index of `</think>` (reasoning occupies [reasoning_start, reasoning_end)); equal starts mean none."""
    think_open: int | None = None
    """Index of a generated `<think>` tag, if any."""

    @property
    def thinks(self) -> bool:
        """Whether the answer has a reasoning part."""
        return self.reasoning_end > self.reasoning_start or self.think_open is not None

    def channel(self, index: int) -> Channel:
        """Channel of output token `index`."""
        if self.finish_reason is FinishReason.STOP and index == self.total - 1:
            return Channel.HIDDEN
        if not self.thinks:
            return Channel.CONTENT
        if index in (self.think_open, self.reasoning_end):
            return Channel.HIDDEN
        return Channel.REASONING if self.reasoning_start <= index < self.reasoning_end else Channel.CONTENT


def shape_answer(
    rng: random.Random,
    *,
    max_tokens: int,
    chat: bool,
    thinking: ThinkingMode | None,
    min_tokens: int = 0,
    ignore_eos: bool = False,
) -> AnswerShape:
    """Draw an answer's layout. `thinking` is the model's mode when this request thinks, None when it does not."""
    if not chat:
        natural = natural_length(rng, COMPLETION_MEAN_TOKENS) + 1
        start = end = 0
        think_open: int | None = None
    elif thinking is None:
        natural = natural_length(rng, CONTENT_MEAN_TOKENS) + 1
        start = end = 0
        think_open = None
    else:
        think_open = 0 if thinking is ThinkingMode.HYBRID else None
        start = 1 if think_open == 0 else 0
        end = start + natural_length(rng, REASONING_MEAN_TOKENS)
        natural = end + 1 + natural_length(rng, CONTENT_MEAN_TOKENS) + 1
    if ignore_eos:
        total, reason = max_tokens, FinishReason.LENGTH
    else:
        wanted = max(natural, min(min_tokens, max_tokens))
        total = min(wanted, max_tokens)
        reason = FinishReason.LENGTH if wanted > max_tokens else FinishReason.STOP
    return AnswerShape(total, reason, start, min(end, total), think_open)


class Transcript:
    """The text of an answer's visible tokens, drawn token by token from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._words_left = rng.randint(6, 18)
        self._sentences = 0
        self._capital = True
        self._space = False
        self._paragraph = False

    def next_piece(self) -> str:
        """The next visible token's text: a word with its leading space, a full stop or a paragraph break."""
        rng = self._rng
        if self._paragraph:
            self._paragraph, self._space = False, False
            return "\n\n"
        if self._words_left == 0:
            self._sentences += 1
            self._paragraph = self._sentences % 4 == 0
            self._words_left = rng.randint(6, 18)
            self._capital = True
            return "."
        self._words_left -= 1
        word = rng.choice(WORDS)
        text = (" " if self._space else "") + (word.capitalize() if self._capital else word)
        self._capital, self._space = False, True
        return text
