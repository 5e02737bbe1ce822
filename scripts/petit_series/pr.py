"""Prepare an upstream SGLang pull request from the series (`make pr`).

    make pr [SGLANG_REF=main] [SGLANG_SOURCE=git] [SQUASH=1] [TESTS=0] [STYLE=0]
            [PUSH=1 SGLANG_FORK=<fork>] [PR_BRANCH=...] [PR_TITLE=...] [PR_AUTHOR="Name <email>"]

Steps, all on top of `petit-series apply` (which runs first, on `SGLANG_REF`,
default `main`, in `build/sglang/<ref>` or the checkout named by SGLANG_SOURCE):

1. Branch (`prbranch.py`). `PR_BRANCH` (default `petit-mxfp4-pr`) is written in the applied tree
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
2. Style (`prstyle.py`). `ci/style_patched.sh` runs SGLang's pre-commit tools at SGLang's pins
   (`STYLE_PINS`) on the `.py` files the series adds or modifies, from the venv
   `build/venv/style` that is created from PyPI on first use (by the harness's
   `ensure_tool_venv`, which builds its exporters venv too) (`PETIT_STYLE_BIN`
   names another directory holding the four tools). Their diffs go into
   `build/pr/style.txt` and the body; nothing in the tree is changed. `STYLE=0`
   skips it.
3. Tests. `python3 -m petit_series.harness test` runs `tests/series` against the
   tree in the CPU SGLang environment of the tree's release (for a branch such
   as `main`, the newest release). `TESTS=0` skips it. `PETIT_PR_TEST_CMD`
   replaces the command (`{version}` and `{tree}` are substituted).
4. Body (`prbody.py`). `build/pr/PR_BODY.md` fills `scripts/pr_body_template.md` (SGLang's PR
   template) with facts only: the commits' subjects and bodies (a warning when
   commits are authored by the tooling's identity), the files, the PR plan
   (`scripts/pr_plan.json`: the smaller PRs reviewers may ask for, in merge
   order, by commit number), one line from `build/matrix.json` (how many
   releases the series applies to, the ones it misses, a warning when it may
   be stale), the newest valid AMD GPU results per arch from
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


from . import apply, gitlib, refresh, series, upstream, versions
from .prbody import TEMPLATE, render_body
from .prbranch import PrError, build_branch, changed_files, is_bot, series_commits, split_message
from .prbranch import strip_downstream_trailers, update_branch
from .prstyle import Check, run_logged, run_style
from .pytestlog import pytest_summary

ROOT = Path(__file__).resolve().parents[2]
AMD_RESULTS_SCRIPT = ROOT / "ci" / "amd" / "results.py"
PLAN = ROOT / "scripts" / "pr_plan.json"

DEFAULT_BRANCH = "petit-mxfp4-pr"
DEFAULT_TITLE = "[AMD] Add petit_mxfp4: MXFP4 checkpoints on MI200/MI300 through Petit kernels"
DEFAULT_PR_REPO = "sgl-project/sglang"
DEFAULT_PR_BASE = "main"


# ---------------------------------------------------------------------------
# Facts from other tools (pure)


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
    rc, text = run_logged(cmd, build / "pr" / "tests.txt", env=env, cwd=ROOT)
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


def load_plan() -> Optional[dict]:
    """`scripts/pr_plan.json`: how the series splits into upstream PRs (None if absent)."""
    return json.loads(PLAN.read_text()) if PLAN.exists() else None


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
    patch_files = gitlib.trailer_values(tree, [c.sha for c in commits], apply.PATCH_TRAILER)
    results = record["results"]
    return {
        "ref": record["ref"],
        "base": record["base"],
        "source": f"{record['source']}: {record.get('source_detail', '')}".rstrip(": "),
        "branch": opts.branch,
        "head": head,
        "squash": opts.squash,
        "digest": record.get("digest", ""),
        "commits": [dict(zip(("subject", "body"), split_message(strip_downstream_trailers(c.message))),
                         patch=refresh.entry_name(patch_files[c.sha]) if patch_files.get(c.sha) else None)
                    for c in commits],
        "pr_commits": [c.subject for c in pr_commits],
        "bot_authored": [f"{c.author_name} <{c.author_email}>" for c in pr_commits if is_bot(c.author_name, c.author_email)],
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
    if facts["bot_authored"]:
        print(f"warning: {len(facts['bot_authored'])} of {len(facts['pr_commits'])} commits are authored by the "
              f"tooling's identity ({', '.join(sorted(set(facts['bot_authored'])))}); set PR_AUTHOR='Name <email>' "
              "to sign them as the person opening the PR", file=sys.stderr)
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
    body.write_text(render_body(facts, style, tests, matrix_facts, amd, TEMPLATE.read_text(), load_plan()))
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
