"""The Plan: what the planner decided for one Qwen3Deployment replica. Shown in status and by `qwenfleet plan`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qwenfleet.api.base import ApiModel


class Plan(ApiModel):
    """How one replica of a Qwen3 model is laid out on GPUs, and what it is estimated to cost."""

    model: str = Field(description="Catalog name of the model.")
    precision: str = Field(description="Weight precision: bf16, fp8 or awq.")
    gpu: str = Field(description="GPU type.")
    repo: str = Field(description="Hugging Face repository of the checkpoint.")
    gpus_per_replica: int = Field(description="GPUs one replica uses (tensor x pipeline parallel).")
    nodes_per_replica: int = Field(description="Nodes one replica spans; more than 1 means a LeaderWorkerSet.")
    gpus_per_node: int = Field(description="GPUs each pod of a replica requests.")
    tensor_parallel_size: int = Field(description="Tensor parallel size (within a node).")
    pipeline_parallel_size: int = Field(description="Pipeline parallel size (across nodes).")
    expert_parallel: bool = Field(description="Whether MoE experts are spread across GPUs (--enable-expert-parallel).")
    max_model_len: int = Field(description="Context length served (prompt plus output tokens).")
    yarn_factor: float | None = Field(
        default=None, description="YaRN rope scaling factor, when context exceeds native."
    )
    gpu_memory_utilization: float = Field(description="Fraction of GPU memory vLLM pre-allocates.")
    weight_bytes_per_gpu: int = Field(description="Model weight bytes resident on each GPU.")
    kv_cache_tokens: int = Field(description="Tokens of KV cache one replica holds (estimate).")
    lora_bytes_per_gpu: int | None = Field(
        default=None, description="GPU bytes vLLM's LoRA adapter slots take on each GPU (LoRA on only)."
    )
    max_loras: int | None = Field(default=None, description="Adapters one batch may mix (--max-loras).")
    max_lora_rank: int | None = Field(default=None, description="Largest adapter rank accepted (--max-lora-rank).")
    max_concurrent_sequences: int = Field(description="Full-length sequences that fit in the KV cache at once.")
    max_num_seqs: int = Field(description="vLLM's cap on sequences batched together.")
    reference_concurrency: int = Field(
        description="Sequences one replica runs at once at typical lengths: the autoscaler sizes on this."
    )
    vllm_args: list[str] = Field(description="Arguments for `vllm serve` (the model is the first).")
    cold_start_seconds: int = Field(
        description="Estimated seconds from pod start to ready: engine start, compile (or loading the compile "
        "cache), reading the weights, and each pod's download when there is no weight cache.",
    )
    download_seconds: int = Field(description="Estimated seconds to download the weights from Hugging Face once.")
    weight_bytes_total: int = Field(description="Bytes of the checkpoint.")
    decode_tokens_per_second: float = Field(description="Estimated output tokens per second per replica at load.")
    prefill_tokens_per_second: float = Field(description="Estimated prompt tokens per second per replica.")
    cost_per_hour_usd: float = Field(alias="costPerHourUSD", description="Estimated cost of one replica per hour.")
    cost_per_million_output_tokens_usd: float = Field(
        alias="costPerMillionOutputTokensUSD",
        description="Estimated cost per million output tokens at the estimated throughput.",
    )
    notes: list[str] = Field(default_factory=list, description="Why the planner chose what it chose.")

    @property
    def workload_kind(self) -> Literal["Deployment", "LeaderWorkerSet"]:
        """The model-server workload: a Deployment when one node holds a replica, else a LeaderWorkerSet."""
        return "LeaderWorkerSet" if self.nodes_per_replica > 1 else "Deployment"

    @property
    def layout(self) -> str:
        """GPUs of one replica, e.g. `4 x H100-80GB` or `16 x A100-40GB across 2 nodes`."""
        nodes = f" across {self.nodes_per_replica} nodes" if self.multi_node else ""
        return f"{self.gpus_per_replica} x {self.gpu}{nodes}"

    @property
    def multi_node(self) -> bool:
        """True when a replica spans nodes (leader and workers form one replica)."""
        return self.workload_kind == "LeaderWorkerSet"
