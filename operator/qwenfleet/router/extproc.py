"""Envoy ext_proc messages of the Endpoint Picker protocol (Gateway API Inference Extension), and the body
transforms it needs. Pure: protobuf messages in and out, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

from qwenfleet.router.openai import ROUTE_HEADER, error_body

DESTINATION = "x-gateway-destination-endpoint"
SUBSET = "x-gateway-destination-endpoint-subset"
LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
CHUNK_BYTES = 62_000
"""Largest body chunk sent back to Envoy (its streamed-body limit, as the protocol says)."""
PROCESSOR_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
HEALTH_SERVICES = ("", "liveness", "readiness", PROCESSOR_SERVICE)
CHAT_PATH, COMPLETIONS_PATH, MODELS_PATH = "/v1/chat/completions", "/v1/completions", "/v1/models"


def header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()))


def immediate(status: int, message: str, route: str | None = None, retry_after: int | None = None,
               body: Any = None) -> pb.ProcessingResponse:  # fmt: skip
    """An answer given by the picker instead of a model server."""
    headers = [header("content-type", "application/json")]
    if route:
        headers.append(header(ROUTE_HEADER, route))
    if retry_after is not None:
        headers.append(header("retry-after", str(retry_after)))
    payload = json.dumps(error_body(status, message) if body is None else body).encode()
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=pb.HeaderMutation(set_headers=headers), body=payload, details=f"qwenfleet_{status}",
    ))  # fmt: skip


def headers_of(message: pb.HttpHeaders) -> dict[str, str]:
    return {h.key.lower(): (h.raw_value.decode(errors="replace") if h.raw_value else h.value)
            for h in message.headers.headers}  # fmt: skip


def subset_of(request: pb.ProcessingRequest) -> set[str] | None:
    """The endpoints the gateway lets the picker choose from, or None when it names no subset."""
    hint = request.metadata_context.filter_metadata.get(SUBSET_NAMESPACE)
    if hint is None or SUBSET not in hint.fields:
        return None
    value = hint.fields[SUBSET]
    if value.HasField("list_value"):
        return {v.string_value for v in value.list_value.values}
    return {part.strip() for part in value.string_value.split(",") if part.strip()}


def chunks(body: bytes, size: int = CHUNK_BYTES) -> Iterable[tuple[bytes, bool]]:
    """`body` in pieces of at most `size` bytes, each with whether it is the last (an empty body is one piece)."""
    if not body:
        yield b"", True
        return
    for start in range(0, len(body), size):
        yield body[start : start + size], start + size >= len(body)


class ModelRewriter:
    """Replaces the model name `served` by `asked` in a JSON or SSE body that arrives in chunks: `"model":"<served>"`
    as vLLM writes it (compact), or with a space after the colon. A match may straddle two chunks, so the last bytes
    that could begin one are held back until the next chunk; nothing else is (a stream's events are not delayed)."""

    def __init__(self, served: str, asked: str) -> None:
        self.pairs = [(f'"model":{sep}{json.dumps(served)}'.encode(), f'"model":{sep}{json.dumps(asked)}'.encode())
                      for sep in ("", " ")]  # fmt: skip
        self.carry = b""

    def _held_back(self, data: bytes) -> int:
        """Bytes at the end of `data` that begin a match (a proper prefix of one)."""
        longest = 0
        for old, _ in self.pairs:
            for size in range(min(len(old) - 1, len(data)), longest, -1):
                if old.startswith(data[-size:]):
                    longest = size
                    break
        return longest

    def feed(self, chunk: bytes, last: bool) -> bytes:
        """The rewritten bytes that can be sent now (all of them with `last`)."""
        data = self.carry + chunk
        for old, new in self.pairs:
            data = data.replace(old, new)
        keep = 0 if last else self._held_back(data)
        self.carry = data[len(data) - keep :]
        return data[: len(data) - keep]


def body_response(phase: str, body: bytes, last: bool) -> pb.ProcessingResponse:
    common = pb.CommonResponse(body_mutation=pb.BodyMutation(
        streamed_response=pb.StreamedBodyResponse(body=body, end_of_stream=last)))  # fmt: skip
    return pb.ProcessingResponse(**{phase: pb.BodyResponse(response=common)})
