"""The judges, kept in the prompt registry: judge ``X`` is the version of prompt ``judges.X`` at alias
``production`` (its latest version when that alias is gone).

- **Built-ins** are seeded when the gateway starts (``seed_builtins``): version 1 of each
  ``judges.<name>`` that has no version yet, with alias ``production``, in one transaction under the
  prompt's row lock (``PromptStore.seed_version``), so any number of workers and replicas starting at
  once on one store, SQLite or PostgreSQL, seed each built-in once. A built-in that exists is never
  touched again, edited or not: its value kind and required fields come from judges/builtin.py, its
  instructions from the prompt, its route from the version's ``model_config.model_name`` when set,
  else ``judges.route``.
- **Custom judges** (``create``) are prompt versions too: the instructions as a text template, the
  route in ``model_config`` (``{"model_name": route, "temperature": 0}``), the structured-output schema
  as ``response_format``, the value kind (and description) in the version's tags ``judge.value_kind``
  and ``judge.description``; ``production`` moves to the new version in the same transaction.
  Creating a judge again under its name is editing it: a new version. Every assessment records the
  prompt name and version that judged.

**Code judges** (judges/code.py) come from the configuration (``judges.code``), loaded once when the
catalog is built (a ConfigError naming the entry when one cannot be used), and listed with the others; no
custom judge may take a code judge's name (nor a code judge a built-in's).

Reads come from the worker's prompt cache (prompts/cache.py: the whole registry in memory, reloaded
when the store revision moves); the judges are rebuilt from it only when it was reloaded. Writes go
through ``PromptStore``; the caller refreshes the cache after (and tells the other replicas).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from gateway.errors import AlreadyExists, GatewayError, InvalidParameter, NotFound
from gateway.judge_settings import JudgesSettings
from judges.builtin import BUILTINS, Builtin
from judges.code import load_code_judges
from judges.definitions import (
    ALLOWED_VARIABLES,
    Judge,
    JudgeSpec,
    ValueKind,
    check_instructions,
    response_format,
    validate_judge_name,
    value_kind_from_schema,
)
from prompts.cache import PromptCache
from prompts.catalog import Catalog, PromptVersion
from prompts.store import PromptStore

logger = logging.getLogger("judges.catalog")

PREFIX: Final = "judges."
PRODUCTION: Final = "production"
TAG_KIND: Final = "judge.kind"  # builtin | custom
TAG_VALUE_KIND: Final = "judge.value_kind"  # the value kind's API shape, as JSON
TAG_DESCRIPTION: Final = "judge.description"
MAX_GUIDELINES: Final = 100
MAX_GUIDELINE_CHARS: Final = 4096


class JudgeUnusable(GatewayError):
    """A prompt ``judges.X`` whose production version cannot be read as a judge (edited by hand)."""

    status = 409
    error_code = "INVALID_STATE"


def prompt_name(judge_name: str) -> str:
    return PREFIX + judge_name


def judge_from_version(version: PromptVersion, settings: JudgesSettings) -> Judge:
    """The judge a version of prompt ``judges.<name>`` defines; JudgeUnusable naming what is wrong."""
    name = version.name.removeprefix(PREFIX)
    builtin = BUILTINS.get(name)
    where = f"Prompt {version.name!r} version {version.version}"
    if not isinstance(version.template, str):
        raise JudgeUnusable(f"{where} is a chat template; a judge's instructions are a text template.")
    try:
        used = check_instructions(version.template, allowed=builtin.variables if builtin else ALLOWED_VARIABLES)
    except InvalidParameter as exc:
        raise JudgeUnusable(f"{where} is not a judge: {exc.message}") from None
    config = version.model_config or {}
    route = config.get("model_name") if isinstance(config.get("model_name"), str) else None
    description = version.tags.get(TAG_DESCRIPTION)
    if builtin is not None:
        return Judge(
            name=name,
            instructions=version.template,
            value_kind=builtin.value_kind,
            route=route or settings.route,
            required=builtin.required,
            prompt_name=version.name,
            prompt_version=version.version,
            builtin=True,
            description=description or builtin.description,
        )
    kind = _value_kind(version)
    if kind is None:
        raise JudgeUnusable(f"{where} is not a judge: it has no value kind (tag {TAG_VALUE_KIND!r}).")
    if route is None:
        raise JudgeUnusable(f"{where} is not a judge: its model_config has no model_name (the judge's LLM route).")
    return Judge(
        name=name,
        instructions=version.template,
        value_kind=kind,
        route=route,
        required=tuple((variable,) for variable in used),
        prompt_name=version.name,
        prompt_version=version.version,
        description=description,
    )


def _value_kind(version: PromptVersion) -> ValueKind | None:
    tag = version.tags.get(TAG_VALUE_KIND)
    if tag is not None:
        try:
            return ValueKind.from_dict(json.loads(tag))
        except (ValueError, InvalidParameter):
            return None
    try:
        schema = (version.response_format or {})["json_schema"]["schema"]["properties"]["result"]
    except (KeyError, TypeError):
        return None
    return value_kind_from_schema(schema)


def _version_fields(
    name: str, kind: ValueKind, route: str | None, kind_tag: str, description: str | None
) -> dict[str, Any]:
    """The tags, model_config and response_format of a judge's prompt version."""
    tags = {TAG_KIND: kind_tag, TAG_VALUE_KIND: json.dumps(kind.to_dict())}
    if description is not None:
        tags[TAG_DESCRIPTION] = description
    model_config: dict[str, Any] = {"temperature": 0}
    if route is not None:
        model_config["model_name"] = route
    return {"tags": tags, "model_config": model_config, "response_format": response_format(name, kind)}


def seed_builtins(store: PromptStore, catalog: Catalog) -> list[str]:
    """Seed the built-ins ``catalog`` shows without a version; returns the names this call created (a
    concurrent seeder may have created the others). Blocking: run it off the event loop."""
    seeded: list[str] = []
    for builtin in BUILTINS.values():
        name = prompt_name(builtin.name)
        if catalog.versions_of.get(name):
            continue
        if _seed(store, builtin) is not None:
            seeded.append(builtin.name)
    if seeded:
        logger.info("Seeded the built-in judge(s) %s as prompts %s*@%s", ", ".join(seeded), PREFIX, PRODUCTION)
    return seeded


def _seed(store: PromptStore, builtin: Builtin) -> PromptVersion | None:
    return store.seed_version(
        prompt_name(builtin.name),
        builtin.instructions,
        alias=PRODUCTION,
        description=builtin.description,
        commit_message="Built-in judge, seeded by the gateway",
        **_version_fields(builtin.name, builtin.value_kind, None, "builtin", builtin.description),
    )


class JudgeCatalog:
    """Every judge, read from the prompt cache; custom judges written through its store."""

    def __init__(self, cache: PromptCache, settings: JudgesSettings) -> None:
        self.cache = cache
        self.settings = settings
        self._built: Catalog | None = None
        self._judges: dict[str, Judge | JudgeUnusable] = {}
        self.code: dict[str, Judge] = load_code_judges(settings.code, BUILTINS)

    @property
    def store(self) -> PromptStore:
        return self.cache.store

    def seed(self) -> list[str]:
        """Seed the built-ins missing from the cache's catalog (blocking; refresh the cache after)."""
        return seed_builtins(self.store, self.cache.catalog)

    def judges(self) -> dict[str, Judge | JudgeUnusable]:
        """Every judge by name, in name order (a prompt ``judges.X`` that is not one: its problem)."""
        catalog = self.cache.catalog
        if catalog is not self._built:
            judges = {**self._read(catalog), **self.code}  # a code judge shadows a prompt of its name
            self._judges = dict(sorted(judges.items()))
            self._built = catalog
        return self._judges

    def _read(self, catalog: Catalog) -> dict[str, Judge | JudgeUnusable]:
        judges: dict[str, Judge | JudgeUnusable] = {}
        for name in catalog.names:
            if not name.startswith(PREFIX) or not catalog.versions_of.get(name):
                continue
            number = catalog.aliases.get((name, PRODUCTION)) or catalog.versions_of[name][-1].version.version
            try:
                judges[name.removeprefix(PREFIX)] = judge_from_version(
                    catalog.versions[(name, number)].version, self.settings
                )
            except JudgeUnusable as exc:
                judges[name.removeprefix(PREFIX)] = exc
        return judges

    def get(self, name: str) -> Judge:
        """The judge ``name``: NotFound (naming the judges there are), or JudgeUnusable."""
        found = self.judges().get(name)
        if found is None:
            validate_judge_name(name)
            known = ", ".join(self.judges()) or "none yet"
            raise NotFound(f"No judge {name!r} (judges: {known}).")
        if isinstance(found, JudgeUnusable):
            raise found
        return found

    def runnable(
        self, name: str, *, guidelines: Any = None, routes: Collection[str] | None = None, field: str = "judge"
    ) -> Judge:
        """The judge ``name`` ready to run: it has a route (a built-in without ``judges.route`` is a 400
        naming it), the route exists (when ``routes`` is given), and the guidelines judge has its
        ``guidelines`` (a string or a list of strings; no other judge takes them)."""
        judge = self.get(name)
        if judge.code is not None:
            if guidelines is not None:
                raise InvalidParameter(f"Field '{field}.guidelines': only the guidelines judge takes guidelines.")
            return judge
        if judge.route is None:
            raise InvalidParameter(
                f"The built-in judge {name!r} has no LLM route to run on: set judges.route in the configuration "
                "(the name of an llm route)."
            )
        if routes is not None and judge.route not in routes:
            raise InvalidParameter(
                f"The judge {name!r} runs on LLM route {judge.route!r}, which this gateway does not have "
                f"(routes: {', '.join(sorted(routes)) or 'none'})."
            )
        if not judge.uses_guidelines:
            if guidelines is not None:
                raise InvalidParameter(f"Field '{field}.guidelines': only the guidelines judge takes guidelines.")
            return judge
        return judge.with_guidelines(parse_guidelines(guidelines, f"{field}.guidelines"))

    def create(self, spec: JudgeSpec, *, routes: Collection[str] | None = None) -> Judge:
        """Write a custom judge (a new version of ``judges.<name>`` at ``production``). Blocking; the
        caller refreshes the cache. AlreadyExists for a built-in's name; a route the gateway does not have
        is a 400 when ``routes`` is given."""
        if spec.name in self.code:
            raise AlreadyExists(
                f"{spec.name!r} is a code judge (judges.code in the configuration); name the custom judge otherwise."
            )
        if spec.name in BUILTINS:
            raise AlreadyExists(
                f"{spec.name!r} is a built-in judge: edit its instructions as a new version of prompt "
                f"{prompt_name(spec.name)!r} (and move alias {PRODUCTION!r} to it), or name the custom judge otherwise."
            )
        if routes is not None and spec.route not in routes:
            raise InvalidParameter(
                f"Field 'route': {spec.route!r} is not an LLM route of this gateway "
                f"(routes: {', '.join(sorted(routes)) or 'none'})."
            )
        version = self.store.create_version(
            prompt_name(spec.name),
            spec.instructions,
            commit_message=f"Judge {spec.name}: {spec.value_kind.describe()}, route {spec.route}",
            alias=PRODUCTION,
            **_version_fields(spec.name, spec.value_kind, spec.route, "custom", spec.description),
        )
        return judge_from_version(version, self.settings)

    def at_version(self, name: str, version: int) -> Judge:
        """The judge ``name`` at ``version`` (a job or a resumed run pinned it): a prompt version of
        ``judges.<name>``, or the code judge while its configured version is that one (NotFound else)."""
        code = self.code.get(name)
        if code is not None:
            if code.prompt_version != version:
                raise NotFound(
                    f"The code judge {name!r} is at version {code.prompt_version} in the configuration, not {version}."
                )
            return code
        cached = self.cache.catalog.version(prompt_name(name), version)
        return judge_from_version(cached.version, self.settings)


def parse_guidelines(value: Any, field: str = "guidelines") -> tuple[str, ...]:
    """Guidelines as given: a string (one guideline per non-empty line) or a list of non-empty strings."""
    if isinstance(value, str):
        lines: Sequence[Any] = [line.strip(" \t-*") for line in value.splitlines() if line.strip(" \t-*")]
    elif isinstance(value, list):
        lines = value
    else:
        raise InvalidParameter(
            f"Field '{field}' is required by the guidelines judge: a string or a list of strings, "
            f"got {'nothing' if value is None else type(value).__name__}."
        )
    if not 1 <= len(lines) <= MAX_GUIDELINES:
        raise InvalidParameter(f"Field '{field}' must hold 1 to {MAX_GUIDELINES} guidelines, got {len(lines)}.")
    for index, line in enumerate(lines):
        if not isinstance(line, str) or not line.strip() or len(line) > MAX_GUIDELINE_CHARS:
            raise InvalidParameter(
                f"Field '{field}[{index}]' must be a non-empty string of at most {MAX_GUIDELINE_CHARS} characters."
            )
    return tuple(line.strip() for line in lines)


def judge_list(judges: Mapping[str, Judge | JudgeUnusable]) -> list[dict[str, Any]]:
    """``GET /api/judges``: each judge's API shape; an unusable one as its name, prompt and problem."""
    answer: list[dict[str, Any]] = []
    for name, judge in judges.items():
        if isinstance(judge, JudgeUnusable):
            answer.append({"name": name, "prompt_name": prompt_name(name), "problem": judge.message})
        else:
            answer.append(judge.to_dict())
    return answer
