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
import datetime as _dt
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "ci")]

from nightly_publish import SCHEMA, Runner, cmd_publish, note, outcome_ok, run_url  # noqa: E402
from petit_series import series, versions  # noqa: E402

DEFAULT_UPSTREAM = "https://github.com/sgl-project/sglang.git"
DEFAULT_BRANCH = "bot/nightly-rebase"
DEFAULT_ISSUE_LABEL = "nightly-rebase-failure"
DEFAULT_PR_LABEL = "nightly-rebase"
EXIT_CONFLICT = 3


# --------------------------------------------------------------------------- helpers


def newest_release_tag(ls_remote_output: str) -> str | None:
    """Newest final release `vX.Y.Z[.postN]` among `git ls-remote --tags` lines."""
    tags = [line.split()[1][len("refs/tags/"):] for line in ls_remote_output.splitlines()
            if len(line.split()) == 2 and line.split()[1].startswith("refs/tags/v")]
    releases = [t for t in tags if versions.is_final(t)]
    return max(releases, key=versions.key) if releases else None


def series_base(series_file: Path) -> str | None:
    """`@base <version>` of patches/series, as a tag name `v<version>` (None when
    the series has none or cannot be read)."""
    try:
        base = series.load(series_file.parent).base
    except series.SeriesError:
        return None
    return versions.tag(base) if base else None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
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
        # the name `petit-series` gives the report (cli._publish)
        text = None if args.dry_run else read_text(build / "reports" / f"{versions.safe_ref_name(ref)}.md")
        if text:
            t["report_md"] = text
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
