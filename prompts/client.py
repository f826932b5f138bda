"""A Python client for the gateway's prompt registry, with an in-process cache.

    from prompts.client import load_prompt

    prompt = load_prompt("prompts:/qa@production", base_url="http://gateway:8080", ttl_s=60)
    messages = prompt.format(question="...")          # str for a text prompt, [{role, content}] for chat
    prompt.version, prompt.model_config

The cache, per reference, in the manner of Langfuse's SDK but without its stale-prompt traps:

- a fresh entry (younger than ``ttl_s``) is served without a request;
- an expired entry is served at once while ONE background refresh per reference revalidates it
  (``If-None-Match``: an unchanged prompt costs a 304);
- when the gateway is unreachable (or answers 5xx) the last good copy keeps being served, and the
  next call tries again;
- a 404 evicts the entry (the alias or prompt was deleted), so a removed alias is never served
  forever; the next call raises ``NotFound``;
- ``ttl_s=0`` revalidates on every call, synchronously, still falling back to the last good copy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.errors import DependencyError, GatewayError, NotFound
from prompts.refs import LATEST, parse_prompt_ref
from prompts.templates import CompiledTemplate, compile_template

logger = logging.getLogger("prompts.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TTL_S = 60.0


@dataclass(frozen=True, eq=False)
class LoadedPrompt:
    """One prompt version as the gateway served it; ``format(**variables)`` renders it locally."""

    name: str
    version: int
    template: str | list[dict[str, str]]
    template_type: str
    variables: tuple[str, ...]
    model_config: dict[str, Any] | None
    response_format: dict[str, Any] | None
    commit_message: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]
    _compiled: CompiledTemplate = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadedPrompt:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            template=data["template"],
            template_type=data["template_type"],
            variables=tuple(data.get("variables") or ()),
            model_config=data.get("model_config"),
            response_format=data.get("response_format"),
            commit_message=data.get("commit_message"),
            tags=dict(data.get("tags") or {}),
            aliases=tuple(data.get("aliases") or ()),
            _compiled=compile_template(data["template"]),
        )

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    def format(self, **variables: Any) -> str | list[dict[str, str]]:
        """The rendered text, or chat messages; ``InvalidParameter`` lists every missing variable."""
        return self._compiled.render(variables)


@dataclass(eq=False)
class _Entry:
    prompt: LoadedPrompt
    etag: str | None
    fetched_at: float  # time.monotonic() of the last answer that confirmed it (200 or 304)


class PromptClient:
    """Loads prompts from one gateway, caching them in this process; safe to share between threads."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self._entries: dict[str, _Entry] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._failing = False
        self.requests_sent = 0  # HTTP requests made, for observing the cache

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PromptClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cached(self, ref: str) -> LoadedPrompt | None:
        """The cached copy of ``ref`` (fresh or not), without any request."""
        entry = self._entries.get(_key_and_path(ref)[0])
        return None if entry is None else entry.prompt

    def load(self, ref: str, *, ttl_s: float | None = None) -> LoadedPrompt:
        """The prompt ``ref`` names (``prompts:/name@alias``, ``prompts:/name/3``; a bare name is ``@latest``)."""
        key, path = _key_and_path(ref)
        ttl = self.ttl_s if ttl_s is None else ttl_s
        entry = self._entries.get(key)
        if entry is None:
            return self._revalidate(key, path, None)
        if ttl <= 0:
            return self._revalidate(key, path, entry)
        if time.monotonic() - entry.fetched_at >= ttl:
            self._refresh_in_background(key, path)
        return entry.prompt

    # -- fetching -------------------------------------------------------------------------------

    def _revalidate(self, key: str, path: str, entry: _Entry | None) -> LoadedPrompt:
        """Ask the gateway now; the last good copy answers when it cannot be reached."""
        try:
            return self._fetch(key, path, entry)
        except DependencyError:
            if entry is None:
                raise
            return entry.prompt

    def _refresh_in_background(self, key: str, path: str) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        threading.Thread(target=self._refresh, args=(key, path), name=f"prompt-refresh {key}", daemon=True).start()

    def _refresh(self, key: str, path: str) -> None:
        try:
            entry = self._entries.get(key)
            if entry is not None:
                self._fetch(key, path, entry)
        except GatewayError:
            pass  # logged by _fetch; the entry stays (or was evicted on 404)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _fetch(self, key: str, path: str, entry: _Entry | None) -> LoadedPrompt:
        headers = {"If-None-Match": entry.etag} if entry is not None and entry.etag else {}
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._http.get(path, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 304 and entry is not None:
            entry.fetched_at = time.monotonic()
            self._recovered()
            return entry.prompt
        if response.status_code == 200:
            prompt = LoadedPrompt.from_json(response.json())
            self._entries[key] = _Entry(prompt, response.headers.get("etag"), time.monotonic())
            self._recovered()
            return prompt
        message = _error_message(response)
        if response.status_code == 404:
            if self._entries.pop(key, None) is not None:
                logger.info("Prompt %s is gone from the gateway (%s); evicted from the cache", key, message)
            raise NotFound(message)
        if response.status_code >= 500 or response.status_code == 429:
            raise self._unreachable(f"HTTP {response.status_code}: {message}")
        raise GatewayError(message, status=response.status_code, error_code=_error_code(response))

    def _unreachable(self, reason: str) -> DependencyError:
        if not self._failing:
            logger.warning("Prompt gateway %s unavailable (%s); serving cached prompts", self.base_url, reason)
        self._failing = True
        return DependencyError(f"The prompt gateway at {self.base_url} is unavailable: {reason}")

    def _recovered(self) -> None:
        if self._failing:
            logger.info("Prompt gateway %s reachable again", self.base_url)
        self._failing = False


def _key_and_path(ref: str) -> tuple[str, str]:
    parsed = parse_prompt_ref(ref)
    if parsed.version is not None:
        return str(parsed), f"/api/prompts/{parsed.name}/versions/{parsed.version}"
    alias = parsed.alias or LATEST
    return f"prompts:/{parsed.name}@{alias}", f"/api/prompts/{parsed.name}@{alias}"


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} from {response.request.url}"


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error_code"])
    except (ValueError, KeyError, TypeError):
        return "BAD_REQUEST"


_clients: dict[str, PromptClient] = {}
_clients_lock = threading.Lock()


def load_prompt(ref: str, *, base_url: str | None = None, ttl_s: float = DEFAULT_TTL_S) -> LoadedPrompt:
    """Load ``ref`` through a process-wide client per gateway (``base_url``, else ``GATEWAY_URL``,
    else http://127.0.0.1:8080), so every caller in the process shares one cache."""
    url = (base_url or os.environ.get("GATEWAY_URL") or DEFAULT_BASE_URL).rstrip("/")
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = PromptClient(url, ttl_s=ttl_s)
    return client.load(ref, ttl_s=ttl_s)
