"""The Responses API's follow-ups on a stored response, and the target each one must reach.

``GET /v1/responses/{id}`` (with the client's query: ``include[]``, ``stream``, ``starting_after``...),
``DELETE /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel`` and ``GET /v1/responses/{id}/input_items``
have no ``model``: the response's pin (gateway/llm/response_pins.py) names the route and the target that
created it, and the call goes to that target only, with the route's retries and timeouts, under the same
spans and metrics as any call (its operation is not inference: no token metrics). A ``POST /v1/responses``
with ``previous_response_id`` goes to the pinned target too, or to another target of the requested route on
the same provider account (same base URL and key), when the request names another route.

An id this gateway has no pin for is a 404 in OpenAI's shape naming it: the gateway cannot know which of its
targets holds it, and asking each would send the id to providers that never saw it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qs

from gateway.llm.errors import InvalidRequestError
from gateway.llm.request_body import (
    CANCEL_RESPONSE,
    DELETE_RESPONSE,
    LIST_INPUT_ITEMS,
    RETRIEVE_RESPONSE,
    Operation,
    ParsedCall,
)
from gateway.llm.response_pins import Pin
from gateway.llm.routes_config import Route, Target
from gateway.telemetry import semconv as sc

FOLLOW_UPS = frozenset({RETRIEVE_RESPONSE, DELETE_RESPONSE, CANCEL_RESPONSE, LIST_INPUT_ITEMS})
# What a response id may look like here (OpenAI's are resp_<hex>): no slash, no dot-dot, nothing to escape.
_RESPONSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}")


class FollowUpCall(ParsedCall):
    """A follow-up as the upstream side sees a call: no body, a path naming the response, the client's query."""

    __slots__ = ("response_id", "query")

    def __init__(self, operation: Operation, response_id: str, query: str, target: Target) -> None:
        # No body to parse: the fields ParsedCall reads from one are set directly.
        self.operation = operation
        self.raw = b""
        self.data = {}
        self.model = target.model
        self.pinned = target
        self.prompt = None
        self.previous_response_id = None
        self.extra_headers = None
        self._changed = False
        self._bodies = {}
        self.response_id = response_id
        self.query = query
        stream = parse_qs(query).get("stream", ()) if query else ()
        self.stream = operation.streams and any(value.lower() == "true" for value in stream)

    @property
    def upstream_path(self) -> str:
        path = f"/responses/{self.response_id}{self.operation.path}"
        return f"{path}?{self.query}" if self.query else path

    def body_for(self, upstream_model: str) -> bytes:
        return b""

    def request_attributes(self) -> dict[str, object]:
        attributes: dict[str, object] = {sc.OPENAI_API_TYPE: sc.OPENAI_API_TYPE_RESPONSES}
        if self.stream:
            attributes[sc.GEN_AI_REQUEST_STREAM] = True
        return attributes


def unknown_response(response_id: str, why: str = "") -> InvalidRequestError:
    return InvalidRequestError(
        f"No response {response_id!r} is known to this gateway{why}: a stored response is reached through the "
        "target that created it, which the gateway remembers for the responses it relayed (for 30 days with "
        "redis_url; else in this server's memory).",
        status=404,
        code="response_not_found",
    )


def check_response_id(response_id: str) -> None:
    if not _RESPONSE_ID.fullmatch(response_id):
        raise unknown_response(response_id[:300])


def pinned_target(pin: Pin, routes: Mapping[str, Route], response_id: str) -> tuple[Route, Target]:
    """The route and target a pin names, as this gateway is configured now."""
    route = routes.get(pin.route)
    target = next((t for t in route.targets if t.label == pin.target), None) if route is not None else None
    if route is None or target is None:
        raise unknown_response(
            response_id, f" (its target {pin.target} of route {pin.route!r} is no longer configured)"
        )
    return route, target


def previous_response_target(pin: Pin, route: Route, routes: Mapping[str, Route], response_id: str) -> Target:
    """The target of ``route`` that can continue the pinned response: the same one, or one on its account."""
    for target in route.targets:
        if target.label == pin.target:
            return target
    _, origin = pinned_target(pin, routes, response_id)
    for target in route.targets:
        if target.base_url == origin.base_url and target.api_key_env == origin.api_key_env:
            return target
    raise InvalidRequestError(
        f"'previous_response_id' {response_id!r} was created by {origin.label} (route {pin.route!r}), and route "
        f"{route.name!r} has no target on that provider account: continue it with model {pin.route!r}.",
        code="previous_response_elsewhere",
    )
