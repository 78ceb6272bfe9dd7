"""Test sessions for every distribution in the repository, plus lint.

``nox`` with no arguments runs ``tests(<dist>)`` for each distribution found (the core in
``shared/`` and every ``packages/*/pyproject.toml``, so a new package joins without editing a
list) and ``lint``.

Environments: nox's ``uv`` backend. Every session gets its own venv holding only the
distribution under test, the core and their declared dependencies (an undeclared import
fails), installed non-editable from the source tree so packaging is tested too. The torch pair
pinned in ``constraints.txt`` is ~5.5 GB; uv downloads it once into its cache and hard-links it
into each session venv, so a second session costs seconds, not another download.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox
import tomllib

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def _distributions() -> dict[str, Path]:
    """name -> directory, for the core and every package with a pyproject.toml."""
    found: dict[str, Path] = {}
    for pyproject in [
        ROOT / "shared" / "pyproject.toml",
        *sorted((ROOT / "packages").glob("*/pyproject.toml")),
    ]:
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        found[name] = pyproject.parent
    return found


DISTRIBUTIONS = _distributions()


@nox.session
@nox.parametrize("dist", [nox.param(name, id=name) for name in DISTRIBUTIONS])
def tests(session: nox.Session, dist: str) -> None:
    """Install one distribution (+ the core it depends on) with its [test] extra and run its tests."""
    path = DISTRIBUTIONS[dist]
    session.env["UV_LINK_MODE"] = os.environ.get("UV_LINK_MODE", "hardlink")
    # A reused venv keeps whatever core a direct reference installed last time (same version
    # string, so no upgrade): rebuild the core and the distribution from the tree every time.
    session.install(
        "-c",
        str(ROOT / "constraints.txt"),
        "--reinstall-package",
        "effvid",
        "--reinstall-package",
        dist,
        f"{path}[test]",
    )
    reports = ROOT / ".nox-reports"
    reports.mkdir(exist_ok=True)
    # Run from the tests folder so the source tree is not importable: the installed build is tested.
    session.chdir(path / "tests")
    # pytest exits 5 when it collects nothing, which nox treats as a failure: an empty package cannot pass.
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={reports / f'{dist}.xml'}",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) over the whole tree, and the CI workflow is in sync with nox."""
    session.install("ruff>=0.6", "nox>=2024.3")
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))
    session.run("python", str(ROOT / "ci" / "generate_workflow.py"), "--check")
