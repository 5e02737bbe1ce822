"""Command-line entry points; each Makefile target calls one command here.

    petit-series apply           [--ref R] [--source S] [--dir D] [--force]
    petit-series refresh         [--ref R] [--dir D] [--check] [--new-variant]
    petit-series rebase          --ref R [--source S] [--dir D]
    petit-series rebase-continue [--ref R] [--source S] [--dir D]
    petit-series rebase-abort    [--ref R] [--source S] [--dir D]
    petit-series matrix          [--refs R ...] [--source S] [--jobs N] [--tests]
    petit-series bench
    petit-series footprint       [--ref R (default the @base release)] [--json]
    petit-series next-release    [--label L] [--fixture DIR] [--build-only]
    petit-series pr              [--ref R (default main)] [--source S] [--dir D]  (see pr.py)

Exit status: 0 done, 1 error (nothing lost), 2 usage, 3 stopped on a conflict.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from . import apply, matrix, refresh, series, upstream, versions
from .locking import LockedError

ROOT = Path(__file__).resolve().parents[2]
EXIT_ERROR, EXIT_USAGE, EXIT_CONFLICT = 1, 2, 3


def build_dir() -> Path:
    return Path(os.environ.get("PETIT_BUILD_DIR", ROOT / "build")).resolve()


def cache_dir() -> Path:
    return Path(os.environ.get("PETIT_CACHE_DIR", build_dir() / "cache")).resolve()


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or None


def common(parser: argparse.ArgumentParser, ref: bool = True) -> None:
    if ref:
        parser.add_argument("--ref", default=_env("SGLANG_REF"), help="tag, branch or commit")
    parser.add_argument(
        "--source",
        default=_env("SGLANG_SOURCE") or "auto",
        help="auto | git | pypi | <path to a local checkout>",
    )
    parser.add_argument("--dir", default=_env("SGLANG_DIR"), help="work tree (default build/sglang/<ref>)")
    parser.add_argument("--repo", default=_env("SGLANG_REPO") or upstream.DEFAULT_REPO)
    parser.add_argument("--patches", default=str(ROOT / "patches"))


def tree_for(args, up: Optional[upstream.Upstream] = None) -> Path:
    if args.source not in upstream.SOURCES:
        return Path(args.source).resolve()
    if args.dir:
        return Path(args.dir).resolve()
    ref = up.ref if up else args.ref
    if not ref:
        raise apply.ApplyError("name the tree: SGLANG_REF=<ref> (or SGLANG_DIR=<dir>)")
    return build_dir() / "sglang" / versions.safe_ref_name(ref)


def _publish(tree: Path, ref: str) -> None:
    """Copy the tree's report to build/reports/<ref>.{json,md}."""
    src = apply.state_dir(tree)
    dest = build_dir() / "reports"
    dest.mkdir(parents=True, exist_ok=True)
    for ext in ("json", "md"):
        if (src / f"report.{ext}").exists():
            shutil.copyfile(src / f"report.{ext}", dest / f"{versions.safe_ref_name(ref)}.{ext}")


def _context(args, up: upstream.Upstream, cache: upstream.Cache) -> apply.Context:
    tree = upstream.prepare_tree(up, tree_for(args, up))
    return apply.make_context(tree, up, series.load(Path(args.patches)), cache, args.repo)


def _run_apply(args, op: str) -> int:
    cache = upstream.Cache(cache_dir())
    patches = series.load(Path(args.patches))  # validate before any download
    up = upstream.resolve(cache, args.ref, args.source, args.repo)
    ctx = _context(args, up, cache)
    ctx.series = patches
    try:
        record = apply.run_series(ctx, op=op, force=getattr(args, "force", False))
    except apply.Conflict as exc:
        _publish(ctx.tree, up.ref)
        print(
            f"\nstopped: {exc.result['name']} conflicts. Report: "
            f"{build_dir() / 'reports' / versions.safe_ref_name(up.ref)}.md\n"
            f"Resolve in {ctx.tree}, `git add` the files, then "
            f"`make rebase-continue SGLANG_REF={up.ref}` (or `make rebase-abort SGLANG_REF={up.ref}`)."
        )
        return EXIT_CONFLICT
    _publish(ctx.tree, up.ref)
    if op == "rebase":
        return _export_after_rebase(ctx, record)
    return 0


def _export_after_rebase(ctx: apply.Context, record: dict) -> int:
    before = record.get("previous_export")
    if before is None and ctx.series.base:
        # A fresh tree: compare with the series as exported, on its own base release.
        base = ctx.provide_base(ctx.series.base)
        head = base and refresh.series_at(ctx.tree, ctx.series, base, ctx.series.base)
        before = [base, head] if head else None
    changed = refresh.refresh(ctx.tree, ctx.series, new_variant=True, keep_three_way=False)
    print(
        "rebase done; patches/ "
        + (f"updated: {', '.join(changed)}" if changed else "unchanged")
        + ("\nrun `make matrix` to check the other releases" if changed else "")
    )
    _print_range_diff(ctx.tree, before)
    return 0


def _print_range_diff(tree: Path, before) -> None:
    text = refresh.what_changed(tree, before)
    if text.strip():
        print("\nwhat changed against the series patches/ held (git range-diff):\n" + text.rstrip())


def cmd_apply(args) -> int:
    return _run_apply(args, "apply")


def cmd_rebase(args) -> int:
    if not args.ref:
        raise apply.ApplyError("rebase needs the new ref: SGLANG_REF=<tag or branch>")
    return _run_apply(args, "rebase")


def _existing_tree(args) -> Path:
    tree = tree_for(args)
    if not (tree / ".git").exists() and not (tree.is_dir() and apply.gitlib.ok(["rev-parse"], tree)):
        raise apply.ApplyError(f"{tree} is not a tree made by `make apply`")
    return tree


def _resume_context(args, tree: Path) -> apply.Context:
    state = apply.load_state(tree)
    if state is None:
        raise apply.ApplyError(f"{tree}: no series operation in progress")
    up = upstream.Upstream(
        ref=state["ref"],
        commit=state["base"],
        version=state["version"],
        source=state["source"],
        repo=tree,
        coverage=tuple(state["coverage"]) if state["coverage"] else None,
        detail=state.get("source_detail", ""),
    )
    return apply.make_context(
        tree, up, series.load(Path(args.patches)), upstream.Cache(cache_dir()), args.repo
    )


def cmd_rebase_continue(args) -> int:
    tree = _existing_tree(args)
    ctx = _resume_context(args, tree)
    op = apply.load_state(tree)["op"]
    try:
        record = apply.continue_series(ctx)
    except apply.Conflict as exc:
        _publish(tree, ctx.upstream.ref)
        print(f"\nstopped again: {exc.result['name']} conflicts; resolve, then continue again")
        return EXIT_CONFLICT
    _publish(tree, ctx.upstream.ref)
    if op == "rebase":
        return _export_after_rebase(ctx, record)
    pending = apply.unexported(record)
    if pending:
        print(
            f"your resolution of {', '.join(pending)} is only on the branch: write it into "
            f"patches/ with `make refresh SGLANG_REF={ctx.upstream.ref}` (until then "
            "`make apply` refuses to replace the branch)"
        )
    if apply.skipped_by_user(record):
        print(
            f"{', '.join(apply.skipped_by_user(record))} was skipped: the branch is not the "
            "series in patches/ (remove the patch from patches/series if it is gone for good)"
        )
    return 0


def cmd_rebase_abort(args) -> int:
    tree = _existing_tree(args)
    state = apply.abort_series(tree)
    print(f"aborted the {state['op']} on {state['ref']}: {tree} is back where it was")
    return 0


def cmd_refresh(args) -> int:
    tree = _existing_tree(args)
    patches = series.load(Path(args.patches))
    before = apply.previous_export(tree)
    changed = refresh.refresh(tree, patches, new_variant=args.new_variant, check=args.check)
    if args.check:
        if changed:
            print("refresh would change: " + ", ".join(changed))
            return EXIT_ERROR
        print("patches/ is up to date with the tree")
        return 0
    print("refreshed: " + (", ".join(changed) if changed else "nothing changed"))
    if changed:
        _print_range_diff(tree, before)
    return 0


def cmd_matrix(args) -> int:
    refs = args.refs or (_env("REFS") or "").split() or None
    results = matrix.run(
        refs=refs,
        source=args.source,
        repo=args.repo,
        patches=Path(args.patches),
        build=build_dir(),
        cache=upstream.Cache(cache_dir()),
        jobs=args.jobs,
        with_tests=args.tests,
    )
    failed = [r["ref"] for r in results if not r["ok"]]
    print(f"matrix: {len(results) - len(failed)}/{len(results)} ok -> {build_dir() / 'matrix.md'}")
    if failed:
        print("failed: " + ", ".join(failed))
        return EXIT_ERROR
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(patches=Path(args.patches), build=build_dir(), refs=args.refs)


def cmd_footprint(args) -> int:
    from . import footprint

    patches = series.load(Path(args.patches))
    version = footprint.release_of(args.ref, patches)
    result = footprint.compute(patches, version)
    if args.json:
        sys.stdout.write(footprint.to_json(args.ref, version, result))
    else:
        sys.stdout.write(footprint.to_table(version, result))
    return 0


def cmd_pr(args) -> int:
    from . import pr

    if not args.ref and args.source in upstream.SOURCES:
        args.ref = "main"  # a PR targets upstream's main unless told otherwise
    rc = _run_apply(args, "apply")
    if rc != 0:
        return rc
    return pr.prepare(
        pr.Options.from_env(force=args.force),
        tree=tree_for(args),
        build=build_dir(),
        cache=upstream.Cache(cache_dir()),
        patches_dir=Path(args.patches),
    )


def cmd_next_release(args) -> int:
    """Build the next-release tree (tests/next_release over the newest PyPI
    snapshot), apply the series to it and check that no patch needed more than a
    3-way merge."""
    from . import nextrel

    cache = upstream.Cache(cache_dir())
    patches = series.load(Path(args.patches))
    fixture = nextrel.load_fixture(Path(args.fixture))
    try:
        newest = upstream.default_ref(cache)
    except upstream.UpstreamError:
        newest = None
    if newest and versions.key(newest) > versions.key(fixture.base):
        print(
            f"note: PyPI has {newest}, newer than the fixture's base {fixture.base}; "
            f"refresh {args.fixture} (see its README) so it stays ahead of the newest release"
        )
    tree, label, commit = nextrel.build(cache, fixture, build_dir() / "next-release", args.label)
    print(
        f"next release {label}: {fixture.base} from PyPI + {len(fixture.files)} upstream "
        f"file(s) + {len(fixture.fixups)} fixup(s) -> {tree} (commit {commit[:12]})"
    )
    if args.build_only:
        return 0
    for floor in nextrel.needed_floors(patches, label):
        cache.materialize_pypi(floor)  # the preimages 3-way merges need
    args.source, args.ref, args.dir = str(tree), label, None
    report = build_dir() / "reports" / f"{versions.safe_ref_name(label)}.md"
    rc = _run_apply(args, "apply")
    if rc != 0:
        print(f"next-release check FAILED: the series does not apply to {label}; report: {report}")
        if rc == EXIT_CONFLICT:
            print(
                f"(to try a resolution there: resolve in {tree}, `git add`, then "
                f"`make rebase-continue SGLANG_SOURCE={tree} SGLANG_REF={label}`)"
            )
        return rc
    record = apply.load_record(tree)
    problems = nextrel.check(record)
    if problems:
        print(f"next-release check FAILED: {'; '.join(problems)}; report: {report}")
        return EXIT_ERROR
    merged = [r["name"] for r in record["results"] if r["status"] == "applied-3way"]
    print(
        f"next-release check OK: {label}: "
        + (f"3-way merged: {', '.join(merged)}" if merged else "no 3-way merge needed")
        + f"; patched tree: {tree}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petit-series", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("apply", help="apply the series onto an upstream tree")
    common(s)
    s.add_argument("--force", action="store_true", default=_env("FORCE") == "1")
    s.set_defaults(func=cmd_apply)
    s = sub.add_parser("rebase", help="move the series onto a new ref and export it")
    common(s)
    s.set_defaults(func=cmd_rebase)
    for name, func in (("rebase-continue", cmd_rebase_continue), ("rebase-abort", cmd_rebase_abort)):
        s = sub.add_parser(name, help=f"{name.split('-')[1]} a stopped apply or rebase")
        common(s)
        s.set_defaults(func=func)
    s = sub.add_parser("refresh", help="export the tree's branch back to patches/")
    common(s)
    s.add_argument("--check", action="store_true", help="write nothing; fail if it would change")
    s.add_argument("--new-variant", action="store_true", help="write changed variants as new ones")
    s.set_defaults(func=cmd_refresh)
    s = sub.add_parser("matrix", help="apply the series on every supported release")
    common(s, ref=False)
    s.add_argument("--refs", nargs="*", default=None)
    s.add_argument("--jobs", type=int, default=int(_env("JOBS") or 2))
    s.add_argument(
        "--tests",
        action="store_true",
        default=_env("TESTS") == "1",
        help="also run tests/series on each release (TESTS=1)",
    )
    s.set_defaults(func=cmd_matrix)
    s = sub.add_parser("bench", help="time a cold and a warm matrix")
    common(s, ref=False)
    s.add_argument("--refs", nargs="*", default=None)
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("footprint", help="upstream lines and hunks the series deletes or changes")
    s.add_argument("--ref", default=_env("SGLANG_REF"), help="release whose variants count (default @base)")
    s.add_argument("--patches", default=str(ROOT / "patches"))
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_footprint)
    s = sub.add_parser("next-release", help="the series on upstream's files past the newest release")
    common(s, ref=False)
    s.add_argument("--label", default=_env("NEXT_LABEL"), help="its version (default <base+1>.dev0)")
    s.add_argument("--fixture", default=str(ROOT / "tests" / "next_release"))
    s.add_argument("--build-only", action="store_true", help="build the tree, apply nothing")
    s.set_defaults(func=cmd_next_release)
    s = sub.add_parser("pr", help="prepare an upstream SGLang PR from the series (env: see pr.py)")
    common(s)
    s.add_argument("--force", action="store_true", default=_env("FORCE") == "1")
    s.set_defaults(func=cmd_pr)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        apply.ApplyError,
        series.SeriesError,
        upstream.UpstreamError,
        LockedError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except apply.gitlib.GitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: run the same command again to recover", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
