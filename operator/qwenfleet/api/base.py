"""The shared base for every API model: camelCase on the wire, unknown fields rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "qwenfleet.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
"""The apiVersion of both kinds (the pydantic models repeat it as a Literal, checked equal in the unit tests)."""


class ApiModel(BaseModel):
    """A model serialised with camelCase keys, as Kubernetes APIs are."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON-ready dict with camelCase keys and unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_patch(self) -> dict[str, object]:
        """The JSON merge patch that makes an object hold exactly this: camelCase keys, and every field that is not
        set as null, so a value set before is removed rather than left behind."""
        return self.model_dump(by_alias=True, mode="json")
