"""The versions this interpreter has installed, against constraints.txt (what the suite last passed with).

    python .ci/constraints_drift.py constraints.txt          # report what differs (make test-latest)
    python .ci/constraints_drift.py --write constraints.txt  # pin what is installed (make lock)

The report lists every distribution whose version differs from its pin, the new ones and the ones no longer
installed, so a run on the newest releases shows on purpose what changed under the suite. Always exits 0
when reporting: the suite that follows is the verdict.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import distributions
from pathlib import Path

# The project itself (installed editable) and the venv's own seed are not pinned.
UNPINNED = {"gateway", "setuptools"}
HEADER = (
    "# Versions the whole suite passed with: make serve, make test, .ci/run and the Dockerfile install with\n"
    "# `pip install -c constraints.txt`. `make test-latest` runs the suite on the newest releases instead and\n"
    "# reports what differs from these; `make lock` rewrites this file from .venv once that is green.\n"
)


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and _normalize(name) not in UNPINNED:
            found[_normalize(name)] = dist.version
    return found


def pinned(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalize(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def report(path: Path) -> None:
    now, pins = installed(), pinned(path)
    changed = sorted(name for name in now.keys() & pins.keys() if now[name] != pins[name])
    added = sorted(now.keys() - pins.keys())
    gone = sorted(pins.keys() - now.keys())
    for name in changed:
        print(f"  changed  {name}: {pins[name]} -> {now[name]}")
    for name in added:
        print(f"  new      {name}=={now[name]}")
    for name in gone:
        print(f"  gone     {name}=={pins[name]}")
    print(f"constraints drift: {len(changed)} changed, {len(added)} new, {len(gone)} gone (against {path})")


def write(path: Path) -> None:
    lines = [f"{name}=={version}" for name, version in sorted(installed().items())]
    path.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} pins to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("constraints", type=Path)
    parser.add_argument("--write", action="store_true", help="pin what this interpreter has installed")
    args = parser.parse_args(argv)
    if args.write:
        write(args.constraints)
    else:
        report(args.constraints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
