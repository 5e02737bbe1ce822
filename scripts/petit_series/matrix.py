"""Apply the series on many releases and tabulate the outcome.

Trees live in `<build>/matrix/<ref>/`, apart from the users' `build/sglang/`
trees. Results go to `<build>/matrix.json` (a list of objects with `ref`, `ok`
and per-patch status) and `<build>/matrix.md`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Optional

from . import apply, refresh, gitlib, pypi, pytestlog, series, upstream, versions

SYMBOL = {
    "applied": "ok",
    "applied-offsets": "ok (offset)",
    "applied-3way": "3-way",
    "resolved": "resolved",
    "already-upstream": "upstream",
    "excluded": "excluded",
    "conflict": "**CONFLICT**",
}


def supported_refs(cache: upstream.Cache) -> list[str]:
    index = cache.pypi_index()
    return [versions.tag(v) for v in versions.supported(pypi.release_versions(index))]


def _one(
    up: upstream.Upstream,
    cache: upstream.Cache,
    patches: series.Series,
    build: Path,
    repo: str,
    with_tests: bool = False,
) -> dict:
    started = time.monotonic()
    tree = build / "matrix" / versions.safe_ref_name(up.ref)
    row = {"ref": up.ref, "version": up.version, "source": up.source, "base": up.commit}
    try:
        tree = upstream.prepare_tree(up, tree)
        if apply.load_state(tree):
            apply.abort_series(tree)
        ctx = apply.make_context(tree, up, patches, cache, repo, quiet=True)
        # A tree that only proves that the series applies needs just the
        # directories the patches touch (the same git am path, a fraction of the
        # I/O); running the tests needs all of it.
        gitlib.set_sparse(tree, None if with_tests else _touched_dirs(ctx))
        record = apply.run_series(ctx, force=True)
        row.update(ok=True, patches=_patch_rows(record["results"]), head=record["head"])
        # Exporting what was just applied must change no patch file on any release.
        stale = refresh.plan(tree, ctx.series).changed(ctx.series.root)
        if stale:
            row.update(ok=False, error=f"refresh would rewrite {', '.join(stale)}")
    except apply.Conflict as exc:
        state = apply.load_state(tree) or {"results": [exc.result]}
        row.update(ok=False, patches=_patch_rows(state["results"]), error=f"{exc.result['name']} conflicts")
        apply.abort_series(tree)
    except Exception as exc:  # one bad release must not hide the others
        row.update(ok=False, patches=[], error=str(exc))
    row["seconds"] = round(time.monotonic() - started, 2)
    return row


def run_tests(row: dict, tree: Path, build: Path) -> dict:
    """The series' own tests (tests/series) on an applied tree, in the release's env."""
    from . import harness

    if not row.get("version"):
        return {"ok": None, "note": "not a release: no environment to test in"}
    junit = build / "matrix-tests" / f"{row['ref']}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        rc = harness.run_tests(row["version"], tree, ["-q", f"--junitxml={junit}"])
    except harness.HarnessError as exc:
        return {"ok": False, "error": str(exc)}
    result = {"ok": rc == 0, "rc": rc, "seconds": round(time.monotonic() - started, 1)}
    if junit.exists():
        result.update(pytestlog.junit_counts(junit.read_text()))
    return result


def _touched_dirs(ctx: apply.Context) -> set[str]:
    dirs = set()
    for _, path, _ in ctx.series.selected(ctx.upstream.version):
        for fp in gitlib.parse_patch(path.read_text()).files:
            dirs.update(os.path.dirname(p) for p in fp.paths)
    return dirs


def _patch_rows(results: list[dict]) -> list[dict]:
    return [
        {k: r.get(k) for k in ("name", "status", "variant", "excluded", "offsets") if r.get(k) is not None}
        for r in results
    ]


def run(
    *,
    refs: Optional[list[str]],
    source: str,
    repo: str,
    patches: Path,
    build: Path,
    cache: upstream.Cache,
    jobs: int = 2,
    with_tests: bool = False,
) -> list[dict]:
    loaded = series.load(patches)  # once, and before any download: a broken series fails early
    cache.ensure()
    if not refs:
        refs = supported_refs(cache)
    if source == "auto":
        try:
            cache.remote_refs(repo, timeout=8)
            source = "git"
        except upstream.UpstreamError:
            source = "pypi"
    ups: list = []
    for ref in refs:  # materialize sequentially (downloads, one cache lock)
        try:
            ups.append(upstream.resolve(cache, ref, source, repo))
        except upstream.UpstreamError as exc:
            ups.append({"ref": ref, "ok": False, "patches": [], "error": str(exc)})
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [
            pool.submit(_one, up, cache, loaded, build, repo, with_tests)
            if isinstance(up, upstream.Upstream)
            else None
            for up in ups
        ]
        rows = [f.result() if f else up for f, up in zip(futures, ups)]
    if with_tests:
        from . import harness

        harness.ensure_checkpoints()
        for row in rows:  # one at a time: each release env is large
            if row["ok"]:
                tree = build / "matrix" / versions.safe_ref_name(row["ref"])
                row["tests"] = run_tests(row, tree, build)
                row["ok"] = row["tests"]["ok"] is not False
    for row in rows:
        mark = "ok" if row["ok"] else "FAILED"
        print(f"{row['ref']:>14}  {mark:6}  " + " ".join(SYMBOL.get(p["status"], p["status"]) for p in row["patches"]) + (f"  {row.get('error', '')}" if not row["ok"] else ""))
    build.mkdir(parents=True, exist_ok=True)
    (build / "matrix.json").write_text(json.dumps(rows, indent=2) + "\n")
    (build / "matrix.md").write_text(to_markdown(rows))
    return rows


def _tests_cell(tests: Optional[dict]) -> str:
    if not tests:
        return ""
    if tests.get("ok") is None:
        return tests.get("note", "")
    if "tests" not in tests:
        return f"**error**: {tests.get('error', 'rc ' + str(tests.get('rc')))}"
    text = f"{tests['passed']} passed, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped"
    return text if tests["ok"] else f"**{text}**"


def to_markdown(rows: list[dict]) -> str:
    names: list[str] = []
    for row in rows:
        for p in row["patches"]:
            if p["name"] not in names:
                names.append(p["name"])
    short = [n.split("-", 1)[0].rstrip("/") for n in names]
    with_tests = any("tests" in row for row in rows)
    lines = [
        "| release | ok | " + " | ".join(short) + " |" + (" tests |" if with_tests else ""),
        "|---|---|" + "---|" * (len(short) + with_tests),
    ]
    for row in rows:
        by_name = {p["name"]: p for p in row["patches"]}
        cells = []
        for n in names:
            p = by_name.get(n)
            if p is None:
                cells.append("")
                continue
            cell = SYMBOL.get(p["status"], p["status"])
            if p.get("variant"):
                cell += f" ({p['variant']})"
            cells.append(cell)
        ok = "yes" if row["ok"] else f"**no**: {row.get('error', '')}"
        line = f"| {row['ref']} | {ok} | " + " | ".join(cells) + " |"
        if with_tests:
            line += f" {_tests_cell(row.get('tests'))} |"
        lines.append(line)
    legend = "\n".join(f"- `{s}`: {n}" for s, n in zip(short, names))
    return "\n".join(lines) + "\n\nPatches:\n\n" + legend + "\n"
