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
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qwenfleet.api.plan import Plan
from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.sim.answer import AnswerShape, Channel, Transcript, shape_answer
from qwenfleet.sim.clock import SimClock
from qwenfleet.sim.engine import BLOCK_TOKENS, Engine, RequestState, SimRequest, StepResult
from qwenfleet.sim.lora import AdapterRegistry, LoraConfig, parse_load_request, parse_unload_request
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
    unsupported_media_type,
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
    served: ServedModel
    """What the answer names as its model: the base model, or the adapter asked for."""
    index: int = 0
    """The choice it is (requests with `n` > 1 have one stream per choice)."""
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
        lora: LoraConfig | None = None,
        path_map: dict[str, Path] | None = None,
    ) -> None:
        """`lora` defaults to the plan's LoRA flags (runtime updating off); `path_map` maps path prefixes the
        server is given (`--lora-modules`, `lora_path`) to directories on this machine. An adapter of `lora` that
        cannot be loaded raises ValueError, as vLLM fails to start."""
        self.plan = plan
        self.served = ServedModel.from_plan(plan)
        self.load_tracking = "--enable-server-load-tracking" in plan.vllm_args
        self.perf = PerfModel.from_plan(plan, max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
        self.lora = LoraConfig.from_vllm_args(plan.vllm_args) if lora is None else lora
        max_loras = self.lora.max_loras if self.lora.enabled else None
        self.engine = Engine(self.perf, prefix_caching=prefix_caching, max_loras=max_loras)
        self.metrics = VllmMetrics(self.served.name, plan, self.perf, max_loras=max_loras)
        self.adapters = AdapterRegistry(self.served.name, self.lora.max_lora_rank, dict(path_map or {}))
        self._load_static_adapters()
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

    def _load_static_adapters(self) -> None:
        for name, path in self.lora.modules:
            try:
                self.adapters.load(name, path)
            except APIError as exc:
                raise ValueError(exc.message) from None

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
        self.metrics.record_state(len(engine.running), len(engine.waiting), engine.kv_usage, self._loras_in_flight())

    def _loras_in_flight(self) -> list[str]:
        """Adapters of the requests in the engine, in order of arrival."""
        names: dict[str, None] = {}
        for stream in self._streams.values():
            r = stream.request
            if r.lora is not None and r.state is not RequestState.FINISHED:
                names[r.lora] = None
        return list(names)

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
        if self.lora.runtime_updates:
            app.router.add_post("/v1/load_lora_adapter", self.load_adapter)
            app.router.add_post("/v1/unload_lora_adapter", self.unload_adapter)
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
        return _json(model_card(self.served, int(time.time()), self.adapters.cards()))

    async def load_adapter(self, request: web.Request) -> web.Response:
        """vLLM's /v1/load_lora_adapter (served with runtime LoRA updating): a text/plain-less 200 on success."""
        name, path, inplace = parse_load_request(await _json_body(request))
        return _untyped(self.adapters.load(name, path, inplace=inplace))

    async def unload_adapter(self, request: web.Request) -> web.Response:
        """vLLM's /v1/unload_lora_adapter."""
        return _untyped(self.adapters.unload(parse_unload_request(await _json_body(request))))

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
        gen = parse_generation(await request.read(), self.served, chat=chat, adapters=self.adapters)
        streams = self._submit(gen)
        if gen.chat and gen.has_tools:
            self.metrics.record_tool_parse(streamed=gen.stream, called=gen.tool_call is not None)
        try:
            if gen.stream:
                return await self._streamed(request, gen, streams)
            return await self._whole(request, gen, streams)
        finally:
            self._forget(streams)

    def _forget(self, streams: list[_Stream]) -> None:
        """Drop a request's streams; abort the sequences still in the engine (the client went away)."""
        aborted = False
        for stream in streams:
            rid = stream.request.id
            del self._streams[rid]
            if self.engine.abort_request(rid) is not None:
                self.metrics.record_abort()
                aborted = True
        if aborted:
            self._record_state()
            self._wake.set()

    def _submit(self, gen: Generation) -> list[_Stream]:
        """Draw each choice's answer, queue its sequence in the engine and wake the loop."""
        served = self.served if gen.adapter is None else replace(self.served, name=gen.adapter)
        rid = f"{'chatcmpl' if gen.chat else 'cmpl'}-{self.rng.getrandbits(128):032x}"
        changed = asyncio.Event()
        streams = [self._sequence(gen, served, rid, index, changed) for index in range(gen.n)]
        try:
            for stream in streams:
                self.engine.add_request(stream.request)
                self._streams[stream.request.id] = stream
        except ValueError as exc:  # longer than the KV cache (only with a hand-made plan)
            self._forget([s for s in streams if s.request.id in self._streams])
            raise bad_request(str(exc)) from None
        self.metrics.record_arrival(gen.max_tokens, gen.n)
        self._record_state()
        self._wake.set()
        return streams

    def _sequence(self, gen: Generation, served: ServedModel, rid: str, index: int, changed: asyncio.Event) -> _Stream:
        """One choice: its answer drawn (from the seed when given) and its engine request."""
        if gen.seed is not None:
            salt = f":{index}" if index else ""
            rng = random.Random(f"{gen.seed}:{zlib.crc32(chr(31).join(gen.prompt).encode())}{salt}")
        else:
            rng = random.Random(self.rng.getrandbits(64))
        thinking = self.served.thinking if gen.thinking else None
        shape = shape_answer(rng, max_tokens=gen.max_tokens, chat=gen.chat, thinking=thinking,
                             min_tokens=gen.min_tokens, ignore_eos=gen.ignore_eos)  # fmt: skip
        sim = SimRequest(
            id=rid if index == 0 else f"{rid}-{index}",
            prompt_tokens=len(gen.prompt),
            output_tokens=shape.total,
            arrival=self._arrival_time(),
            finish_reason=shape.finish_reason,
            prompt_hashes=block_hashes(gen.prompt, BLOCK_TOKENS),
            max_tokens=gen.max_tokens_param,
            lora=gen.adapter,
        )
        stream = _Stream(sim, shape, Transcript(rng), gen, served, index=index, changed=changed)
        if gen.tool_call is not None:
            stream.call_id = f"chatcmpl-tool-{rng.getrandbits(64):016x}"
        return stream

    async def _whole(self, request: web.Request, gen: Generation, streams: list[_Stream]) -> web.Response:
        changed = streams[0].changed
        while not all(stream.done for stream in streams):
            await changed.wait()
            changed.clear()
            if any(stream.closed for stream in streams):
                _cut(request)
                raise APIError(HTTPStatus.SERVICE_UNAVAILABLE, "The server stopped.")
        created = int(time.time())
        bodies = [self._body(gen, stream, created) for stream in streams]
        body = bodies[0]
        if len(bodies) > 1:
            body["choices"] = [{**b["choices"][0], "index": i} for i, b in enumerate(bodies)]
            body["usage"] = _total_use(gen, streams, streamed=False)
        return _json(body)

    def _body(self, gen: Generation, stream: _Stream, created: int) -> dict[str, Any]:
        """The whole answer of one choice."""
        r, shape, served = stream.request, stream.shape, stream.served
        reasoning, content = stream.text(0, r.generated)
        use = stream.use(r.generated)
        rid = r.id if stream.index == 0 else r.id.rsplit("-", 1)[0]
        if not gen.chat:
            return text_completion(rid, created, served, text=content, finish=r.finish_reason.value, use=use)
        if gen.tool_call is not None:
            return chat_completion(
                rid,
                created,
                served,
                content="",
                reasoning=reasoning if shape.thinks else None,
                finish=stream.finish_reason(),
                use=use,
                tool_calls=[tool_call_object(stream.call_id, gen.tool_call)],
            )
        return chat_completion(
            rid,
            created,
            served,
            content=content if content or not shape.thinks or r.generated > shape.reasoning_end else None,
            reasoning=reasoning if shape.thinks else None,
            finish=r.finish_reason.value,
            use=use,
        )

    async def _streamed(self, request: web.Request, gen: Generation, streams: list[_Stream]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        rid = streams[0].request.id
        writers = [_ChoiceWriter(stream, rid, int(time.time())) for stream in streams]
        changed = streams[0].changed
        started = False
        while True:
            await changed.wait()
            changed.clear()
            if any(stream.closed for stream in streams):
                _cut(request)
                return response
            if not any(w.pending() for w in writers):
                continue
            out = bytearray()
            if gen.chat and not started:
                for w in writers:
                    out += w.role()
            started = True
            for w in writers:
                out += w.frames()
            if all(w.finished for w in writers):
                if gen.include_usage:
                    use = _total_use(gen, streams, streamed=True)
                    out += usage_chunk(rid, writers[0].created, streams[0].served, chat=gen.chat, use=use)
                out += DONE
                await response.write(bytes(out))
                await response.write_eof()
                return response
            await response.write(bytes(out))


def _total_use(gen: Generation, streams: list[_Stream], *, streamed: bool) -> dict[str, object]:
    """The usage of all choices: the prompt once, the output tokens (and reasoning tokens) summed."""
    generated = sum(s.request.generated for s in streams)
    reasoning = sum(s.reasoning_tokens(s.request.generated) for s in streams)
    return usage(streams[0].request.prompt_tokens, generated, chat=gen.chat, reasoning_tokens=reasoning,
                 streamed=streamed)  # fmt: skip


@dataclass(eq=False)
class _ChoiceWriter:
    """The SSE chunks of one choice of a streamed answer, as its tokens come out."""

    stream: _Stream
    rid: str
    created: int
    sent: int = 0
    finished: bool = False
    call_sent: int = -1
    """Characters of the tool call's arguments streamed so far; -1 before its header."""

    def pending(self) -> bool:
        """Whether there are tokens (or the end) not yet written."""
        return not self.finished and (self.stream.produced > self.sent or self.stream.done)

    def _chunk(self, **kwargs: object) -> bytes:
        s = self.stream
        return chunk(self.rid, self.created, s.served, chat=s.generation.chat, index=s.index, **kwargs)  # type: ignore[arg-type]

    def _continuous_use(self, upto: int) -> dict[str, object] | None:
        g = self.stream.generation
        return self.stream.use(upto, streamed=True) if g.include_usage and g.continuous_usage else None

    def role(self) -> bytes:
        """The chat stream's first chunk of this choice."""
        use = self.stream.use(0, streamed=True) if self._continuous_use(0) is not None else None
        return self._chunk(delta={"role": "assistant", "content": ""}, use=use, role=True)

    def frames(self) -> bytes:
        """The chunks of the tokens produced since the last call (and the finish, once done)."""
        if not self.pending():
            return b""
        stream, gen = self.stream, self.stream.generation
        upto, done = stream.produced, stream.done
        use = self._continuous_use(upto)
        reasoning, content = stream.text(self.sent, upto)
        finish = stream.finish_reason() if done else None
        last = done and not gen.include_usage
        out = bytearray()
        if gen.chat and gen.tool_call is not None:
            out += self._tool_frames(reasoning, content, finish, use, last)
        elif gen.chat:
            delta = {k: v for k, v in (("reasoning", reasoning), ("content", content)) if v}
            if delta or finish:
                # A finish without text (the end-of-sequence token) has an empty delta, as in vLLM.
                out += self._chunk(delta=delta, finish=finish, use=use, last=last)
        elif content or finish:
            out += self._chunk(text=content, finish=finish, use=use, last=last)
        self.sent = upto
        self.finished = done
        return bytes(out)

    def _tool_frames(
        self, reasoning: str, content: str, finish: str | None, use: dict[str, object] | None, last: bool
    ) -> bytes:
        stream = self.stream
        call = stream.generation.tool_call
        assert call is not None
        deltas: list[dict[str, object]] = [{"reasoning": reasoning}] if reasoning else []
        if content and self.call_sent < 0:
            head = {"id": stream.call_id, "type": "function", "index": 0, "function": {"name": call.name}}
            deltas.append({"content": None, "tool_calls": [head]})
            self.call_sent = 0
        elif content or (finish and stream.request.finish_reason.value == "stop" and self.call_sent >= 0):
            end = len(call.arguments) if finish else min(len(call.arguments), self.call_sent + 8)
            if end > self.call_sent:
                piece = {"index": 0, "function": {"arguments": call.arguments[self.call_sent : end]}}
                deltas.append({"content": None, "tool_calls": [piece]})
                self.call_sent = end
        out = bytearray()
        for i, delta in enumerate(deltas):
            fin = finish if i == len(deltas) - 1 else None
            out += self._chunk(delta=delta, finish=fin, use=use, last=last and fin is not None)
        if finish and not deltas:
            out += self._chunk(delta={}, finish=finish, use=use, last=last)
        return bytes(out)


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


async def _json_body(request: web.Request) -> bytes:
    """The body of a route that wants JSON, or vLLM's 400 when the content type is not JSON."""
    if request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() != "application/json":
        raise unsupported_media_type()
    return await request.read()


class _Untyped(web.Response):
    """A response without a Content-Type header (aiohttp adds `application/octet-stream` to any body)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Content-Type", None)


def _untyped(text: str) -> web.Response:
    """A 200 with a text body and no Content-Type, as FastAPI's bare `Response(content=...)`."""
    return _Untyped(body=text.encode())


def _json(body: object, status: int = 200) -> web.Response:
    """JSON the way FastAPI writes it (compact, UTF-8, `Content-Type: application/json` without a charset)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(body=text.encode(), status=status, headers={"Content-Type": "application/json"})


async def _uvicorn_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "uvicorn"
