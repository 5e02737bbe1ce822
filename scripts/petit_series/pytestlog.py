"""What pytest reported: its summary line, its failures, its JUnit XML counts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Optional


def pytest_summary(output: str) -> Optional[str]:
    """`12 passed, 3 skipped` from pytest's last summary line, if any."""
    found = re.findall(r"^=+ (.+?) in [0-9.]+s(?: \([0-9:]+\))? =+$", output, re.MULTILINE)
    return found[-1] if found else None


def failed_tests(output: str) -> list[str]:
    """pytest's `FAILED node - reason` / `ERROR node` summary lines."""
    return [x for x in output.splitlines() if x.startswith(("FAILED ", "ERROR "))]


def junit_counts(xml_text: str) -> dict:
    """{tests, failures, errors, skipped, passed} summed over a JUnit XML report's
    test suites (a `<testsuite>` root, or `<testsuites>` holding them)."""
    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total
