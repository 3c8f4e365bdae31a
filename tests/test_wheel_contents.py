"""No demo or test code in what the production images install.

Each image runs ``pip install --no-deps ./libs ./services/<name>`` (its Dockerfile): the
wheels built from those directories are all of the suite's own code an image holds
(``.dockerignore`` also keeps every ``tests/`` folder out of the build context). This
builds the libs wheel and each service's wheel once, offline, with hatchling's build API
(what pip calls), and checks their file lists: no tests, conftest, fixtures, stand-ins,
fakes, mocks or test helpers (``bsopt_common.testing``: the pytest plugin, the test
issuer, ``ServiceThread``), which the dev venv still imports from the source checkout
(editable install).

One dev-only module is shipped on purpose, named in :data:`SHIPPED_DEV_MODULES` with
the reason; any other seed/demo module fails the check.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.parent.name for p in (REPO / "services").glob("*/pyproject.toml"))
PROJECTS = {"libs": REPO / "libs", **{name: REPO / "services" / name for name in SERVICES}}
# The import package each wheel must carry (so an empty or mis-built wheel cannot pass).
MAIN_MODULE = {"libs": "bsopt_common/runtime.py", "auth-server": "bsopt_auth/__main__.py",
               "resource-api": "bsopt_api/__main__.py", "broker-gateway": "bsopt_broker/__main__.py",
               "rl-trainer": "bsopt_trainer/__main__.py", "ml-scorer": "bsopt_scorer/__main__.py",
               "digest-worker": "bsopt_digest/__main__.py"}

#: Dev-only modules a production wheel ships on purpose, with why.
SHIPPED_DEV_MODULES = {
    # `python -m bsopt_auth seed-dev` / BSOPT_AUTH_SEED_DEV_ON_START: the demo user and the
    # suite's clients with placeholder secrets. docker-compose.yml runs the auth-server
    # *image* with it, so the image needs it; both entry points refuse to seed outside
    # environment dev/test (bsopt_auth.__main__._refuse_outside_dev), and settings reject
    # the placeholder secrets there.
    "bsopt_auth/seed.py",
}

_BUILD = """
import os, sys
import hatchling.build as build
out = sys.argv[1]
for project in sys.argv[2:]:
    os.chdir(project)
    print(os.path.join(out, build.build_wheel(out)))
"""

# A path in a wheel that is test or demo code: a tests/testing/fixtures folder, a test
# module, a conftest, a stand-in, fake or mock.
_FORBIDDEN_DIRS = {"tests", "test", "testing", "fixtures", "conftest"}
_FORBIDDEN_FILE = re.compile(r"^(conftest\.py|test_.*\.py|.*_test\.py)$|stand_?in|fake|mock", re.IGNORECASE)
_DEV_NAME = re.compile(r"seed|demo|dev_", re.IGNORECASE)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{project: its built wheel}``, every wheel built once (offline, no isolation)."""
    out = tmp_path_factory.mktemp("wheels")
    names = list(PROJECTS)
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(out), *(str(PROJECTS[n]) for n in names)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    built = proc.stdout.split()
    assert len(built) == len(names), proc.stdout
    return {name: Path(wheel) for name, wheel in zip(names, built, strict=True)}


def _files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def _package_files(files: list[str]) -> list[str]:
    return [f for f in files if ".dist-info/" not in f]


@pytest.mark.parametrize("project", list(PROJECTS))
def test_wheel_holds_no_test_or_demo_code(wheels: dict[str, Path], project: str) -> None:
    files = _package_files(_files(wheels[project]))
    assert MAIN_MODULE[project] in files, f"{project}: the wheel lacks its package: {files[:10]}"
    offending = [f for f in files if _FORBIDDEN_DIRS & set(PurePosixPath(f).parent.parts)
                 or _FORBIDDEN_FILE.search(PurePosixPath(f).name)]
    assert offending == [], f"{project}'s production wheel ships test code: {offending}"
    dev = [f for f in files if _DEV_NAME.search(PurePosixPath(f).name) and f not in SHIPPED_DEV_MODULES]
    assert dev == [], f"{project}'s production wheel ships dev/demo code: {dev}"


def test_libs_wheel_leaves_out_the_test_helpers_the_source_checkout_has(wheels: dict[str, Path]) -> None:
    files = _files(wheels["libs"])
    testing = REPO / "libs" / "src" / "bsopt_common" / "testing"
    assert (testing / "pytest_plugin.py").is_file()  # still there for the dev venv (editable install)
    assert not [f for f in files if f.startswith("bsopt_common/testing/")]
    assert "bsopt_common/logging_setup.py" in files
    # The one trace the plugin leaves in the wheel: its pytest11 entry point (package
    # metadata is shared by the editable and the built wheel). Only pytest loads it, and
    # no image installs pytest (the `test` extra; see the next test).
    [entry_points] = [f for f in files if f.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(wheels["libs"]) as zf:
        text = zf.read(entry_points).decode()
    assert re.sub(r"\s+", " ", text).strip() == "[pytest11] bsopt = bsopt_common.testing.pytest_plugin"


def test_images_install_no_test_tooling() -> None:
    """What each Dockerfile installs (scripts/requirements.py on the service's pyproject)
    names no test tool: so the dangling pytest11 entry point is never loaded there."""
    test_tools = {"pytest", "pytest-asyncio", "testcontainers", "schemathesis", "hypothesis", "mypy", "ruff"}
    for name in SERVICES:
        dockerfile = (REPO / "services" / name / "Dockerfile").read_text()
        assert f"pip install --no-deps ./libs ./services/{name} " in dockerfile, name
        assert f"python scripts/requirements.py services/{name} >" in dockerfile, name
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "requirements.py"), f"services/{name}"],
                              cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        reqs = {re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower() for line in proc.stdout.splitlines() if line}
        assert reqs and not reqs & test_tools, f"{name} installs {reqs & test_tools}"


def test_docker_build_context_leaves_every_tests_folder_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "**/tests/" in ignored
    for name in SERVICES:
        copies = [line for line in (REPO / "services" / name / "Dockerfile").read_text().splitlines()
                  if line.startswith("COPY")]
        assert not [c for c in copies if "tests" in c or "bench" in c], name
