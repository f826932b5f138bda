"""Versioned prompt registry: templates, versions, aliases, an in-memory cache, the API, a client and the CLI."""

__all__: list[str] = []
