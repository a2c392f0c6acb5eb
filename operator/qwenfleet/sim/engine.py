"""A vLLM-like engine in simulated time: continuous batching, chunked prefill, paged KV cache, preemption.

Pure and deterministic: no I/O, no clock. The HTTP server and the autoscaling benchmark both drive it by
calling `step()`, which returns how many simulated seconds the step took and what happened in it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from qwenfleet.api.plan import Plan

BLOCK_TOKENS = 16
DEFAULT_PREFILL_CHUNK = 8192
BASE_SHARE = 0.7
"""Share of a decode step at the planner's reference batch spent reading weights (the rest grows with batch)."""


@dataclass(frozen=True)
class PerfModel:
    """How fast one replica runs, derived from its Plan."""

    max_num_seqs: int
    kv_tokens: int
    max_model_len: int
    decode_base_seconds: float
    decode_per_seq_seconds: float
    prefill_tokens_per_second: float
    prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK

    @classmethod
    def from_plan(cls, plan: Plan, max_num_seqs: int | None = None) -> PerfModel:
        """Calibrate a decode step so that, at the plan's reference batch, throughput is the plan's estimate."""
        reference_batch = max(1, min(plan.max_num_seqs, plan.kv_cache_tokens // 2048))
        step = reference_batch / max(plan.decode_tokens_per_second, 1e-6)
        return cls(
            max_num_seqs=max_num_seqs or plan.max_num_seqs,
            kv_tokens=plan.kv_cache_tokens,
            max_model_len=plan.max_model_len,
            decode_base_seconds=BASE_SHARE * step,
            decode_per_seq_seconds=(1 - BASE_SHARE) * step / reference_batch,
            prefill_tokens_per_second=plan.prefill_tokens_per_second,
        )

    def step_seconds(self, decoding: int, prefill_tokens: int) -> float:
        """Duration of one engine step: decode grows with the batch, prefill with its tokens."""
        decode = self.decode_base_seconds + self.decode_per_seq_seconds * decoding if decoding else 0.0
        return decode + prefill_tokens / self.prefill_tokens_per_second


@dataclass
class SimRequest:
    """One request inside the engine."""

    id: str
    prompt_tokens: int
    output_tokens: int
    arrival: float
    prefilled: int = 0
    generated: int = 0
    first_token_at: float | None = None
    scheduled_at: float | None = None
    admitted_order: int = 0
    recomputed: int = 0
    """Generated tokens that must be prefilled again after a preemption (recompute)."""

    @property
    def prefill_target(self) -> int:
        """Tokens to prefill before decoding: the prompt, plus earlier output after a preemption."""
        return self.prompt_tokens + self.recomputed

    @property
    def prefill_done(self) -> bool:
        """True once the prefill target is reached."""
        return self.prefilled >= self.prefill_target

    @property
    def blocks(self) -> int:
        """KV blocks the request holds now."""
        return math.ceil((self.prefilled + self.generated - self.recomputed) / BLOCK_TOKENS)

    @property
    def done(self) -> bool:
        """True once every output token is generated."""
        return self.generated >= self.output_tokens


@dataclass
class StepResult:
    """What one step did: its duration and the tokens each request received."""

    seconds: float
    tokens: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    prompt_tokens: int = 0


class Engine:
    """The scheduler of one simulated vLLM replica."""

    def __init__(self, perf: PerfModel) -> None:
        self.perf = perf
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.total_blocks = max(1, perf.kv_tokens // BLOCK_TOKENS)
        self.preemptions = 0
        self._order = 0

    @property
    def used_blocks(self) -> int:
        """KV blocks held by running requests."""
        return sum(r.blocks for r in self.running)

    @property
    def kv_usage(self) -> float:
        """Fraction of the KV cache in use (vLLM's kv_cache_usage_perc)."""
        return min(1.0, self.used_blocks / self.total_blocks)

    @property
    def idle(self) -> bool:
        """Nothing waiting or running."""
        return not self.waiting and not self.running

    def add(self, request: SimRequest) -> None:
        """Queue a request."""
        self.waiting.append(request)

    def cancel(self, request_id: str) -> bool:
        """Drop a request (client went away) and free its KV blocks."""
        for queue in (self.running, self.waiting):
            for r in list(queue):
                if r.id == request_id:
                    queue.remove(r)
                    return True
        return False

    def _admit(self, now: float) -> None:
        free = self.total_blocks - self.used_blocks
        while self.waiting and len(self.running) < self.perf.max_num_seqs:
            nxt = self.waiting[0]
            need = math.ceil((nxt.prefill_target + 1) / BLOCK_TOKENS)
            if need > free:
                break
            self.waiting.popleft()
            self._order += 1
            nxt.admitted_order = self._order
            nxt.scheduled_at = nxt.scheduled_at if nxt.scheduled_at is not None else now
            self.running.append(nxt)
            free -= need

    def _preempt_if_full(self, result: StepResult) -> None:
        """Recompute-preemption: when decoding would overflow the cache, push the newest request back."""
        while self.running and self.used_blocks + len(self.running) > self.total_blocks:
            victim = max(self.running, key=lambda r: r.admitted_order)
            self.running.remove(victim)
            victim.prefilled = 0
            victim.recomputed = victim.generated
            self.waiting.appendleft(victim)
            self.preemptions += 1
            result.preempted.append(victim.id)

    def step(self, now: float) -> StepResult:
        """Run one engine step starting at simulated time `now`."""
        self._admit(now)
        result = StepResult(seconds=0.0)
        self._preempt_if_full(result)
        budget = self.perf.prefill_chunk_tokens
        decoding = [r for r in self.running if r.prefill_done]
        prefill = 0
        for r in self.running:
            if not r.prefill_done and budget > 0:
                chunk = min(budget, r.prefill_target - r.prefilled)
                r.prefilled += chunk
                budget -= chunk
                prefill += chunk
        result.prompt_tokens = prefill
        result.seconds = self.perf.step_seconds(len(decoding), prefill)
        end = now + result.seconds
        for r in self.running:
            if r.prefill_done:
                r.generated += 1
                if r.first_token_at is None:
                    r.first_token_at = end
                result.tokens[r.id] = 1
        for r in [r for r in self.running if r.done]:
            self.running.remove(r)
            result.finished.append(r.id)
        return result


def output_length(rng: random.Random, max_tokens: int, mean: int = 256) -> int:
    """A request's natural output length (geometric around `mean`), capped by max_tokens."""
    return max(1, min(max_tokens, int(rng.expovariate(1 / mean)) + 1))


def prompt_tokens(text: str) -> int:
    """Tokens of a prompt, estimated as vLLM's BPE roughly does for English: one per 4 characters."""
    return max(1, math.ceil(len(text) / 4))
