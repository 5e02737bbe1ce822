"""Export the commits of a `petit/<ref>` branch back into `patches/`.

Each commit the tool made carries a `Petit-Patch: <file>` trailer naming the
patch file it came from (stripped again on export), so a reworded, reordered or
amended commit keeps its file, a commit without one is a new patch appended to
the series, and a patch whose commit is gone is reported, never silently lost.

The export is deterministic (see gitlib.FORMAT_PATCH_FLAGS) and, like
go-infra's git-go-patch, keeps a patch file's bytes whenever that file still
reproduces its commit the way apply applied it: the same message, the same tree
from the commit's parent (by an exact apply, or by the 3-way merge apply used),
and nothing below it on the branch changed the files it touches. Re-exporting an
unchanged series therefore changes nothing on any release, while a patch whose
own preimage moved because an earlier patch was edited is written afresh (its
`index` lines and line numbers follow the edit).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Optional

from . import gitlib, hints, versions
from .apply import (
    PATCH_TRAILER,
    SKIPPED_BY_USER,
    UPSTREAM_REF,
    ApplyError,
    load_record,
    load_state,
    mark_exported,
    save_record,
)
from .series import Series
from .series import load as load_series


def _mail_head(text: str) -> str:
    """The mail part of a patch (headers and message), before the first diff."""
    return text.split("\ndiff --git ", 1)[0]


def _same_tree(tree: Path, commit: str, patch: Path, excluded: list[str], three_way: bool) -> bool:
    """Does `patch` applied to `commit^` (exactly, or by a 3-way merge) give `commit`'s tree?"""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        for merge in (False, True) if three_way else (False,):
            gitlib.run(["read-tree", f"{commit}^"], tree, env=env)
            args = ["apply", "--cached", *(["--3way"] if merge else []), *gitlib.exclude_args(excluded)]
            if gitlib.run([*args, str(patch)], tree, env=env, check=False).returncode != 0:
                continue
            written = gitlib.run(["write-tree"], tree, env=env, check=False)
            if written.returncode == 0 and written.stdout.strip() == gitlib.out(
                ["rev-parse", f"{commit}^{{tree}}"], tree
            ):
                return True
    return False


def _blob(tree: Path, commit: Optional[str], path: str) -> Optional[str]:
    if not commit:
        return None
    proc = gitlib.run(["rev-parse", "--verify", "--quiet", f"{commit}:{path}"], tree, check=False)
    return proc.stdout.strip() or None


def _preimage_moved(tree: Path, commit: str, patch_text: str, applied_parent: Optional[str], excluded: list[str]) -> bool:
    """Did an edit below this commit change a file it touches since apply made it?

    Then the patch's `index` lines and line numbers are stale even when it still
    applies (with offsets), and it must be exported afresh."""
    if not applied_parent:
        return False
    parent = f"{commit}^"
    for fp in gitlib.parse_patch(patch_text).files:
        if fp.old_path is None or fp.old_path in excluded:
            continue
        now = _blob(tree, parent, fp.old_path)
        if fp.old_oid and now and now.startswith(fp.old_oid):
            continue  # the patch names exactly the blob it applies to
        if now != _blob(tree, applied_parent, fp.old_path):
            return True
    return False


@dataclasses.dataclass
class Item:
    commit: str
    target: Path  # the patch file this commit is written to
    result: Optional[dict]  # its entry in the tree's record (None: a new commit)
    source: Optional[Path] = None  # the patch file it was applied from
    stamp: Optional[str] = None  # the file its trailer names (None: no trailer)
    export: str = ""  # its deterministic export, trailer stripped
    keep: bool = False  # the source file already reproduces the commit


@dataclasses.dataclass
class Plan:
    items: list[Item]
    new_files: list[str]  # series lines to append

    def changed(self, root: Path) -> list[str]:
        return [str(i.target.relative_to(root)) for i in self.items if not i.keep]


def entry_name(file: str) -> str:
    """The series line of a patch file: `0003-x.patch`, or `0006-y/` for a variant."""
    return file.split("/")[0] + "/" if "/" in file else file


def _branch_commits(tree: Path) -> list[str]:
    return gitlib.out(["rev-list", "--reverse", f"{UPSTREAM_REF}..HEAD"], tree).split()


def plan(tree: Path, series: Series, *, new_variant: bool = False, keep_three_way: bool = True) -> Plan:
    """What a refresh would write. Raises ApplyError where it would lose something."""
    state = load_state(tree)
    if state:
        cont, abort = hints.resume_commands(tree, state.get("ref"), state.get("source"))
        raise ApplyError(
            f"{tree}: a series operation is in progress; finish it with `{cont}` "
            f"or roll it back with `{abort}` first"
        )
    record = load_record(tree)
    if record is None:
        raise ApplyError(f"{tree}: no applied series here; run `make apply` for it first")
    listed = {str(p.relative_to(series.root)) for _, p, _ in series.selected(record.get("version"))}
    results = {r["file"]: r for r in record["results"]}
    entries = {e.name: e for e in series.entries}
    commits = _branch_commits(tree)
    stamps = gitlib.trailer_values(tree, commits, PATCH_TRAILER)
    names = dict(stamps)
    # A commit whose message lost the trailer (`git commit --amend -m`) is matched by
    # its subject to a patch no other commit claims.
    claimed = set(names.values())
    by_subject = {r.get("subject"): r["file"] for r in record["results"] if r["file"] not in claimed}
    for commit in commits:
        if names.get(commit) is None:
            names[commit] = by_subject.pop(gitlib.out(["log", "-1", "--format=%s", commit], tree), None)
    items: list[Item] = []
    new_files: list[str] = []
    version = record.get("version")
    for commit in commits:
        name = names.get(commit)
        result = results.get(name) if name else None
        entry = entries.get(entry_name(name)) if name else None
        if entry is not None:
            source = target = series.root / name
            if entry.is_variant_dir and version and source.parent == entry.path:
                # A variant serves releases from its floor on: what changed on a newer
                # release becomes that release's own variant, so older ones keep
                # applying exactly.
                floor = source.stem
                if new_variant or (versions.is_version(floor) and versions.key(version) > versions.key(floor)):
                    target = entry.path / f"{versions.normalize(version)}.patch"
        else:
            # A commit made by hand (or whose patch left the series): a new patch.
            subject = gitlib.out(["log", "-1", "--format=%s", commit], tree)
            number = len(series.entries) + len(new_files) + 1
            file = f"{number:04d}-{gitlib.munge_subject(subject)}.patch"
            new_files.append(file)
            source, target, result = None, series.root / file, None
        export = gitlib.format_patch(tree, commit, drop_trailers=(PATCH_TRAILER,))
        items.append(Item(commit, target, result, source, stamps.get(commit), export))
    carried = {i.result["file"] for i in items if i.result}
    missing = [
        r["name"]
        for r in record["results"]
        if r["status"] in ("applied", "applied-offsets", "applied-3way", "resolved")
        and r["file"] in listed
        and r["file"] not in carried
    ]
    skipped = [r["name"] for r in record["results"] if r["file"] in listed and r["status"] == SKIPPED_BY_USER]
    if missing or skipped:
        gone = ", ".join(dict.fromkeys(skipped + missing))
        raise ApplyError(
            f"the branch in {tree} has no commit for {gone} (skipped or dropped): exporting it "
            "would leave patches/ describing a series the branch is not. If the patch is gone "
            "for good, remove it from patches/series (and delete its file), then refresh "
            "again; otherwise bring its commit back (`git reflog`), or re-apply with FORCE=1"
        )
    for item in items:
        if item.result is None or item.source is None or not item.source.exists():
            continue
        old = item.source.read_text()
        excluded = item.result.get("excluded", [])
        item.keep = (
            _mail_head(item.export) == _mail_head(old)
            and _same_tree(
                tree,
                item.commit,
                item.source,
                excluded,
                three_way=keep_three_way and item.result["status"] == "applied-3way",
            )
            and not _preimage_moved(tree, item.commit, old, item.result.get("parent"), excluded)
        )
    return Plan(items, new_files)


def _export(item: Item, root: Path) -> str:
    text = item.export
    excluded = item.result.get("excluded", []) if item.result else []
    if excluded:
        # A partial tree lacks these files: carry their hunks over unchanged.
        source = root / item.result["file"]
        text = gitlib.replace_file_diffs(text, source.read_text(), excluded)
    return text


def refresh(
    tree: Path, series: Series, *, new_variant: bool = False, check: bool = False, keep_three_way: bool = True
) -> list[str]:
    """Write the branch's commits to their patch files; returns the files changed.

    With `check`, nothing is written (the list says what would change).
    With `new_variant`, a changed variant patch is written as a new variant named
    by the tree's release instead of overwriting the variant it came from.
    With `keep_three_way=False` (a rebase), a patch that needed a 3-way merge is
    written with the new context so that it applies exactly from now on.
    """
    p = plan(tree, series, new_variant=new_variant, keep_three_way=keep_three_way)
    changed = p.changed(series.root)
    if check:
        return changed
    for item in p.items:
        if not item.keep:
            item.target.parent.mkdir(parents=True, exist_ok=True)
            item.target.write_text(_export(item, series.root))
    if p.new_files:
        with (series.root / "series").open("a") as fh:
            fh.writelines(name + "\n" for name in p.new_files)
    _sync_record(tree, series.root, p)
    return changed


def _final_file(item: Item, root: Path) -> str:
    return str((item.source if item.keep else item.target).relative_to(root))


def _restamp(tree: Path, root: Path, p: Plan) -> None:
    """Point each commit's trailer at the file it now lives in (a new variant, a new
    patch); the commits above one that changes are re-parented, trees unchanged."""
    old_head = gitlib.out(["rev-parse", "HEAD"], tree)
    parent, moved = gitlib.out(["rev-parse", UPSTREAM_REF], tree), False
    for item in p.items:
        file = _final_file(item, root)
        if moved or item.stamp != file:
            message = gitlib.add_trailer(tree, gitlib.commit_message(tree, item.commit), PATCH_TRAILER, file)
            item.commit = gitlib.rewrite_message(tree, item.commit, message, parent=parent)
            moved = True
        parent = item.commit
    if moved:
        gitlib.run(["update-ref", "-m", "petit-series refresh: name the patch files", "HEAD", parent, old_head], tree)


def _sync_record(tree: Path, root: Path, p: Plan) -> None:
    """After an export patches/ reproduces the branch: record that (through
    apply.save_record, the one writer of record.json)."""
    record = load_record(tree)
    _restamp(tree, root, p)
    head = gitlib.out(["rev-parse", "HEAD"], tree)
    results = []
    parent = record["base"]
    for item in p.items:
        file = _final_file(item, root)
        result = dict(item.result or {"name": file, "file": file, "status": "applied", "excluded": []})
        if item.result and item.result["file"] != file:  # written as a new variant
            result["file"], result["variant"] = file, item.target.stem
        result.update(commit=item.commit, parent=parent, exported=True)
        results.append(result)
        parent = item.commit
    # Patches that are not commits (already upstream, excluded) keep their place.
    for r in record["results"]:
        if r["status"] in ("already-upstream", "excluded"):
            results.append(r)
    loaded = load_series(root)
    rank = {str(path.relative_to(root)): n for n, (_, path, _) in enumerate(loaded.selected(record.get("version")))}
    results.sort(key=lambda r: rank.get(r["file"], len(rank)))
    record.update(results=results, head=head, digest=loaded.digest(record.get("version")))
    save_record(tree, record)
    mark_exported(tree, head, record["base"])


def what_changed(tree: Path, before: Optional[list]) -> str:
    """`git range-diff` of the series as patches/ held it against the branch now."""
    if not before:
        return ""
    base, head = before
    now = gitlib.out(["rev-parse", "HEAD"], tree)
    if head == now:
        return ""
    return gitlib.range_diff(tree, f"{base}..{head}", f"{UPSTREAM_REF}..{now}")


def series_at(tree: Path, series: Series, base: str, version: Optional[str]) -> Optional[str]:
    """The series as patches/ holds it, applied exactly onto `base` (the release it
    is exported from) as commits, without touching the work tree; its head, or
    None where a patch does not apply there. The "before" side of a range-diff."""
    head = base
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        for _, path, _ in series.selected(version):
            gitlib.run(["read-tree", head], tree, env=env)
            if gitlib.run(["apply", "--cached", str(path)], tree, env=env, check=False).returncode != 0:
                return None
            info = gitlib.run(
                ["mailinfo", os.path.join(tmp, "msg"), os.path.join(tmp, "patch")],
                tree,
                input=path.read_text(),
            ).stdout
            fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
            body = Path(tmp, "msg").read_text().strip("\n")
            message = fields.get("Subject", path.stem) + ("\n\n" + body if body else "") + "\n"
            message = gitlib.add_trailer(tree, message, PATCH_TRAILER, str(path.relative_to(series.root)))
            written = gitlib.out(["write-tree"], tree, env=env)
            who = {
                "GIT_AUTHOR_NAME": fields.get("Author", ""),
                "GIT_AUTHOR_EMAIL": fields.get("Email", ""),
                "GIT_AUTHOR_DATE": fields.get("Date", ""),
            }
            head = gitlib.out(["commit-tree", written, "-p", head], tree, input=message, env=who)
    return head
