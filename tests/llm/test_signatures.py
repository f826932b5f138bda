"""The proxy's functions stay small: none takes more than five parameters (a call's state lives in
its ``CallRecord``, not in long argument lists)."""

from __future__ import annotations

import ast
from pathlib import Path

LLM = Path(__file__).resolve().parents[2] / "gateway" / "llm"
MAX_PARAMETERS = 5


def test_no_function_in_gateway_llm_takes_more_than_five_parameters() -> None:
    too_long = []
    for path in sorted(LLM.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len(names) - (names[:1] in (["self"], ["cls"])) + bool(args.vararg) + bool(args.kwarg)
                if count > MAX_PARAMETERS:
                    too_long.append(f"{path.name}:{node.lineno} {node.name} ({count})")
    assert not too_long, too_long
