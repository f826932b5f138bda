"""create_app(settings): the composition point. Builds the store, the model pool and the
background refresher in the lifespan, and the app from the route table (gateway/api/routes.py with the prompt
registry's prompts/routes.py and the judges' judges/routes.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Lifespan, Receive, Scope, Send

from gateway import metrics
from gateway.api import serving
from gateway.api.openapi import openapi_document
from gateway.api.routes import app_table
from gateway.api.routing import ApiRoute, authorize, build_routing, route_family
from gateway.config import Settings, settings_from_dict
from gateway.errors import GatewayError
from gateway.http import JsonLimits, ORJSONResponse, render_error
from gateway.http_protocol import HeadLimits
from gateway.http_protocol import configure as configure_http
from gateway.key_admin import KeySync
from gateway.keys import GatewayKeys
from gateway.limits.limiter import KeyLimiter
from gateway.llm.prompt_link import PromptRenderer
from gateway.llm.proxy import LlmProxy
from gateway.llm.response_pins import make_pins
from gateway.refs import ModelRef
from gateway.serving.model import load_model
from gateway.serving.pool import ModelPool
from gateway.sources import make_source, source_loader
from gateway.state import GatewayState
from gateway.store.assessments import AssessmentStore
from gateway.store.keys import KeyStore
from gateway.store.notify import KEYS_CHANGED, ChangeNotifier
from gateway.store.registry import RegistryStore
from gateway.telemetry.invocations import TRACER_NAME as INVOCATION_TRACER_NAME
from gateway.telemetry.setup import Telemetry, build_telemetry, check_otel_environment
from judges.api import start_judges
from judges.evaluation_routes import EVALUATION_ROUTES
from judges.evaluations import DEFAULT_LEASE, RunLease, start_evaluations
from judges.online.api import OnlineJudgesState
from judges.online.service import prompt_alias_resolver, start_online_judging
from judges.queue.choice import open_judge_queue
from judges.queue_metrics import queue_gauges
from judges.routes import JUDGE_ROUTES
from judges.worker.embedded import start_embedded_worker
from prompts import api as prompts_api
from prompts.cache import PromptCache
from prompts.linking import make_renderer
from prompts.mlflow_api import PromptBackend
from prompts.routes import PROMPT_ROUTES
from prompts.store import PromptStore

logger = logging.getLogger("gateway.app")

# How `gateway serve` hands Settings to uvicorn worker processes (see cli.py).
SETTINGS_ENV = "_GATEWAY_SETTINGS_JSON"

_HTTP_ERROR_CODES = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "BAD_REQUEST")
    if exc.status_code == 404:
        message = f"No endpoint {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return ORJSONResponse({"error_code": code, "message": message}, status_code=exc.status_code, headers=exc.headers)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    """Every GatewayError an endpoint raises: one body, in the shape of the matched route's family."""
    assert isinstance(exc, GatewayError)
    return render_error(exc, route_family(request.scope))


async def _store_error(request: Request, exc: Exception) -> Response:
    # The store is a dependency: say so, with a 503 the client may retry.
    logger.error("Registry store error on %s %s: %s", request.method, request.url.path, exc)
    return ORJSONResponse(
        {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": f"The registry store is unavailable ({type(exc).__name__}); retry later.",
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ORJSONResponse(
        {
            "error_code": "INTERNAL_ERROR",
            "message": f"Internal error ({type(exc).__name__}); see the gateway log.",
        },
        status_code=500,
    )


_ERROR_ANSWERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: _http_exception,
    GatewayError: _gateway_error,
    SQLAlchemyError: _store_error,
    Exception: _unexpected_error,
}
_EXPECTED_ERRORS = tuple(c for c in _ERROR_ANSWERS if c is not Exception)


async def _answer_error(request: Request, exc: Exception) -> Response:
    """The answer to what a request raised, on the fast path and on Starlette's (it is the app's handler
    for every class in ``_ERROR_ANSWERS``). The matched route's error family, MLflow's or OpenAI's shape,
    is ``route_family(request.scope)`` (gateway/api/routing.py): "mlflow" when no route matched."""
    answer = next(_ERROR_ANSWERS[c] for c in type(exc).__mro__ if c in _ERROR_ANSWERS)
    return await answer(request, exc)


# Starlette's exception_handlers for an app built from the table (GatewayApp, or a test's Starlette).
EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = dict.fromkeys(
    _ERROR_ANSWERS, _answer_error
)


class GatewayApp(Starlette):
    """Starlette with a fast dispatcher in front: the hot routes of the route table (``POST /invocations``
    and the per-model variants, the proxied LLM calls ``POST /v1/chat/completions``, ``/v1/completions``,
    ``/v1/embeddings``, ``/v1/responses``, ``/v1/messages``, and the cached prompt read
    ``GET /api/prompts/{name}[@alias]``) go straight to their endpoint: the router, the request wrapper and
    both exception middlewares cost about as much CPU as an iris prediction. A scoring request is answered
    without a Request or Response object for a prediction. Errors get ``_answer_error``, as on Starlette's
    way; with user middleware or a ``root_path`` every request takes Starlette's way (its router is built
    from the same table)."""

    # What the /invocations fast path reads on every request, set by the lifespan beside app.state.gateway
    # and app.state.trace_invocations: plain attributes, as a lookup in app.state costs about 0.5 us.
    gateway: GatewayState | None = None
    trace_invocations: bool = False
    # The gateway keys when auth is on (auth.keys set; None: every route is open); checked against each route's scope.
    keys: GatewayKeys | None = None

    def __init__(self, table: Sequence[ApiRoute], lifespan: Lifespan[Starlette]) -> None:
        routes, self.hot_routes = build_routing(table)
        super().__init__(routes=routes, lifespan=lifespan, exception_handlers=dict(EXCEPTION_HANDLERS))
        self.route_table = tuple(table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.user_middleware:
            hot = self.hot_routes.match(scope)
            if hot is not None:
                if self.keys is not None:
                    scope["app"] = self
                    try:
                        authorize(scope, hot.route.entry)
                    except GatewayError as exc:
                        await _send_error(exc, scope, receive, send)
                        return
                ref_of = hot.ref_of
                if ref_of is None:
                    scope["app"] = self
                    request = Request(scope, receive, send)
                    try:
                        response = await hot.route.endpoint(request)
                    except Exception as exc:
                        await _send_error(exc, scope, receive, send)
                        return
                    await response(scope, receive, send)
                    return
                state = self.gateway
                if state is not None:  # else no lifespan ran: Starlette's way answers (a 500, as before)
                    scope["app"] = self
                    try:
                        result = await serving.answer(state, self.trace_invocations, ref_of, scope, receive)
                    except Exception as exc:
                        await _send_error(exc, scope, receive, send)
                        return
                    await serving.send_answer(result, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


async def _send_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``_answer_error``'s answer; an unexpected error is raised again after it, as Starlette's
    ServerErrorMiddleware does, so that the server logs it too."""
    await (await _answer_error(Request(scope, receive, send), exc))(scope, receive, send)
    if not isinstance(exc, _EXPECTED_ERRORS):
        raise exc


def create_app(
    settings: Settings, *, resume_evaluations: bool = True, evaluation_lease: RunLease = DEFAULT_LEASE
) -> Starlette:
    """The app for ``settings``; ``resume_evaluations`` False leaves the evaluation runs that a stopped process
    left unfinished alone (``gateway eval run`` embedded runs its own and exits); ``evaluation_lease``: the
    timings of the evaluation runs' owner lease (judges/evaluations.py; tests shorten them)."""
    # An OTEL_* choice we cannot honour raises ConfigError here, before the server binds (exit 2 from the CLI).
    check_otel_environment()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await asyncio.to_thread(RegistryStore.open, settings.store_uri)
        # One TracerProvider per app (never the global one), handed to the LLM proxy below and kept in
        # app.state.tracer_provider for whoever flushes it (tests do);
        # /invocations makes spans only when app.state.trace_invocations (spans are exported somewhere).
        telemetry = build_telemetry(settings.telemetry, store.engine)
        app.state.telemetry = telemetry
        app.state.tracer_provider = telemetry.provider
        app.state.trace_invocations = telemetry.export_enabled
        app.state.invocation_tracer = telemetry.tracer(INVOCATION_TRACER_NAME)
        # Assessments (judges' verdicts, human feedback), on the store's engine: read and written by the trace API.
        app.state.assessments = AssessmentStore(store.engine)
        # Versions and aliases from our store or an MLflow server (registry.kind): the pool sees only views.
        source = make_source(settings, store)
        state = GatewayState(settings=settings, store=store, source=source)
        load = partial(
            load_model,
            intra_op_num_threads=settings.resolved_intra_op_threads(),
            inline_max_us=settings.serving.inline_max_us,
            serving=settings.serving,
            allow_spinning=settings.onnx_allow_spinning(),
            max_json_depth=settings.http.max_json_depth,
        )

        async def refresh_for(ref: ModelRef) -> None:  # a reference the view does not know
            await state.refresh_view(rate_limited=True, wanted=ref)

        state.pool = ModelPool(
            source_loader(source, load, settings.artifact_roots),
            max_loaded=settings.serving.max_loaded_versions,
            refresh=refresh_for,
        )
        state.pool.set_pinned(state.preload)
        app.state.gateway = state
        # Gateway keys: the bootstrap digests of auth.keys and the store's keys, one map per worker (gateway/keys.py),
        # shared by the route check and the LLM proxy, kept current by KeySync (gateway/key_admin.py).
        keys = GatewayKeys(settings.auth)
        key_sync = KeySync(KeyStore(store.engine), keys)
        await asyncio.to_thread(key_sync.refresh_sync)
        app.state.key_store = key_sync.store
        if not keys.enabled and keys.stored():
            logger.warning(
                "The store holds %d gateway key(s), but auth.keys is empty: auth is off, no key is checked and "
                "every route is open (set auth.keys to a bootstrap key's digest to turn it on)",
                len(keys.stored()),
            )

        async def keys_changed() -> None:  # after a write through /api/keys: here at once, elsewhere through Redis
            await key_sync.refresh()
            if state.notifier is not None:
                await state.notifier.publish(KEYS_CHANGED)

        app.state.keys_changed = keys_changed
        if isinstance(app, GatewayApp):  # always (create_app builds one); mypy wants to know
            app.gateway, app.trace_invocations = state, telemetry.export_enabled
            app.keys = keys if keys.enabled else None
        await state.refresh_view()
        # Prompts: every worker serves reads from its own in-memory catalog (prompts/cache.py).
        prompt_cache, app.state.prompts = await open_prompts(store, notify=state.registry_changed)
        # MLflow's registry API reaches prompts through this (gateway/api/mlflow_registry.py).
        app.state.mlflow_prompts = PromptBackend(app.state.prompts, settings.http.max_json_depth)
        app.state.prompt_renderer = make_renderer(prompt_cache)  # for prompt-linked chat completions
        limiter = KeyLimiter(settings.limits, settings.redis_url)  # keys' rate limits and budgets (gateway/limits/)
        key_sync.on_loaded = limiter.sync_spend  # the budgeted keys' spend, from the store's record
        await key_sync.refresh()
        llm_proxy = await open_llm_proxy(settings, keys, telemetry, app.state.prompt_renderer, limiter)
        app.state.llm_proxy = llm_proxy
        # LLM judges (judges/): the built-ins seeded as prompts judges.<name>, their catalog, and the runner
        # that calls them through this proxy and writes assessments.
        app.state.judges = await start_judges(
            settings.judges, app.state.prompts, llm_proxy, app.state.assessments, telemetry.events, settings.llm.routes
        )
        # The judge queue (judges/queue/: Redis Streams with redis_url, else the store's table).
        judge_queue = app.state.judge_queue = open_judge_queue(settings, store.engine)
        app.state.shared_gauges = [queue_gauges(judge_queue)]  # on /metrics, read once per scrape
        # Online judges (judges/online/): a span processor samples finished LLM calls by the judges.online rules
        # into a bounded buffer, and a task ships their jobs to the judge queue; PUT /api/judges/online replaces
        # the rules (no rules: the processor returns at once).
        online = start_online_judging(
            settings.judges.online, telemetry.provider, judge_queue, prompt_alias_resolver(prompt_cache)
        )
        app.state.online_judges = OnlineJudgesState(online, settings.llm.routes)
        # Evaluation runs (judges/evaluations.py): their judge jobs go on the same judge queue; this process
        # feeds and settles the runs it owns (renewing their leases); runs whose owner stopped (their lease expired
        # or released) are resumed in the background, at start and every few seconds.
        evaluations = app.state.evaluations = await start_evaluations(
            settings,
            app.state.judges,
            llm_proxy,
            telemetry.traces,
            judge_queue,
            resume=resume_evaluations,
            lease=evaluation_lease,
        )

        # With judges.workers embedded (the default), this process's judge worker on the queue.
        judge_worker = start_embedded_worker(settings.judges, judge_queue, app.state.judges, telemetry.traces)

        async def on_store_change() -> None:
            await state.refresh_view()
            await prompt_cache.refresh()
            await key_sync.refresh()

        # What exists now (imported modules, this app) lives as long as the worker: frozen, it leaves the
        # collector's full passes, which otherwise stop every request for 50-110 ms now and then under load
        # (docs/benchmarks.md). Unfrozen at shutdown, so a process that runs several apps can collect them.
        gc.freeze()
        tasks = [
            asyncio.create_task(
                prompt_cache.run_refresher(settings.serving.refresh_interval_s), name="prompt-refresher"
            ),
            asyncio.create_task(state.preload_models(), name="preload"),
            asyncio.create_task(state.run_refresher(), name="registry-refresher"),
            asyncio.create_task(key_sync.run(settings.auth.refresh_interval_s), name="key-refresher"),
        ]
        if settings.redis_url:
            state.notifier = ChangeNotifier(settings.redis_url)
            tasks.append(asyncio.create_task(state.notifier.listen(on_store_change), name="registry-listener"))
        metrics_directory = metrics.metrics_dir()
        if metrics_directory is not None:  # several workers: share this one's counts with the others
            tasks.append(asyncio.create_task(metrics.run_snapshot_writer(metrics_directory), name="metrics-snapshots"))
        logger.info(
            "Gateway ready to accept requests (store %s, models from %s, %d model(s) to preload, "
            "ONNX intra-op threads %d)",
            _redact(settings.store_uri),
            source.describe(),
            len(state.preload),
            settings.resolved_intra_op_threads(),
        )
        serving_settings = settings.serving
        logger.info(
            "Serving plan (worker %d): %d worker(s) on %d core(s); ONNX intra-op threads %d per session, "
            "spinning %s; models faster than %.0f us run inline; batching %s (max_batch_rows %d, "
            "max_wait_ms %g), queue bounds %d requests / %d rows, request timeout %g s",
            os.getpid(), settings.workers, os.cpu_count() or 1, settings.resolved_intra_op_threads(),
            "on" if settings.onnx_allow_spinning() else "off", serving_settings.inline_max_us,
            "on" if serving_settings.batching else "off", serving_settings.max_batch_rows,
            serving_settings.max_wait_ms, serving_settings.max_queue_requests, serving_settings.max_queue_rows,
            serving_settings.request_timeout_s,
        )  # fmt: skip
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if judge_worker is not None:  # jobs in hand: finished within its grace, else reclaimed by another
                await judge_worker.close()
            await evaluations.close()  # runs in work stay "running" in the store, their jobs on the queue
            # What is queued for MLflow (judges.export.mlflow), within the telemetry shutdown bound.
            await app.state.judges.close(settings.telemetry.shutdown_timeout_s)
            # What is buffered goes to the queue, within the telemetry shutdown bound; then the queue closes.
            await online.close(settings.telemetry.shutdown_timeout_s)
            await judge_queue.close()
            await state.pool.close()
            await llm_proxy.close()
            await limiter.close()
            if state.notifier is not None:
                await state.notifier.close()
            await asyncio.to_thread(telemetry.shutdown)  # bounded: telemetry.shutdown_timeout_s per part
            await asyncio.to_thread(source.close)
            await asyncio.to_thread(store.close)
            gc.unfreeze()

    table = app_table(PROMPT_ROUTES, JUDGE_ROUTES, EVALUATION_ROUTES)
    app = GatewayApp(table, lifespan)
    app.state.openapi_json = orjson.dumps(openapi_document(table))  # served by GET /openapi.json
    app.state.json_limits = JsonLimits.from_settings(settings.http)  # gateway.http.read_json_object
    return app


async def open_prompts(
    store: RegistryStore, *, notify: Callable[[], Awaitable[None]] | None = None
) -> tuple[PromptCache, prompts_api.PromptsState]:
    """The prompt cache over ``store``, loaded, and the prompt API's state over it (``notify``: tell the
    other replicas after a write). Shared by the app's lifespan and ``gateway judges worker``."""
    prompt_cache = PromptCache(PromptStore(store.engine))
    await asyncio.to_thread(prompt_cache.refresh_sync)
    return prompt_cache, prompts_api.PromptsState(prompt_cache.store, prompt_cache, notify=notify)


async def open_llm_proxy(
    settings: Settings,
    keys: GatewayKeys,
    telemetry: Telemetry,
    renderer: PromptRenderer,
    limiter: KeyLimiter | None = None,
) -> LlmProxy:
    """The LLM proxy, started: one shared aiohttp session per upstream base URL, spans on ``telemetry``'s
    provider; which target created each stored response (Responses API) in Redis, else in a file the
    workers share, else here. Shared by the app's lifespan and ``gateway judges worker``."""
    llm_proxy = LlmProxy(settings.llm, keys, telemetry.provider, renderer)
    llm_proxy.max_json_depth = settings.http.max_json_depth
    if limiter is not None:
        llm_proxy.limiter = limiter
    llm_proxy.pins = make_pins(settings.redis_url, metrics.metrics_dir())
    await llm_proxy.start()
    return llm_proxy


def _redact(uri: str) -> str:
    """A store URI without its password, for logs."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return uri


def head_limits(settings: Settings) -> HeadLimits:
    """What a request head may take, from ``Settings.http``, for gateway.http_protocol."""
    http = settings.http
    return HeadLimits(http.header_timeout_s, http.max_headers, http.max_header_bytes)


def configure_logging(level: str) -> None:
    """Our loggers (gateway.*) to stderr at ``level``; uvicorn configures its own."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def create_app_from_environ() -> Starlette:
    """uvicorn factory for worker processes: Settings arrive as JSON in an env var."""
    settings = settings_from_dict(orjson.loads(os.environ[SETTINGS_ENV]))
    configure_logging(settings.log_level)  # a spawned worker starts with no logging configured
    configure_http(head_limits(settings))  # this worker's connections, before it accepts any
    return create_app(settings)
