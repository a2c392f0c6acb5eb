"""A vLLM-compatible simulator: the OpenAI API, SSE streaming and vLLM's metrics, timed by the Plan.

Pure cores (no I/O): `perf` (step time from the Plan), `kv_cache` (paged KV cache with prefix caching),
`engine` (vLLM v1-style scheduler in simulated time), `tokens` (token estimate, Qwen3 chat template),
`answer` (what the model says), `protocol` (request validation, response bodies).
Shells: `server` (one replica over aiohttp), `fleet` (many replicas, one listener per pod IP), `cli`.
"""
