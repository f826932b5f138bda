"""LLM judges that grade traffic asynchronously (not built yet: see the open issues)."""

__all__: list[str] = []
