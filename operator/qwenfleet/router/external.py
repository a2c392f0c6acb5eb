"""External API backends: the request sent to an OpenAI-compatible API, its usage chunk kept from a client that did
not ask for it, its errors as the router's, and the daily spend against the budget. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qwenfleet.api.cost import ApiPrices
from qwenfleet.router.usage import Usage, usage_of_stream_tail

SECONDS_PER_DAY = 86400


def api_url(base_url: str, path: str) -> str:
    """The API's URL for a router path: `/v1/chat/completions` under base URL `https://host/v1` (or any base)."""
    return base_url.rstrip("/") + "/" + path.removeprefix("/v1").lstrip("/")


def host_of(base_url: str) -> str:
    """The API's host, for messages (never its key)."""
    return base_url.split("://", 1)[-1].split("/", 1)[0] or base_url


def api_payload(body: dict[str, Any], model: str) -> tuple[bytes, bool]:
    """The body for the API: its model name, and for a stream `stream_options.include_usage` (the tokens are paid
    for and counted); true when usage was added and must be kept from the client."""
    out = {**body, "model": model}
    injected = False
    if body.get("stream") is True:
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        if not asked:
            out["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            injected = True
    return json.dumps(out).encode(), injected


def price(use: Usage | None, prices: ApiPrices) -> float:
    """USD of one answer at the API's list prices."""
    if use is None:
        return 0.0
    return use.prompt / 1e6 * prices.input_per_million_usd + use.output / 1e6 * prices.output_per_million_usd


@dataclass
class UsageFilter:
    """Passes an SSE stream through event by event, keeping the usage-only chunk (`"choices": []` with `usage`) from
    the client when it did not ask for usage; the usage is read either way."""

    strip: bool
    usage: Usage | None = None
    _pending: bytes = b""
    _tail: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> bytes:
        """What to send to the client now."""
        if not self.strip:
            self._tail = (self._tail + chunk)[-8192:]
            return chunk
        data = self._pending + chunk
        events = data.split(b"\n\n")
        self._pending = events.pop()  # an incomplete event waits for the rest
        return b"".join(self._keep(event) for event in events)

    def close(self) -> bytes:
        """The rest of the stream at its end."""
        if not self.strip:
            self.usage = usage_of_stream_tail(self._tail)
            return b""
        rest, self._pending = self._pending, b""
        return self._keep(rest, final=True) if rest else b""

    def _keep(self, event: bytes, final: bool = False) -> bytes:
        ending = b"" if final else b"\n\n"
        if event.startswith(b"data: {") and b'"usage"' in event:
            try:
                obj = json.loads(event[6:])
            except ValueError:
                return event + ending
            if isinstance(obj, dict) and not obj.get("choices") and obj.get("usage"):
                self.usage = usage_of_stream_tail(event)
                return b""
        return event + ending


def api_error(status: int, backend: str, base_url: str, secret: str | None, body: bytes) -> tuple[int, str]:
    """The router's status and message for an API's error answer: a refused key or the API's own failure is a 502
    that says so (never the key), its rate limit a 429, the client's own error passed through as the API said it."""
    host = host_of(base_url)
    if status in (401, 403):
        where = f"check the Secret {secret}" if secret else "it has no apiKeySecretRef"
        return 502, f"the API backend {backend} refused its API key ({status} from {host}); {where}"
    if status == 429:
        return 429, f"the API backend {backend} is rate-limiting this router (429 from {host}); retry later"
    if status >= 500:
        return 502, f"the API backend {backend} failed ({status} from {host})"
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:500]
    return status, f"the API backend {backend} refused the request ({status} from {host}): {message}"


@dataclass
class DailySpend:
    """USD spent on the external APIs per UTC day, against this replica's share of the daily budget."""

    budget: float | None
    day: int = -1
    usd: float = 0.0

    def add(self, usd: float, now: float) -> None:
        """Count an answer's cost at wall time `now`."""
        self._roll(now)
        self.usd += usd

    def exhausted(self, now: float) -> bool:
        """The budget of today is spent."""
        self._roll(now)
        return self.budget is not None and self.usd >= self.budget

    def _roll(self, now: float) -> None:
        day = int(now // SECONDS_PER_DAY)
        if day != self.day:
            self.day, self.usd = day, 0.0
