"""Transcript tests (in the manner of quilt's): a session's exact output, golden.

Each transcript lists commands (`$ petit-series ...`) and what they printed, with
temporary paths and commit ids normalized. Regenerate after an intended change
with `UPDATE_TRANSCRIPTS=1 pytest tests/tooling/test_transcripts.py`, and review
the diff like code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .fixtures import QUANT, git

HERE = Path(__file__).parent / "transcripts"

SESSIONS = {
    "apply-offsets-and-idempotence": [
        ("apply", "--ref", "v0.5.10", "--source", "git"),
        ("apply", "--ref", "v0.5.10", "--source", "git"),
    ],
    "partial-pypi-tree": [
        ("apply", "--ref", "v0.5.11", "--source", "pypi"),
    ],
    "conflict-resolve-continue": [
        ("apply", "--ref", "v0.5.14", "--source", "git"),
        "resolve",
        ("rebase-continue", "--ref", "v0.5.14"),
        ("apply", "--ref", "v0.5.14", "--source", "git"),
        ("refresh", "--ref", "v0.5.14"),
        ("apply", "--ref", "v0.5.14", "--source", "git"),
    ],
}


def normalize(text: str, cli) -> str:
    text = text.replace(str(cli.tmp), "<tmp>")
    text = re.sub(r"file://\S*/upstream\.git", "<upstream>", text)
    return re.sub(r"\b[0-9a-f]{12}\b", "<sha>", text)


def resolve(cli) -> str:
    path = cli.tree("v0.5.14") / QUANT / "methods.py"
    text = path.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    path.write_text(text[:start] + '    "petit_mxfp4",\n    "quark_mxfp4",\n' + text[text.index("\n", end) + 1 :])
    git(path.parent, "add", path.name)
    return "(edit methods.py: keep both entries; git add)\n"


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_transcript(cli, name):
    out = []
    for step in SESSIONS[name]:
        if step == "resolve":
            out.append("$ " + resolve(cli))
            continue
        proc = cli(*step, ok=None)
        out.append(f"$ petit-series {' '.join(step)}  # exit {proc.returncode}\n")
        out.append(normalize(proc.output, cli))
    got = "".join(out)
    golden = HERE / f"{name}.txt"
    if os.environ.get("UPDATE_TRANSCRIPTS") == "1":
        golden.write_text(got)
    assert got == golden.read_text()
