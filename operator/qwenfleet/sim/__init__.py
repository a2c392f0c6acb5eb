"""A vLLM-compatible simulator: the OpenAI API, SSE streaming and vLLM's metrics, timed by the Plan."""
