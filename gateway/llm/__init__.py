"""OpenAI-compatible LLM proxy: routes, upstream calls, streaming, spans and metrics."""
