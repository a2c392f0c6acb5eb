"""A vLLM-like engine in simulated time: continuous batching, chunked prefill, paged KV cache with prefix caching,
recompute preemption. Pure and deterministic: no I/O, no clock, no asyncio.

The HTTP server drives it in (scaled) wall time and the autoscaling benchmark in virtual time, the same way:
`add_request()`, then `step(now)` repeatedly; each step says how many simulated seconds it took and what
happened in it. Scheduling follows vLLM v1's scheduler:

1. Running requests first, in admission order, each taking what it still has to compute (a decode token, or
   the rest of a prefill) out of the step's token budget. When the cache cannot hold a request's new tokens,
   the most recently admitted running request is preempted (its blocks freed, its progress to be recomputed)
   until it fits.
2. Then, if nothing was preempted, waiting requests in order while fewer than `max_num_seqs` run and budget is
   left: each first reuses its longest cached prefix, then takes a (possibly partial) prefill chunk if its
   blocks fit, else the queue stops there (first come, first served).

A request whose computed tokens catch up with its tokens samples one new token at the end of the step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from qwenfleet.sim.kv_cache import KVCache
from qwenfleet.sim.perf import BLOCK_TOKENS, PerfModel

__all__ = ["BLOCK_TOKENS", "Engine", "FinishReason", "PerfModel", "RequestState", "SimRequest", "StepResult"]


class FinishReason(StrEnum):
    """Why a request ended (vLLM's `finished_reason` label values)."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


class RequestState(StrEnum):
    """Where a request is in the engine."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class SimRequest:
    """One request: what it asks for, and its progress and timestamps in simulated seconds."""

    id: str
    prompt_tokens: int
    output_tokens: int
    """Tokens it will generate before it ends (the server decides: natural length or max_tokens)."""
    arrival: float = 0.0
    finish_reason: FinishReason = FinishReason.STOP
    """Reason reported once `output_tokens` are generated: stop (end of sequence) or length (max_tokens)."""
    prompt_hashes: tuple[int, ...] = ()
    """Hashes of the prompt's full blocks, for prefix caching (empty: the prompt shares nothing)."""
    max_tokens: int | None = None
    """The request's max_tokens parameter, for vLLM's request_params_max_tokens histogram."""
    lora: str | None = None
    """The LoRA adapter it runs with (None: the base model)."""

    state: RequestState = RequestState.WAITING
    computed: int = 0
    """Tokens whose KV is in the cache."""
    generated: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache at its first scheduling."""
    preemptions: int = 0
    scheduled_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float | None = None
    _hashes: list[int] = field(default_factory=list, repr=False)

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return self.prompt_tokens + self.generated

    @property
    def done(self) -> bool:
        """True once every output token is generated."""
        return self.generated >= self.output_tokens

    def block_hashes(self, full_blocks: int) -> list[int]:
        """Hashes of (at least) the first `full_blocks` blocks: the prompt's, then ones private to this request."""
        while len(self._hashes) < full_blocks:
            i = len(self._hashes)
            previous = self._hashes[-1] if self._hashes else 0
            self._hashes.append(self.prompt_hashes[i] if i < len(self.prompt_hashes) else hash((previous, self.id, i)))
        return self._hashes

    # Phase times as vLLM reports them (valid once finished).
    @property
    def queue_seconds(self) -> float:
        """Arrival to first scheduling."""
        return _gap(self.arrival, self.scheduled_at)

    @property
    def prefill_seconds(self) -> float:
        """First scheduling to first token."""
        return _gap(self.scheduled_at, self.first_token_at)

    @property
    def decode_seconds(self) -> float:
        """First token to last token."""
        return _gap(self.first_token_at, self.last_token_at)

    @property
    def inference_seconds(self) -> float:
        """First scheduling to last token."""
        return _gap(self.scheduled_at, self.last_token_at)

    @property
    def e2e_seconds(self) -> float:
        """Arrival to the end."""
        return _gap(self.arrival, self.finished_at)


def _gap(start: float | None, end: float | None) -> float:
    return max(0.0, end - start) if start is not None and end is not None else 0.0


@dataclass
class StepResult:
    """What one step did, with its duration in simulated seconds."""

    start: float
    seconds: float = 0.0
    tokens: dict[str, int] = field(default_factory=dict)
    """Request id -> tokens it received at the end of the step."""
    finished: list[SimRequest] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    scheduled_tokens: int = 0
    """Tokens computed in the step (prefill chunks plus decode tokens)."""
    prompt_tokens: int = 0
    """Prompt tokens of the requests that got their first token (vLLM's prompt_tokens counter)."""
    prefix_queries: int = 0
    prefix_hits: int = 0
    time_to_first_token: list[float] = field(default_factory=list)
    inter_token_latency: list[float] = field(default_factory=list)

    @property
    def end(self) -> float:
        """When the step's tokens come out."""
        return self.start + self.seconds

    @property
    def generation_tokens(self) -> int:
        """Tokens sampled in the step."""
        return sum(self.tokens.values())


class Engine:
    """The scheduler of one simulated vLLM replica."""

    def __init__(self, perf: PerfModel, *, prefix_caching: bool = True, max_loras: int | None = None) -> None:
        self.perf = perf
        self.max_loras = max_loras
        """Distinct LoRA adapters one step may run (vLLM's `--max-loras`); None: no limit."""
        self.kv = KVCache(perf.kv_blocks, BLOCK_TOKENS, prefix_caching=prefix_caching)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.requests: dict[str, SimRequest] = {}
        self.preemptions = 0

    @property
    def idle(self) -> bool:
        """Nothing waiting or running."""
        return not self.waiting and not self.running

    @property
    def kv_usage(self) -> float:
        """Fraction of the KV cache held by requests (vLLM's kv_cache_usage_perc)."""
        return self.kv.usage

    def add_request(self, request: SimRequest) -> None:
        """Queue a request; it is considered at the next step."""
        if request.id in self.requests:
            raise ValueError(f"duplicate request id {request.id}")
        if request.prompt_tokens < 1 or request.output_tokens < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        if request.prompt_tokens + request.output_tokens > min(self.perf.max_model_len, self.perf.kv_tokens):
            raise ValueError(f"request {request.id} does not fit the context or the KV cache")
        request.state = RequestState.WAITING
        self.requests[request.id] = request
        self.waiting.append(request)

    def abort_request(self, request_id: str) -> SimRequest | None:
        """Drop a waiting or running request (its client went away) and free its blocks; None if unknown."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        if request.state is RequestState.RUNNING:
            self.running.remove(request)
        elif request.state is RequestState.WAITING:
            self.waiting.remove(request)
        self.kv.free(request_id)
        request.state = RequestState.FINISHED
        return request

    def step(self, now: float) -> StepResult:
        """Schedule and run one step starting at simulated time `now`; its tokens come out at `result.end`."""
        result = StepResult(start=now)
        scheduled, budget = self._schedule_running(result)
        if not result.preempted:
            scheduled += self._schedule_waiting(now, budget, result)
        if not scheduled:
            return result
        tokens = sum(n for _, n in scheduled)
        context = sum(r.computed + n for r, n in scheduled)
        result.scheduled_tokens = tokens
        result.seconds = self.perf.batch_seconds(tokens, context)
        self._finish_step(scheduled, result)
        return result

    # ------------------------------------------------------------------------------------------ scheduling

    def _schedule_running(self, result: StepResult) -> tuple[list[tuple[SimRequest, int]], int]:
        budget = self.perf.max_num_batched_tokens
        scheduled: list[tuple[SimRequest, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = min(request.num_tokens - request.computed, budget)
            while not self.kv.allocate(request.id, request.computed + n):
                victim = self.running.pop()
                self._preempt(victim, result)
                if victim is request:
                    return scheduled, 0
            scheduled.append((request, n))
            budget -= n
            i += 1
        return scheduled, budget

    def _lora_blocked(self, request: SimRequest) -> bool:
        """Whether running `request` would take the batch past `max_loras` distinct adapters (vLLM skips it and
        schedules the ones behind it)."""
        if self.max_loras is None or request.lora is None:
            return False
        loras = {r.lora for r in self.running if r.lora is not None}
        return request.lora not in loras and len(loras) >= self.max_loras

    def _schedule_waiting(self, now: float, budget: int, result: StepResult) -> list[tuple[SimRequest, int]]:
        skipped: list[SimRequest] = []
        try:
            return self._admit(now, budget, result, skipped)
        finally:
            self.waiting.extendleft(reversed(skipped))

    def _admit(
        self, now: float, budget: int, result: StepResult, skipped: list[SimRequest]
    ) -> list[tuple[SimRequest, int]]:
        scheduled: list[tuple[SimRequest, int]] = []
        while self.waiting and budget > 0 and len(self.running) < self.perf.max_num_seqs:
            request = self.waiting[0]
            if self._lora_blocked(request):
                skipped.append(self.waiting.popleft())
                continue
            hits = self._cached_prefix(request, result)
            computed = len(hits) * BLOCK_TOKENS
            n = min(request.num_tokens - computed, budget)
            if not self.kv.allocate(request.id, computed + n, hits):
                break
            self.waiting.popleft()
            request.computed = computed
            if request.scheduled_at is None:
                request.scheduled_at = now
                request.cached_tokens = min(computed, request.prompt_tokens)
            request.state = RequestState.RUNNING
            self.running.append(request)
            scheduled.append((request, n))
            budget -= n
        return scheduled

    def _cached_prefix(self, request: SimRequest, result: StepResult) -> list[int]:
        """Blocks of the longest cached prefix, leaving at least one token to compute (as vLLM does)."""
        usable = (request.num_tokens - 1) // BLOCK_TOKENS
        hits = self.kv.cached_prefix(request.block_hashes(usable)[:usable])
        result.prefix_queries += request.num_tokens
        result.prefix_hits += len(hits) * BLOCK_TOKENS
        return hits

    def _preempt(self, request: SimRequest, result: StepResult) -> None:
        """Recompute preemption: free the blocks, go back to the front of the queue, keep generated tokens."""
        self.kv.free(request.id)
        request.computed = 0
        request.preemptions += 1
        request.state = RequestState.WAITING
        self.waiting.appendleft(request)
        self.preemptions += 1
        result.preempted.append(request.id)

    def _finish_step(self, scheduled: list[tuple[SimRequest, int]], result: StepResult) -> None:
        end = result.end
        finished = False
        for request, n in scheduled:
            full_before = request.computed // BLOCK_TOKENS
            request.computed += n
            full = request.computed // BLOCK_TOKENS
            if full > full_before:
                self.kv.register(request.id, request.block_hashes(full), full)
            if request.computed < request.num_tokens:
                continue  # a prefill chunk: no token yet
            request.generated += 1
            result.tokens[request.id] = 1
            if request.first_token_at is None:
                request.first_token_at = end
                result.prompt_tokens += request.prompt_tokens
                result.time_to_first_token.append(end - request.arrival)
            elif request.last_token_at is not None:
                result.inter_token_latency.append(end - request.last_token_at)
            request.last_token_at = end
            if request.done:
                request.state = RequestState.FINISHED
                request.finished_at = end
                self.kv.free(request.id)
                del self.requests[request.id]
                result.finished.append(request)
                finished = True
        if finished:
            self.running = [r for r in self.running if r.state is RequestState.RUNNING]
