"""MLflow's search language for registered models and model versions, evaluated in memory.

What ``MlflowClient.search_registered_models`` and ``search_model_versions`` send: a ``filter`` of clauses
joined by ``AND`` (``name = 'iris'``, ``name LIKE 'ir%'``, ``tags.team = 'ml'``,
``tags.`mlflow.prompt.is_prompt` = 'true'``, ``version_number > 2``, ``run_id IN ('a', 'b')``), ``order_by``
clauses (``name ASC``, ``last_updated_timestamp DESC``) and ``max_results`` / ``page_token`` pages. The rules are
MLflow server's (mlflow/utils/search_utils.py, mlflow/store/model_registry/sqlalchemy_store.py): which keys
and comparators each entity takes, LIKE's ``%`` and ``_`` (ILIKE: any case), a tag the entity lacks matches no
clause but for ``mlflow.prompt.is_prompt`` (a model lacks it: ``!= 'true'`` and ``= 'false'`` match), names
ascending then (versions) version numbers descending after the given order, and an offset in the page token.

The registry is small and read whole, so clauses are evaluated over the entities' MLflow JSON
(gateway/api/mlflow_entities.py), not translated to SQL. Errors are INVALID_PARAMETER_VALUE naming the part
of the filter that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import InvalidParameter

IS_PROMPT_TAG = "mlflow.prompt.is_prompt"

Entity = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rules:
    """What one kind of entity can be searched and ordered by."""

    attributes: frozenset[str]
    numeric: frozenset[str]  # attributes compared as integers
    listable: frozenset[str]  # attributes that take IN / NOT IN
    order_keys: dict[str, str]  # order_by key -> the JSON field it sorts on
    default_order: tuple[tuple[str, bool], ...]  # (JSON field, ascending) appended unless already given
    default_max_results: int
    max_results_limit: int


MODEL_RULES = Rules(
    attributes=frozenset({"name"}),
    numeric=frozenset(),
    listable=frozenset({"name"}),
    order_keys={"name": "name", "creation_timestamp": "creation_timestamp",
                "last_updated_timestamp": "last_updated_timestamp", "timestamp": "last_updated_timestamp"},
    default_order=(("name", True),),
    default_max_results=100,
    max_results_limit=1000,
)  # fmt: skip
VERSION_RULES = Rules(
    attributes=frozenset({"name", "version_number", "run_id", "source_path"}),
    numeric=frozenset({"version_number"}),
    listable=frozenset({"name", "run_id"}),
    order_keys={"name": "name", "version_number": "version", "creation_timestamp": "creation_timestamp",
                "last_updated_timestamp": "last_updated_timestamp"},
    default_order=(("name", True), ("version", False)),
    default_max_results=10_000,
    max_results_limit=200_000,
)  # fmt: skip
_FIELDS = {"source_path": "source", "version_number": "version"}  # attribute -> JSON field, where they differ

_STRING_COMPARATORS = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"})
_TAG_COMPARATORS = frozenset({"=", "!=", "LIKE", "ILIKE"})
_NUMERIC_COMPARATORS = frozenset({"=", "!=", "<", "<=", ">", ">="})

_SPACE = re.compile(r"\s*")
_IDENTIFIER = re.compile(r"(?:(attribute|attributes|tag|tags)\.)?(`[^`]+`|\"[^\"]+\"|[A-Za-z_][\w.\-]*)")
_COMPARATOR = re.compile(r"(!=|<>|>=|<=|=|<|>|NOT\s+IN\b|IN\b|ILIKE\b|LIKE\b)", re.IGNORECASE)
_STRING = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_INTEGER = re.compile(r"-?\d{1,18}\b")  # at most 18 digits: int() of any length is not for a filter
_AND = re.compile(r"AND\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Clause:
    kind: Literal["attribute", "tag"]
    key: str
    comparator: str
    value: str | int | tuple[str, ...]

    def matches(self, entity: Entity) -> bool:
        if self.kind == "tag":
            actual = next((t["value"] for t in entity.get("tags", ()) if t["key"] == self.key), None)
            if actual is None:
                # Models do not carry the prompt tag: "not a prompt" clauses match them (MLflow's rule).
                return self.key == IS_PROMPT_TAG and (self.comparator, self.value) in (("=", "false"), ("!=", "true"))
        else:
            actual = entity.get(_FIELDS.get(self.key, self.key), "")
            if self.key == "version_number":
                actual = int(actual)
        return _COMPARE[self.comparator](actual, self.value)


def _like(pattern: str, flags: int = 0) -> re.Pattern[str]:
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), flags | re.DOTALL)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
    "LIKE": lambda a, b: _like(b).fullmatch(a) is not None,
    "ILIKE": lambda a, b: _like(b, re.IGNORECASE).fullmatch(a) is not None,
    "IN": lambda a, b: a in b,
    "NOT IN": lambda a, b: a not in b,
}


def parse_filter(text: str | None, rules: Rules) -> list[Clause]:
    """The clauses of ``text`` (None or blank: no clause, everything matches)."""
    clauses: list[Clause] = []
    if text is None or not text.strip():
        return clauses
    position = 0
    while True:
        clause, position = _clause(text, _skip(text, position), rules)
        clauses.append(clause)
        position = _skip(text, position)
        if position == len(text):
            return clauses
        found = _AND.match(text, position)
        if found is None:
            raise _bad(text, position, "expected AND between clauses (OR is not supported)")
        position = found.end()


def _skip(text: str, position: int) -> int:
    found = _SPACE.match(text, position)
    return found.end() if found else position


def _bad(text: str, position: int, what: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid filter {text!r} at character {position + 1}: {what}.")


def _clause(text: str, position: int, rules: Rules) -> tuple[Clause, int]:
    found = _IDENTIFIER.match(text, position)
    if found is None:
        raise _bad(text, position, "expected an attribute or tags.<key>")
    entity_type, key = found.group(1), found.group(2)
    if key[0] in '`"':
        key = key[1:-1]
    kind: Literal["attribute", "tag"] = "tag" if entity_type in ("tag", "tags") else "attribute"
    if kind == "attribute" and key not in rules.attributes:
        raise InvalidParameter(
            f"Invalid attribute key {key!r} in filter {text!r}: valid keys are {', '.join(sorted(rules.attributes))} "
            "and tags.<key>."
        )
    position = _skip(text, found.end())
    found = _COMPARATOR.match(text, position)
    if found is None:
        raise _bad(text, position, "expected a comparator (=, !=, LIKE, ILIKE, IN, NOT IN, <, <=, >, >=)")
    comparator = " ".join(found.group(1).upper().split()).replace("<>", "!=")
    allowed = (
        _TAG_COMPARATORS if kind == "tag" else _NUMERIC_COMPARATORS if key in rules.numeric else _STRING_COMPARATORS
    )
    if comparator in ("IN", "NOT IN") and kind == "attribute" and key not in rules.listable:
        allowed = allowed - {"IN", "NOT IN"}
    if comparator not in allowed:
        raise InvalidParameter(
            f"Invalid comparator {comparator!r} for {'tag' if kind == 'tag' else 'attribute'} {key!r} in filter "
            f"{text!r}: use one of {', '.join(sorted(allowed))}."
        )
    value, position = _value(text, _skip(text, found.end()), comparator, key in rules.numeric and kind == "attribute")
    return Clause(kind, key, comparator, value), position


def _value(text: str, position: int, comparator: str, numeric: bool) -> tuple[str | int | tuple[str, ...], int]:
    if comparator in ("IN", "NOT IN"):
        if not text.startswith("(", position):
            raise _bad(text, position, f"expected a parenthesized list of quoted strings after {comparator}")
        items: list[str] = []
        position = _skip(text, position + 1)
        while True:
            found = _STRING.match(text, position)
            if found is None:
                raise _bad(text, position, "expected a quoted string in the list")
            items.append(found.group(1) if found.group(1) is not None else found.group(2))
            position = _skip(text, found.end())
            if text.startswith(")", position):
                return tuple(items), position + 1
            if not text.startswith(",", position):
                raise _bad(text, position, "expected ',' or ')' in the list")
            position = _skip(text, position + 1)
    found = _STRING.match(text, position)
    if found is not None:
        value = found.group(1) if found.group(1) is not None else found.group(2)
        if numeric:
            if _INTEGER.fullmatch(value.strip()) is None:
                raise _bad(text, position, f"expected an integer, got {value!r}")
            return int(value), found.end()
        return value, found.end()
    found = _INTEGER.match(text, position)
    if found is not None and numeric:
        return int(found.group(0)), found.end()
    raise _bad(text, position, "expected a quoted string" + (" or an integer" if numeric else ""))


def parse_order_by(clauses: Sequence[str], rules: Rules) -> list[tuple[str, bool]]:
    """``order_by`` as (JSON field, ascending) pairs, the entity's natural order appended."""
    order: list[tuple[str, bool]] = []
    for clause in clauses:
        words = clause.replace("`", " ").split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC")):
            raise InvalidParameter(f"Invalid order_by clause {clause!r}: expected '<key> [ASC|DESC]'.")
        field = rules.order_keys.get(words[0])
        if field is None:
            raise InvalidParameter(
                f"Invalid order_by key {words[0]!r}: valid keys are {', '.join(sorted(rules.order_keys))}."
            )
        if any(field == seen for seen, _ in order):
            raise InvalidParameter(f"order_by names {words[0]!r} twice: {list(clauses)!r}.")
        order.append((field, len(words) == 1 or words[1].upper() == "ASC"))
    order.extend(item for item in rules.default_order if all(item[0] != seen for seen, _ in order))
    return order


def search(
    entities: list[Entity],
    rules: Rules,
    *,
    clauses: Sequence[Clause],
    order_by: Sequence[str],
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[Entity], str | None]:
    """One page of the entities matching every clause, in order, and the next page's token (None: the last)."""
    order = parse_order_by(order_by, rules)
    limit = rules.default_max_results if max_results is None else max_results
    if not 1 <= limit <= rules.max_results_limit:
        raise InvalidParameter(
            f"Invalid value {limit} for parameter 'max_results': it must be from 1 to {rules.max_results_limit}."
        )
    offset = _offset(page_token)
    found = [e for e in entities if all(c.matches(e) for c in clauses)]
    for field, ascending in reversed(order):  # stable sorts, the last key first
        found.sort(key=lambda e: int(e[field]) if field == "version" else e[field], reverse=not ascending)
    page = found[offset : offset + limit]
    more = offset + limit < len(found)
    return page, (_token(offset + limit) if more else None)


def is_querying_prompts(clauses: Sequence[Clause]) -> bool:
    """Whether a filter asks for prompts (``tags.`mlflow.prompt.is_prompt` = 'true'``): MLflow's server then
    searches prompts and models together, else models only (its first clause on the tag decides)."""
    for clause in clauses:
        if clause.kind == "tag" and clause.key == IS_PROMPT_TAG and isinstance(clause.value, str):
            return (clause.comparator, clause.value.lower()) in (("=", "true"), ("!=", "false"))
    return False


def is_prompt_entity(entity: Entity) -> bool:
    return any(t["key"] == IS_PROMPT_TAG and t["value"].lower() == "true" for t in entity.get("tags", ()))


def _token(offset: int) -> str:
    """MLflow's page token: base64 of ``{"offset": n}``."""
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
    except (binascii.Error, ValueError, TypeError, KeyError, RecursionError):
        raise InvalidParameter(
            f"Invalid page_token {token[:100]!r}: pass the next_page_token of a previous answer."
        ) from None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidParameter(f"Invalid page_token {token[:100]!r}: its offset must be a whole number.")
    return offset
