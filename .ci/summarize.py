"""Sum the junit reports of the nox test sessions; fail if any distribution ran no test.

Prints the closing line ``ci: N passed, N failed`` (plus skipped) for the CI log.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def expected_distributions() -> list[str]:
    pyprojects = [ROOT / "shared" / "pyproject.toml", *sorted((ROOT / "packages").glob("*/pyproject.toml"))]
    return [tomllib.loads(p.read_text())["project"]["name"] for p in pyprojects]


def main(report_dir: str) -> int:
    passed = failed = skipped = 0
    problems = []
    for dist in expected_distributions():
        report = Path(report_dir) / f"{dist}.xml"
        if not report.is_file():
            problems.append(f"{dist}: no test report ({report}); did its nox session run?")
            continue
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        tests = sum(int(s.get("tests", 0)) for s in suites)
        bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        skip = sum(int(s.get("skipped", 0)) for s in suites)
        print(f"ci: {dist}: {tests} tests, {bad} failed, {skip} skipped")
        if tests - skip <= 0:
            problems.append(f"{dist}: collected no test")
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    for problem in problems:
        print(f"ci: error: {problem}", file=sys.stderr)
    print(f"ci: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if problems or failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else ".nox-reports"))
