"""Qwen3Router: one OpenAI-compatible endpoint that routes requests between Qwen3Deployments."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from qwenfleet.api.base import ApiModel
from qwenfleet.api.cel import cel
from qwenfleet.api.common import CONDITIONS_SCHEMA_EXTRA, Condition, ResourceName, SecretKeyRef
from qwenfleet.api.cost import ApiPrices, CostReference, RouterCost
from qwenfleet.api.deployment import IMAGE

Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
Tier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$", max_length=63)]


class ExternalApi(ApiModel):
    """An OpenAI-compatible API that serves a backend instead of a Qwen3Deployment (a closed model for premium work,
    or the overflow while a replica starts)."""

    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/$.?#][^\s]*$", max_length=512)] = Field(
        alias="baseURL", description="The API's OpenAI base URL, e.g. https://api.example.com/v1."
    )
    model: Alias = Field(description="The model name there.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key (sent as a bearer token; never logged or echoed)."
    )
    prices: ApiPrices = Field(description="Its list prices: what each routed token costs (status.cost).")
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600, description="Longest a request to it may take.")
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="Connect timeout.")
    max_concurrency: int = Field(
        default=16,
        ge=1,
        le=10000,
        description="Requests in flight to it at once, per router replica: a burst cannot run up an unbounded bill. "
        "Beyond it the API is not chosen for spillover or fallback, and a request for it gets 429.",
    )


class Backend(ApiModel):
    """A Qwen3Deployment (or an external API) the router sends requests to, and the model names that reach it."""

    name: ResourceName = Field(
        description="Name of a Qwen3Deployment in the router's namespace, or of the external API backend."
    )
    external: ExternalApi | None = Field(
        default=None, description="Serve this backend from an OpenAI-compatible API instead of a Qwen3Deployment."
    )
    aliases: list[Alias] = Field(
        default_factory=list,
        max_length=16,
        description="Model names clients may ask for (the deployment's served model name always works).",
    )
    spillover_to: ResourceName | None = Field(
        default=None,
        description="Backend that takes new requests when this one's queue passes the threshold.",
    )
    spillover_queue_per_replica: float = Field(
        default=8.0,
        gt=0,
        le=10000,
        description="Waiting requests per ready replica above which to spill over.",
    )
    fallback: ResourceName | None = Field(
        default=None, description="Backend that serves this one's requests while it has no ready replica."
    )


class RuleMatch(ApiModel):
    """Conditions of an `auto` routing rule; every condition given must hold."""

    thinking: bool | None = Field(
        default=None, description="Thinking requested (chat_template_kwargs.enable_thinking or /think)."
    )
    tools: bool | None = Field(default=None, description="The request carries tools.")
    min_prompt_tokens: int | None = Field(default=None, ge=0, description="Estimated prompt tokens at least this.")
    max_prompt_tokens: int | None = Field(default=None, ge=0, description="Estimated prompt tokens at most this.")
    min_max_tokens: int | None = Field(default=None, ge=0, description="max_tokens requested at least this.")
    tier: Tier | None = Field(default=None, description="Value of the x-qwenfleet-tier request header.")


class RouteRule(ApiModel):
    """An ordered rule for `model: auto`: the first rule that matches picks the backend."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = Field(
        description="Rule name, shown in the x-qwenfleet-route header."
    )
    match: RuleMatch = Field(description="Conditions that must all hold.")
    backend: ResourceName = Field(description="Backend that serves matching requests.")
    adapter: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")] | None = Field(
        default=None, description="A LoRA adapter of that backend (its spec.adapters name) that serves them instead."
    )


class ScaleFromZero(ApiModel):
    """What happens to a request for a backend with no replicas."""

    enabled: bool = Field(default=True, description="Wake the backend (annotate it) and hold the request.")
    hold_seconds: int = Field(
        default=120,
        ge=1,
        le=1800,
        description="Longest a request for a backend with no ready replica (and no ready fallback) is held.",
    )
    max_held_requests: int = Field(
        default=256,
        ge=1,
        le=100000,
        description="Requests held per backend at once; beyond it a request gets 429 with Retry-After.",
    )


class PrefixAffinity(ApiModel):
    """Send requests that share a prompt prefix to the same replica, within a load bound."""

    enabled: bool = Field(default=False, description="Turn prefix affinity on.")
    prefix_chars: int = Field(default=512, ge=16, le=65536, description="Leading prompt characters hashed.")
    load_bound: float = Field(
        default=2.0,
        ge=1.0,
        le=10.0,
        description="A replica holding the prefix takes the request only below this x mean load (+1); a looser "
        "bound keeps more prefix-cache hits, a tighter one spreads a hot prefix sooner.",
    )


class Limits(ApiModel):
    """Request limits and timeouts."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Body limit.")
    upstream_timeout_seconds: int = Field(default=600, ge=1, le=86400, description="Whole-request timeout.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120, description="Upstream connect timeout.")
    header_timeout_seconds: float = Field(
        default=75.0,
        ge=1,
        le=3600,
        description="Longest a client may take to send a request's headers (an idle keep-alive connection is also "
        "closed after it; keep it above the idle timeout of a proxy in front).",
    )
    body_timeout_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="Longest a client may take to send a request body (then 408)."
    )


EPP_PORT = 9002
"""The Endpoint Picker's gRPC port, the one Gateway API Inference Extension's own picker uses."""


class EndpointPicker(ApiModel):
    """The router's policy served to an inference gateway (Gateway API Inference Extension) as its Endpoint Picker.

    The router pods then also answer Envoy's ext_proc on `port`, and each backend gets an InferencePool (when its
    CRD is installed) whose `endpointPickerRef` is this router's Service: an HTTPRoute to any of them is served
    with the same decision the router's own HTTP endpoint makes.
    """

    enabled: bool = Field(default=False, description="Serve ext_proc on `port` and render the InferencePools.")
    port: int = Field(default=EPP_PORT, ge=1024, le=65535, description="gRPC port of the Endpoint Picker.")
    failure_mode: Literal["FailClose", "FailOpen"] = Field(
        default="FailClose",
        description="What the gateway does when no picker answers: FailClose refuses the request; FailOpen sends "
        "it to any endpoint of the InferencePool the route names, without qwenfleet's routing.",
    )
    inference_pools: bool = Field(
        default=True,
        description="Render an InferencePool per backend, named <router>-<backend> (only while the "
        "inferencepools.inference.networking.k8s.io CRD is installed).",
    )


_BACKEND_NAMES_RULE = cel(
    "(!has(self.rules) || self.rules.all(r, self.backends.exists(b, b.name == r.backend)))"
    " && self.backends.exists(b, b.name == self.defaultBackend)"
    " && self.backends.all(b, (!has(b.fallback) || self.backends.exists(o, o.name == b.fallback))"
    " && (!has(b.spilloverTo) || self.backends.exists(o, o.name == b.spilloverTo)))",
    "every rule backend, defaultBackend, fallback and spilloverTo must name an entry of spec.backends",
)
_UNIQUE_RULE = cel(
    "self.backends.all(b, self.backends.exists_one(o, o.name == b.name))"
    " && self.backends.all(b, !has(b.aliases) || b.aliases.all(a, a != 'auto'"
    " && self.backends.filter(o, has(o.aliases) && a in o.aliases).size() == 1))",
    "backend names and aliases must be unique, and 'auto' is reserved",
)
_ALIAS_NAME_RULE = cel(
    "self.backends.all(b, !has(b.aliases) || !self.backends.exists(o, o.name != b.name && o.name in b.aliases))",
    "an alias must not equal the name of another backend",
)


class Qwen3RouterSpec(ApiModel):
    """Backends, the `auto` policy, spillover, fallback and scale-from-zero."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_BACKEND_NAMES_RULE, _UNIQUE_RULE, _ALIAS_NAME_RULE]}
    )

    backends: list[Backend] = Field(min_length=1, max_length=32, description="Qwen3Deployments to route to.")
    default_backend: ResourceName = Field(description="Backend for `model: auto` requests no rule matches.")
    rules: list[RouteRule] = Field(default_factory=list, max_length=64, description="Ordered rules for auto.")
    scale_from_zero: ScaleFromZero = Field(default_factory=ScaleFromZero, description="Scale-from-zero behaviour.")
    prefix_affinity: PrefixAffinity = Field(default_factory=PrefixAffinity, description="Prefix affinity.")
    limits: Limits = Field(default_factory=Limits, description="Request limits and timeouts.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key with accepted API keys, one per line; unset means no auth."
    )
    replicas: int = Field(default=2, ge=0, le=100, description="Router pods.")
    image: Annotated[str, StringConstraints(pattern=IMAGE, max_length=512)] | None = Field(
        default=None, description="Router image; defaults to the operator's own image."
    )
    service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = Field(
        default="ClusterIP", description="Type of the router's Service."
    )
    cost_reference: CostReference | None = Field(
        default=None,
        description="A closed API's list prices (user-supplied, no defaults) that status.cost compares against.",
    )
    endpoint_picker: EndpointPicker = Field(
        default_factory=EndpointPicker,
        description="Serve this router's policy to an inference gateway (Gateway API Inference Extension).",
    )
    external_daily_budget_usd: float | None = Field(
        default=None,
        alias="externalDailyBudgetUSD",
        gt=0,
        le=1e7,
        description="Most the external API backends may cost per UTC day (at their list prices), split evenly over "
        "the router's replicas; past it they are no longer chosen for spillover or fallback (a request that names "
        "one is still served).",
    )

    @model_validator(mode="after")
    def _references(self) -> Qwen3RouterSpec:
        names = [b.name for b in self.backends]
        aliases = [a for b in self.backends for a in b.aliases]
        if len(set(names)) != len(names) or len(set(aliases)) != len(aliases) or "auto" in aliases:
            raise ValueError(str(_UNIQUE_RULE["message"]))
        if any(a in names and a != b.name for b in self.backends for a in b.aliases):
            raise ValueError(str(_ALIAS_NAME_RULE["message"]))
        refs = [r.backend for r in self.rules] + [self.default_backend]
        refs += [x for b in self.backends for x in (b.fallback, b.spillover_to) if x]
        if any(ref not in names for ref in refs):
            raise ValueError(str(_BACKEND_NAMES_RULE["message"]))
        return self


class BackendStatus(ApiModel):
    """What the router's operator sees of one backend."""

    name: str = Field(description="Backend name.")
    ready_replicas: int = Field(default=0, description="Ready replicas of the backend.")


class Qwen3RouterStatus(ApiModel):
    """Observed state, written by qwenfleet."""

    model_config = ConfigDict(frozen=False)

    observed_generation: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready and friends.", json_schema_extra=CONDITIONS_SCHEMA_EXTRA
    )
    replicas: int = Field(default=0, description="Router pods.")
    ready_replicas: int = Field(default=0, description="Ready router pods.")
    endpoint: str = Field(default="", description="In-cluster OpenAI base URL of the router.")
    selector: str = Field(default="", description="Label selector of the router pods (for /scale).")
    backends: list[BackendStatus] = Field(default_factory=list, description="Per-backend readiness.")
    inference_pools: list[str] = Field(
        default_factory=list, description="The InferencePools this router is the Endpoint Picker of."
    )
    cost: RouterCost | None = Field(default=None, description="What routing saved (qwenfleet.cost).")


class Qwen3Router(ApiModel):
    """An OpenAI-compatible endpoint that routes each request to the right Qwen3 size."""

    api_version: Literal["qwenfleet.dev/v1alpha1"] = "qwenfleet.dev/v1alpha1"
    kind: Literal["Qwen3Router"] = "Qwen3Router"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: Qwen3RouterSpec
    status: Qwen3RouterStatus | None = None
