"""Prepare an upstream SGLang pull request from the series (`make pr`).

    make pr [SGLANG_REF=main] [SGLANG_SOURCE=git] [SQUASH=1] [TESTS=0] [STYLE=0]
            [PUSH=1 SGLANG_FORK=<fork>] [PR_BRANCH=...] [PR_TITLE=...] [PR_AUTHOR="Name <email>"]

Steps, all on top of `petit-series apply` (which runs first, on `SGLANG_REF`,
default `main`, in `build/sglang/<ref>` or the checkout named by SGLANG_SOURCE):

1. Branch. `PR_BRANCH` (default `petit-mxfp4-pr`) is written in the applied tree
   from `refs/petit/upstream` plus the commits of `petit/<ref>`, one per applied
   patch (or one commit with `SQUASH=1`), with the downstream-only trailers
   removed from each message (`strip_downstream_trailers`: `Petit-*`, DEP-3's
   `Origin`, `Forwarded`, `Applied-Upstream`, `Last-Update`, `Bug-<vendor>`,
   `Gbp-*`, `Patch-Name`, `(cherry picked from ...)`, and `Signed-off-by` of the
   tooling's bot identity). Authors and author dates are kept unless `PR_AUTHOR`
   names the person opening the PR. Patches that are already upstream, and those
   whose files are all outside a partial (PyPI) tree, are not on the branch;
   they are listed. The branch is never checked out: the tree stays on
   `petit/<ref>` (whose files are identical), so `make refresh` is unaffected. A
   branch that was changed since `make pr` wrote it is not overwritten without
   `FORCE=1`.
2. Style. `ci/style_patched.sh` runs SGLang's pre-commit tools at SGLang's pins
   (`STYLE_PINS`) on the `.py` files the series adds or modifies, from the venv
   `build/venv/style` that is created from PyPI on first use (`PETIT_STYLE_BIN`
   names another directory holding the four tools). Their diffs go into
   `build/pr/style.txt` and the body; nothing in the tree is changed. `STYLE=0`
   skips it.
3. Tests. `python3 -m petit_series.harness test` runs `tests/series` against the
   tree in the CPU SGLang environment of the tree's release (for a branch such
   as `main`, the newest release). `TESTS=0` skips it. `PETIT_PR_TEST_CMD`
   replaces the command (`{version}` and `{tree}` are substituted).
4. Body. `build/pr/PR_BODY.md` fills `scripts/pr_body_template.md` (SGLang's PR
   template) with facts only: the commits' subjects and bodies, the files, the
   compatibility matrix from `build/matrix.json` (with its refs, and a warning
   when it may be stale), the newest valid AMD GPU results per arch from
   `build/amd-results/*.json` (validated with `ci/amd/results.py validate`), the
   style and test results. Whatever is missing is a marked TODO, never a number.
   `build/pr/pr.json` holds the same facts for machines.
5. Publishing, only with `PUSH=1`: `git push <SGLANG_FORK> <branch>` and, when
   `gh` is installed and `gh auth status` succeeds, `gh pr create --repo
   <PR_REPO> --base <PR_BASE> --head <owner>:<branch> --title ... --body-file
   build/pr/PR_BODY.md`. Without `gh`, the PR command is printed. Without
   `PUSH=1` nothing leaves the machine: the exact commands are printed.
   `SGLANG_FORK` is a git URL of your fork (`https://github.com/<you>/sglang.git`,
   `git@github.com:<you>/sglang.git`, or any URL/path git can push to) or the
   name of a remote of the tree. `PR_REPO` defaults to `sgl-project/sglang`,
   `PR_BASE` to `main`. A push is refused when the tree is a PyPI snapshot (its
   history is synthetic), or when the style check or the tests failed.

Exit status: 0 the PR is ready (and pushed when asked), 1 an error or a failed
style check / test run (the branch and body are still written), 3 conflict.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import apply, gitlib, matrix, series, upstream, versions

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "scripts" / "pr_body_template.md"
STYLE_SCRIPT = ROOT / "ci" / "style_patched.sh"
AMD_RESULTS_SCRIPT = ROOT / "ci" / "amd" / "results.py"

DEFAULT_BRANCH = "petit-mxfp4-pr"
DEFAULT_TITLE = "[AMD] Add petit_mxfp4: MXFP4 checkpoints on MI200/MI300 through Petit kernels"
DEFAULT_PR_REPO = "sgl-project/sglang"
DEFAULT_PR_BASE = "main"
# SGLang's .pre-commit-config.yaml pins (see ci/style_patched.sh).
STYLE_PINS = ("isort==5.13.2", "black==24.10.0", "codespell==2.4.1", "ruff==0.11.7")
STYLE_TOOLS = ("isort", "black", "codespell", "ruff")
# SGLang's root .isort.cfg; a PyPI tree lacks the repository root, so it gets
# this copy (untracked, listed in .git/info/exclude) for isort to find.
SGLANG_ISORT_CFG = "[settings]\nprofile=black\nknown_first_party=sglang\n"
PR_STATE = "pr.json"  # in <git-dir>/petit-series/: the branch head `make pr` wrote
OUTPUT_LIMIT = 200  # lines of tool output quoted in the body


class PrError(apply.ApplyError):
    """The PR cannot be prepared or published as asked; the message says why."""


# ---------------------------------------------------------------------------
# Commit messages (pure)

# Trailers that only mean something in this repository (DEP-3 bookkeeping,
# the tooling's own metadata); matched case-insensitively on the key.
DOWNSTREAM_TRAILER_KEYS = re.compile(
    r"^(petit-[a-z0-9-]+|origin|forwarded|applied-upstream|last-update|bug-[a-z0-9-]+"
    r"|gbp-[a-z0-9-]+|patch-name)$",
    re.IGNORECASE,
)
BOT_IDENTITIES = (gitlib.BOT_NAME, gitlib.BOT_EMAIL, "petit@example.com")
_TRAILER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_CHERRY_PICK = re.compile(r"^\(cherry picked from commit [0-9a-f]{7,40}\)$")


def _is_trailer_block(lines: Sequence[str]) -> bool:
    """Git's notion: a last paragraph made of `Key: value` lines (and their continuations)."""
    if not lines or not (_TRAILER.match(lines[0]) or _CHERRY_PICK.match(lines[0])):
        return False
    return all(_TRAILER.match(x) or _CHERRY_PICK.match(x) or x[:1] in (" ", "\t") for x in lines)


def is_downstream_trailer(line: str) -> bool:
    if _CHERRY_PICK.match(line):
        return True
    m = _TRAILER.match(line)
    if not m:
        return False
    key, value = m.group(1), m.group(2).lower()
    if DOWNSTREAM_TRAILER_KEYS.match(key):
        return True
    return key.lower() == "signed-off-by" and any(b.lower() in value for b in BOT_IDENTITIES)


def strip_downstream_trailers(message: str) -> str:
    """The commit message without downstream-only trailers (see the module docstring).

    Only the trailer block (the last paragraph, when every line of it is a
    trailer) is touched; the subject and the prose are kept as they are.
    """
    paragraphs = re.split(r"\n[ \t]*\n", message.strip("\n"))
    if len(paragraphs) > 1:
        lines = paragraphs[-1].splitlines()
        if _is_trailer_block(lines):
            kept, dropping = [], False
            for line in lines:
                if line[:1] in (" ", "\t"):  # continuation of the previous trailer
                    if not dropping:
                        kept.append(line)
                    continue
                dropping = is_downstream_trailer(line)
                if not dropping:
                    kept.append(line)
            paragraphs = paragraphs[:-1] + (["\n".join(kept)] if kept else [])
    return "\n\n".join(p.rstrip() for p in paragraphs).rstrip() + "\n"


def split_message(message: str) -> tuple[str, str]:
    """(subject, body) of a commit message."""
    subject, _, body = message.strip("\n").partition("\n")
    return subject.strip(), body.strip("\n")


def squash_message(title: str, messages: Sequence[str]) -> str:
    """One message for the squashed branch: the title, then each commit, indented."""
    parts = [title.strip()]
    for msg in messages:
        subject, body = split_message(msg)
        item = f"* {subject}"
        if body:
            item += "\n\n" + "\n".join(f"  {x}" if x else "" for x in body.splitlines())
        parts.append(item)
    return "\n\n".join(parts) + "\n"


def parse_identity(text: str) -> tuple[str, str]:
    """`Name <email>` -> (name, email)."""
    m = re.fullmatch(r"\s*([^<>]+?)\s*<([^<>@\s]+@[^<>\s]+)>\s*", text or "")
    if not m:
        raise PrError(f"PR_AUTHOR must look like 'Name <email>', got {text!r}")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------------------
# Facts from other tools (pure)


def pytest_summary(output: str) -> Optional[str]:
    """`12 passed, 3 skipped` from pytest's last summary line, if any."""
    found = re.findall(r"^=+ (.+?) in [0-9.]+s(?: \([0-9:]+\))? =+$", output, re.MULTILINE)
    return found[-1] if found else None


def failed_tests(output: str) -> list[str]:
    """pytest's `FAILED node - reason` / `ERROR node` summary lines."""
    return [x for x in output.splitlines() if x.startswith(("FAILED ", "ERROR "))]


def github_owner(url: str) -> Optional[str]:
    """The owner of a GitHub repository URL (https, ssh or scp-like), else None."""
    m = re.match(r"^(?:https?://|ssh://git@|git@)github\.com[/:]([A-Za-z0-9-]+)/[^/]+?/?$", url.strip())
    return m.group(1) if m else None


def test_version(record_version: Optional[str], newest_release: Optional[str]) -> Optional[str]:
    """The release whose CPU environment tests a tree: its own, else the newest."""
    if record_version:
        return versions.normalize(record_version)
    return versions.normalize(newest_release) if newest_release else None


def matrix_staleness(rows: list[dict], patch_names: Sequence[str], matrix_mtime: float, newest_patch_mtime: float) -> list[str]:
    """Reasons to distrust build/matrix.json (empty when none is known)."""
    reasons = []
    names = {p["name"] for row in rows for p in row.get("patches", [])}
    if names and names != set(patch_names):
        reasons.append("its patch list differs from patches/series")
    if newest_patch_mtime > matrix_mtime:
        reasons.append("a file in patches/ is newer than it")
    return reasons


def newest_amd_results(docs: Iterable[dict]) -> list[dict]:
    """The most recent result per hardware arch, newest first."""
    best: dict[str, dict] = {}
    for doc in docs:
        arch = (doc.get("hardware") or {}).get("arch") or "?"
        if arch not in best or doc.get("created", "") > best[arch].get("created", ""):
            best[arch] = doc
    return sorted(best.values(), key=lambda d: d.get("created", ""), reverse=True)


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


def render_template(template: str, values: dict[str, str]) -> str:
    """Replace each `{{name}}`; an unknown or unused name is an error."""
    wanted = set(re.findall(r"\{\{([a-z_]+)\}\}", template))
    missing, unused = wanted - set(values), set(values) - wanted
    if missing or unused:
        raise PrError(
            f"PR body template {TEMPLATE.name}: placeholders without values {sorted(missing)}, "
            f"values without placeholders {sorted(unused)}"
        )
    return re.sub(r"\{\{([a-z_]+)\}\}", lambda m: values[m.group(1)].rstrip("\n"), template)


# ---------------------------------------------------------------------------
# Options


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "no", "false", "off")


@dataclasses.dataclass(frozen=True)
class Options:
    branch: str = DEFAULT_BRANCH
    squash: bool = False
    tests: bool = True
    style: bool = True
    push: bool = False
    force: bool = False
    fork: Optional[str] = None
    title: str = DEFAULT_TITLE
    pr_repo: str = DEFAULT_PR_REPO
    pr_base: str = DEFAULT_PR_BASE
    author: Optional[str] = None

    @classmethod
    def from_env(cls, **overrides) -> "Options":
        """Options from the make variables (environment); `overrides` win."""
        env = os.environ.get
        return dataclasses.replace(cls(
            branch=env("PR_BRANCH", "").strip() or DEFAULT_BRANCH,
            squash=_flag("SQUASH", False),
            tests=_flag("TESTS", True),
            style=_flag("STYLE", True),
            push=_flag("PUSH", False),
            force=_flag("FORCE", False),
            fork=env("SGLANG_FORK", "").strip() or None,
            title=env("PR_TITLE", "").strip() or DEFAULT_TITLE,
            pr_repo=env("PR_REPO", "").strip() or DEFAULT_PR_REPO,
            pr_base=env("PR_BASE", "").strip() or DEFAULT_PR_BASE,
            author=env("PR_AUTHOR", "").strip() or None,
        ), **overrides)


# ---------------------------------------------------------------------------
# The branch


@dataclasses.dataclass
class Commit:
    sha: str
    author_name: str
    author_email: str
    author_date: str
    message: str

    @property
    def subject(self) -> str:
        return split_message(self.message)[0]


def series_commits(tree: Path, head: str) -> list[Commit]:
    shas = gitlib.out(["rev-list", "--reverse", f"{apply.UPSTREAM_REF}..{head}"], tree).split()
    commits = []
    for sha in shas:
        raw = gitlib.out(["show", "-s", "--format=%an%x00%ae%x00%aI%x00%B", sha], tree)
        name, email, date, message = raw.split("\x00", 3)
        commits.append(Commit(sha, name, email, date, message))
    return commits


def _commit_tree(tree: Path, tree_id: str, parent: str, message: str, who: tuple[str, str, str], as_committer: bool) -> str:
    name, email, date = who
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    if as_committer:
        env.update(GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)
    return gitlib.out(["commit-tree", tree_id, "-p", parent], tree, input=message, env=env)


def build_branch(tree: Path, base: str, commits: Sequence[Commit], opts: Options) -> str:
    """Write the PR commits (not checked out); returns the new head."""
    if not commits:
        raise PrError(f"{tree}: the series added no commit on top of upstream; nothing to propose")
    author = parse_identity(opts.author) if opts.author else None

    def who(c: Commit) -> tuple[str, str, str]:
        return (*(author or (c.author_name, c.author_email)), c.author_date)

    head = base
    if opts.squash:
        last = commits[-1]
        message = squash_message(opts.title, [strip_downstream_trailers(c.message) for c in commits])
        tree_id = gitlib.out(["rev-parse", f"{last.sha}^{{tree}}"], tree)
        return _commit_tree(tree, tree_id, base, message, who(last), author is not None)
    for c in commits:
        tree_id = gitlib.out(["rev-parse", f"{c.sha}^{{tree}}"], tree)
        head = _commit_tree(tree, tree_id, head, strip_downstream_trailers(c.message), who(c), author is not None)
    return head


def _load_pr_state(tree: Path) -> dict:
    path = apply.state_dir(tree) / PR_STATE
    return json.loads(path.read_text()) if path.exists() else {}


def update_branch(tree: Path, branch: str, new_head: str, force: bool) -> None:
    """Point `branch` at new_head unless it holds something `make pr` did not write."""
    ref = f"refs/heads/{branch}"
    current = gitlib.rev_parse(tree, ref)
    written = _load_pr_state(tree).get("heads", {}).get(branch)
    if current and current != written and current != new_head and not force:
        raise PrError(
            f"branch {branch} in {tree} was changed since `make pr` wrote it "
            f"(head {current[:12]}); rename it, set PR_BRANCH=<other>, or pass FORCE=1"
        )
    if gitlib.out(["symbolic-ref", "--quiet", "HEAD"], tree, check=False) == ref:
        raise PrError(f"{branch} is checked out in {tree}; check out petit/<ref> first")
    gitlib.run(["update-ref", ref, new_head], tree)
    state = _load_pr_state(tree)
    state.setdefault("heads", {})[branch] = new_head
    apply._write_json(apply.state_dir(tree) / PR_STATE, state)


def changed_files(tree: Path, base: str, head: str) -> list[tuple[str, str, Optional[str]]]:
    """(status letter, path, source of a copy or rename) of the files the branch changes."""
    text = gitlib.out(["diff", "--name-status", "-M", "-C", "--find-copies-harder", f"{base}..{head}"], tree)
    rows = []
    for line in text.splitlines():
        status, *paths = line.split("\t")
        rows.append((status[0], paths[-1], paths[0] if len(paths) == 2 else None))
    return rows


# ---------------------------------------------------------------------------
# Style and tests


@dataclasses.dataclass
class Check:
    status: str  # "pass", "fail", "skipped"
    summary: str
    output: str = ""
    log: Optional[str] = None


def _run_logged(cmd: Sequence[str], log: Path, *, env: Optional[dict] = None, cwd: Optional[Path] = None) -> tuple[int, str]:
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
    stamp = venv / ".petit-style.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("pins") == list(STYLE_PINS):
        return venv / "bin"
    log = build / "pr" / "style-venv.log"
    print(f"creating {venv} with {' '.join(STYLE_PINS)} (once)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *STYLE_PINS],
    ]
    for cmd in steps:
        rc, _ = _run_logged(cmd, log)
        if rc != 0:
            raise PrError(f"could not create the style venv {venv} ({shlex.join(cmd)} failed; log: {log})")
    stamp.write_text(json.dumps({"pins": list(STYLE_PINS)}) + "\n")
    return venv / "bin"


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


def run_style(tree: Path, build: Path, opts: Options) -> Check:
    if not opts.style:
        return Check("skipped", "skipped (STYLE=0)")
    tools = style_bin(build)
    if provide_isort_config(tree):
        print(f"{tree} has no .isort.cfg (a PyPI tree): using SGLang's (profile=black, known_first_party=sglang)")
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    log = build / "pr" / "style.txt"
    rc, text = _run_logged(["bash", STYLE_SCRIPT, tree, "--base", apply.UPSTREAM_REF], log, env=env, cwd=ROOT)
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


def newest_release(cache: upstream.Cache) -> Optional[str]:
    try:
        return upstream.default_ref(cache)
    except upstream.UpstreamError:
        return None


def run_tests(tree: Path, build: Path, record: dict, cache: upstream.Cache, opts: Options) -> Check:
    if not opts.tests:
        return Check("skipped", "skipped (TESTS=0)")
    version = test_version(record.get("version"), None if record.get("version") else newest_release(cache))
    if version is None:
        return Check("fail", f"FAIL: no release environment for {record['ref']} (PyPI index unavailable)")
    custom = os.environ.get("PETIT_PR_TEST_CMD", "").strip()
    if custom:
        cmd = [part.format(version=version, tree=tree) for part in shlex.split(custom)]
    else:
        cmd = [sys.executable, "-m", "petit_series.harness", "test", "--version", version, "--tree", str(tree)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts"))
    rc, text = _run_logged(cmd, build / "pr" / "tests.txt", env=env, cwd=ROOT)
    where = f"`tests/series` in the CPU environment of SGLang {version}"
    if version != record.get("version"):
        where += f" (the newest release; {record['ref']} has no environment of its own)"
    summary = pytest_summary(text) or f"exit status {rc}"
    status = "pass" if rc == 0 else "fail"
    return Check(status, f"{'pass' if rc == 0 else 'FAIL'}: {summary}, {where}", text, str(build / "pr" / "tests.txt"))


# ---------------------------------------------------------------------------
# Matrix and AMD results


def load_matrix(build: Path, patches: series.Series) -> Optional[dict]:
    path = build / "matrix.json"
    if not path.exists():
        return None
    try:
        rows = json.loads(path.read_text())
    except ValueError as exc:
        return {"error": f"{path} is not valid JSON ({exc})"}
    names = [e.name for e in patches.entries]
    newest = max((p.stat().st_mtime for p in Path(patches.root).rglob("*") if p.is_file()), default=0.0)
    mtime = path.stat().st_mtime
    return {
        "rows": rows,
        "refs": [r["ref"] for r in rows],
        "generated": _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
        "stale": matrix_staleness(rows, names, mtime, newest),
    }


def load_amd_results(build: Path) -> dict:
    files = sorted(glob.glob(str(build / "amd-results" / "*.json")))
    valid, invalid = [], []
    for f in files:
        proc = subprocess.run(
            [sys.executable, str(AMD_RESULTS_SCRIPT), "validate", f], capture_output=True, text=True
        )
        if proc.returncode != 0:
            invalid.append({"file": f, "why": (proc.stdout + proc.stderr).strip()})
            continue
        doc = json.loads(Path(f).read_text())
        doc["_file"] = os.path.relpath(f, build.parent)
        valid.append(doc)
    return {"latest": newest_amd_results(valid), "invalid": invalid}


# ---------------------------------------------------------------------------
# The body (pure renderers of the collected facts)

TODO = "> **TODO (no data)**: "


def _quote_output(text: str, limit: int = OUTPUT_LIMIT) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines in the log)"]
    return "```\n" + "\n".join(lines).replace("```", "` ` `") + "\n```"


def render_modifications(facts: dict) -> str:
    out = [f"Based on SGLang `{facts['ref']}` (`{facts['base'][:12]}`, {facts['source']}).", ""]
    for i, c in enumerate(facts["commits"], 1):
        out += [f"**{i}. {c['subject']}**", ""]
        if c["body"]:
            out += [c["body"], ""]
    if facts["squash"]:
        out += ["(Squashed into one commit.)", ""]
    out += ["Files:", ""] + [_file_row(*row) for row in facts["files"]] + [""]
    if facts["dropped"]:
        out += [f"Not in this PR (already in SGLang `{facts['ref']}`):", ""]
        out += [f"- `{d['name']}`: {d['subject']}" for d in facts["dropped"]] + [""]
    if facts["excluded"]:
        out += ["Not in this PR (outside this partial PyPI tree; a git tree has them):", ""]
        out += [f"- `{d['name']}`: {d['subject']} ({', '.join(d['files'])})" for d in facts["excluded"]] + [""]
    return "\n".join(out)


_STATUS = {"A": "new", "M": "modified", "R": "renamed", "C": "copied", "D": "deleted"}


def _file_row(status: str, path: str, source: Optional[str]) -> str:
    word = _STATUS.get(status, status)
    return f"- `{path}` ({word} from `{source}`)" if source else f"- `{path}` ({word})"


def render_compatibility(m: Optional[dict]) -> str:
    if m is None:
        return TODO + "`build/matrix.json` is absent; run `make matrix` and `make pr` again."
    if "error" in m:
        return TODO + m["error"]
    ok = [r["ref"] for r in m["rows"] if r.get("ok")]
    out = [
        f"The series applies to {len(ok)} of {len(m['rows'])} SGLang releases tried "
        f"(`build/matrix.json`, generated {m['generated']}; refs: {', '.join(m['refs'])}).",
    ]
    if m["stale"]:
        out += ["", f"> **Note**: the matrix may be stale: {'; '.join(m['stale'])}. Run `make matrix`."]
    out += ["", "<details><summary>matrix</summary>", "", matrix.to_markdown(m["rows"]).rstrip(), "", "</details>"]
    return "\n".join(out)


def _fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def _amd_source(doc: dict) -> str:
    run = doc.get("run") or {}
    where = f"[CI run]({run['url']})" if run.get("url") else "CI run (no URL)"
    hw = doc["hardware"]
    return (
        f"{hw.get('arch')} ({hw.get('gfx') or 'gfx ?'}), SGLang `{doc['sglang'].get('ref')}`, "
        f"`{doc['model']}`, {doc['petit_kernel'].get('spec')}, {where}, `{doc['_file']}` ({doc['created']}, "
        f"status {doc['status']})"
    )


def render_accuracy(amd: dict, tests: Check) -> str:
    out = [f"CPU (no GPU): {tests.summary}."]
    out += [f"- `{x}`" for x in failed_tests(tests.output)] + [""]
    rows = [d for d in amd["latest"] if d.get("gsm8k")]
    if not rows:
        out.append(TODO + "no AMD GPU GSM8K result (`build/amd-results/*.json` absent or without `gsm8k`). "
                   "Run the `amd-gpu` workflow, download its `amd-results-<arch>` artifact into "
                   "`build/amd-results/`, then `make pr` again.")
    else:
        out += ["`python3 -m sglang.test.few_shot_gsm8k`, from the AMD GPU job:", "",
                "| GPU | questions | accuracy | invalid | threshold | passed |", "|---|---|---|---|---|---|"]
        for d in rows:
            g = d["gsm8k"]
            out.append(f"| {d['hardware'].get('arch')} | {_fmt(g.get('num_questions'))} | {_fmt(g.get('accuracy'), '.3f')} "
                       f"| {_fmt(g.get('invalid'), '.3f')} | {_fmt(g.get('threshold'))} | {g.get('passed')} |")
        out += [""] + [f"- {_amd_source(d)}" for d in rows]
    for d in amd["latest"]:
        lt = d.get("layer_tests")
        if lt:
            out.append(f"- layer tests on {d['hardware'].get('arch')}: {lt.get('passed')} passed, {lt.get('failed')} failed, "
                       f"{lt.get('errors')} errors, {lt.get('skipped')} skipped")
    out += _invalid_amd(amd)
    return "\n".join(out)


def render_speed(amd: dict) -> str:
    rows = [d for d in amd["latest"] if d.get("throughput")]
    if not rows:
        return TODO + ("no AMD GPU throughput result (`build/amd-results/*.json` absent or without "
                       "`throughput`); run the `amd-gpu` workflow and `make pr` again.")
    out = ["`python3 -m sglang.bench_serving`, from the AMD GPU job:", "",
           "| GPU | args | req/s | output tok/s | total tok/s | median TTFT ms | median ITL ms | median E2E ms |",
           "|---|---|---|---|---|---|---|---|"]
    for d in rows:
        t = d["throughput"]
        out.append(f"| {d['hardware'].get('arch')} | `{t.get('args')}` | {_fmt(t.get('request_throughput'), '.2f')} "
                   f"| {_fmt(t.get('output_throughput'), '.1f')} | {_fmt(t.get('total_throughput'), '.1f')} "
                   f"| {_fmt(t.get('median_ttft_ms'), '.1f')} | {_fmt(t.get('median_itl_ms'), '.1f')} "
                   f"| {_fmt(t.get('median_e2e_latency_ms'), '.1f')} |")
    out += [""] + [f"- {_amd_source(d)}" for d in rows]
    return "\n".join(out + _invalid_amd(amd))


def _invalid_amd(amd: dict) -> list[str]:
    return [f"- ignored `{i['file']}`: fails `ci/amd/results.py validate` ({i['why']})" for i in amd["invalid"]]


def _box(done: bool) -> str:
    return "[x]" if done else "[ ]"


def render_checklist(facts: dict, style: Check, amd: dict) -> str:
    paths = [p for _, p, _ in facts["files"]]
    has_tests = any(p.startswith("test/") for p in paths)
    has_docs = any(p.startswith("docs/") for p in paths)
    bench = any(d.get("gsm8k") and d.get("throughput") and d["status"] == "pass" for d in amd["latest"])
    return "\n".join([
        f"- {_box(style.status == 'pass')} Format your code according to the Code Formatting with "
        f"Pre-Commit guide. (SGLang's pre-commit tools on the changed files: {style.summary})",
        f"- {_box(has_tests)} Add unit tests according to the Run and Add Unit Tests guide."
        + ("" if has_tests else " (no `test/` files on this branch)"),
        f"- {_box(has_docs)} Update documentation according to the Write Documentations guide."
        + ("" if has_docs else " (no `docs/` files on this branch)"),
        f"- {_box(bench)} Provide accuracy and speed benchmark results according to the Test the "
        "Accuracy and Benchmark the Speed guides." + ("" if bench else " (no passing AMD GPU results yet)"),
        "- [ ] Follow the SGLang code style guidance. (for the author to confirm)",
    ])


def render_style_details(style: Check) -> str:
    if style.status != "fail" or not style.output:
        return ""  # upstream-only findings stay in build/pr/style.txt
    return "\n".join(["", "", "<details><summary>pre-commit tools output</summary>", "",
                      _quote_output(style.output), "", "</details>"])


def render_body(facts: dict, style: Check, tests: Check, matrix_facts: Optional[dict], amd: dict, template: str) -> str:
    return render_template(template, {
        "modifications": render_modifications(facts),
        "compatibility": render_compatibility(matrix_facts),
        "accuracy": render_accuracy(amd, tests),
        "speed": render_speed(amd),
        "checklist": render_checklist(facts, style, amd) + render_style_details(style),
        "generated": f"series digest {facts['digest'][:12]}, SGLang {facts['ref']} {facts['base'][:12]}",
    })


# ---------------------------------------------------------------------------
# Publishing


def fork_url(tree: Path, fork: str) -> str:
    """SGLANG_FORK as a URL: a remote name of the tree is looked up."""
    proc = gitlib.run(["remote", "get-url", fork], tree, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else fork


def push_command(tree: Path, fork: str, branch: str) -> list[str]:
    return ["git", "-C", str(tree), "push", fork, f"refs/heads/{branch}:refs/heads/{branch}"]


def pr_command(opts: Options, url: str, body: Path) -> list[str]:
    owner = github_owner(url)
    head = f"{owner}:{opts.branch}" if owner else opts.branch
    return ["gh", "pr", "create", "--repo", opts.pr_repo, "--base", opts.pr_base, "--head", head,
            "--title", opts.title, "--body-file", str(body)]


def gh_ready() -> bool:
    if shutil.which("gh") is None:
        return False
    return subprocess.run(["gh", "auth", "status"], capture_output=True, text=True).returncode == 0


def push_blockers(record: dict, style: Check, tests: Check, opts: Options) -> list[str]:
    why = []
    if not opts.fork:
        why.append("SGLANG_FORK is unset (your fork's URL, or a remote name in the tree)")
    if record["source"] == "pypi" or record.get("coverage"):
        why.append("the tree is a PyPI snapshot with synthetic history; use SGLANG_SOURCE=git (SGLANG_REF=main)")
    if style.status == "fail":
        why.append("the style check failed (build/pr/style.txt)")
    if tests.status == "fail":
        why.append("the tests failed (build/pr/tests.txt)")
    return why


def publish(tree: Path, record: dict, style: Check, tests: Check, opts: Options, body: Path) -> int:
    fork = opts.fork or "<your fork URL or remote>"
    url = fork_url(tree, fork) if opts.fork else fork
    push, create = push_command(tree, fork, opts.branch), pr_command(opts, url, body)
    if not opts.push:
        print("\nnothing was pushed. To open the PR (or run `make pr PUSH=1 SGLANG_FORK=...`):")
        print("  " + shlex.join(push))
        print("  " + shlex.join(create))
        return 0
    blockers = push_blockers(record, style, tests, opts)
    if blockers:
        raise PrError("not pushing: " + "; ".join(blockers))
    print("+ " + shlex.join(push), flush=True)
    proc = subprocess.run(push, capture_output=True, text=True, env=gitlib.git_env())
    if proc.returncode != 0:
        raise PrError(
            f"git push failed: {(proc.stderr or proc.stdout).strip()}\n(if the branch was rewritten, "
            f"push it yourself with --force-with-lease after checking the remote)"
        )
    if not gh_ready():
        print("pushed. `gh` is missing or not authenticated (`gh auth status`); open the PR with:")
        print("  " + shlex.join(create))
        return 0
    print("+ " + shlex.join(create), flush=True)
    proc = subprocess.run(create, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PrError(f"gh pr create failed: {(proc.stderr or proc.stdout).strip()}")
    print(proc.stdout.strip())
    return 0


# ---------------------------------------------------------------------------
# The whole step


def _record(tree: Path) -> dict:
    record = apply.load_record(tree)
    if record is None or record.get("status") != "ok":
        raise PrError(f"{tree}: no finished series apply here; run `make apply` first")
    head = gitlib.rev_parse(tree, "HEAD")
    if head != record["head"]:
        raise PrError(
            f"{tree}: HEAD is not the applied branch {record['branch']} ({record['head'][:12]}); "
            f"check it out (`git -C {tree} checkout {record['branch']}`) and run again"
        )
    return record


def collect(tree: Path, record: dict, opts: Options) -> dict:
    """Build the branch and gather the facts about it."""
    commits = series_commits(tree, record["head"])
    head = build_branch(tree, record["base"], commits, opts)
    update_branch(tree, opts.branch, head, opts.force)
    pr_commits = series_commits(tree, head)
    results = record["results"]
    return {
        "ref": record["ref"],
        "base": record["base"],
        "source": f"{record['source']}: {record.get('source_detail', '')}".rstrip(": "),
        "branch": opts.branch,
        "head": head,
        "squash": opts.squash,
        "digest": record.get("digest", ""),
        "commits": [dict(zip(("subject", "body"), split_message(strip_downstream_trailers(c.message))))
                    for c in commits],
        "pr_commits": [c.subject for c in pr_commits],
        "authors": sorted({c.author_email.lower() for c in pr_commits} | {c.author_name.lower() for c in pr_commits}),
        "files": changed_files(tree, record["base"], head),
        "dropped": [{"name": r["name"], "subject": r.get("subject", ""), "evidence": r.get("evidence", "")}
                    for r in results if r["status"] == "already-upstream"],
        "excluded": [{"name": r["name"], "subject": r.get("subject", ""), "files": r.get("excluded", [])}
                     for r in results if r["status"] == "excluded"],
    }


def prepare(opts: Options, *, tree: Path, build: Path, cache: upstream.Cache, patches_dir: Path) -> int:
    record = _record(tree)
    patches = series.load(patches_dir)
    facts = collect(tree, record, opts)
    print(f"\nbranch {opts.branch} in {tree}: {len(facts['pr_commits'])} commit(s) on {record['ref']} "
          f"({facts['head'][:12]})")
    if not opts.author and set(facts["authors"]) & {b.lower() for b in BOT_IDENTITIES}:
        print("  note: the commits are authored by the tooling's identity; set PR_AUTHOR='Name <email>' "
              "to sign them as the person opening the PR")
    for d in facts["dropped"]:
        print(f"  dropped (already upstream): {d['name']}")
    for d in facts["excluded"]:
        print(f"  not included (outside the partial tree): {d['name']}")
    style = run_style(tree, build, opts)
    print(f"style: {style.summary}")
    tests = run_tests(tree, build, record, cache, opts)
    print(f"tests: {tests.summary}")
    matrix_facts = load_matrix(build, patches)
    amd = load_amd_results(build)
    out = build / "pr"
    out.mkdir(parents=True, exist_ok=True)
    body = out / "PR_BODY.md"
    body.write_text(render_body(facts, style, tests, matrix_facts, amd, TEMPLATE.read_text()))
    summary = {
        **facts,
        "title": opts.title,
        "tree": str(tree),
        "style": dataclasses.asdict(style) | {"output": None},
        "tests": dataclasses.asdict(tests) | {"output": None},
        "matrix": None if matrix_facts is None else {k: v for k, v in matrix_facts.items() if k != "rows"},
        "amd_results": [d["_file"] for d in amd["latest"]],
        "amd_invalid": amd["invalid"],
    }
    (out / "pr.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"body: {body}")
    rc = publish(tree, record, style, tests, opts, body)
    if style.status == "fail" or tests.status == "fail":
        print("the PR is not ready: " + ", ".join(
            n for n, c in (("style", style), ("tests", tests)) if c.status == "fail"), file=sys.stderr)
        return 1
    return rc
