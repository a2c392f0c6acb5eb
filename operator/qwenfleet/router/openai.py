"""The OpenAI wire shapes the router answers with itself: error bodies and the route header. Pure."""

from __future__ import annotations

from typing import Any

ROUTE_HEADER = "x-qwenfleet-route"
"""`backend;reason;replica` of the answer: who served it and why."""

ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 408: "RequestTimeoutError",
               413: "RequestTooLargeError", 429: "RateLimitError", 502: "BadGatewayError",
               503: "ServiceUnavailableError"}  # fmt: skip


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI error body (the shape the openai client raises its typed errors from)."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "APIError"), "param": None, "code": status}}
