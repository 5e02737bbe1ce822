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
import textwrap
from pathlib import Path
from typing import Optional

from . import apply, hints, matrix, refresh, series, upstream, versions
from .locking import LockedError

ROOT = Path(__file__).resolve().parents[2]
EXIT_ERROR, EXIT_USAGE, EXIT_CONFLICT = 1, 2, 3


def build_dir() -> Path:
    return hints.build_dir()


def cache_dir() -> Path:
    return hints.cache_dir()


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or None


def common(parser: argparse.ArgumentParser, ref: bool = True, ref_default: str = "the newest supported release") -> None:
    if ref:
        parser.add_argument(
            "--ref",
            default=_env("SGLANG_REF"),
            help=f"tag (v0.5.9, 0.5.9, v0.5.10.post1), branch or commit "
            f"(env SGLANG_REF; default: {ref_default})",
        )
    parser.add_argument(
        "--source",
        default=_env("SGLANG_SOURCE") or "auto",
        help="auto | git | pypi | <path to a local checkout> (env SGLANG_SOURCE; default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        default=_env("SGLANG_DIR"),
        help="the work tree (env SGLANG_DIR; default: $PETIT_BUILD_DIR/sglang/<ref>, "
        "or the checkout itself with SGLANG_SOURCE=<path>)",
    )
    parser.add_argument(
        "--repo",
        default=_env("SGLANG_REPO") or upstream.DEFAULT_REPO,
        help="upstream git repository (env SGLANG_REPO; default: %(default)s)",
    )
    parser.add_argument(
        "--patches", default=str(ROOT / "patches"), help="the series directory (default: %(default)s)"
    )


def tree_for(args, up: Optional[upstream.Upstream] = None) -> Path:
    if args.source not in upstream.SOURCES:
        return Path(args.source).resolve()
    if args.dir:
        return Path(args.dir).resolve()
    ref = up.ref if up else args.ref
    if not ref:
        raise apply.ApplyError(
            "name the tree: SGLANG_REF=<ref>, SGLANG_DIR=<dir>, or SGLANG_SOURCE=<path> "
            "for a local checkout"
        )
    return hints.default_tree(ref)


def _publish(tree: Path, ref: str) -> None:
    """Copy the tree's report to build/reports/<ref>.{json,md}."""
    src = apply.state_dir(tree)
    dest = build_dir() / "reports"
    dest.mkdir(parents=True, exist_ok=True)
    for ext in ("json", "md"):
        if (src / f"report.{ext}").exists():
            shutil.copyfile(src / f"report.{ext}", dest / f"{versions.safe_ref_name(ref)}.{ext}")


def _context(args, up: upstream.Upstream, cache: upstream.Cache, patches: series.Series) -> apply.Context:
    tree = upstream.prepare_tree(up, tree_for(args, up))
    return apply.make_context(tree, up, patches, cache, args.repo)


def _remove_new_tree(tree: Path) -> None:
    """Remove a tree this run created and could not finish: no half-made tree stays."""
    shutil.rmtree(tree, ignore_errors=True)
    if tree.exists():
        print(f"note: could not remove the unfinished tree {tree}; the next run reuses it", file=sys.stderr)
    else:
        print(f"removed the unfinished tree {tree}", file=sys.stderr)


def _run_apply(args, op: str) -> int:
    cache = upstream.Cache(cache_dir())
    patches = series.load(Path(args.patches))  # validate before any download
    up = upstream.resolve(cache, args.ref, args.source, args.repo)
    target = tree_for(args, up)
    created = up.source != "path" and not target.exists()
    try:
        ctx = _context(args, up, cache, patches)
        record = apply.run_series(ctx, op=op, force=getattr(args, "force", False))
    except apply.Conflict as exc:
        _publish(ctx.tree, up.ref)
        cont, abort = hints.resume_commands(ctx.tree, up.ref, up.source)
        print(
            f"\nstopped: {exc.result['name']} conflicts. Report: "
            f"{build_dir() / 'reports' / versions.safe_ref_name(up.ref)}.md\n"
            f"Resolve in {ctx.tree}, `git add` the files, then `{cont}` (or `{abort}`)."
        )
        return EXIT_CONFLICT
    except LockedError:
        raise  # another run, started at the same moment, is making this tree
    except BaseException:
        if created and target.exists():
            _remove_new_tree(target)
        raise
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
    if not (args.ref or args.dir) and args.source in upstream.SOURCES:
        # The tree `make apply` made without SGLANG_REF: the newest supported release.
        args.ref = upstream.default_ref(upstream.Cache(cache_dir()))
        print(f"SGLANG_REF not set: the tree of the newest release, {args.ref}")
    tree = tree_for(args)
    if not (tree / ".git").exists() and not (tree.is_dir() and apply.gitlib.ok(["rev-parse"], tree)):
        raise apply.ApplyError(
            f"{tree} is not a tree made by `make apply`; name the tree as the hint printed "
            "by the run that made it does: SGLANG_REF=<ref> for build/sglang/<ref>, "
            "SGLANG_DIR=<dir> for a tree elsewhere, SGLANG_SOURCE=<path> for a local checkout"
        )
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
        cont, abort = hints.resume_commands(tree, ctx.upstream.ref, ctx.upstream.source)
        print(
            f"\nstopped again: {exc.result['name']} conflicts; resolve, `git add`, then "
            f"`{cont}` (or `{abort}`)"
        )
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


EXIT_CODES = """exit status:
  0  done
  1  error: the message says why and what to do; nothing was changed
  2  usage: an unknown option, or a bad value of an option or variable
  3  stopped on a conflict: resolve it, then rebase-continue (or rebase-abort)"""

ENVIRONMENT = """environment: PETIT_BUILD_DIR (trees, reports; default build/), PETIT_CACHE_DIR
(downloads and upstream snapshots; default $PETIT_BUILD_DIR/cache), PETIT_PYPI_URL (a
PyPI JSON API mirror). Each option above also reads the variable it names, which is
what the Makefile passes on (`make apply SGLANG_REF=v0.5.9`)."""


def _epilog(*codes: str) -> str:
    """The exit codes a command uses, and the environment."""
    lines = EXIT_CODES.splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if line.split()[0] in codes]
    return "\n".join(keep) + "\n\n" + ENVIRONMENT


def _refs_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--refs`: the releases a many-release command (matrix, bench) runs on."""
    parser.add_argument("--refs", nargs="*", default=None, help=help)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


COMMANDS = {
    # name: (one-line help, description, exit codes)
    "apply": (
        "apply the series onto an upstream tree",
        "Materialize upstream SGLANG_REF (git, PyPI or your checkout), apply the series as one "
        "commit per patch on branch petit/<ref>, print one line per patch and a summary, and "
        "write build/reports/<ref>.{json,md}. Re-running is a no-op; a stopped or unexported "
        "tree is never overwritten (FORCE=1 replaces unexported commits).",
        "0123",
    ),
    "rebase": (
        "move the series onto a new ref and export it",
        "Apply the series onto SGLANG_REF with 3-way merges, then export the branch back into "
        "patches/ (a changed variant patch is written as a new variant for that release).",
        "0123",
    ),
    "rebase-continue": (
        "continue a stopped apply or rebase",
        "After a conflict: once the conflicted files are edited and `git add`ed in the tree, "
        "apply the rest of the series. Name the tree as the hint printed by the run that "
        "stopped does (SGLANG_REF, SGLANG_DIR or SGLANG_SOURCE=<path>).",
        "0123",
    ),
    "rebase-abort": (
        "abort a stopped apply or rebase",
        "After a conflict: roll the tree back to where it was before the stopped apply or "
        "rebase. Name the tree as the hint printed by the run that stopped does.",
        "012",
    ),
    "refresh": (
        "export the tree's branch back to patches/",
        "Export the commits of the tree's petit/<ref> branch into patches/, deterministically, "
        "each to the file its Petit-Patch trailer names (a commit without one becomes a new "
        "patch). A file that still reproduces its commit the way apply applied it (3-way "
        "included) keeps its bytes; a variant changed on a newer release becomes that "
        "release's variant. Prints git range-diff of what changed. With --check, nothing is "
        "written and the exit status is 1 if a file would change.",
        "012",
    ),
    "matrix": (
        "apply the series on every supported release",
        "Apply the series on each release (default: every supported release on PyPI) in "
        "build/matrix/<ref>/ and write build/matrix.{json,md}; exit status 1 when one fails.",
        "012",
    ),
    "bench": (
        "time a cold and a warm matrix",
        "Wall time of the matrix: cold (empty cache), warm (cache kept, trees rebuilt) and no-op.",
        "012",
    ),
    "footprint": (
        "upstream lines and hunks the series deletes or changes",
        "Count, from the patch files alone, the upstream lines each patch deletes or changes, "
        "the hunks on upstream files (each a point where upstream's next edit can conflict) "
        "and the lines added, per patch and file, for SGLANG_REF's variants (default the "
        "@base release).",
        "012",
    ),
    "next-release": (
        "the series on upstream's files past the newest release",
        "Lay tests/next_release (upstream's files newer than the newest PyPI release) over "
        "that release as build/next-release/v<label>, apply the series there and fail unless "
        "every patch applied exactly, with offsets, by a 3-way merge, or was excluded.",
        "0123",
    ),
    "pr": (
        "prepare an upstream SGLang PR from the series",
        "Apply the series on SGLANG_REF (default main), then make the PR branch, run SGLang's "
        "style tools and the tests and write build/pr/PR_BODY.md; PUSH=1 SGLANG_FORK=<fork> "
        "pushes it and opens the PR with gh. More variables: see scripts/petit_series/pr.py.",
        "0123",
    ),
}


def _sub(sub, name: str, func) -> argparse.ArgumentParser:
    help_, description, codes = COMMANDS[name]
    s = sub.add_parser(
        name,
        help=help_,
        description=textwrap.fill(description, 79),
        epilog=_epilog(*codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.set_defaults(func=func, subparser=s)
    return s


def _force(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument(
        "--force", action="store_true", default=_env("FORCE") == "1",
        help=f"{what} (env FORCE=1; default: off)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="petit-series",
        description=__doc__.split("\n\n")[0],
        epilog=_epilog("0", "1", "2", "3") + "\n\n`petit-series <command> --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")
    s = _sub(sub, "apply", cmd_apply)
    common(s)
    _force(s, "replace a petit/<ref> branch that holds commits not exported to patches/")
    s = _sub(sub, "rebase", cmd_rebase)
    common(s, ref_default="none: required")
    for name, func in (("rebase-continue", cmd_rebase_continue), ("rebase-abort", cmd_rebase_abort)):
        s = _sub(sub, name, func)
        common(s, ref_default="the newest supported release, as for apply; or name the tree with --dir or --source <path>")
    s = _sub(sub, "refresh", cmd_refresh)
    common(s, ref_default="the newest supported release, as for apply; or name the tree with --dir or --source <path>")
    s.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    s.add_argument(
        "--new-variant", action="store_true",
        help="write a changed variant patch as a new variant for the tree's release",
    )
    s = _sub(sub, "matrix", cmd_matrix)
    common(s, ref=False)
    _refs_option(s, "releases to apply (env REFS, space-separated; default: every supported release on PyPI)")
    s.add_argument(
        "--jobs", type=_positive_int, default=None,
        help="releases applied in parallel (env JOBS; default: 2)",
    )
    s.add_argument(
        "--tests",
        action="store_true",
        default=_env("TESTS") == "1",
        help="also run tests/series on each release (env TESTS=1; default: off)",
    )
    s = _sub(sub, "bench", cmd_bench)
    common(s, ref=False)
    _refs_option(s, "releases to time (default: every supported release on PyPI)")
    s = _sub(sub, "footprint", cmd_footprint)
    s.add_argument(
        "--ref", default=_env("SGLANG_REF"),
        help="release whose variants count (env SGLANG_REF; default: the @base release)",
    )
    s.add_argument("--patches", default=str(ROOT / "patches"), help="the series (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = _sub(sub, "next-release", cmd_next_release)
    common(s, ref=False)
    s.add_argument(
        "--label", default=_env("NEXT_LABEL"),
        help="its version (env NEXT_LABEL; default: <base+1>.dev0)",
    )
    s.add_argument(
        "--fixture", default=str(ROOT / "tests" / "next_release"),
        help="upstream's newer files (default: %(default)s)",
    )
    s.add_argument("--build-only", action="store_true", help="build the tree, apply nothing")
    s = _sub(sub, "pr", cmd_pr)
    common(s, ref_default="main")
    _force(s, "overwrite a PR branch changed since `make pr` wrote it")
    return p


def _env_options(args) -> None:
    """Options whose value comes from an environment variable, checked like options."""
    if getattr(args, "jobs", 0) is None:
        value = _env("JOBS")
        try:
            args.jobs = _positive_int(value) if value is not None else 2
        except argparse.ArgumentTypeError:
            args.subparser.error(f"JOBS={value!r} is not a whole number >= 1 (jobs run in parallel)")


# Commands that write into the build directory, and so need it writable.
WRITES_BUILD = ("apply", "rebase", "rebase-continue", "matrix", "bench", "next-release", "pr")


def _check_build_dir() -> None:
    path = build_dir()
    var = "PETIT_BUILD_DIR" if _env("PETIT_BUILD_DIR") else "the build directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise apply.ApplyError(
            f"{var} {path} cannot be created: {exc.strerror}; "
            "set PETIT_BUILD_DIR to a writable directory"
        ) from exc
    if not path.is_dir() or not os.access(path, os.W_OK):
        why = "is not a directory" if not path.is_dir() else "is not writable"
        raise apply.ApplyError(f"{var} {path} {why}; set PETIT_BUILD_DIR to a writable directory")


def _os_error(exc: OSError) -> str:
    """An OSError in words, naming the variable that chose the path."""
    where = exc.filename or ""
    text = f"{exc.strerror or exc}" + (f": {where}" if where else "")
    try:
        path = Path(str(where)).resolve()
    except (OSError, RuntimeError):
        return text
    for var, root in (("PETIT_CACHE_DIR", cache_dir()), ("PETIT_BUILD_DIR", build_dir())):
        if path == root or root in path.parents:
            return f"{text} (under {var}={root}; point {var} at a writable directory)"
    return text


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    _env_options(args)
    try:
        if args.command in WRITES_BUILD:
            _check_build_dir()
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
    except OSError as exc:
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: run the same command again to recover", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
