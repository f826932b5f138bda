"""Operational endpoints: /ping, /health, /version, /models, /metrics, /openapi.json (routes: gateway/api/routes.py)."""

from __future__ import annotations

import asyncio
import platform
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__, metrics
from gateway.http import ORJSONResponse, RawJSONResponse
from gateway.serving.signature import signature_to_dict
from gateway.state import GatewayState

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def ping(request: Request) -> Response:
    # MLflow's scoring server answers a bare newline with a JSON content type; clients poll it.
    return Response("\n", media_type="application/json")


async def health(request: Request) -> Response:
    """200 once every model the gateway must serve is loaded, 503 (with the reasons) until then."""
    state = _state(request)
    ready, errors, loading = state.readiness()
    body: dict[str, Any] = {
        "status": "ok" if ready else "unavailable",
        "models": [str(ref) for ref in state.preload],
        "loaded": [f"models:/{m.name}/{m.version}" for m in state.pool.loaded()],
    }
    if loading or not state.preload_done:
        body["loading"] = loading
    if errors:
        body["errors"] = errors
    failed = state.pool.describe()["failed"]
    if failed:
        body["failed_versions"] = failed  # e.g. an alias target that failed to load: the old one serves
    if state.store_error:
        body["store_error"] = state.store_error
    elif state.source_error:  # e.g. "MLflow at http://... is unreachable (...)": the loaded versions keep serving
        body["registry_error"] = state.source_error
    headers = {} if ready else {"Retry-After": "1"}
    return ORJSONResponse(body, status_code=200 if ready else 503, headers=headers)


async def version(request: Request) -> Response:
    import numpy
    import onnxruntime

    return ORJSONResponse(
        {
            "version": __version__,
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__,
        }
    )


async def models(request: Request) -> Response:
    """What is loaded, from which version, and which references point at it."""
    state = _state(request)
    pool = state.pool
    view = pool.view
    loaded = []
    for model in pool.loaded():
        aliases = sorted(
            alias for (name, alias), v in view.aliases.items() if name == model.name and v == model.version
        )
        loaded.append(
            {
                **model.describe(),
                "aliases": aliases,
                "default": state.default_ref is not None
                and state.default_ref.name == model.name
                and _resolves_to(state, model.name, model.version),
                "signature": signature_to_dict(model.signature) if model.signature is not None else None,
            }
        )
    described = pool.describe()
    return ORJSONResponse(
        {
            "default_model": str(state.default_ref) if state.default_ref else None,
            "models": loaded,
            "loading": described["loading"],
            "failed": described["failed"],
            "registry_revision": view.revision,
        }
    )


def _resolves_to(state: GatewayState, name: str, version: int) -> bool:
    try:
        return state.default_ref is not None and state.pool.resolve_cached(state.default_ref) == (
            name,
            version,
        )
    except Exception:
        return False


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format; with several workers, the sum over all of them (see gateway.metrics), and the
    gauges of what they share, read once at this scrape (``app.state.shared_gauges``: the judge queue's)."""
    shared: dict[str, Any] = {}
    for read in getattr(request.app.state, "shared_gauges", ()):
        shared.update(await read())
    body = await asyncio.to_thread(metrics.exposition, metrics.metrics_dir(), shared)
    return Response(body, media_type=PROMETHEUS_CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    """The document ``create_app`` generated from its route table (gateway/api/openapi.py)."""
    return RawJSONResponse(request.app.state.openapi_json, [])
