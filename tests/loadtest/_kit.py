"""Load the kit's modules from ``loadtest/`` (a directory of scripts, not a package) and run its scripts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
PYTHON = str(Path(sys.executable))


def load(name: str) -> ModuleType:
    """Import ``loadtest/<name>.py`` under a private module name (no sys.path change)."""
    spec = importlib.util.spec_from_file_location(f"_loadtest_{name}", LOADTEST / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is built
    spec.loader.exec_module(module)
    return module


def run_script(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(LOADTEST / script), "--bin-dir", str(Path(PYTHON).parent), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
