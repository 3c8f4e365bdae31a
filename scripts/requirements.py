#!/usr/bin/env python3
"""Print the third-party requirements of bsopt packages, one per line, from their
pyproject.toml files alone (no source needed).

    python scripts/requirements.py services/digest-worker > /tmp/requirements.txt
    pip install -c constraints.txt -r /tmp/requirements.txt

A dependency on ``bsopt-libs[<extras>]`` is replaced by the core dependencies of
``libs/pyproject.toml`` plus those of the named extras. A Dockerfile installs this list
in a layer of its own, before it copies any source, so a code change does not reinstall
the dependencies; it then installs the packages themselves with ``pip install --no-deps``.
Arguments are package directories, optionally with extras: ``libs[http,test]``.
Needs Python >= 3.11 (tomllib) and nothing else.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBS = ROOT / "libs"
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_ARG = re.compile(r"^(.*?)(?:\[([^\]]*)\])?$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(directory: Path) -> dict:
    with (directory / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def _extras(text: str | None) -> list[str]:
    return [e.strip() for e in (text or "").split(",") if e.strip()]


def requirements(directory: Path, extras: list[str] | None = None) -> list[str]:
    """The requirements of the package in ``directory`` (with ``extras``), local bsopt
    packages expanded to their own requirements."""
    local = {_norm(_project(LIBS)["name"]): LIBS}
    project = _project(directory)
    local[_norm(project["name"])] = directory
    out: list[str] = []
    seen: set[tuple[str, str]] = set()

    def visit(where: Path, wanted: list[str]) -> None:
        proj = _project(where)
        optional = proj.get("optional-dependencies", {})
        unknown = [e for e in wanted if e not in optional]
        if unknown:
            raise SystemExit(f"requirements: {proj['name']} has no extra {', '.join(unknown)}")
        reqs = list(proj.get("dependencies", []))
        for extra in wanted:
            reqs += optional[extra]
        for req in reqs:
            m = _REQ.match(req)
            if m is None:
                raise SystemExit(f"requirements: cannot parse {req!r} in {where / 'pyproject.toml'}")
            name = _norm(m.group(1))
            if name in local:
                key = (name, ",".join(sorted(_extras(m.group(2)))))
                if key not in seen:
                    seen.add(key)
                    visit(local[name], _extras(m.group(2)))
            elif req not in out:
                out.append(req)

    visit(directory, extras or [])
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    lines: list[str] = []
    for arg in argv:
        m = _ARG.match(arg)
        assert m is not None
        directory = Path(m.group(1))
        if not (directory / "pyproject.toml").is_file():
            print(f"requirements: no pyproject.toml in {directory}", file=sys.stderr)
            return 2
        for req in requirements(directory.resolve(), _extras(m.group(2))):
            if req not in lines:
                lines.append(req)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
