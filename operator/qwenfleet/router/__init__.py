"""The data plane: an OpenAI-compatible router across Qwen3 sizes (policy pure, proxy and discovery I/O)."""
