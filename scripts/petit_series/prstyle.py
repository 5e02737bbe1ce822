"""The style check of `make pr` (step 2): SGLang's pre-commit tools at SGLang's
pins on the files the series adds or modifies, and which of their findings
are on lines the series wrote. See `pr.py`."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import apply, gitlib, harness
from .prbranch import PrError

ROOT = Path(__file__).resolve().parents[2]
STYLE_SCRIPT = ROOT / "ci" / "style_patched.sh"
# SGLang's .pre-commit-config.yaml pins (see ci/style_patched.sh).
STYLE_PINS = ("isort==5.13.2", "black==24.10.0", "codespell==2.4.1", "ruff==0.11.7")
STYLE_TOOLS = ("isort", "black", "codespell", "ruff")
# SGLang's root .isort.cfg; a PyPI tree lacks the repository root, so it gets
# this copy (untracked, listed in .git/info/exclude) for isort to find.
SGLANG_ISORT_CFG = "[settings]\nprofile=black\nknown_first_party=sglang\n"


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_LINE_MSG = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):")


def _diff_path(header: str, prefix: str) -> str:
    """`--- a/x.py`, `--- /abs/tree/x.py:before\t<time>` or `--- x.py\t<time>` -> `x.py`."""
    path = header[4:].split("\t")[0].strip()
    for suffix in (":before", ":after"):
        path = path[: -len(suffix)] if path.endswith(suffix) else path
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    return path[2:] if path[:2] in ("a/", "b/") else path


def tool_findings(output: str, tree_prefix: str = "") -> list[dict]:
    """What ci/style_patched.sh's tools would change: [{tool, file, lines}].

    `lines` are line numbers of the checked file: those a formatter's diff
    removes or inserts at, or those a linter names.
    """
    findings: list[dict] = []
    tool, current, old = "", None, -1  # old < 0: not inside a hunk
    for line in output.splitlines():
        if line.startswith("+ ") and line[2:].split(" ")[0] in STYLE_TOOLS:
            tool, current = line[2:].split(" ")[0], None
        elif line.startswith("--- ") and tool in ("isort", "black"):
            current, old = {"tool": tool, "file": _diff_path(line, tree_prefix), "lines": set()}, -1
            findings.append(current)
        elif current is not None and _HUNK.match(line):
            old = max(int(_HUNK.match(line).group(1)), 1)  # `-0,0`: an insertion at the top
        elif current is not None and old > 0 and line[:1] == "-":
            current["lines"].add(old)
            old += 1
        elif current is not None and old > 0 and line[:1] == "+":
            current["lines"].add(old)
        elif current is not None and old > 0 and line[:1] == " ":
            old += 1
        elif tool in ("codespell", "ruff") and _LINE_MSG.match(line):
            m = _LINE_MSG.match(line)
            findings.append({"tool": tool, "file": _diff_path("--- " + m["file"], tree_prefix),
                             "lines": {int(m["line"])}})
    return findings


def series_lines(diff_u0: str) -> dict[str, Optional[set]]:
    """Lines of each file that the series adds or changes (None: a new file, all of it).

    `diff_u0` is `git diff -U0 -M -C --find-copies-harder base..head`: a file the
    series copies or renames counts only for its changed lines.
    """
    lines: dict[str, Optional[set]] = {}
    path, new_file = None, False
    for line in diff_u0.splitlines():
        if line.startswith("diff --git "):
            path, new_file = None, False
        elif line.startswith("new file mode"):
            new_file = True
        elif line.startswith("+++ "):
            path = None if line == "+++ /dev/null" else _diff_path(line, "")
            if path is not None:
                lines[path] = None if new_file else set()
        elif path is not None and lines.get(path) is not None and _HUNK.match(line):
            _, _, start, count = _HUNK.match(line).groups()
            first, n = int(start), 1 if count is None else int(count)
            # A pure deletion (n == 0) sits between lines `first` and `first + 1`.
            lines[path].update(range(first, first + n) if n else (first, first + 1))
    return lines


def attribute(findings: list[dict], ours: dict[str, Optional[set]]) -> tuple[list[dict], list[dict]]:
    """Split findings into (the series', upstream's own code)."""
    mine, theirs = [], []
    for f in findings:
        touched = ours.get(f["file"], set())
        (mine if touched is None or f["lines"] & touched or not f["lines"] else theirs).append(f)
    return mine, theirs


@dataclasses.dataclass
class Check:
    status: str  # "pass", "fail", "skipped"
    summary: str
    output: str = ""
    log: Optional[str] = None


def run_logged(cmd: Sequence[str], log: Path, *, env: Optional[dict] = None, cwd: Optional[Path] = None) -> tuple[int, str]:
    """Run, echo and keep the output (stdout and stderr together)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+ " + shlex.join(str(c) for c in cmd), flush=True)
    lines = []
    with subprocess.Popen(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
    text = "".join(lines)
    log.write_text(text)
    return rc, text


def style_bin(build: Path) -> Path:
    """A directory holding SGLang's pinned style tools (created once from PyPI)."""
    given = os.environ.get("PETIT_STYLE_BIN", "").strip()
    if given:
        path = Path(given).resolve()
        missing = [t for t in STYLE_TOOLS if not (path / t).exists()]
        if missing:
            raise PrError(f"PETIT_STYLE_BIN={path} lacks {', '.join(missing)}")
        return path
    venv = build / "venv" / "style"
    try:
        python = harness.ensure_tool_venv(venv, STYLE_PINS, build / "pr" / "style-venv.log", "style")
    except harness.HarnessError as exc:
        raise PrError(f"could not create the style venv {venv}: {exc}") from None
    return python.parent


def provide_isort_config(tree: Path) -> bool:
    """Give a tree without SGLang's root `.isort.cfg` a copy (never committed)."""
    cfg = tree / ".isort.cfg"
    if cfg.exists():
        return False
    cfg.write_text(SGLANG_ISORT_CFG)
    exclude = gitlib.git_dir_of(tree) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.isort.cfg" not in lines:
        exclude.write_text("\n".join(lines + ["/.isort.cfg"]) + "\n")
    return True


def run_style(tree: Path, build: Path, opts) -> Check:
    if not opts.style:
        return Check("skipped", "skipped (STYLE=0)")
    tools = style_bin(build)
    if provide_isort_config(tree):
        print(f"{tree} has no .isort.cfg (a PyPI tree): using SGLang's (profile=black, known_first_party=sglang)")
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    log = build / "pr" / "style.txt"
    rc, text = run_logged(["bash", STYLE_SCRIPT, tree, "--base", apply.UPSTREAM_REF], log, env=env, cwd=ROOT)
    pins = ", ".join(STYLE_PINS).replace("==", " ")
    if rc == 0:
        return Check("pass", f"pass ({pins}, F401 only)", text, str(log))
    findings = tool_findings(text, f"{tree}/")
    if not findings:
        return Check("fail", f"FAIL: the style check failed without a finding to show ({pins}); see below", text, str(log))
    diff = gitlib.out(["diff", "-U0", "-M", "-C", "--find-copies-harder", f"{apply.UPSTREAM_REF}..HEAD", "--", "*.py"], tree)
    mine, theirs = attribute(findings, series_lines(diff))
    if mine:
        where = ", ".join(sorted({f"`{f['file']}` ({f['tool']})" for f in mine}))
        return Check("fail", f"FAIL: the tools would change lines this PR adds: {where} ({pins}); see below", text, str(log))
    where = ", ".join(sorted({f"`{f['file']}` ({f['tool']})" for f in theirs}))
    return Check(
        "pass",
        f"pass on every line this PR adds or changes ({pins}, F401 only); upstream's own code that "
        f"this PR does not touch would change in {where} (build/pr/style.txt)",
        text,
        str(log),
    )
