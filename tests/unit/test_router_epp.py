"""The Endpoint Picker's ext_proc state machine, driven over real gRPC by a Python ext_proc client that sends what
Envoy sends in FULL_DUPLEX_STREAMED mode: the pick (header and envoy.lb metadata), the body sent back intact in
chunks, the model name rewritten both ways, the subset hint, refusals, wake and hold, and gRPC health."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.app import Router
from qwenfleet.router.epp import Picker, PickerHealth
from qwenfleet.router.extproc import CHUNK_BYTES, DESTINATION, HEALTH_SERVICES, ModelRewriter, chunks
from qwenfleet.router.policy import BackendState, Replica
from tests.unit.test_router_app import SPEC, FakeDiscovery


def _states(ready: dict[str, int]) -> dict[str, BackendState]:
    """`ready`: backend -> its number of ready replicas (at 10.0.<i>.<n>:8000 on paper; nothing is dialled)."""
    states = {n: BackendState(n, f"Qwen3-{n}") for n in ("large", "medium", "lonely")}
    for i, (name, count) in enumerate(ready.items()):
        states[name].replicas = [Replica(f"{name}-{n}", f"192.0.2.{i * 10 + n}:8000", served_model=f"Qwen3-{name}")
                                 for n in range(count)]  # fmt: skip
        states[name].desired = count
    return states


@contextlib.asynccontextmanager
async def _picker(states: dict[str, BackendState], spec: dict[str, Any] = SPEC) -> AsyncIterator[
        tuple[pb_grpc.ExternalProcessorStub, FakeDiscovery, grpc.aio.Channel]]:  # fmt: skip
    parsed = Qwen3RouterSpec.model_validate(spec)
    discovery = FakeDiscovery(parsed, states)
    router = Router(parsed, discovery)
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Picker(router), server)
    checks = PickerHealth()
    health_pb2_grpc.add_HealthServicer_to_server(checks.servicer, server)
    await checks.update(True)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.ExternalProcessorStub(channel), discovery, channel
    finally:
        await channel.close()
        await server.stop(0)


def _headers(path: str, extra: dict[str, str] | None = None, *, end: bool = False,
             subset: Sequence[str] | None = None) -> pb.ProcessingRequest:  # fmt: skip
    values = {":method": "POST", ":path": path, "content-type": "application/json", **(extra or {})}
    pairs = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    headers = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=pairs), end_of_stream=end)
    request = pb.ProcessingRequest(request_headers=headers)
    if subset is not None:
        hint = struct_pb2.Struct()
        hint.update({"x-gateway-destination-endpoint-subset": list(subset)})
        request.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(hint)
    return request


def _body(data: bytes, size: int = 16384) -> list[pb.ProcessingRequest]:
    return [pb.ProcessingRequest(request_body=pb.HttpBody(body=part, end_of_stream=last)) for part, last in
            chunks(data, size)]  # fmt: skip


class Stream:
    """One ext_proc stream: send messages, read answers."""

    def __init__(self, stub: pb_grpc.ExternalProcessorStub) -> None:
        self.queue: asyncio.Queue[pb.ProcessingRequest | None] = asyncio.Queue()
        self.call = stub.Process(self._requests())

    async def _requests(self) -> AsyncIterator[pb.ProcessingRequest]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def send(self, *messages: pb.ProcessingRequest) -> None:
        for m in messages:
            await self.queue.put(m)

    async def read(self, timeout: float = 5.0) -> pb.ProcessingResponse:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def close(self) -> None:
        await self.queue.put(None)


def _set_headers(response: pb.ProcessingResponse, phase: str = "request_headers") -> dict[str, str]:
    common = getattr(response, phase).response
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


async def _pick(stub: pb_grpc.ExternalProcessorStub, body: dict[str, Any] | bytes, path: str = "/v1/chat/completions",
                **kw: Any) -> tuple[Stream, pb.ProcessingResponse, bytes]:  # fmt: skip
    """Send a request; return the stream, the answer to its headers, and the body sent back."""
    stream = Stream(stub)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await stream.send(_headers(path, **kw), *_body(data))
    answer = await stream.read()
    if answer.WhichOneof("response") == "immediate_response":
        return stream, answer, b""
    sent = b""
    while True:
        part = await stream.read()
        streamed = part.request_body.response.body_mutation.streamed_response
        assert len(streamed.body) <= CHUNK_BYTES
        sent += streamed.body
        if streamed.end_of_stream:
            return stream, answer, sent


def _chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_an_alias_is_picked_with_the_header_the_metadata_and_its_retry_list_and_the_body_comes_back_intact() -> (
    None
):
    async with _picker(_states({"large": 3, "medium": 1})) as (stub, _, _):
        body = _chat("big", "x" * 300_000)  # a 300 KB prompt: several chunks each way
        stream, answer, sent = await _pick(stub, body)
        headers = _set_headers(answer)
        primary = headers[DESTINATION]
        assert primary.startswith("192.0.2.") and "," not in primary
        picks = answer.dynamic_metadata.fields["envoy.lb"].struct_value.fields[DESTINATION].string_value.split(",")
        assert picks[0] == primary and len(picks) == 3 and len(set(picks)) == 3  # the pick, then the other replicas
        assert answer.request_headers.response.clear_route_cache
        assert json.loads(sent) == {**body, "model": "Qwen3-large"}  # the replica's served name
        assert int(headers["content-length"]) == len(sent)
        await stream.close()


async def test_the_answer_gets_the_route_header_and_the_asked_model_name_back_across_chunk_boundaries() -> None:
    async with _picker(_states({"large": 1, "medium": 1})) as (stub, _, _):
        stream, _, _ = await _pick(stub, _chat("big", stream=True))
        response_headers = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
            base_pb2.HeaderValue(key=":status", raw_value=b"200"),
            base_pb2.HeaderValue(key="content-length", raw_value=b"999")]))  # fmt: skip
        await stream.send(pb.ProcessingRequest(response_headers=response_headers))
        got = await stream.read()
        assert _set_headers(got, "response_headers")["x-qwenfleet-route"] == "large;alias;large-0"
        assert list(got.response_headers.response.header_mutation.remove_headers) == ["content-length"]
        sse = (b'data: {"id":"1","model":"Qwen3-large","choices":[]}\n\n'
               b'data: {"id":"1","model":"Qwen3-large","usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
               b"data: [DONE]\n\n")  # fmt: skip
        out = b""
        for cut in range(0, len(sse), 7):  # 7-byte chunks: the name straddles chunk boundaries
            last = cut + 7 >= len(sse)
            await stream.send(
                pb.ProcessingRequest(response_body=pb.HttpBody(body=sse[cut : cut + 7], end_of_stream=last))
            )
            out += (await stream.read()).response_body.response.body_mutation.streamed_response.body
        assert out == sse.replace(b'"model":"Qwen3-large"', b'"model":"big"')
        await stream.close()


async def test_auto_keeps_the_served_name_and_thinking_goes_to_the_large_size() -> None:
    async with _picker(_states({"large": 1, "medium": 1})) as (stub, _, _):
        stream, answer, sent = await _pick(stub, _chat("auto", "why is the sky blue? /think"))
        assert _set_headers(answer)[DESTINATION].startswith("192.0.2.0")  # large's replica
        assert json.loads(sent)["model"] == "Qwen3-large"
        await stream.send(pb.ProcessingRequest(response_headers=pb.HttpHeaders()))
        got = await stream.read()
        assert _set_headers(got, "response_headers")["x-qwenfleet-route"] == "large;rule:thinking;large-0"
        assert not got.response_headers.response.header_mutation.remove_headers  # nothing is rewritten for auto
        await stream.close()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_chat("gpt-4"), 404, "Known models: Qwen3-large"),
        (b"{oops", 400, "invalid JSON body"),
        ({"messages": []}, 400, "model is required"),
    ],
)
async def test_what_the_router_refuses_the_picker_refuses_with_the_same_body(
    body: Any, status: int, words: str
) -> None:
    async with _picker(_states({"large": 1, "medium": 1})) as (stub, _, _):
        stream, answer, _ = await _pick(stub, body)
        immediate = answer.immediate_response
        assert immediate.status.code == status
        assert words in json.loads(immediate.body)["error"]["message"]
        await stream.close()


async def test_a_body_over_the_limit_is_refused_with_413_before_it_ends() -> None:
    spec = {**SPEC, "limits": {"maxBodyBytes": 4096}}
    async with _picker(_states({"medium": 1}), spec) as (stub, _, _):
        stream = Stream(stub)
        await stream.send(_headers("/v1/chat/completions"), *_body(b"x" * 10_000, 3000)[:2])
        answer = await stream.read()
        assert answer.immediate_response.status.code == 413
        await stream.close()


async def test_the_subset_hint_limits_the_pick_and_an_empty_one_is_a_503() -> None:
    async with _picker(_states({"large": 3})) as (stub, _, _):
        allowed = "192.0.2.2:8000"
        for _ in range(5):
            stream, answer, _ = await _pick(stub, _chat("big"), subset=[allowed, "198.51.100.9:8000"])
            assert _set_headers(answer)[DESTINATION] == allowed
            assert answer.dynamic_metadata.fields["envoy.lb"].struct_value.fields[DESTINATION].string_value == allowed
            await stream.close()
        stream, answer, _ = await _pick(stub, _chat("big"), subset=["198.51.100.9:8000"])
        assert answer.immediate_response.status.code == 503
        assert (
            "among the endpoints the gateway allowed" in json.loads(answer.immediate_response.body)["error"]["message"]
        )
        await stream.close()


async def test_a_backend_at_zero_is_woken_and_its_fallback_serves_meanwhile() -> None:
    async with _picker(_states({"medium": 1})) as (stub, discovery, _):
        stream, answer, sent = await _pick(stub, _chat("big"))
        assert _set_headers(answer)[DESTINATION] == "192.0.2.0:8000"  # medium's replica
        assert json.loads(sent)["model"] == "Qwen3-medium"
        await asyncio.sleep(0.05)
        assert discovery.woken == ["large"]
        await stream.close()


async def test_a_held_request_is_picked_once_its_backend_is_ready_and_too_many_held_get_429() -> None:
    spec = {**SPEC, "scaleFromZero": {"holdSeconds": 30, "maxHeldRequests": 1}}
    states = _states({"medium": 1})
    async with _picker(states, spec) as (stub, discovery, _):
        first = Stream(stub)
        await first.send(_headers("/v1/chat/completions"), *_body(json.dumps(_chat("solo")).encode()))
        read = asyncio.ensure_future(first.read(timeout=10))
        await asyncio.sleep(0.3)
        assert not read.done()  # held: the headers are not answered yet
        _, refused, _ = await _pick(stub, _chat("solo"))
        assert refused.immediate_response.status.code == 429
        assert {h.header.key: h.header.raw_value for h in refused.immediate_response.headers.set_headers}[
            "retry-after"] == b"10"  # fmt: skip
        states["lonely"].replicas = [Replica("lonely-0", "192.0.2.77:8000", served_model="Qwen3-lonely")]
        discovery.publish()
        answer = await read
        assert _set_headers(answer)[DESTINATION] == "192.0.2.77:8000"
        assert "lonely" in discovery.woken
        await first.close()


async def test_models_are_listed_by_the_picker_and_health_serves_every_service() -> None:
    async with _picker(_states({"medium": 1})) as (stub, _, channel):
        stream = Stream(stub)
        await stream.send(_headers("/v1/models", {":method": "GET"}, end=True))
        answer = await stream.read()
        assert answer.immediate_response.status.code == 200
        assert "mid" in {m["id"] for m in json.loads(answer.immediate_response.body)["data"]}
        await stream.close()
        health = health_pb2_grpc.HealthStub(channel)
        for service in HEALTH_SERVICES:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_replica_load_counts_the_request_until_its_answer_ends() -> None:
    states = _states({"medium": 1})
    async with _picker(states) as (stub, _, _):
        stream, _, _ = await _pick(stub, _chat("mid"))
        assert states["medium"].replicas[0].outstanding == 1
        await stream.send(pb.ProcessingRequest(response_headers=pb.HttpHeaders()),
                          pb.ProcessingRequest(response_body=pb.HttpBody(body=b"{}", end_of_stream=True)))  # fmt: skip
        await stream.read()
        await stream.read()
        assert states["medium"].replicas[0].outstanding == 0
        stream, _, _ = await _pick(stub, _chat("mid"))
        await stream.close()  # the gateway went away before any answer
        await asyncio.sleep(0.2)
        assert states["medium"].replicas[0].outstanding == 0


def test_the_rewriter_holds_back_only_what_could_begin_a_match() -> None:
    rewriter = ModelRewriter("Qwen3-30B-A3B", "big")
    assert rewriter.feed(b'data: {"x":1}\n\n', last=False) == b'data: {"x":1}\n\n'  # nothing held: no delay
    assert rewriter.feed(b'{"model": "Qwen3-3', last=False) == b"{"
    assert rewriter.feed(b'0B-A3B","n":1}', last=True) == b'"model": "big","n":1}'
    assert ModelRewriter("a", "b").feed(b'"model":"ab"', last=True) == b'"model":"ab"'  # another name stays


def test_chunks_are_at_most_the_limit_and_an_empty_body_is_one_last_chunk() -> None:
    parts = list(chunks(b"x" * (CHUNK_BYTES * 2 + 5)))
    assert [len(p) for p, _ in parts] == [CHUNK_BYTES, CHUNK_BYTES, 5] and [last for _, last in parts] == [0, 0, 1]
    assert list(chunks(b"")) == [(b"", True)]


async def test_an_adapter_is_picked_only_where_it_is_loaded_and_keeps_its_name() -> None:
    states = _states({"large": 3})
    states["large"].adapters = ("support",)
    states["large"].replicas[1].adapters = frozenset({"support"})
    async with _picker(states) as (stub, _, _):
        for _ in range(5):
            stream, answer, sent = await _pick(stub, _chat("support"))
            headers = _set_headers(answer)
            assert headers[DESTINATION] == states["large"].replicas[1].address
            picks = answer.dynamic_metadata.fields["envoy.lb"].struct_value.fields[DESTINATION].string_value
            assert picks == headers[DESTINATION]  # no retry on a replica without the adapter
            assert json.loads(sent)["model"] == "support"  # never rewritten to the base model
            await stream.close()
