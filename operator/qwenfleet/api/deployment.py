"""Qwen3Deployment: which Qwen3 model, on which GPU, how it may scale. Spec and status."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from qwenfleet.api.base import ApiModel
from qwenfleet.api.cel import cel, one_of
from qwenfleet.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    Condition,
    LabelKey,
    LabelValue,
    ResourceName,
    SecretKeyRef,
    Toleration,
)
from qwenfleet.api.cost import DeploymentCost, SloStatus
from qwenfleet.api.plan import Plan
from qwenfleet.catalog import GPU_NAMES, MODEL_NAMES, MODELS, Precision
from qwenfleet.catalog.engine import EXTRA_ARG_FLAGS
from qwenfleet.catalog.models import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_NUM_SEQS,
    MIN_MODEL_LEN,
    THINKING_ONLY_MODELS,
)

if TYPE_CHECKING:
    ModelName = str
    GPUName = str
    ExtraFlag = str
else:
    ModelName = one_of(MODEL_NAMES, "model", "Qwen3 model from the catalog (`qwenfleet catalog models`).")
    GPUName = one_of(GPU_NAMES, "GPU", "GPU type the replicas run on (`qwenfleet catalog gpus`).")

HF_REPO = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
SAFE_ARG_VALUE = r"^[A-Za-z0-9._:/=,+@{}\"\[\] -]*$"
IMAGE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"

if not TYPE_CHECKING:
    ExtraFlag = one_of(EXTRA_ARG_FLAGS, "vLLM flag", "Flag name; only flags the planner does not own.")

AWQ_MODELS = tuple(m.name for m in MODELS if Precision.AWQ in m.repos)


class AutoscalingMode(StrEnum):
    """Who owns the replica count."""

    NONE = "none"
    BUILTIN = "builtin"
    KEDA = "keda"


def _one_source(who: str) -> JsonDict:
    """The CEL rule of a source that is exactly one of huggingFace or pvc."""
    message = f"{who} exactly one source: huggingFace or pvc"
    return {"x-kubernetes-validations": [cel("[has(self.huggingFace), has(self.pvc)].filter(x, x).size() == 1",
                                             message)]}  # fmt: skip


class HuggingFaceSource(ApiModel):
    """Download the weights from Hugging Face."""

    repo: Annotated[str, StringConstraints(pattern=HF_REPO, max_length=193)] | None = Field(
        default=None,
        description="Repository id; defaults to the official Qwen checkpoint for the model and precision.",
    )
    revision: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,128}$")] = Field(
        default="main",
        description="Branch, tag or commit to download; pin a commit for reproducible rollouts.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token (passed to pods as HF_TOKEN, never inline).",
    )


class PVCSource(ApiModel):
    """Read the weights from an existing PersistentVolumeClaim the user owns (never modified or deleted)."""

    claim_name: ResourceName = Field(description="Name of the PersistentVolumeClaim in the same namespace.")
    path: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._/-]*$", max_length=512)] = Field(
        default="/", description="Directory inside the volume that holds config.json and the safetensors."
    )


class WeightSource(ApiModel):
    """Where the weights come from: exactly one of huggingFace or pvc."""

    model_config = ConfigDict(json_schema_extra=_one_source("spec.weights needs"))

    hugging_face: HuggingFaceSource | None = Field(default=None, description="Download from Hugging Face.")
    pvc: PVCSource | None = Field(default=None, description="Read from an existing PersistentVolumeClaim.")

    @model_validator(mode="after")
    def _exactly_one(self) -> WeightSource:
        if (self.hugging_face is None) == (self.pvc is None):
            raise ValueError("spec.weights needs exactly one source: huggingFace or pvc")
        return self


class VllmArg(ApiModel):
    """One extra vLLM flag from the allow-list, with an optional value."""

    name: ExtraFlag = Field(description="Flag name; only flags the planner does not own.")
    value: Annotated[str, StringConstraints(pattern=SAFE_ARG_VALUE, max_length=512)] | None = Field(
        default=None, description="Flag value; letters, digits and JSON punctuation only."
    )


class Overrides(ApiModel):
    """Expert overrides of what the planner decides."""

    tensor_parallel_size: Literal[1, 2, 4, 8] | None = Field(
        default=None, description="Force a tensor parallel size; the planner still checks it fits."
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        ge=0.5,
        le=0.98,
        description=f"Fraction of GPU memory vLLM may use (default {DEFAULT_GPU_MEMORY_UTILIZATION:g}).",
    )
    max_num_seqs: int | None = Field(
        default=None, ge=1, le=4096, description=f"vLLM --max-num-seqs (default {DEFAULT_MAX_NUM_SEQS})."
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        default="auto", description="KV-cache precision; fp8 doubles the tokens that fit."
    )
    image: Annotated[str, StringConstraints(pattern=IMAGE, max_length=512)] | None = Field(
        default=None,
        description="vLLM OpenAI server image; defaults to the version qwenfleet is tested with.",
    )
    extra_args: list[VllmArg] = Field(
        default_factory=list, max_length=32, description="Additional vLLM flags from the allow-list."
    )


class AutoscalingSlo(ApiModel):
    """The latency objective the builtin autoscaler sizes for."""

    ttft_seconds: float = Field(
        ge=0.05, le=600, description="Time to first token a request should see at most, in seconds."
    )
    attainment: float = Field(
        default=0.99,
        ge=0.5,
        le=0.9999,
        description="Share of requests that should meet ttftSeconds (0.99: 99%); higher keeps more warm headroom.",
    )


def slo_objective(body: Mapping[str, Any]) -> tuple[float, float] | None:
    """(ttftSeconds, attainment) of a Qwen3Deployment object's latency objective, or None without one. Read from
    the raw object, for loops over the whole fleet where validating every spec would cost more than their pass;
    the API server applies the attainment's default, and `AutoscalingSlo` holds it for an object that lacks it."""
    slo = (((body.get("spec") or {}).get("autoscaling")) or {}).get("slo") or {}
    if slo.get("ttftSeconds") is None:
        return None
    return float(slo["ttftSeconds"]), float(slo.get("attainment", AutoscalingSlo.model_fields["attainment"].default))


class Autoscaling(ApiModel):
    """How the replica count follows load."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas",
                )
            ]
        }
    )

    mode: AutoscalingMode = Field(
        default=AutoscalingMode.NONE,
        description=(
            "none: spec.replicas is the truth (GitOps owns it). builtin: qwenfleet's queue-depth autoscaler owns "
            "the replica count (leave spec.replicas unset). keda: qwenfleet renders a KEDA ScaledObject that "
            "scales this resource through /scale."
        ),
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replicas.")
    target_queue_depth: int = Field(
        default=4, ge=1, le=1000, description="Waiting requests per ready replica the autoscaler aims for."
    )
    scale_down_delay_seconds: int = Field(
        default=300, ge=0, le=86400, description="Load must stay low this long before a replica is removed."
    )
    scale_to_zero_after_seconds: int = Field(
        default=900,
        ge=30,
        le=604800,
        description="Idle time (no requests) before scaling to zero, if allowed.",
    )
    slo: AutoscalingSlo | None = Field(
        default=None,
        description=(
            "builtin mode: size for this time-to-first-token objective from the arrival rate, its trend and "
            "variability, the plan's per-replica capacity and cold start. Without it, targetQueueDepth alone decides; "
            "with it, the larger of the two wins."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas")
        return self


class NodeClassRef(ApiModel):
    """The Karpenter node class (cloud-specific launch settings) new GPU nodes use."""

    group: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]{1,253}$")] = Field(
        description="API group, e.g. karpenter.k8s.aws."
    )
    kind: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]{0,62}$")] = Field(
        description="Kind, e.g. EC2NodeClass."
    )
    name: ResourceName = Field(description="Name of the node class.")


CapacityType = Literal["on-demand", "spot", "reserved"]


def _on_demand() -> list[CapacityType]:
    return ["on-demand"]


_POOL_EXCLUSIVE_RULE = cel(
    "!has(self.nodeClassRef) || !has(self.sharedPoolName)",
    "spec.nodePool sets both nodeClassRef and sharedPoolName: use nodeClassRef for a NodePool of this "
    "deployment's own, or sharedPoolName to run on an existing shared NodePool, not both",
)


class NodePool(ApiModel):
    """GPU nodes for this deployment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.provisioner != 'karpenter' || has(self.nodeClassRef) || has(self.sharedPoolName)",
                    "spec.nodePool.provisioner karpenter needs nodeClassRef (a pool of our own) or sharedPoolName",
                ),
                _POOL_EXCLUSIVE_RULE,
            ]
        }
    )

    provisioner: Literal["none", "karpenter"] = Field(
        default="none",
        description="none: schedule on existing GPU nodes by label. karpenter: qwenfleet writes a NodePool.",
    )
    node_class_ref: NodeClassRef | None = Field(default=None, description="Node class for a dedicated NodePool.")
    shared_pool_name: ResourceName | None = Field(
        default=None, description="Use (and do not own) an existing shared Karpenter NodePool of this name."
    )
    capacity_types: list[CapacityType] = Field(
        default_factory=_on_demand,
        min_length=1,
        max_length=3,
        description="Karpenter capacity types.",
    )

    @model_validator(mode="after")
    def _karpenter_needs_class(self) -> NodePool:
        if self.provisioner == "karpenter" and self.node_class_ref is None and self.shared_pool_name is None:
            raise ValueError(
                "spec.nodePool.provisioner karpenter needs nodeClassRef (a pool of our own) or sharedPoolName"
            )
        if self.node_class_ref is not None and self.shared_pool_name is not None:
            raise ValueError(str(_POOL_EXCLUSIVE_RULE["message"]))
        return self

    @property
    def owned(self) -> bool:
        """Whether qwenfleet writes (and deletes) a NodePool of this deployment's own: the one ownership rule."""
        return self.provisioner == "karpenter" and self.node_class_ref is not None and self.shared_pool_name is None


_COMPILE_CACHE_RULE = cel(
    "!has(self.compileCache) || !self.compileCache || !has(self.accessMode) || self.accessMode != 'ReadOnlyMany'",
    "spec.cache.compileCache needs a writable cache volume: the first replica writes vLLM's compiled graphs "
    "there; use accessMode ReadWriteMany (or ReadWriteOnce on one node), or leave compileCache unset",
)


class ModelCache(ApiModel):
    """Fetch the weights once into a shared volume instead of once per pod."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_COMPILE_CACHE_RULE]})

    mode: Literal["none", "pvc"] = Field(
        default="none",
        description="none: each pod downloads (fine for small models). pvc: one Job fills a shared PVC first.",
    )
    size: Annotated[str, StringConstraints(pattern=QUANTITY)] | None = Field(
        default=None, description="PVC size; defaults to the checkpoint size plus 20%."
    )
    storage_class_name: ResourceName | None = Field(default=None, description="StorageClass of the cache PVC.")
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany",
        description="Access mode; ReadWriteOnce only when every replica shares one node.",
    )
    compile_cache: bool | None = Field(
        default=None,
        description="Keep vLLM's torch.compile cache on the cache volume, so replicas after the first load the "
        "compiled graphs instead of compiling (a shorter cold start, in status.plan.coldStartSeconds); "
        "default on when mode is pvc and the volume is writable.",
    )

    @model_validator(mode="after")
    def _writable_for_compile_cache(self) -> ModelCache:
        if self.compile_cache and self.access_mode == "ReadOnlyMany":
            raise ValueError(str(_COMPILE_CACHE_RULE["message"]))
        return self

    @property
    def compiles_once(self) -> bool:
        """True when vLLM's compile cache is kept on the cache volume."""
        writable = self.access_mode != "ReadOnlyMany"
        return self.mode == "pvc" and writable and self.compile_cache is not False


class Scheduling(ApiModel):
    """Extra placement rules for the model-server pods."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Extra tolerations.")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Extra node labels the pods require."
    )
    priority_class_name: ResourceName | None = Field(default=None, description="PriorityClass of the pods.")


class Pricing(ApiModel):
    """Price overrides for cost estimates."""

    gpu_hour_usd: float | None = Field(
        default=None,
        alias="gpuHourUSD",
        ge=0,
        le=1000,
        description="Price of one GPU-hour, replacing the catalog's.",
    )


LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM's `--max-lora-rank` accepts."""
DEFAULT_MAX_LORA_RANK = 16
DEFAULT_MAX_LORAS = 4
ADAPTER_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
MODEL_DIR = "/models"
"""Where the pods mount the weights (the weight cache, or the user's volume)."""
ADAPTER_DIR = f"{MODEL_DIR}/adapters"
"""Where the weight cache keeps adapters, on the pods."""
ADAPTER_CLAIMS_DIR = "/adapters"
"""Where the pods mount the user's adapter volumes, one directory per claim."""


class AdapterHuggingFace(ApiModel):
    """An adapter on Hugging Face, fetched once into the weight cache."""

    repo: Annotated[str, StringConstraints(pattern=HF_REPO, max_length=193)] = Field(description="Repository id.")
    revision: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,128}$")] = Field(
        default="main", description="Branch, tag or commit; pin a commit so every replica loads the same adapter."
    )


class Adapter(ApiModel):
    """A LoRA adapter served on the deployment's replicas under its own model name."""

    model_config = ConfigDict(json_schema_extra=_one_source("an adapter needs"))

    name: Annotated[str, StringConstraints(pattern=ADAPTER_NAME, max_length=63)] = Field(
        description="The model name clients send (lower case letters, digits, '.', '_' and '-')."
    )
    rank: int | None = Field(default=None, ge=1, le=512, description="The adapter's LoRA rank (`r`), if known.")
    hugging_face: AdapterHuggingFace | None = Field(
        default=None, description="Fetch from Hugging Face into the weight cache (needs spec.cache.mode pvc)."
    )
    pvc: PVCSource | None = Field(
        default=None, description="Read from a folder on a PersistentVolumeClaim you own (mounted read-only)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Adapter:
        if (self.hugging_face is None) == (self.pvc is None):
            raise ValueError("an adapter needs exactly one source: huggingFace or pvc")
        return self

    def pod_path(self) -> str:
        """The adapter's folder as the pods see it."""
        if self.pvc is not None:
            return f"{ADAPTER_CLAIMS_DIR}/{self.pvc.claim_name}{self.pvc.path.rstrip('/')}"
        assert self.hugging_face is not None
        return f"{ADAPTER_DIR}/{self.hugging_face.repo}/{self.hugging_face.revision}"


class Lora(ApiModel):
    """How many adapters a batch may mix and how large a rank the replicas accept (`--max-loras`, `--max-lora-rank`).

    Both are engine flags: changing them rolls the replicas; adding or removing an adapter within them does not."""

    max_rank: Literal[8, 16, 32, 64, 128, 256, 320, 512] = Field(
        default=16, description="The largest adapter rank the replicas accept."
    )
    max_loras: int = Field(
        default=DEFAULT_MAX_LORAS, ge=1, le=64, description="Adapters one batch may mix (each holds GPU memory)."
    )


_LORA_RANK_RULE = cel(
    f"!has(self.adapters) || self.adapters.all(a, !has(a.rank) || a.rank <= "
    f"(has(self.lora) && has(self.lora.maxRank) ? self.lora.maxRank : {DEFAULT_MAX_LORA_RANK}))",
    "an adapter's rank is above spec.lora.maxRank (default 16): raise spec.lora.maxRank to at least its rank "
    "(8, 16, 32, 64, 128, 256, 320 or 512)",
)
_ADAPTER_CACHE_RULE = cel(
    "!has(self.adapters) || self.adapters.all(a, !has(a.huggingFace)) || (has(self.cache) && self.cache.mode == 'pvc')",
    "an adapter from huggingFace needs spec.cache.mode pvc: adapters are fetched once into the weight cache",
)
_ADAPTER_BASE_RULE = cel(
    "!has(self.adapters) || self.adapters.all(a, a.name != self.model.lowerAscii())",
    "an adapter cannot be named like the base model it runs on",
)

_REPLICAS_RULE = cel(
    "!has(self.replicas) || !has(self.autoscaling) || self.autoscaling.mode == 'none'",
    "spec.replicas must be unset when spec.autoscaling.mode is builtin or keda: the autoscaler owns the "
    "replica count (set autoscaling.minReplicas/maxReplicas instead)",
)
_AWQ_RULE = cel(
    f"self.precision != 'awq' || self.model in {list(AWQ_MODELS)}",
    f"precision awq is offered only for {', '.join(AWQ_MODELS)}; "
    "Qwen publishes no AWQ checkpoint for the MoE and 2507 models: use bf16 or fp8",
)
_THINKING_RULE = cel(
    f"!has(self.thinkingByDefault) || self.thinkingByDefault || !(self.model in {list(THINKING_ONLY_MODELS)})",
    f"thinkingByDefault false is not possible for {', '.join(THINKING_ONLY_MODELS)}: these models always "
    "think; use a hybrid Qwen3 model or an Instruct-2507 model for answers without thinking",
)
_CACHE_RULE = cel(
    "!has(self.weights) || !has(self.weights.pvc) || !has(self.cache) || self.cache.mode == 'none'",
    "spec.cache must be mode none when spec.weights.pvc is set: the weights are already in your volume",
)


class Qwen3DeploymentSpec(ApiModel):
    """What to serve: a Qwen3 model on a GPU type, and how it may scale."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _REPLICAS_RULE,
                _AWQ_RULE,
                _CACHE_RULE,
                _THINKING_RULE,
                _LORA_RANK_RULE,
                _ADAPTER_CACHE_RULE,
                _ADAPTER_BASE_RULE,
            ]
        }
    )

    model: ModelName = Field(description="Qwen3 model from the catalog (`qwenfleet catalog models`).")
    gpu: GPUName = Field(description="GPU type the replicas run on (`qwenfleet catalog gpus`).")
    precision: Precision = Field(default=Precision.BF16, description="Weight precision: bf16, fp8 or awq.")
    weights: WeightSource | None = Field(
        default=None,
        description="Where the weights come from; defaults to the official Hugging Face checkpoint.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=MIN_MODEL_LEN,
        le=1_048_576,
        description="Context length (prompt plus output); defaults to the longest that fits on the fewest GPUs.",
    )
    thinking_by_default: bool = Field(
        default=True,
        description="For hybrid models: think unless a request says otherwise (false sets enable_thinking off).",
    )
    overrides: Overrides | None = Field(default=None, description="Expert overrides of the planner.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replica count when autoscaling.mode is none (default 1)."
    )
    autoscaling: Autoscaling | None = Field(default=None, description="Autoscaling; default mode none.")
    node_pool: NodePool | None = Field(default=None, description="GPU node provisioning; default none.")
    cache: ModelCache | None = Field(default=None, description="Weight cache; default none.")
    scheduling: Scheduling | None = Field(default=None, description="Extra tolerations and node selectors.")
    pricing: Pricing | None = Field(default=None, description="Cost estimate overrides.")
    lora: Lora | None = Field(
        default=None, description="LoRA limits of the replicas; set with adapters (defaults maxRank 16, maxLoras 4)."
    )
    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=64,
        description="LoRA adapters served beside the base model, each under its own name; added and removed live.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @property
    def serves_adapters(self) -> bool:
        """The replicas run with LoRA on (adapters, or spec.lora set for adapters to come)."""
        return bool(self.adapters) or self.lora is not None

    @property
    def adapter_claims(self) -> list[str]:
        """The user's claims that hold adapters (sorted, once each); the pods mount each at /adapters/<claim>."""
        return sorted({a.pvc.claim_name for a in self.adapters if a.pvc is not None})

    @property
    def lora_limits(self) -> Lora:
        """spec.lora or its defaults."""
        return self.lora or Lora()

    @property
    def caches_weights(self) -> bool:
        """One Job fills a shared cache volume that the pods read the weights from."""
        return self.cache is not None and self.cache.mode == "pvc"

    @property
    def weights_on_volume(self) -> bool:
        """The pods read the weights from a volume (the cache or the user's) instead of each downloading them."""
        return self.caches_weights or bool(self.weights and self.weights.pvc)

    @model_validator(mode="after")
    def _cross_field(self) -> Qwen3DeploymentSpec:
        mode = self.autoscaling.mode if self.autoscaling else AutoscalingMode.NONE
        if self.replicas is not None and mode != AutoscalingMode.NONE:
            raise ValueError(str(_REPLICAS_RULE["message"]))
        if self.precision == Precision.AWQ and self.model not in AWQ_MODELS:
            raise ValueError(str(_AWQ_RULE["message"]))
        if self.weights and self.weights.pvc and self.cache and self.cache.mode != "none":
            raise ValueError(str(_CACHE_RULE["message"]))
        if not self.thinking_by_default and self.model in THINKING_ONLY_MODELS:
            raise ValueError(str(_THINKING_RULE["message"]))
        self._check_adapters()
        return self

    def _check_adapters(self) -> None:
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError("adapter names must be unique")
        if any(a.rank is not None and a.rank > self.lora_limits.max_rank for a in self.adapters):
            raise ValueError(str(_LORA_RANK_RULE["message"]))
        if any(a.hugging_face for a in self.adapters) and not self.caches_weights:
            raise ValueError(str(_ADAPTER_CACHE_RULE["message"]))
        if self.model.lower() in names:
            raise ValueError(str(_ADAPTER_BASE_RULE["message"]))


class CacheStatus(ApiModel):
    """Progress of the weight cache."""

    phase: Literal["Pending", "Downloading", "Ready", "Failed"] = Field(description="Where the cache is.")
    message: str = Field(default="", description="Details.")
    pvc_name: str | None = Field(default=None, description="The cache PVC.")


class AutoscalerStatus(ApiModel):
    """What the builtin autoscaler last observed and decided."""

    desired_replicas: int = Field(description="Replicas the autoscaler wants.")
    queue_per_replica: float = Field(default=0.0, description="Waiting requests per ready replica.")
    last_scale_time: str | None = Field(default=None, description="When the replica count last changed.")
    reason: str = Field(default="", description="Why.")


class AdapterStatus(ApiModel):
    """One adapter on the ready replicas."""

    name: str = Field(description="The adapter's model name.")
    loaded_replicas: int = Field(default=0, description="Ready replicas that have it loaded.")
    replicas: int = Field(default=0, description="Ready replicas.")
    message: str = Field(default="", description="vLLM's answer to the last failed load, if one failed.")


class Qwen3DeploymentStatus(ApiModel):
    """Observed state, written by qwenfleet."""

    model_config = ConfigDict(frozen=False)

    observed_generation: int | None = Field(default=None, description="The generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, PlanFeasible, ModelCached, ...",
        json_schema_extra=CONDITIONS_SCHEMA_EXTRA,
    )
    plan: Plan | None = Field(default=None, description="The planner's layout of one replica.")
    replicas: int = Field(default=0, description="Replicas that exist (pods or groups).")
    ready_replicas: int = Field(default=0, description="Replicas ready to serve.")
    updated_replicas: int = Field(default=0, description="Replicas already on the current spec (during a rollout).")
    desired_replicas: int = Field(default=0, description="Replicas wanted now.")
    ready_summary: str = Field(default="0/0", description="ready/desired, for kubectl get.")
    selector: str = Field(default="", description="Label selector of the model-server pods (for /scale).")
    endpoint: str = Field(default="", description="In-cluster OpenAI base URL of the replicas' Service.")
    cache: CacheStatus | None = Field(default=None, description="Weight cache progress.")
    autoscaler: AutoscalerStatus | None = Field(default=None, description="Builtin autoscaler state.")
    cost: DeploymentCost | None = Field(default=None, description="Measured cost (qwenfleet.cost).")
    adapters: list[AdapterStatus] | None = Field(
        default=None, description="The LoRA adapters and on how many ready replicas each is loaded."
    )
    adapter_summary: str | None = Field(
        default=None, description="Adapters loaded on every ready replica / declared, for kubectl get."
    )
    slo: SloStatus | None = Field(
        default=None, description="The latency objective's measured attainment, with spec.autoscaling.slo."
    )


class Qwen3Deployment(ApiModel):
    """A Qwen3 model served by vLLM on GPUs, sized and scaled by qwenfleet."""

    api_version: Literal["qwenfleet.dev/v1alpha1"] = "qwenfleet.dev/v1alpha1"
    kind: Literal["Qwen3Deployment"] = "Qwen3Deployment"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: Qwen3DeploymentSpec
    status: Qwen3DeploymentStatus | None = None
