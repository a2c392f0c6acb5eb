"""CEL validation rules (`x-kubernetes-validations`) attached to the models the CRD schema comes from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic.config import JsonDict


def cel(rule: str, message: str, *, reason: str = "FieldValueInvalid") -> JsonDict:
    """One CEL rule with the message the API server returns when it fails."""
    return {"rule": rule, "message": message, "reason": f"FieldValue{reason.removeprefix('FieldValue')}"}


def one_of(values: Sequence[str], what: str, description: str) -> object:
    """A string type restricted to `values`: an `enum` in the CRD schema and the same check in pydantic."""
    allowed = tuple(values)

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}")
        return value

    return Annotated[
        str,
        AfterValidator(check),
        WithJsonSchema({"type": "string", "enum": list(allowed), "description": description}),
    ]
