"""What the ``gateway`` commands print, shared by every command group (``models``, ``prompts``)."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, one trailing newline (what ``--json`` prints)."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
