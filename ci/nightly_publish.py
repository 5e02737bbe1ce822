"""The publish side of the nightly rebase (`ci/nightly_rebase.py publish|plan`),
and the command runner both of its jobs use.

`decide()` is the pure decision: given results.json and the open PRs/issues, what
to do on GitHub (one PR from a fixed branch on success, one tracking issue on
failure). `execute()` does it through the `gh` CLI; `cmd_publish()` is the job.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "petit-nightly/v1"
ISSUE_TITLE = "Nightly rebase onto upstream SGLang is failing"
SIGNATURE_RE = re.compile(r"<!-- nightly-signature: (.*?) -->")
BODY_LIMIT = 60000  # GitHub rejects bodies over 65536 characters


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str = ""
    stderr: str = ""


class Runner:
    """Runs commands; under dry_run prints them (`+ cmd`) and runs nothing."""

    def __init__(self, dry_run: bool = False, cwd: Path = ROOT, out=None):
        self.dry_run = dry_run
        self.cwd = cwd
        self.out = out or sys.stdout

    def run(
        self,
        argv: Sequence[str],
        *,
        capture: bool = False,
        cwd: Path | None = None,
        env: dict | None = None,
    ) -> Result:
        print("+ " + shlex.join(str(a) for a in argv), file=self.out, flush=True)
        if self.dry_run:
            return Result(0)
        proc = subprocess.run(
            [str(a) for a in argv],
            cwd=str(cwd or self.cwd),
            env={**os.environ, **(env or {})},
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
        if capture and proc.returncode != 0 and proc.stderr:
            sys.stderr.write(proc.stderr)
        return Result(proc.returncode, proc.stdout or "", proc.stderr or "")


def note(msg: str) -> None:
    print(f"[nightly] {msg}", file=sys.stderr, flush=True)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n… truncated ({len(text) - limit} more characters; see the run's artifacts)\n"


def run_url() -> str | None:
    server, repo, run_id = (
        os.environ.get("GITHUB_SERVER_URL", "https://github.com"),
        os.environ.get("GITHUB_REPOSITORY"),
        os.environ.get("GITHUB_RUN_ID"),
    )
    if repo and run_id:
        return f"{server}/{repo}/actions/runs/{run_id}"
    return None


def outcome_ok(results: dict) -> bool:
    targets = results.get("targets") or []
    return (
        bool(targets)
        and all(t.get("status") == "ok" for t in targets)
        and (results.get("matrix") or {}).get("rc") == 0
        and not results.get("errors")
    )


# --------------------------------------------------------------------------- decide


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # push-branch | pr-create | pr-edit | pr-close | issue-create | issue-edit |
    #            issue-comment | issue-close | noop
    number: int | None = None
    title: str | None = None
    body: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def signature(results: dict) -> str:
    """A short stable description of *why* a run failed, to avoid repeat comments."""
    parts = [f"{t['ref']}={t['status']}" for t in results.get("targets") or [] if t.get("status") != "ok"]
    if (results.get("matrix") or {}).get("rc") not in (0, None):
        parts.append("matrix=failed")
    parts += [f"error={e[:40]}" for e in results.get("errors") or []]
    return ";".join(parts) or "none"


def decide(results: dict, prs: list[dict], issues: list[dict]) -> list[Action]:
    """Pure decision: what to do on GitHub given the results and what exists.

    prs: open PRs whose head is the bot branch; issues: open issues with the label.
    """
    actions: list[Action] = []
    issues = sorted(issues, key=lambda i: i["number"])
    prs = sorted(prs, key=lambda p: p["number"])
    if outcome_ok(results):
        if results.get("patches_changed"):
            actions.append(Action("push-branch"))
            body = pr_body(results)
            if prs:
                actions.append(Action("pr-edit", prs[0]["number"], pr_title(results), body))
            else:
                actions.append(Action("pr-create", None, pr_title(results), body))
        elif prs:
            actions.append(
                Action("pr-close", prs[0]["number"], body="The series already applies cleanly to "
                       f"{results.get('tag')} and main without changes; closing this "
                       f"superseded update. {results.get('run_url') or ''}".strip())
            )
        for issue in issues:
            actions.append(
                Action("issue-close", issue["number"],
                       body=f"Nightly rebase is clean again. {results.get('run_url') or ''}".strip())
            )
        if not actions:
            actions.append(Action("noop", body="clean; nothing changed; nothing open"))
        return actions

    sig = signature(results)
    body = issue_body(results, sig)
    if not issues:
        actions.append(Action("issue-create", None, ISSUE_TITLE, body))
        return actions
    keep, dupes = issues[0], issues[1:]
    old = SIGNATURE_RE.search(keep.get("body") or "")
    actions.append(Action("issue-edit", keep["number"], ISSUE_TITLE, body))
    if not old or old.group(1) != sig:
        actions.append(Action("issue-comment", keep["number"], body=f"Failure changed: `{sig}`. "
                              f"{results.get('run_url') or ''}".strip()))
    for d in dupes:
        actions.append(Action("issue-close", d["number"], body=f"Duplicate of #{keep['number']}."))
    return actions


def status_table(results: dict) -> str:
    rows = ["| target | status | steps |", "|---|---|---|"]
    for t in results.get("targets") or []:
        steps = ", ".join(f"{k}={v}" for k, v in (t.get("steps") or {}).items())
        rows.append(f"| `{t['ref']}` | {t['status']} | {steps} |")
    return "\n".join(rows)


def pr_title(results: dict) -> str:
    return f"nightly: refresh the petit_mxfp4 series for SGLang {results.get('tag')} and main"


def pr_body(results: dict) -> str:
    parts = [
        "Automated by `ci/nightly_rebase.py` (workflow `nightly-rebase`). "
        "This branch is force-pushed by the bot; do not push to it by hand.",
        "",
        f"Upstream: `{results.get('upstream_url')}` tag `{results.get('tag')}`, "
        f"main `{results.get('main_sha') or '?'}`. Refreshed from `{results.get('refresh_ref')}`.",
        "",
        status_table(results),
        "",
        "### Matrix",
        "",
        (results.get("matrix") or {}).get("md") or "_(no matrix.md)_",
        "",
        "### Changed patch files",
        "",
        "```",
        results.get("diffstat") or "",
        "```",
        "",
        "### Range-diff",
        "",
        results.get("range_diff_note") or "",
        "",
        "<details><summary>git range-diff</summary>\n\n```diff",
        results.get("range_diff") or "(none)",
        "```\n</details>",
    ]
    if results.get("run_url"):
        parts += ["", f"Run: {results['run_url']}"]
    return truncate("\n".join(parts), BODY_LIMIT)


def issue_body(results: dict, sig: str) -> str:
    parts = [
        f"<!-- nightly-signature: {sig} -->",
        "The nightly rebase of the patch series onto upstream SGLang failed. "
        "This issue is updated by every failing run and closed by the first clean one.",
        "",
        f"Upstream tag `{results.get('tag')}`, main `{results.get('main_sha') or '?'}`.",
        "",
        status_table(results),
        "",
    ]
    for e in results.get("errors") or []:
        parts.append(f"- error: {e}")
    for t in results.get("targets") or []:
        if t.get("report_md"):
            parts += ["", f"### Report for `{t['ref']}`", "", t["report_md"]]
    md = (results.get("matrix") or {}).get("md")
    if md:
        parts += ["", "### Matrix", "", md]
    parts += [
        "",
        "To reproduce and resolve locally: `make rebase SGLANG_REF=<ref>`, fix the conflict in "
        "`build/sglang/<ref>`, `make rebase-continue SGLANG_REF=<ref>`, then `make refresh`.",
    ]
    if results.get("run_url"):
        parts += ["", f"Run: {results['run_url']}"]
    return truncate("\n".join(parts), BODY_LIMIT)


# --------------------------------------------------------------------------- publish


class GitHub:
    """The few `gh` calls the bot needs. gh must be on PATH and authenticated."""

    def __init__(self, r: Runner, repo: str | None, workdir: Path):
        self.r = r
        self.repo_args = ["--repo", repo] if repo else []
        self.workdir = workdir
        self._n = 0

    def _json(self, argv: list[str]) -> list[dict]:
        res = self.r.run(["gh", *argv, *self.repo_args], capture=True)
        if self.r.dry_run:
            return []
        if res.rc != 0:
            raise RuntimeError(f"gh {' '.join(argv[:2])} failed (rc={res.rc})")
        return json.loads(res.stdout or "[]")

    def _body_file(self, body: str) -> Path:
        self._n += 1
        path = self.workdir / f"gh-body-{self._n}.md"
        if not self.r.dry_run:
            path.write_text(body)
        return path

    def open_prs(self, branch: str) -> list[dict]:
        return self._json(["pr", "list", "--head", branch, "--state", "open",
                           "--json", "number,url,title"])

    def open_issues(self, label: str) -> list[dict]:
        return self._json(["issue", "list", "--label", label, "--state", "open",
                           "--json", "number,url,title,body", "--limit", "50"])

    def ensure_label(self, name: str, color: str, description: str) -> None:
        self.r.run(["gh", "label", "create", name, "--color", color, "--description",
                    description, "--force", *self.repo_args])

    def gh(self, *argv: str, body: str | None = None) -> int:
        extra = ["--body-file", str(self._body_file(body))] if body is not None else []
        return self.r.run(["gh", *argv, *extra, *self.repo_args]).rc


def push_branch(r: Runner, branch: str, message: str, remote: str) -> int:
    ident = ["-c", "user.name=petit-bot", "-c", "user.email=petit-bot@users.noreply.github.com"]
    for argv in (["git", "checkout", "-B", branch], ["git", "add", "-A", "--", "patches/"]):
        rc = r.run(argv).rc
        if rc != 0:
            return rc
    # nothing staged (HEAD already carries this series): push HEAD as it is
    if r.run(["git", "diff", "--cached", "--quiet"]).rc != 0 or r.dry_run:
        rc = r.run(["git", *ident, "commit", "--quiet", "-m", message]).rc
        if rc != 0:
            return rc
    return r.run(["git", "push", "--force", remote, f"HEAD:refs/heads/{branch}"]).rc


def execute(actions: list[Action], gh: GitHub, r: Runner, args: argparse.Namespace, results: dict) -> int:
    rc = 0
    for a in actions:
        note(f"action: {a.kind}" + (f" #{a.number}" if a.number else ""))
        if a.kind == "push-branch":
            if os.environ.get("GH_TOKEN") and not args.no_setup_git:
                r.run(["gh", "auth", "setup-git"])
            msg = f"nightly: refresh patch series for SGLang {results.get('tag')}"
            rc |= push_branch(r, args.branch, msg, args.remote)
        elif a.kind == "pr-create":
            gh.ensure_label(args.pr_label, "0E8A16", "Automated nightly rebase of the patch series")
            rc |= gh.gh("pr", "create", "--base", args.base_branch, "--head", args.branch,
                        "--title", a.title or "", "--label", args.pr_label, body=a.body)
        elif a.kind == "pr-edit":
            rc |= gh.gh("pr", "edit", str(a.number), "--title", a.title or "", body=a.body)
        elif a.kind == "pr-close":
            rc |= gh.gh("pr", "close", str(a.number), "--comment", a.body or "")
        elif a.kind == "issue-create":
            gh.ensure_label(args.issue_label, "B60205", "The nightly rebase of the patch series is failing")
            rc |= gh.gh("issue", "create", "--title", a.title or "", "--label", args.issue_label,
                        body=a.body)
        elif a.kind == "issue-edit":
            rc |= gh.gh("issue", "edit", str(a.number), "--title", a.title or "", body=a.body)
        elif a.kind == "issue-comment":
            rc |= gh.gh("issue", "comment", str(a.number), body=a.body)
        elif a.kind == "issue-close":
            rc |= gh.gh("issue", "close", str(a.number), "--comment", a.body or "")
        elif a.kind == "noop":
            note(a.body or "nothing to do")
    return rc


def load_results(args: argparse.Namespace) -> dict:
    path = Path(args.results)
    if path.is_file():
        return json.loads(path.read_text())
    if args.dry_run:
        ok = args.assume_outcome == "success"
        return {
            "schema": SCHEMA, "tag": "<newest-release-tag>", "patches_changed": ok,
            "targets": [{"ref": "<newest-release-tag>", "status": "ok" if ok else "conflict"},
                        {"ref": "main", "status": "ok"}],
            "matrix": {"rc": 0 if ok else 1}, "errors": [], "run_url": run_url(),
        }
    # The rebase job crashed before writing results: that is a failure to report.
    return {"schema": SCHEMA, "targets": [], "matrix": {"rc": None}, "run_url": run_url(),
            "errors": [f"the rebase job produced no {args.results}"]}


def cmd_publish(args: argparse.Namespace, plan_only: bool = False) -> int:
    r = Runner(args.dry_run)
    results = load_results(args)
    workdir = Path(args.results).resolve().parent
    if not args.dry_run:
        workdir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("GH_TOKEN") and not args.dry_run:
        note("warning: GH_TOKEN is not set; gh falls back to its own login")
    if os.environ.get("PETIT_BOT_TOKEN_SET") == "false":
        note("warning: secret PETIT_BOT_TOKEN is not set; using GITHUB_TOKEN, so the bot's "
             "PR will not trigger the checks workflow (close and reopen it to run them)")
    gh = GitHub(r, args.repo or os.environ.get("GITHUB_REPOSITORY"), workdir)
    actions = decide(results, gh.open_prs(args.branch), gh.open_issues(args.issue_label))
    if plan_only:
        json.dump([a.to_json() for a in actions], sys.stdout, indent=2)
        print()
        return 0
    if not args.dry_run and any(a.kind == "push-branch" for a in actions):
        src = workdir / "patches"
        if src.is_dir() and src.resolve() != (ROOT / "patches").resolve():
            # the refreshed series from the rebase job's artifact
            if (ROOT / "patches").exists():
                shutil.rmtree(ROOT / "patches")
            shutil.copytree(src, ROOT / "patches")
    rc = execute(actions, gh, r, args, results)
    if args.dry_run:
        return 0
    if rc != 0:
        note(f"some GitHub actions failed (rc={rc})")
        return 2
    return 0 if outcome_ok(results) else 1
