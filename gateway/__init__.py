"""Model-serving and GenAI observability gateway."""

__version__ = "0.1.0"
