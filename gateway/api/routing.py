"""What a route table is made of, and the two dispatchers built from one.

``ApiRoute`` declares an endpoint once: methods, path, endpoint, the key scope it will require, its
error family, its bodies (for the OpenAPI document) and whether it is hot. ``build_routing`` turns a
table into Starlette's routes (each a ``TableRoute`` that knows its entry) and ``HotRoutes``, the
dispatcher ``GatewayApp`` (gateway/app.py) asks before Starlette's router: an exact-path dict per method
for the fixed hot paths, then the few patterned ones. The tables themselves live in gateway/api/routes.py
and, for the prompt registry, prompts/routes.py.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, compile_path
from starlette.types import Receive, Scope, Send

from gateway.api import serving
from gateway.http import ErrorFamily
from gateway.keys import GatewayKeys

Endpoint = Callable[[Request], Awaitable[Response]]
JsonSchema = Mapping[str, Any]
# media type -> the JSON schema of a body in that type
Content = Mapping[str, JsonSchema]


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter or request header an endpoint reads (documentation only)."""

    name: str
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})
    repeated: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ApiRoute:
    """One endpoint of the app, declared once.

    ``scope`` is the key scope the route requires when gateway keys are configured (gateway/keys.py, checked
    by ``authorize`` before the endpoint): None for the routes open to anyone. ``ok`` is the success status
    and its body (``also_ok``: any other success), ``errors`` the error statuses the endpoint answers with
    what each means (every error body has the family's shape, but those given in ``error_bodies``). A ``hot`` route
    is answered before Starlette's router when the app has no user middleware and no root path.
    """

    methods: tuple[str, ...]
    path: str
    endpoint: Endpoint
    scope: str | None
    summary: str
    ok: tuple[int, Content | None] = (200, None)
    errors: Mapping[int, str] = field(default_factory=dict)
    body: Content | None = None
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    family: ErrorFamily = "mlflow"
    hot: bool = False
    also_ok: Mapping[int, Content | None] = field(default_factory=dict)  # other success statuses and bodies
    # error statuses whose body is not the family's error shape: /health's 503 is a health report
    error_bodies: Mapping[int, Content] = field(default_factory=dict)


class TableRoute(Route):
    """A Starlette route that knows its table entry: ``scope["route"].entry`` after routing. Before its
    endpoint runs, the request's key is checked against the entry's scope (``authorize``)."""

    def __init__(self, entry: ApiRoute, path: str) -> None:
        super().__init__(path, entry.endpoint, methods=list(entry.methods))
        self.entry = entry

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in self.entry.methods:  # else Starlette's 405, which needs no key
            authorize(scope, self.entry)
        await super().handle(scope, receive, send)


def authorize(scope: Scope, entry: ApiRoute) -> None:
    """Check the request's gateway key against the scope ``entry`` requires, and its path when the key is limited
    to some routes (gateway/keys.py), when the app has keys (``GatewayApp.keys``); raises Unauthenticated (401) or
    PermissionDenied (403). The ``llm`` scope is the proxy's to check: it records the key id on the call's span
    and applies the key's model list and limits."""
    keys: GatewayKeys | None = getattr(scope.get("app"), "keys", None)
    if keys is not None and entry.scope != "llm":
        keys.authorize_key(entry.scope, authorization_of(scope), entry.path)


def authorize_scope(scope: Scope, required: str) -> None:
    """Check the request's key for a scope beyond its route's own, when which one depends on what the request
    reaches (the MLflow API reaching a prompt: ``prompts:read`` / ``prompts:write``, gateway/api/mlflow_registry.py)."""
    keys: GatewayKeys | None = getattr(scope.get("app"), "keys", None)
    if keys is not None:
        keys.authorize(required, authorization_of(scope))


def authorization_of(scope: Scope) -> bytes | None:
    """The ``Authorization`` header's raw value (what gateway/keys.py hashes)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


def route_family(scope: Scope) -> ErrorFamily:
    """The error family of the route a request was matched to (MLflow's for an unmatched path)."""
    route = scope.get("route")
    return route.entry.family if isinstance(route, TableRoute) else "mlflow"


class HotRoute:
    """A hot route as the fast dispatcher holds it. ``ref_of`` is set for the scoring routes, which
    ``GatewayApp`` answers without a Request or Response object (``serving.answer``)."""

    __slots__ = ("prefix", "ref_of", "regex", "route", "suffix", "tail_param")

    def __init__(self, route: TableRoute, full_path: str) -> None:
        self.route = route
        self.ref_of = serving.REF_OF.get(route.endpoint)
        regex, _, convertors = compile_path(full_path)
        if any(type(c).__name__ != "StringConvertor" for c in convertors.values()):
            raise ValueError(f"hot route {full_path}: only plain {{name}} parameters are matched by the fast path")
        self.regex = regex
        # Cheap checks before the regex: the literal text before the first parameter and after the last.
        self.prefix = full_path.partition("{")[0]
        self.suffix = full_path.rpartition("}")[2]
        # A path whose only parameter is its last segment (``/api/prompts/{name}``) is matched without the regex.
        rest = full_path[len(self.prefix) :]
        single = len(convertors) == 1 and rest.startswith("{") and rest.endswith("}") and "/" not in rest
        self.tail_param = next(iter(convertors)) if single else None


# (prefix, suffix, tail_param, regex, route) of a patterned hot route
_Pattern = tuple[str, str, str | None, re.Pattern[str], HotRoute]


class HotRoutes:
    """The fast dispatcher: per method, a dict of the fixed hot paths and a tuple of the patterned ones."""

    __slots__ = ("_by_method",)

    def __init__(self, hot: Sequence[HotRoute]) -> None:
        by_method: dict[str, tuple[dict[str, HotRoute], list[_Pattern]]] = {}
        for route in hot:
            for method in route.route.entry.methods:
                exact, patterned = by_method.setdefault(method, ({}, []))
                if "{" not in route.route.entry.path:
                    exact[route.route.entry.path] = route
                else:  # unpacked in the loop: cheaper than reading the attributes per request
                    patterned.append((route.prefix, route.suffix, route.tail_param, route.regex, route))
        # per method: the fixed paths (None when there are none: no lookup) and the patterns, in table order
        self._by_method: dict[str, tuple[dict[str, HotRoute] | None, tuple[_Pattern, ...]]] = {
            method: (exact or None, tuple(patterned)) for method, (exact, patterned) in by_method.items()
        }

    def match(self, scope: Scope) -> HotRoute | None:
        """The hot route for ``scope``, with ``route``, ``endpoint`` and ``path_params`` set in it as
        Starlette's router sets them; None when the request is not for a hot route."""
        tables = self._by_method.get(scope["method"])
        if tables is None:
            return None
        exact, patterned = tables
        path: str = scope["path"]
        hot = exact.get(path) if exact is not None else None
        if hot is not None:
            params: dict[str, str] = {}
        else:
            for prefix, suffix, tail, regex, hot in patterned:  # noqa: B007 (hot is the match after the break)
                if path.startswith(prefix):
                    if tail is not None:  # the last segment is the parameter: no regex
                        value = path[len(prefix) :]
                        if value and "/" not in value:
                            params = {tail: value}
                            break
                    elif path.endswith(suffix):
                        found = regex.match(path)
                        if found is not None:
                            params = found.groupdict()  # plain strings (no convertor)
                            break
            else:
                return None
        route = hot.route
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        return hot

    def paths(self) -> list[tuple[str, str]]:
        """(method, path) of every hot route, fixed ones first."""
        return [
            (method, hot.route.entry.path)
            for method, (exact, patterned) in self._by_method.items()
            for hot in (*(exact or {}).values(), *(pattern[-1] for pattern in patterned))
        ]


# Paths below these prefixes share one Mount: a request for another path pays one prefix check for all.
MOUNTED_PREFIXES = ("/api/prompts",)


def build_routing(table: Sequence[ApiRoute]) -> tuple[list[BaseRoute], HotRoutes]:
    """Starlette's routes for ``table``, in its order (the first full match wins), and the fast dispatcher
    over its hot entries. Entries under a ``MOUNTED_PREFIXES`` prefix go into one Mount, placed where the
    first of them is."""
    slots: list[BaseRoute | str] = []  # a route, or the prefix of a Mount built once its routes are known
    mounted: dict[str, list[BaseRoute]] = {}
    hot: list[HotRoute] = []
    for entry in table:
        prefix = next((p for p in MOUNTED_PREFIXES if entry.path.startswith(p + "/")), None)
        if prefix is None:
            route = TableRoute(entry, entry.path)
            slots.append(route)
        else:
            route = TableRoute(entry, entry.path[len(prefix) :])
            if prefix not in mounted:
                mounted[prefix] = []
                slots.append(prefix)
            mounted[prefix].append(route)
        if entry.hot:
            hot.append(HotRoute(route, entry.path))
    routes = [Mount(slot, routes=mounted[slot]) if isinstance(slot, str) else slot for slot in slots]
    return routes, HotRoutes(hot)


def table_routes(table: Sequence[ApiRoute]) -> list[BaseRoute]:
    """Starlette's routes for ``table`` (for an app of a few of them, in tests)."""
    return build_routing(table)[0]
