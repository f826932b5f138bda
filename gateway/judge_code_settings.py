"""``judges.code``: code judges, Python functions that judge in process with no LLM call (judges/code.py
runs them), as MLflow's ``@scorer`` functions and Phoenix's code evaluators do.

```yaml
judges:
  code:
    - name: has_citation                   # a judge name, as a custom judge's
      function: my_checks.rules:has_citation  # "package.module:function", importable by the gateway
      value_kind: {type: bool}             # bool, int/float with min and max, or categorical with labels
      description: Does the answer cite a source?   # optional
      version: 1                           # optional (1): raise it when the function changes its verdicts
      thread: false                        # optional: true runs a sync function in a thread
```

Configuration only, never the API: naming a callable is running code in the gateway's processes, which
is an operator's decision. Here only the shape is read; the function is imported and its signature and
value kind checked when the judges start (judges/catalog.py), a ConfigError naming ``judges.code[i]``.

Imports nothing of ours but gateway/config_values.py (gateway/judge_settings.py holds these).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.config_values import ConfigError, boolean, integer, keys_of, optional_text, text

_KEYS: Final = ("name", "function", "value_kind", "description", "version", "thread")
FUNCTION_PATTERN: Final = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


@dataclass(frozen=True, slots=True)
class CodeJudgeSettings:
    """One entry of ``judges.code``; ``value_kind`` as written (judges/definitions.py reads it)."""

    name: str
    function: str
    value_kind: Any = field(default_factory=lambda: {"type": "bool"})
    description: str | None = None
    version: int = 1
    thread: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodeJudgeSettings:
        return cls(**data)


def parse_code_judges(raw: Any) -> tuple[CodeJudgeSettings, ...]:
    """``judges.code``: a list of code judges; a ConfigError names ``judges.code[i].<key>``."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"judges.code: {raw!r} must be a list of code judges.")
    judges: list[CodeJudgeSettings] = []
    for index, entry in enumerate(raw):
        where = f"judges.code[{index}]"
        data = keys_of(where, entry, _KEYS)
        for key in ("name", "function"):
            if key not in data:
                raise ConfigError(f"{where}.{key} is required.")
        function = text(f"{where}.function", data["function"])
        if not FUNCTION_PATTERN.fullmatch(function):
            raise ConfigError(
                f"{where}.function: {function!r} must name a Python callable as 'package.module:function'."
            )
        values: dict[str, Any] = {"name": text(f"{where}.name", data["name"]), "function": function}
        if "value_kind" in data:
            values["value_kind"] = data["value_kind"]
        if "description" in data:
            values["description"] = optional_text(f"{where}.description", data["description"])
        if "version" in data:
            values["version"] = integer(1)(f"{where}.version", data["version"])
        if "thread" in data:
            values["thread"] = boolean(f"{where}.thread", data["thread"])
        judges.append(CodeJudgeSettings(**values))
    names = [judge.name for judge in judges]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"judges.code: the name(s) {', '.join(twice)} appear more than once.")
    return tuple(judges)
