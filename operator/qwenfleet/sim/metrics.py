"""vLLM's Prometheus metrics (V1 engine names, types, labels and buckets), one registry per simulated server.

Every series carries `model_name` (the served name) and `engine="0"`. Counters are declared without `_total`
and exposed with it, as prometheus_client does for vLLM. Times are simulated seconds: what the real server
would have measured, whatever the time scale.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from qwenfleet.api.plan import Plan
from qwenfleet.sim.engine import BLOCK_TOKENS, FinishReason, SimRequest, StepResult
from qwenfleet.sim.perf import PerfModel, vllm_arg

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LABELS = ("model_name", "engine")


def buckets_1_2_5(limit: int) -> tuple[int, ...]:
    """vLLM's 1-2-5 buckets up to `limit` (token-count histograms)."""
    out: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > limit:
                return tuple(out)
            out.append(mantissa * scale)
        scale *= 10


class VllmMetrics:
    """The metrics of one simulated replica."""

    def __init__(self, model_name: str, plan: Plan, perf: PerfModel, *, max_loras: int | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.max_loras = max_loras
        self.lora_info = (
            None
            if max_loras is None
            else Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                registry=r,
            )
        )
        labels = (model_name, "0")
        tokens = buckets_1_2_5(plan.max_model_len)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r).labels(*labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=r).labels(*labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r).labels(*labels)

        def gauge_by(name: str, doc: str, label: str) -> Gauge:
            return Gauge(name, doc, [*LABELS, label], registry=r)

        def counter_by(name: str, doc: str, label: str) -> Counter:
            return Counter(name, doc, [*LABELS, label], registry=r)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        sleep = gauge_by("vllm:engine_sleep_state",
                         "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
                         "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
                         "sleep_state")  # fmt: skip
        for state, value in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):
            sleep.labels(*labels, state).set(value)
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = counter_by("vllm:request_success", "Count of successfully processed requests.", "finished_reason")
        self.success = {reason: success.labels(*labels, reason.value) for reason in FinishReason}
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS
        )
        self.max_generation_tokens = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.params_n = histogram("vllm:request_params_n", "Histogram of the n request parameter.", (1, 2, 5, 10, 20))
        self.params_max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self.tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS
        )
        self.queue = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prefill = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        waiting_by = gauge_by(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
            "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all "
            "reasons equals vllm:num_requests_waiting.",
            "reason",
        )
        self.waiting_capacity = waiting_by.labels(*labels, "capacity")
        waiting_by.labels(*labels, "deferred").set(0)
        by_source = counter_by("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", "source")
        self.prompt_computed = by_source.labels(*labels, "local_compute")
        self.prompt_cache_hit = by_source.labels(*labels, "local_cache_hit")
        by_source.labels(*labels, "external_kv_transfer")
        self.prompt_cached = counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).")
        cached_by = counter_by(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to "
            "DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at "
            "admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
            "source",
        )
        self.prompt_cached_device = cached_by.labels(*labels, "device")
        for source in ("host", "p2p", "disk", "external_unspecified"):
            cached_by.labels(*labels, source)
        # Families the simulator declares for the surface's sake and leaves at zero: it has no external KV cache,
        # no multi-modal inputs, no admission queue limits and no FLOP or byte estimates.
        for name, doc in (
            ("vllm:external_prefix_cache_queries", "External prefix cache queries from KV connector cross-instance "
             "cache sharing, in terms of number of queried tokens."),
            ("vllm:external_prefix_cache_hits", "External prefix cache hits from KV connector cross-instance cache "
             "sharing, in terms of number of cached tokens."),
            ("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items."),
            ("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items."),
            ("vllm:estimated_flops_per_gpu", "Estimated number of floating point operations per GPU (for Model "
             "Flops Utilization calculations)."),
            ("vllm:estimated_read_bytes_per_gpu", "Estimated number of bytes read from memory per GPU (for Model "
             "Flops Utilization calculations)."),
            ("vllm:estimated_write_bytes_per_gpu", "Estimated number of bytes written to memory per GPU (for Model "
             "Flops Utilization calculations)."),
        ):  # fmt: skip
            counter(name, doc)
        rejections = Counter("vllm:admission_rejections", "Number of admission attempts rejected by a queue limit, "
                             "by reason.", ["model_name", "reason"], registry=r)  # fmt: skip
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.labels(model_name, reason)
        self.request_preemptions = histogram(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            tuple(float(b) for b in buckets_1_2_5(plan.max_model_len)),
        )
        self.prefill_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            tokens,
        )
        parser = Counter(
            "vllm:tool_call_parser_invocations",
            "Total number of ToolParser invocations. Non-streaming increments once per choice; streaming increments "
            "once per delta.",
            ["mode", "model_name", "outcome", "request_type"],
            registry=r,
        )
        self.tool_parser = {
            (mode, outcome, kind): parser.labels(mode, model_name, outcome, kind)
            for mode in ("streaming", "non_streaming")
            for outcome in ("tool_call", "no_tool_call")
            for kind in ("chat_completions", "responses", "other")
        }
        kv_bytes = perf.kv_blocks * BLOCK_TOKENS  # tokens; vLLM reports the cache's bytes and tokens
        info = {
            "_block_size_resolved": "True",
            "block_size": str(BLOCK_TOKENS),
            "cache_dtype": vllm_arg(plan.vllm_args, "--kv-cache-dtype") or "auto",
            "cache_hit_alignment_tokens": "None",
            "effective_attention_block_size": str(BLOCK_TOKENS),
            "enable_mamba_shared_prefix_checkpoint": "False",
            "enable_prefix_caching": "True",
            "engine": "0",
            "gpu_memory_utilization": str(plan.gpu_memory_utilization),
            "hash_block_size": "None",
            "is_attention_free": "False",
            "kv_cache_dtype_skip_layers": "[]",
            "kv_cache_layout": "None",
            "kv_cache_max_concurrency": f"{kv_bytes / plan.max_model_len:.1f}",
            "kv_cache_memory_bytes": "None",
            "kv_cache_size_tokens": str(kv_bytes),
            "kv_offloading_backend": "native",
            "kv_offloading_size": "None",
            "kv_sharing_fast_prefill": "False",
            "mamba_block_size": "None",
            "mamba_cache_dtype": "auto",
            "mamba_cache_mode": "none",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "auto",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(perf.kv_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_cache_retention_interval": "0",
            "prefix_caching_hash_algo": "sha256",
            "prefix_match_unit": "None",
            "replayssm_buffer_len": "16",
            "skip_page_size_padded": "None",
            "sliding_window": "None",
            "swa_bounded_replay": "True",
            "use_kda_recoverssm": "False",
            "use_replayssm": "False",
            "user_specified_block_size": "False",
        }
        Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", list(info), registry=r).labels(
            **info
        ).set(1)

    def exposition(self) -> bytes:
        """The Prometheus text format of every family (vLLM's /metrics has no filter: it ignores `name[]`)."""
        return generate_latest(self.registry)

    def record_state(self, running: int, waiting: int, kv_usage: float, loras: list[str] | None = None) -> None:
        """Scheduler gauges. `loras`: the adapters of the requests in the engine, in order of arrival."""
        self.running.set(running)
        self.waiting.set(waiting)
        self.waiting_capacity.set(waiting)
        self.kv_usage.set(kv_usage)
        if self.lora_info is not None:
            self.record_loras(loras or [])

    def record_loras(self, loras: list[str]) -> None:
        """vLLM 0.32's lora_requests_info: one series per set of adapters with requests in the engine (waiting
        and running list the same names), its value the wall time it was last seen; earlier sets stay."""
        if self.lora_info is None:
            return
        names = ",".join(loras)
        self.lora_info.labels(str(self.max_loras), names, names).set_to_current_time()

    def record_step(self, step: StepResult) -> None:
        """Counters and per-token histograms of one engine step."""
        self.prefix_queries.inc(step.prefix_queries)
        self.prefix_hits.inc(step.prefix_hits)
        self.prompt_cached.inc(step.prefix_hits)
        self.prompt_cached_device.inc(step.prefix_hits)

        self.preemptions.inc(len(step.preempted))
        self.prompt_tokens.inc(step.prompt_tokens)
        self.generation_tokens.inc(step.generation_tokens)
        if step.scheduled_tokens:
            self.iteration_tokens.observe(step.prompt_tokens + step.generation_tokens)
        for ttft in step.time_to_first_token:
            self.ttft.observe(ttft)
        for itl in step.inter_token_latency:
            self.itl.observe(itl)
        for request in step.finished:
            self.record_finished(request)

    def record_tool_parse(self, *, streamed: bool, called: bool) -> None:
        """One answer of a chat request with tools through the tool-call parser."""
        mode = "streaming" if streamed else "non_streaming"
        self.tool_parser[mode, "tool_call" if called else "no_tool_call", "chat_completions"].inc()

    def record_arrival(self, max_tokens: int, n: int = 1) -> None:
        """Per-request parameter histograms (`max_tokens`: the effective limit, context room if unset)."""
        self.max_generation_tokens.observe(max_tokens)
        self.params_n.observe(n)

    def record_finished(self, request: SimRequest) -> None:
        """A request that ended with stop or length."""
        self.success[request.finish_reason].inc()
        self.e2e.observe(request.e2e_seconds)
        self.queue.observe(request.queue_seconds)
        self.prefill.observe(request.prefill_seconds)
        self.inference.observe(request.inference_seconds)
        self.decode.observe(request.decode_seconds)
        self.request_prompt_tokens.observe(request.prompt_tokens)
        self.request_preemptions.observe(request.preemptions)
        self.prefill_kv_computed.observe(request.prompt_tokens - request.cached_tokens)
        self.prompt_computed.inc(request.prompt_tokens - request.cached_tokens)
        self.prompt_cache_hit.inc(request.cached_tokens)
        self.request_generation_tokens.observe(request.generated)
        self.tpot.observe(request.decode_seconds / (request.generated - 1) if request.generated > 1 else 0.0)
        if request.max_tokens:
            self.params_max_tokens.observe(request.max_tokens)

    def record_abort(self) -> None:
        """A request whose client went away: like vLLM 0.32, no finished reason is counted for it (the family
        carries the `abort` label, but only requests that finish inside the engine are recorded)."""
