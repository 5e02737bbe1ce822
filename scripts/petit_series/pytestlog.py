"""What pytest printed: its summary line and its failures."""

from __future__ import annotations

import re
from typing import Optional


def pytest_summary(output: str) -> Optional[str]:
    """`12 passed, 3 skipped` from pytest's last summary line, if any."""
    found = re.findall(r"^=+ (.+?) in [0-9.]+s(?: \([0-9:]+\))? =+$", output, re.MULTILINE)
    return found[-1] if found else None


def failed_tests(output: str) -> list[str]:
    """pytest's `FAILED node - reason` / `ERROR node` summary lines."""
    return [x for x in output.splitlines() if x.startswith(("FAILED ", "ERROR "))]
