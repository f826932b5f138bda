"""What the prompt registry holds, and the indexed, read-only view of all of it that every replica
serves from (``Catalog``): built from one consistent read of the store, never changed after.

Everything a GET answers is prepared when the catalog is built (JSON bodies and their ETags,
compiled templates), so a read on the request path is a dictionary lookup.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from gateway.errors import InvalidParameter, NotFound
from prompts.refs import LATEST, PromptRef
from prompts.templates import CompiledTemplate, TemplateType, compile_template

MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Prompt:
    """A registered prompt: a name, a description and tags; its versions and aliases live apart."""

    name: str
    description: str | None
    tags: dict[str, str]
    created_at: int
    updated_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class PromptVersion:
    """One immutable version: a text template (``str``) or a chat template (``[{role, content}]``)."""

    name: str
    version: int
    template_type: TemplateType
    template: str | list[dict[str, str]]
    variables: tuple[str, ...]
    commit_message: str | None
    tags: dict[str, str]
    response_format: dict[str, Any] | None
    model_config: dict[str, Any] | None
    created_at: int

    def to_dict(self, aliases: Sequence[str] = ()) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["variables"] = list(self.variables)
        data["aliases"] = list(aliases)
        return data


class CachedVersion:
    """A version as the catalog serves it: compiled, with its aliases, JSON body and ETag."""

    __slots__ = ("aliases", "body", "compiled", "etag", "version")

    def __init__(self, version: PromptVersion, aliases: list[str]) -> None:
        self.version = version
        self.aliases = aliases
        self.compiled: CompiledTemplate = compile_template(version.template)
        self.body = orjson.dumps(version.to_dict(aliases))
        self.etag = etag_of(self.body)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _no_prompt(name: str) -> NotFound:
    return NotFound(f"Prompt {name!r} not found.")


class Catalog:
    """Every prompt, version and alias at one store revision (``aliases`` includes ``latest``)."""

    def __init__(
        self,
        revision: int,
        prompts: Iterable[Prompt],
        versions: Iterable[PromptVersion],
        aliases: Iterable[tuple[str, str, int]],
    ) -> None:
        self.revision = revision
        self.prompts: dict[str, Prompt] = {p.name: p for p in sorted(prompts, key=lambda p: p.name)}
        self.names: list[str] = list(self.prompts)  # sorted: the order of pagination
        by_version: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.aliases: dict[tuple[str, str], int] = {}
        for name, alias, number in sorted(aliases):
            by_version[(name, number)].append(alias)
            self.aliases[(name, alias)] = number
        self.versions: dict[tuple[str, int], CachedVersion] = {}
        self.versions_of: dict[str, list[CachedVersion]] = defaultdict(list)
        for version in sorted(versions, key=lambda v: (v.name, v.version)):
            cached = CachedVersion(version, by_version.get((version.name, version.version), []))
            self.versions[(version.name, version.version)] = cached
            self.versions_of[version.name].append(cached)
            self.aliases[(version.name, LATEST)] = version.version  # sorted: the highest wins
        self._prompt_bodies: dict[str, tuple[bytes, str]] = {}

    @classmethod
    def empty(cls) -> Catalog:
        return cls(-1, (), (), ())

    # -- lookups (each raises NotFound naming what is missing) ----------------------------------

    def prompt(self, name: str) -> Prompt:
        prompt = self.prompts.get(name)
        if prompt is None:
            raise _no_prompt(name)
        return prompt

    def version(self, name: str, number: int) -> CachedVersion:
        cached = self.versions.get((name, number))
        if cached is None:
            if name not in self.prompts:
                raise _no_prompt(name)
            raise NotFound(f"Prompt {name!r} has no version {number}.")
        return cached

    def by_alias(self, name: str, alias: str) -> CachedVersion:
        """The version ``alias`` names; ``latest`` (any case) is the highest version."""
        key = LATEST if alias.lower() == LATEST else alias
        number = self.aliases.get((name, key))
        if number is None:
            if name not in self.prompts:
                raise _no_prompt(name)
            if key == LATEST:
                raise NotFound(f"Prompt {name!r} has no versions yet.")
            raise NotFound(f"Prompt {name!r} has no alias {alias!r}.")
        return self.versions[(name, number)]

    def resolve(self, ref: PromptRef) -> CachedVersion:
        """The version a reference names; a bare name means ``@latest``."""
        if ref.version is not None:
            return self.version(ref.name, ref.version)
        return self.by_alias(ref.name, ref.alias or LATEST)

    # -- JSON answers ---------------------------------------------------------------------------

    def prompt_dict(self, name: str, *, with_versions: bool = False) -> dict[str, Any]:
        prompt = self.prompt(name)
        versions = self.versions_of.get(name, [])
        data: dict[str, Any] = dataclasses.asdict(prompt)
        data["latest_version"] = versions[-1].version.version if versions else None
        data["aliases"] = {
            alias: number for (n, alias), number in self.aliases.items() if n == name and alias != LATEST
        }
        if with_versions:
            data["versions"] = [v.version.to_dict(v.aliases) for v in versions]
        return data

    def prompt_body(self, name: str) -> tuple[bytes, str]:
        """``GET /api/prompts/{name}``: the prompt with every version, and its ETag (built once)."""
        cached = self._prompt_bodies.get(name)
        if cached is None:
            body = orjson.dumps(self.prompt_dict(name, with_versions=True))
            cached = self._prompt_bodies[name] = (body, etag_of(body))
        return cached

    def search(
        self,
        *,
        name_prefix: str = "",
        tags: Mapping[str, str | None] | None = None,
        max_results: int = DEFAULT_MAX_RESULTS,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Prompts in name order whose name starts with ``name_prefix`` and that carry every tag in
        ``tags`` (a ``None`` value: the key with any value). Returns a page and the next page's token."""
        if not 1 <= max_results <= MAX_RESULTS_LIMIT:
            raise InvalidParameter(
                f"Invalid max_results {max_results}: expected an integer from 1 to {MAX_RESULTS_LIMIT}."
            )
        after = decode_page_token(page_token) if page_token else None
        wanted = dict(tags or {})
        page: list[dict[str, Any]] = []
        next_token = None
        for name in self.names:
            if after is not None and name <= after:
                continue
            if not name.startswith(name_prefix):
                continue
            prompt_tags = self.prompts[name].tags
            if any(k not in prompt_tags or (v is not None and prompt_tags[k] != v) for k, v in wanted.items()):
                continue
            if len(page) == max_results:
                next_token = encode_page_token(page[-1]["name"])
                break
            page.append(self.prompt_dict(name))
        return page, next_token


def encode_page_token(last_name: str) -> str:
    return base64.urlsafe_b64encode(last_name.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParameter(
            f"Invalid page_token {token!r}: pass the next_page_token of a previous answer."
        ) from None
