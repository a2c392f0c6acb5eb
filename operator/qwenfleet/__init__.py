"""qwenfleet: a Kubernetes operator that runs fleets of Qwen3 models on GPUs with vLLM."""

__version__ = "0.1.0"
