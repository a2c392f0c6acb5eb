"""status.cost of a Qwen3Deployment: measured GPU time and tokens, and what a million tokens really cost.

The figures are computed by qwenfleet.cost.ledger; these models are their contract (and CRD schema).
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from qwenfleet.api.base import ApiModel


class CostWindow(ApiModel):
    """Measured cost over one window (idle and starting replicas included)."""

    gpu_hours: float = Field(description="GPU-hours held by replicas: ready, starting or draining.")
    usd: float = Field(description="GPU-hours times the price of a GPU-hour.")
    prompt_tokens: int = Field(description="Prompt tokens processed (vLLM's vllm:prompt_tokens_total).")
    output_tokens: int = Field(description="Output tokens generated (vLLM's vllm:generation_tokens_total).")
    usd_per_million_output_tokens: float | None = Field(
        default=None, alias="usdPerMillionOutputTokens", description="Realised USD per 1M output tokens."
    )
    usd_per_million_tokens: float | None = Field(
        default=None, alias="usdPerMillionTokens", description="Realised USD per 1M tokens, prompt and output."
    )
    utilization: float | None = Field(
        default=None, description="Share of the paid GPU time in which a replica was serving (0 to 1)."
    )
    requests: int = Field(default=0, description="Requests that got their first token (vLLM's TTFT histogram).")


class CostPod(ApiModel):
    """One pod's last accounted time and token counters."""

    name: str = Field(description="Pod name.")
    accounted_until: float = Field(description="Epoch seconds up to which its GPU time is counted.")
    prompt: float = Field(default=0.0, description="Its vllm:prompt_tokens_total when last scraped.")
    output: float = Field(default=0.0, description="Its vllm:generation_tokens_total when last scraped.")
    requests: float = Field(default=0.0, description="Its vllm:time_to_first_token_seconds_count when last scraped.")
    on_time: float = Field(default=0.0, description="Its TTFT histogram's count at ttftBound when last scraped.")


class CostLedger(ApiModel):
    """The ledger the figures come from, kept in status so the totals survive an operator restart."""

    updated: float = Field(description="Epoch seconds of the last accounting.")
    total: list[float] = Field(
        description="[gpuSeconds, servingGpuSeconds, promptTokens, outputTokens, requests, timed, onTime] since "
        "creation (timed: requests counted under a latency objective; onTime: those within it)."
    )
    buckets: list[list[float]] = Field(
        default_factory=list, description="[start, followed by the same seven figures] buckets."
    )
    pods: list[CostPod] = Field(default_factory=list, description="What was already counted of each live pod.")
    ttft_bound: float | None = Field(
        default=None, description="The TTFT histogram bucket (seconds) the pods' onTime counts were read at."
    )


class DeploymentCost(ApiModel):
    """What the deployment really cost: last hour, last day, since creation; and the planner's estimate."""

    model_config = ConfigDict(frozen=False)

    gpu_hour_usd: float = Field(alias="gpuHourUSD", description="Price of one GPU-hour used (plan, spec.pricing).")
    last_hour: CostWindow = Field(description="The last hour (to 5-minute resolution).")
    last_day: CostWindow = Field(description="The last 24 hours (to 1-hour resolution beyond the last hour).")
    since_creation: CostWindow = Field(description="Since the deployment was created (or the operator first saw it).")
    estimated_usd_per_million_output_tokens: float | None = Field(
        default=None,
        alias="estimatedUSDPerMillionOutputTokens",
        description="The planner's estimate at full utilisation (status.plan).",
    )
    realised_to_estimate: float | None = Field(
        default=None, description="Last day's realised USD per 1M output tokens over the planner's estimate."
    )
    ledger: CostLedger | None = Field(default=None, description="The measured totals and buckets.")


class ApiPrices(ApiModel):
    """A closed API's list prices, as you pay them. User-supplied: qwenfleet ships no default prices."""

    input_per_million_usd: float = Field(
        alias="inputPerMillionUSD", ge=0, le=10000, description="USD per 1M input (prompt) tokens, as you pay them."
    )
    output_per_million_usd: float = Field(
        alias="outputPerMillionUSD", ge=0, le=10000, description="USD per 1M output tokens, as you pay them."
    )


class CostReference(ApiPrices):
    """A closed API's list prices to compare with."""

    name: str = Field(max_length=128, description="What the prices are, e.g. a provider and model name.")


class BackendCost(ApiModel):
    """One backend's share of the router's traffic, priced at its realised USD per 1M output tokens."""

    name: str = Field(description="Backend name.")
    prompt_tokens: int = Field(description="Prompt tokens of answers from this backend.")
    output_tokens: int = Field(description="Output tokens (reasoning included).")
    reasoning_tokens: int = Field(description="Reasoning tokens (usage.completion_tokens_details.reasoning_tokens).")
    usd_per_million_output_tokens: float | None = Field(
        default=None,
        alias="usdPerMillionOutputTokens",
        description="The backend's realised USD per 1M output tokens since creation (else the planner's estimate).",
    )
    usd: float = Field(description="Output tokens times that price (an external API's: its input and output prices).")
    external: bool | None = Field(default=None, description="An external API backend, priced at its list prices.")


class AdapterCost(ApiModel):
    """One LoRA adapter's share of its backend: its tokens (counted by the router), priced at the backend's price."""

    backend: str = Field(description="Backend (Qwen3Deployment) the adapter runs on.")
    adapter: str = Field(description="The adapter's model name.")
    prompt_tokens: int = Field(description="Prompt tokens of answers from the adapter.")
    output_tokens: int = Field(description="Output tokens (reasoning included).")
    usd: float = Field(description="Output tokens at the backend's realised USD per 1M output tokens.")
    backend_share: float | None = Field(default=None, description="Its share of the backend's cost (0-1).")


class ModeCost(ApiModel):
    """Thinking or non-thinking answers (an answer with reasoning tokens is thinking)."""

    mode: str = Field(description="thinking or non_thinking.")
    prompt_tokens: int = Field(description="Prompt tokens.")
    output_tokens: int = Field(description="Output tokens.")
    token_share: float = Field(description="Share of all prompt and output tokens.")
    usd: float = Field(description="Cost of its output tokens at each backend's price.")
    cost_share: float | None = Field(default=None, description="Share of the router's cost.")


class RouterCostLedger(ApiModel):
    """Token counters, kept in status so the totals survive an operator restart."""

    totals: dict[str, float] = Field(default_factory=dict, description="Tokens by backend/type/mode since creation.")
    pods: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Each router pod's qwenfleet_router_tokens_total when last scraped."
    )


class RouterCost(ApiModel):
    """What routing saved: tokens and cost per backend and mode, beside the largest backend and the reference."""

    model_config = ConfigDict(frozen=False)

    usd: float = Field(description="Cost of the routed answers at each backend's realised price.")
    backends: list[BackendCost] = Field(default_factory=list, description="Per backend.")
    modes: list[ModeCost] = Field(default_factory=list, description="Thinking against non-thinking.")
    largest_backend: str | None = Field(default=None, description="The backend with the most GPUs per replica.")
    on_largest_usd: float | None = Field(
        default=None,
        alias="onLargestUSD",
        description="What the largest backend would have cost to serve every routed token: onLargestReplicaHours at "
        "its hourly price, plus its idle floor as it was (largestIdleUSD).",
    )
    on_largest_replica_hours: float | None = Field(
        default=None,
        description="Replica-hours the largest backend needs for every routed prompt and output token at its plan's "
        "throughput (decodeTokensPerSecond, prefillTokensPerSecond).",
    )
    largest_idle_usd: float | None = Field(
        default=None,
        alias="largestIdleUSD",
        description="The largest backend's idle floor: what its own routed tokens cost beyond the work they needed.",
    )
    saved_vs_largest_usd: float | None = Field(
        default=None, alias="savedVsLargestUSD", description="onLargestUSD minus usd."
    )
    external_usd: float | None = Field(
        default=None, alias="externalUSD", description="What the external API backends' answers cost at their prices."
    )
    external_budget_exhausted: bool | None = Field(
        default=None,
        description="A router replica has spent its share of today's externalDailyBudgetUSD (the APIs are no "
        "longer chosen for spillover or fallback until 00:00 UTC).",
    )
    reference_name: str | None = Field(
        default=None, description="spec.costReference.name, else the first external API backend's."
    )
    reference_usd: float | None = Field(
        default=None, alias="referenceUSD", description="The same tokens at spec.costReference's prices."
    )
    saved_vs_reference_usd: float | None = Field(
        default=None, alias="savedVsReferenceUSD", description="referenceUSD minus usd."
    )
    adapters: list[AdapterCost] | None = Field(
        default=None, description="Per LoRA adapter: its tokens and share of its backend's cost."
    )
    ledger: RouterCostLedger | None = Field(default=None, description="The counters the figures come from.")


class SloWindow(ApiModel):
    """The latency objective over one window, as the replicas' engines measured it."""

    requests: int = Field(description="Requests that got their first token while the objective was set.")
    on_time: int = Field(description="Of those, the ones whose first token came within the objective.")
    attainment: float | None = Field(default=None, description="onTime / requests; none without requests.")


class SloStatus(ApiModel):
    """Whether spec.autoscaling.slo is met, measured from vLLM's time-to-first-token histogram (qwenfleet.cost).

    vLLM times a request from its arrival at the engine, so time queued there counts; time held at a router while
    a replica wakes, and requests given up before their first token, are not in it."""

    ttft_seconds: float = Field(description="The objective's time to first token (spec.autoscaling.slo).")
    attainment_target: float = Field(description="The share of requests that should meet it (the spec's attainment).")
    measured_at_seconds: float | None = Field(
        default=None,
        description="The histogram bucket the objective is measured at: vLLM's largest bucket at or below "
        "ttftSeconds (an objective between two buckets is measured at the lower one, which can only understate).",
    )
    last_hour: SloWindow = Field(description="The last hour (to 5-minute resolution).")
    last_day: SloWindow = Field(description="The last 24 hours (to 1-hour resolution beyond the last hour).")
    since_creation: SloWindow = Field(description="Since the deployment was created (or the objective was set).")
