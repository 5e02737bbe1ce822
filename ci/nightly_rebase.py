#!/usr/bin/env python3
"""Nightly rebase of the petit_mxfp4 patch series onto upstream SGLang.

Two steps, run as two CI jobs so that upstream code (which `make test` executes)
never runs next to a write token:

  rebase   (read-only) rebase the series onto the newest release tag and upstream
           `main`; refresh patches/ from the tag; run the tests and the matrix;
           compute a `git range-diff` of the series; write build/nightly/results.json.
           Exit 0 whenever results.json was written, whatever the outcome.
  publish  (needs a token) read results.json and reconcile GitHub with it through
           the `gh` CLI: on success open or update ONE pull request from a fixed
           branch and close the tracking issue; on failure open or update ONE
           tracking issue (found by label) with the conflict report. Exit 1 when
           the nightly outcome is a failure, so the run shows red.
  plan     print what `publish` would do, as JSON, using the live `gh` state.

Every subcommand takes --dry-run: print each command it would run and run none
(queries included; dry-run assumes no existing PR or issue). `--assume-outcome`
picks which path a dry run of `publish` without results walks.

Token: `gh` reads GH_TOKEN. Use a PAT or GitHub App token (secret PETIT_BOT_TOKEN):
pushes and PRs made with the default GITHUB_TOKEN do not trigger workflows, so the
checks would never run on the bot's PR. See ci/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "petit-nightly/v1"
DEFAULT_UPSTREAM = "https://github.com/sgl-project/sglang.git"
DEFAULT_BRANCH = "bot/nightly-rebase"
DEFAULT_ISSUE_LABEL = "nightly-rebase-failure"
DEFAULT_PR_LABEL = "nightly-rebase"
ISSUE_TITLE = "Nightly rebase onto upstream SGLang is failing"
SIGNATURE_RE = re.compile(r"<!-- nightly-signature: (.*?) -->")
BODY_LIMIT = 60000  # GitHub rejects bodies over 65536 characters
EXIT_CONFLICT = 3
TAG_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:\.post(\d+))?$")


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


# --------------------------------------------------------------------------- helpers


def tag_key(tag: str) -> tuple | None:
    m = TAG_RE.match(tag)
    if not m:
        return None
    return tuple(int(x or 0) for x in m.groups())


def newest_release_tag(ls_remote_output: str) -> str | None:
    """Newest final release `vX.Y.Z[.postN]` among `git ls-remote --tags` lines."""
    best: tuple | None = None
    for line in ls_remote_output.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("refs/tags/"):
            continue
        tag = parts[1][len("refs/tags/") :]
        key = tag_key(tag)
        if key is not None and (best is None or key > best[0]):
            best = (key, tag)
    return best[1] if best else None


def series_base(series_file: Path) -> str | None:
    """`@base <version>` of patches/series, as a tag name `v<version>`."""
    if not series_file.is_file():
        return None
    for line in series_file.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "@base":
            return "v" + words[1].lstrip("v")
    return None


def safe_ref(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ref)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


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


# --------------------------------------------------------------------------- rebase


def resolve_commit(r: Runner, repo: Path, candidates: Sequence[str]) -> str | None:
    for cand in candidates:
        res = r.run(
            ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}"],
            capture=True,
        )
        if res.rc == 0 and (res.stdout.strip() or r.dry_run):
            return cand
    return None


def tree_refs(r: Runner, tree: Path, ref: str) -> tuple[str | None, str | None]:
    """(base, head) of the series in an applied tree."""
    base = resolve_commit(r, tree, ["refs/petit/upstream", "refs/tags/petit-base", f"refs/tags/{ref}"])
    head = resolve_commit(r, tree, [f"refs/heads/petit/{ref}", "HEAD"])
    return base, head


def restore_patches(r: Runner) -> None:
    """Put patches/ back to the committed series (undo a target's export)."""
    r.run(["git", "checkout", "HEAD", "--", "patches/"])
    r.run(["git", "clean", "-fdq", "--", "patches/"])


def run_target(r: Runner, args: argparse.Namespace, build: Path, ref: str, t: dict,
               refresh: bool) -> dict:
    """rebase (+ refresh) + test one target; fills t's status/report; returns steps."""
    steps: dict[str, int] = {}
    rc = r.run(["make", "rebase", f"SGLANG_REF={ref}"]).rc
    steps["rebase"] = rc
    if rc != 0:
        t["status"] = "conflict" if rc == EXIT_CONFLICT else "error"
        for name in (f"{ref}.md", f"{safe_ref(ref)}.md"):
            text = None if args.dry_run else read_text(build / "reports" / name)
            if text:
                t["report_md"] = text
                break
        if rc == EXIT_CONFLICT:
            steps["rebase-abort"] = r.run(["make", "rebase-abort", f"SGLANG_REF={ref}"]).rc
        return steps
    if refresh:
        rc = r.run(["make", "refresh", f"SGLANG_REF={ref}"]).rc
        steps["refresh"] = rc
        t["refreshed"] = rc == 0
        if rc != 0:
            t["status"] = "error"
            return steps
    rc = r.run(["make", "test", f"SGLANG_REF={ref}"]).rc
    steps["test"] = rc
    if rc != 0:
        t["status"] = "test-failed"
    return steps


def cmd_rebase(args: argparse.Namespace) -> int:
    r = Runner(args.dry_run)
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    build = ROOT / "build"
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)

    # 1. targets -------------------------------------------------------------
    tag = args.tag
    if not tag:
        res = r.run(
            ["git", "ls-remote", "--tags", "--refs", args.upstream_url, "refs/tags/v*"], capture=True
        )
        tag = "<newest-release-tag>" if args.dry_run else newest_release_tag(res.stdout)
    main_sha = None
    if "main" in args.targets:
        res = r.run(["git", "ls-remote", args.upstream_url, "refs/heads/main"], capture=True)
        main_sha = res.stdout.split()[0] if res.stdout.split() else None
    targets = [tag if t == "latest" else t for t in args.targets]
    targets = [t for t in targets if t]
    refresh_ref = tag if args.refresh == "latest" else (None if args.refresh == "none" else args.refresh)
    # `make rebase` exports the rebased series into patches/ itself. Only the
    # refresh target may keep its export: the others run first and patches/ is
    # restored after each, so the refresh target runs last on the committed series.
    targets.sort(key=lambda t: t == refresh_ref)

    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "upstream_url": args.upstream_url,
        "tag": tag,
        "main_sha": main_sha,
        "refresh_ref": refresh_ref,
        "run_url": run_url(),
        "targets": [],
        "errors": [],
    }
    if not tag:
        results["errors"].append("could not determine the newest release tag (git ls-remote failed)")

    # 2. the series as it is now, for the range-diff ("before") -------------
    baseline = series_base(ROOT / "patches" / "series")
    results["baseline_ref"] = baseline
    old_git = out / "old-series.git"
    have_old = False
    if baseline:
        if r.run(["make", "apply", f"SGLANG_REF={baseline}"]).rc == 0:
            old_tree = build / "sglang" / baseline
            base, head = tree_refs(r, old_tree, baseline)
            if base and head:
                if not args.dry_run and old_git.exists():
                    shutil.rmtree(old_git)
                r.run(["git", "init", "--quiet", "--bare", old_git])
                have_old = (
                    r.run(
                        ["git", "-C", old_git, "fetch", "--quiet", "--no-tags", old_tree,
                         f"+{head}:refs/old/head", f"+{base}:refs/old/base"]
                    ).rc
                    == 0
                )
        else:
            results["errors"].append(f"the committed series does not apply to its own @base {baseline}")

    # 3. rebase / refresh / test each target ---------------------------------
    for ref in targets:
        t: dict[str, Any] = {"ref": ref, "status": "ok", "steps": {}, "report_md": None}
        if ref != refresh_ref:
            t["steps"].update(run_target(r, args, build, ref, t, refresh=False))
            restore_patches(r)
        else:
            t["steps"].update(run_target(r, args, build, ref, t, refresh=True))
        results["targets"].append(t)

    # 4. matrix over all supported releases (with the refreshed series) -------
    mrc = r.run(["make", "matrix"]).rc
    results["matrix"] = {
        "rc": mrc,
        "md": None if args.dry_run else read_text(build / "matrix.md"),
        "json": None,
    }
    mjson = None if args.dry_run else read_text(build / "matrix.json")
    if mjson:
        try:
            results["matrix"]["json"] = json.loads(mjson)
        except ValueError:
            results["errors"].append("build/matrix.json is not valid JSON")

    # 5. what changed in patches/ ---------------------------------------------
    st = r.run(["git", "status", "--porcelain", "--", "patches/"], capture=True)
    results["patches_changed"] = bool(st.stdout.strip())
    results["diffstat"] = r.run(["git", "diff", "--stat", "--", "patches/"], capture=True).stdout

    # 6. range-diff of the series: before (committed, on @base) vs after -------
    results["range_diff"] = None
    if not have_old:
        results["range_diff_note"] = "no '@base' in patches/series or it did not apply; no range-diff"
    elif not refresh_ref or not any(
        x["ref"] == refresh_ref and x["status"] == "ok" for x in results["targets"]
    ):
        results["range_diff_note"] = "the refreshed target did not apply; no range-diff"
    else:
        new_tree = build / "sglang" / refresh_ref
        nbase, nhead = tree_refs(r, new_tree, refresh_ref)
        fetched = r.run(
            ["git", "-C", new_tree, "fetch", "--quiet", "--no-tags", old_git,
             "+refs/old/head:refs/petit/range-diff/old-head",
             "+refs/old/base:refs/petit/range-diff/old-base"]
        ).rc == 0
        if nbase and nhead and fetched:
            rd = r.run(
                ["git", "-C", new_tree, "range-diff", "--no-color",
                 "refs/petit/range-diff/old-base..refs/petit/range-diff/old-head",
                 f"{nbase}..{nhead}"],
                capture=True,
            )
            results["range_diff"] = rd.stdout if rd.rc == 0 else None
            results["range_diff_note"] = f"{baseline} (committed) -> {refresh_ref} (refreshed)"
        else:
            results["range_diff_note"] = f"could not resolve the series range in {new_tree}"

    results["ok"] = outcome_ok(results)
    if args.dry_run:
        note(f"dry run: would write {out / 'results.json'}")
        return 0
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    # the refreshed series travels to the publish job with the results
    dest = out / "patches"
    if dest.exists():
        shutil.rmtree(dest)
    if (ROOT / "patches").is_dir():
        shutil.copytree(ROOT / "patches", dest)
    note(f"wrote {out / 'results.json'} (ok={results['ok']})")
    return 0


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


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dry-run", action="store_true", help="print commands, run none")

    rb = sub.add_parser("rebase", help="rebase, refresh, test; write results.json")
    common(rb)
    rb.add_argument("--upstream-url", default=os.environ.get("SGLANG_UPSTREAM_URL", DEFAULT_UPSTREAM))
    rb.add_argument("--tag", help="release tag to target (default: newest vX.Y.Z[.postN] upstream)")
    rb.add_argument("--targets", type=lambda s: [x for x in s.split(",") if x], default=["latest", "main"],
                    help="comma list; 'latest' = the newest release tag (default: latest,main)")
    rb.add_argument("--refresh", default="latest",
                    help="which target re-exports patches/: 'latest' (default), a ref, or 'none'")
    rb.add_argument("--out", default="build/nightly")

    for name in ("publish", "plan"):
        sp = sub.add_parser(name, help="reconcile GitHub (PR / tracking issue) with results.json"
                            if name == "publish" else "print the actions publish would take")
        common(sp)
        sp.add_argument("--results", default=str(ROOT / "build" / "nightly" / "results.json"))
        sp.add_argument("--repo", help="owner/name (default $GITHUB_REPOSITORY, else gh's default)")
        sp.add_argument("--branch", default=DEFAULT_BRANCH)
        sp.add_argument("--base-branch", default=os.environ.get("NIGHTLY_BASE_BRANCH", "main"))
        sp.add_argument("--remote", default="origin")
        sp.add_argument("--issue-label", default=DEFAULT_ISSUE_LABEL)
        sp.add_argument("--pr-label", default=DEFAULT_PR_LABEL)
        sp.add_argument("--no-setup-git", action="store_true",
                        help="do not run `gh auth setup-git` before pushing")
        sp.add_argument("--assume-outcome", choices=["success", "failure"], default="success",
                        help="dry run without results.json: which path to show")

    args = p.parse_args(argv)
    if args.cmd == "rebase":
        return cmd_rebase(args)
    return cmd_publish(args, plan_only=args.cmd == "plan")


if __name__ == "__main__":
    sys.exit(main())
