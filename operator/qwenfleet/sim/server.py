"""A simulated vLLM OpenAI server (aiohttp) driven by the engine: vLLM's protocol, the Plan's timing.

The engine loop runs steps back to back in simulated time and sleeps until each step's end on a `SimClock`,
so wall time runs `time_scale` times faster than simulated time; tokens are streamed as steps produce them.
Metrics report simulated seconds, i.e. what the real server would have measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qwenfleet.api.plan import Plan
from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.sim.answer import AnswerShape, Channel, Transcript, shape_answer
from qwenfleet.sim.clock import SimClock
from qwenfleet.sim.engine import BLOCK_TOKENS, Engine, SimRequest, StepResult
from qwenfleet.sim.metrics import VllmMetrics
from qwenfleet.sim.perf import PerfModel
from qwenfleet.sim.protocol import (
    DONE,
    APIError,
    Generation,
    ServedModel,
    bad_request,
    chat_completion,
    chunk,
    model_card,
    parse_body,
    parse_generation,
    text_completion,
    tool_call_object,
    usage,
    usage_chunk,
)
from qwenfleet.sim.tokens import block_hashes, render_chat, token_ids, tokenize

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class _Stream:
    """One request's link between the engine loop and its HTTP handler."""

    request: SimRequest
    shape: AnswerShape
    transcript: Transcript
    generation: Generation
    call_id: str = ""
    """The tool call's id when the request forces one."""
    produced: int = 0
    done: bool = False
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self, start: int, end: int) -> tuple[str, str]:
        """Reasoning and content text of output tokens [start, end)."""
        reasoning: list[str] = []
        content: list[str] = []
        for i in range(start, end):
            channel = self.shape.channel(i)
            if channel is Channel.REASONING:
                reasoning.append(self.transcript.next_piece())
            elif channel is Channel.CONTENT:
                content.append(self.transcript.next_piece())
        return "".join(reasoning), "".join(content)

    def reasoning_tokens(self, upto: int) -> int:
        """Output tokens among the first `upto` that belong to the reasoning (think tags included)."""
        return min(upto, self.shape.reasoning_end + 1) if self.shape.thinks else 0

    def finish_reason(self) -> str:
        """vLLM's finish reason: a forced tool call that ends normally finishes with "tool_calls" when the choice
        was "required", "stop" when it named the function."""
        reason = self.request.finish_reason.value
        call = self.generation.tool_call
        if call is not None and reason == "stop" and not call.named:
            return "tool_calls"
        return reason

    def use(self, upto: int, *, streamed: bool = False) -> dict[str, object]:
        """The usage object after `upto` output tokens."""
        g = self.generation
        return usage(self.request.prompt_tokens, upto, chat=g.chat, reasoning_tokens=self.reasoning_tokens(upto),
                     streamed=streamed)  # fmt: skip


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
        max_num_batched_tokens: int | None = None,
        prefix_caching: bool = True,
    ) -> None:
        self.plan = plan
        self.served = ServedModel.from_plan(plan)
        self.load_tracking = "--enable-server-load-tracking" in plan.vllm_args
        self.perf = PerfModel.from_plan(plan, max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
        self.engine = Engine(self.perf, prefix_caching=prefix_caching)
        self.metrics = VllmMetrics(self.served.name, plan, self.perf)
        self.clock = SimClock(time_scale)
        self.cold_start_seconds = float(plan.cold_start_seconds if cold_start_seconds is None else cold_start_seconds)
        self.rng = random.Random(seed)
        self.created = int(time.time())
        self._streams: dict[str, _Stream] = {}
        self._engine_time = 0.0
        self._step_end: float | None = None
        self._stalled = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The served model name clients must ask for."""
        return self.served.name

    @property
    def time_scale(self) -> float:
        """Simulated seconds per wall second."""
        return self.clock.time_scale

    @property
    def loaded(self) -> bool:
        """True once the simulated cold start is over."""
        return self.clock.now() >= self.cold_start_seconds

    # ------------------------------------------------------------------------------------------ engine loop

    def start(self) -> None:
        """Start the engine loop (inside a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sim-engine-{self.name}")

    async def close(self) -> None:
        """Stop the engine loop and drop the connections of open requests (the pod is gone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for stream in self._streams.values():
            stream.closed = True
            stream.changed.set()

    async def _run(self) -> None:
        while True:
            if self.engine.idle or self._stalled:
                self._wake.clear()
                await self._wake.wait()
                # From idle, start at the first arrival: the loop's own wake-up latency is not engine time.
                woke = self.engine.waiting[0].arrival if not self._stalled and self.engine.waiting else None
                self._engine_time = max(self._engine_time, self.clock.now() if woke is None else woke)
                self._stalled = False
            result = self.engine.step(self._engine_time)
            if result.scheduled_tokens:
                self._step_end = result.end
                await self.clock.sleep_until(result.end)
                self._engine_time = result.end
                self._step_end = None
            else:
                self._stalled = True  # nothing fits: wait for an arrival or an abort
            self._publish(result)

    def _arrival_time(self) -> float:
        """Simulated arrival of a request now: never later than the start of the next step."""
        now = self.clock.now()
        return now if self._step_end is None else min(now, self._step_end)

    def _publish(self, result: StepResult) -> None:
        self.metrics.record_step(result)
        for request_id, count in result.tokens.items():
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.produced += count
                stream.changed.set()
        for request in result.finished:
            stream = self._streams.get(request.id)
            if stream is not None:
                stream.done = True
                stream.changed.set()
        self._record_state()

    def _record_state(self) -> None:
        engine = self.engine
        self.metrics.record_state(len(engine.running), len(engine.waiting), engine.kv_usage)

    # ------------------------------------------------------------------------------------------ HTTP

    api_key: str | None = None
    """vLLM's `--api-key`: every /v1 path then wants `Authorization: Bearer <key>`."""

    @web.middleware
    async def _require_key(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """vLLM's API-key check: a /v1 request without the key gets 401 `{"error": "Unauthorized"}`."""
        wanted = f"Bearer {self.api_key}"
        if self.api_key and request.path.startswith("/v1") and request.headers.get("Authorization") != wanted:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    def app(self) -> web.Application:
        """The aiohttp application. A client that disconnects cancels its handler, and so its request."""
        app = web.Application(
            client_max_size=64 * 1024 * 1024,
            middlewares=[self._require_key, _errors_like_fastapi],
            handler_args={"handler_cancellation": True},
        )
        app.on_response_prepare.append(_uvicorn_headers)
        app.router.add_get("/health", self.health)
        app.router.add_route("*", "/ping", self.health)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/load", self.load)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        return app

    async def health(self, _: web.Request) -> web.Response:
        """200 with an empty body once loaded, 503 before."""
        return web.Response(status=200 if self.loaded else 503)

    async def version(self, _: web.Request) -> web.Response:
        """vLLM's /version."""
        return _json({"version": VLLM_VERSION})

    async def load(self, _: web.Request) -> web.Response:
        """vLLM's /load: requests in flight (vLLM counts them only with `--enable-server-load-tracking`)."""
        return _json({"server_load": len(self._streams) if self.load_tracking else 0})

    async def metrics_view(self, _: web.Request) -> web.Response:
        """Prometheus text format, always the whole registry: vLLM 0.32's /metrics ignores the query string
        (`name[]` included), so a scraper pays for the full exposition."""
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, _: web.Request) -> web.Response:
        """The one served model."""
        self._require_loaded()
        return _json(model_card(self.served, self.created))

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize with the simulator's token estimate (ids are stable pseudo ids)."""
        self._require_loaded()
        body = parse_body(await request.read())
        if isinstance(body.get("messages"), list):
            kwargs = body.get("chat_template_kwargs") or {}
            enable = bool(kwargs.get("enable_thinking", self.served.think_by_default))
            pieces = tokenize(render_chat(body["messages"], thinking=self.served.thinking, enable_thinking=enable))
        elif isinstance(body.get("prompt"), str):
            pieces = tokenize(body["prompt"])
        else:
            raise bad_request("either prompt (a string) or messages is required")
        ids = token_ids(pieces)
        return _json({"count": len(ids), "max_model_len": self.served.max_model_len, "tokens": ids, "token_strs": None})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """/v1/chat/completions."""
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """/v1/completions."""
        return await self._generate(request, chat=False)

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise APIError(HTTPStatus.SERVICE_UNAVAILABLE, "The model is still loading.")

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self._require_loaded()
        gen = parse_generation(await request.read(), self.served, chat=chat)
        stream = self._submit(gen)
        if gen.chat and gen.has_tools:
            self.metrics.record_tool_parse(streamed=gen.stream, called=gen.tool_call is not None)
        rid = stream.request.id
        try:
            if gen.stream:
                return await self._streamed(request, gen, stream)
            return await self._whole(request, gen, stream)
        finally:
            del self._streams[rid]
            if self.engine.abort_request(rid) is not None:  # still inside: the client went away
                self.metrics.record_abort()
                self._record_state()
                self._wake.set()

    def _submit(self, gen: Generation) -> _Stream:
        """Draw the answer, queue the request in the engine and wake the loop."""
        if gen.seed is not None:
            rng = random.Random(f"{gen.seed}:{zlib.crc32(chr(31).join(gen.prompt).encode())}")
        else:
            rng = random.Random(self.rng.getrandbits(64))
        thinking = self.served.thinking if gen.thinking else None
        shape = shape_answer(rng, max_tokens=gen.max_tokens, chat=gen.chat, thinking=thinking,
                             min_tokens=gen.min_tokens, ignore_eos=gen.ignore_eos)  # fmt: skip
        rid = f"{'chatcmpl' if gen.chat else 'cmpl'}-{self.rng.getrandbits(128):032x}"
        sim = SimRequest(
            id=rid,
            prompt_tokens=len(gen.prompt),
            output_tokens=shape.total,
            arrival=self._arrival_time(),
            finish_reason=shape.finish_reason,
            prompt_hashes=block_hashes(gen.prompt, BLOCK_TOKENS),
            max_tokens=gen.max_tokens_param,
        )
        try:
            self.engine.add_request(sim)
        except ValueError as exc:  # longer than the KV cache (only with a hand-made plan)
            raise bad_request(str(exc)) from None
        stream = _Stream(sim, shape, Transcript(rng), gen)
        if gen.tool_call is not None:
            stream.call_id = f"chatcmpl-tool-{rng.getrandbits(64):016x}"
        self._streams[rid] = stream
        self.metrics.record_arrival(gen.max_tokens)
        self._record_state()
        self._wake.set()
        return stream

    async def _whole(self, request: web.Request, gen: Generation, stream: _Stream) -> web.Response:
        while not stream.done:
            await stream.changed.wait()
            stream.changed.clear()
            if stream.closed:
                _cut(request)
                raise APIError(HTTPStatus.SERVICE_UNAVAILABLE, "The server stopped.")
        r, shape = stream.request, stream.shape
        reasoning, content = stream.text(0, r.generated)
        use = stream.use(r.generated)
        created = int(time.time())
        if not gen.chat:
            body = text_completion(r.id, created, self.served, text=content, finish=r.finish_reason.value, use=use)
        elif gen.tool_call is not None:
            body = chat_completion(
                r.id,
                created,
                self.served,
                content="",
                reasoning=reasoning if shape.thinks else None,
                finish=stream.finish_reason(),
                use=use,
                tool_calls=[tool_call_object(stream.call_id, gen.tool_call)],
            )
        else:
            body = chat_completion(
                r.id,
                created,
                self.served,
                content=content if content or not shape.thinks or r.generated > shape.reasoning_end else None,
                reasoning=reasoning if shape.thinks else None,
                finish=r.finish_reason.value,
                use=use,
            )
        return _json(body)

    async def _streamed(self, request: web.Request, gen: Generation, stream: _Stream) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        r = stream.request
        created = int(time.time())
        sent = 0
        started = False
        call_sent = -1  # characters of the tool call's arguments streamed so far; -1 before its header
        while True:
            await stream.changed.wait()
            stream.changed.clear()
            if stream.closed:
                _cut(request)
                return response
            upto, done = stream.produced, stream.done
            if upto == sent and not done:
                continue
            out = bytearray()
            use = stream.use(upto, streamed=True) if gen.include_usage and gen.continuous_usage else None
            if gen.chat and not started:
                out += chunk(r.id, created, self.served, chat=True, delta={"role": "assistant", "content": ""},
                             use=stream.use(0, streamed=True) if use is not None else None, role=True)  # fmt: skip
            started = True
            reasoning, content = stream.text(sent, upto)
            finish = stream.finish_reason() if done else None
            last = done and not gen.include_usage
            if gen.chat and gen.tool_call is not None:
                deltas: list[dict[str, object]] = [{"reasoning": reasoning}] if reasoning else []
                if content and call_sent < 0:
                    head = {"id": stream.call_id, "type": "function", "index": 0,
                            "function": {"name": gen.tool_call.name}}  # fmt: skip
                    deltas.append({"content": None, "tool_calls": [head]})
                    call_sent = 0
                elif content or (done and r.finish_reason.value == "stop" and call_sent >= 0):
                    arguments = gen.tool_call.arguments
                    end = len(arguments) if done else min(len(arguments), call_sent + 8)
                    if end > call_sent:
                        piece = {"index": 0, "function": {"arguments": arguments[call_sent:end]}}
                        deltas.append({"content": None, "tool_calls": [piece]})
                        call_sent = end
                for i, delta in enumerate(deltas):
                    fin = finish if i == len(deltas) - 1 else None
                    out += chunk(r.id, created, self.served, chat=True, delta=delta, finish=fin, use=use,
                                 last=last and fin is not None)  # fmt: skip
                if finish and not deltas:
                    out += chunk(r.id, created, self.served, chat=True, delta={}, finish=finish, use=use, last=last)
            elif gen.chat:
                delta = {k: v for k, v in (("reasoning", reasoning), ("content", content)) if v}
                if delta or finish:
                    # A finish without text (the end-of-sequence token) has an empty delta, as in vLLM.
                    out += chunk(r.id, created, self.served, chat=True, delta=delta, finish=finish, use=use, last=last)
            elif content or finish:
                out += chunk(r.id, created, self.served, chat=False, text=content, finish=finish, use=use, last=last)
            sent = upto
            if done:
                if gen.include_usage:
                    out += usage_chunk(r.id, created, self.served, chat=gen.chat, use=stream.use(r.generated,
                                       streamed=True))  # fmt: skip
                out += DONE
                await response.write(bytes(out))
                await response.write_eof()
                return response
            await response.write(bytes(out))


@web.middleware
async def _errors_like_fastapi(request: web.Request, handler: Handler) -> web.StreamResponse:
    """OpenAI-shaped API errors, and FastAPI's bodies for unknown routes and methods."""
    try:
        return await handler(request)
    except APIError as exc:
        return _json(exc.body(), status=int(exc.status))
    except web.HTTPNotFound:
        return _json({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed:
        return _json({"detail": "Method Not Allowed"}, status=405)


def _cut(request: web.Request) -> None:
    """Drop the connection, as a stopped pod does."""
    if request.transport is not None:
        request.transport.abort()


def _json(body: object, status: int = 200) -> web.Response:
    """JSON the way FastAPI writes it (compact, UTF-8, `Content-Type: application/json` without a charset)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(body=text.encode(), status=status, headers={"Content-Type": "application/json"})


async def _uvicorn_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "uvicorn"
