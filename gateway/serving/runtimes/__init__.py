"""Runtimes: OnnxRuntime, PyfuncRuntime; ``loading.load_runtime`` picks one for a package."""
