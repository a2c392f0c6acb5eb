"""A simulated vLLM OpenAI server (aiohttp) driven by the engine: the protocol of vLLM, the timing of the Plan.

Wall time runs `time_scale` times faster than simulated time; metrics report simulated seconds, i.e. what the
real server would have measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qwenfleet.api.plan import Plan
from qwenfleet.catalog import ThinkingMode, get_model
from qwenfleet.sim.engine import Engine, PerfModel, SimRequest, output_length, prompt_tokens

WORDS = (
    "the",
    "model",
    "serves",
    "tokens",
    "quickly",
    "while",
    "the",
    "cluster",
    "scales",
    "replicas",
    "on",
    "queue",
    "depth",
    "and",
    "every",
    "request",
    "finds",
    "a",
    "ready",
    "pod",
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class Metrics:
    """vLLM's Prometheus metrics, in a registry of this server's own."""

    def __init__(self, model_name: str, plan: Plan) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.values = (model_name, "0")
        r = self.registry
        self.running = Gauge("vllm:num_requests_running", "Requests in model execution batches.", labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be processed.", labels, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=r)
        self.generation = Counter("vllm:generation_tokens", "Generation tokens processed.", labels, registry=r)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative preemptions.", labels, registry=r)
        self.success = Counter(
            "vllm:request_success", "Successfully processed requests.", [*labels, "finished_reason"], registry=r
        )
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in tokens.", labels, registry=r
        )
        self.prefix_hits = Counter("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", labels, registry=r)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency in seconds.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Time spent waiting in the queue.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            ["block_size", "gpu_memory_utilization", "cache_dtype", "num_gpu_blocks"],
            registry=r,
        )
        info.labels("16", f"{plan.gpu_memory_utilization:g}", "auto", str(plan.kv_cache_tokens // 16)).set(1)
        for metric in (
            self.running,
            self.waiting,
            self.kv,
            self.prompt,
            self.generation,
            self.preemptions,
            self.prefix_queries,
            self.prefix_hits,
            self.ttft,
            self.itl,
            self.e2e,
            self.queue,
        ):
            metric.labels(*self.values)


@dataclass
class _Stream:
    """One request's connection to the engine loop."""

    request: SimRequest
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    finish_reason: str = "stop"


def served_name(plan: Plan) -> str:
    """The model name clients must ask for (vLLM's --served-model-name)."""
    args = plan.vllm_args
    return args[args.index("--served-model-name") + 1] if "--served-model-name" in args else plan.model


def thinking_default(plan: Plan) -> bool:
    """Whether a hybrid model thinks unless asked not to."""
    args = plan.vllm_args
    if "--default-chat-template-kwargs" in args:
        kwargs = json.loads(args[args.index("--default-chat-template-kwargs") + 1])
        return bool(kwargs.get("enable_thinking", True))
    return True


class SimServer:
    """One simulated vLLM replica: an engine loop in simulated time and its aiohttp application."""

    def __init__(
        self,
        plan: Plan,
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        cold_start_seconds: float | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        self.plan = plan
        self.name = served_name(plan)
        self.thinking = get_model(plan.model).thinking
        self.think_by_default = thinking_default(plan)
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.engine = Engine(PerfModel.from_plan(plan, max_num_seqs))
        self.metrics = Metrics(self.name, plan)
        cold = plan.cold_start_seconds if cold_start_seconds is None else cold_start_seconds
        self.started = time.monotonic()
        self.ready_at = self.started + cold / time_scale
        self.streams: dict[str, _Stream] = {}
        self.sim_now = 0.0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ engine loop

    def start(self) -> None:
        """Start the engine loop (call inside a running event loop)."""
        self._loop_task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop the engine loop and end every open stream."""
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for stream in self.streams.values():
            stream.tokens.put_nowait(None)

    async def _run(self) -> None:
        while True:
            if self.engine.idle:
                self._wake.clear()
                await self._wake.wait()
                self.sim_now = max(self.sim_now, self._wall_to_sim())
            result = self.engine.step(self.sim_now)
            self.sim_now += result.seconds
            await asyncio.sleep(result.seconds / self.time_scale)
            self._publish(result.tokens, result.finished, result.preempted, result.prompt_tokens)

    def _wall_to_sim(self) -> float:
        return (time.monotonic() - self.started) * self.time_scale

    def _publish(self, tokens: dict[str, int], finished: list[str], preempted: list[str], prompt: int) -> None:
        m, v = self.metrics, self.metrics.values
        m.prompt.labels(*v).inc(prompt)
        m.preemptions.labels(*v).inc(len(preempted))
        for request_id, count in tokens.items():
            stream = self.streams.get(request_id)
            if stream is None:
                continue
            m.generation.labels(*v).inc(count)
            stream.tokens.put_nowait(count)
        for request_id in finished:
            stream = self.streams.get(request_id)
            if stream:
                stream.tokens.put_nowait(None)
        m.running.labels(*v).set(len(self.engine.running))
        m.waiting.labels(*v).set(len(self.engine.waiting))
        m.kv.labels(*v).set(self.engine.kv_usage)

    # ------------------------------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        """The aiohttp application: OpenAI endpoints, /health, /metrics."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/version", self.version)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        return app

    @property
    def loaded(self) -> bool:
        """True once the simulated cold start is over."""
        return time.monotonic() >= self.ready_at

    async def health(self, _: web.Request) -> web.Response:
        """200 once loaded, 503 before."""
        return web.Response(status=200 if self.loaded else 503)

    async def version(self, _: web.Request) -> web.Response:
        """vLLM's /version."""
        return web.json_response({"version": "0.11.0"})

    async def metrics_view(self, _: web.Request) -> web.Response:
        """Prometheus text format."""
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, _: web.Request) -> web.Response:
        """The one served model."""
        if not self.loaded:
            return _error(503, "the model is still loading", "ServiceUnavailableError")
        card = {
            "id": self.name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "vllm",
            "root": self.plan.repo,
            "parent": None,
            "max_model_len": self.plan.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """/v1/chat/completions."""
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """/v1/completions."""
        return await self._generate(request, chat=False)

    def _wants_thinking(self, body: dict[str, Any]) -> bool:
        if self.thinking is ThinkingMode.THINKING:
            return True
        if self.thinking is ThinkingMode.INSTRUCT:
            return False
        kwargs = body.get("chat_template_kwargs") or {}
        if "enable_thinking" in kwargs:
            return bool(kwargs["enable_thinking"])
        users = [m for m in body.get("messages") or [] if m.get("role") in ("user", "system")]
        text = str(users[-1].get("content", "")) if users else ""
        if "/no_think" in text:
            return False
        if "/think" in text:
            return True
        return self.think_by_default

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if not self.loaded:
            return _error(503, "the model is still loading", "ServiceUnavailableError")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            return _error(400, f"invalid JSON body: {exc}", "BadRequestError")
        if body.get("model") != self.name:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return _error(400, "messages must be a non-empty list", "BadRequestError", "messages")
            text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        else:
            text = str(body.get("prompt", ""))
        n_prompt = prompt_tokens(text)
        limit = self.plan.max_model_len - n_prompt
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or limit
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "max_tokens must be a positive integer", "BadRequestError", "max_tokens")
        if max_tokens > limit:
            return _error(
                400,
                f"This model's maximum context length is {self.plan.max_model_len} tokens. However, "
                f"you requested {max_tokens + n_prompt} tokens ({n_prompt} in the messages, "
                f"{max_tokens} in the completion).",
                "BadRequestError",
                "max_tokens",
            )
        natural = output_length(self.rng, 10**9)
        n_out = min(max_tokens, natural)
        think = chat and self._wants_thinking(body)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        sim = SimRequest(rid, n_prompt, n_out, arrival=self._wall_to_sim())
        stream = _Stream(sim, finish_reason="length" if natural >= max_tokens else "stop")
        self.streams[rid] = stream
        self.engine.add(sim)
        self.metrics.waiting.labels(*self.metrics.values).set(len(self.engine.waiting))
        self._wake.set()
        try:
            if body.get("stream"):
                return await self._stream(request, body, stream, chat=chat, think=think)
            return await self._whole(body, stream, chat=chat, think=think)
        finally:
            self.streams.pop(rid, None)
            if self.engine.cancel(rid):  # still inside: the client went away
                self._publish({}, [], [], 0)

    def _piece(self, index: int) -> str:
        return WORDS[index % len(WORDS)] + " "

    def _split(self, n_out: int, think: bool) -> int:
        """How many of the output tokens are reasoning."""
        return int(n_out * 0.6) if think else 0

    def _record(self, stream: _Stream) -> None:
        r, m, v = stream.request, self.metrics, self.metrics.values
        end = self.sim_now
        if r.first_token_at is not None:
            m.ttft.labels(*v).observe(max(0.0, r.first_token_at - r.arrival))
            if r.generated > 1:
                m.itl.labels(*v).observe((end - r.first_token_at) / (r.generated - 1))
        m.e2e.labels(*v).observe(max(0.0, end - r.arrival))
        m.queue.labels(*v).observe(max(0.0, (r.scheduled_at or end) - r.arrival))
        m.success.labels(*v, stream.finish_reason).inc()

    def _usage(self, r: SimRequest) -> dict[str, int]:
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.generated,
            "total_tokens": r.prompt_tokens + r.generated,
        }

    async def _collect(self, stream: _Stream) -> int:
        produced = 0
        while (count := await stream.tokens.get()) is not None:
            produced += count
        return produced

    async def _whole(self, body: dict[str, Any], stream: _Stream, *, chat: bool, think: bool) -> web.Response:
        produced = await self._collect(stream)
        self._record(stream)
        r = stream.request
        reasoning_n = self._split(produced, think)
        reasoning = "".join(self._piece(i) for i in range(reasoning_n)).strip()
        content = "".join(self._piece(i) for i in range(reasoning_n, produced)).strip()
        base = {"id": r.id, "created": int(time.time()), "model": self.name, "usage": self._usage(r)}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": []}
            if think:
                message["reasoning"] = reasoning
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": stream.finish_reason}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice]})
        choice = {"index": 0, "text": content, "finish_reason": stream.finish_reason, "logprobs": None}
        return web.json_response({**base, "object": "text_completion", "choices": [choice]})

    async def _stream(
        self, request: web.Request, body: dict[str, Any], stream: _Stream, *, chat: bool, think: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        r = stream.request
        reasoning_n = self._split(r.output_tokens, think)
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        async def send(choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> None:
            chunk = {
                "id": r.id,
                "object": obj,
                "created": created,
                "model": self.name,
                "choices": [choice] if choice else [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if chat:
            await send({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        sent = 0
        while (count := await stream.tokens.get()) is not None:
            for i in range(sent, sent + count):
                piece = self._piece(i)
                if not chat:
                    await send({"index": 0, "text": piece, "finish_reason": None, "logprobs": None})
                elif i < reasoning_n:
                    await send({"index": 0, "delta": {"reasoning": piece}, "finish_reason": None})
                else:
                    await send({"index": 0, "delta": {"content": piece}, "finish_reason": None})
            sent += count
        self._record(stream)
        final = (
            {"index": 0, "delta": {}, "finish_reason": stream.finish_reason}
            if chat
            else {"index": 0, "text": "", "finish_reason": stream.finish_reason, "logprobs": None}
        )
        await send(final)
        options = body.get("stream_options") or {}
        if options and options.get("include_usage", True):
            await send(None, self._usage(r))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)
