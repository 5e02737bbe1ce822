"""Export the commits of a `petit/<ref>` branch back into `patches/`.

The export is deterministic (see gitlib.FORMAT_PATCH_FLAGS) and, like
go-infra's git-go-patch, keeps a patch file's bytes whenever the old file,
applied to the commit's parent, gives exactly the commit's tree: re-exporting an
unchanged series changes nothing, even where upstream context moved.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from . import gitlib, hints, versions
from .apply import UPSTREAM_REF, ApplyError, load_record, load_state
from .series import Series


def same_result(tree: Path, commit: str, patch: Path, excluded: list[str]) -> bool:
    """Does `patch` applied to `commit^` give the tree of `commit`?"""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        gitlib.run(["read-tree", f"{commit}^"], tree, env=env)
        applied = gitlib.run(
            ["apply", "--cached", *gitlib.exclude_args(excluded), str(patch)],
            tree,
            env=env,
            check=False,
        )
        if applied.returncode != 0:
            return False
        return gitlib.out(["write-tree"], tree, env=env) == gitlib.out(
            ["rev-parse", f"{commit}^{{tree}}"], tree
        )


def _branch_commits(tree: Path) -> list[str]:
    text = gitlib.out(["rev-list", "--reverse", f"{UPSTREAM_REF}..HEAD"], tree)
    return text.split()


def refresh(tree: Path, series: Series, *, new_variant: bool = False, check: bool = False) -> list[str]:
    """Write the branch's commits to their patch files; returns the files changed.

    With `check`, nothing is written (the list says what would change).
    With `new_variant`, a changed variant patch is written as a new variant named
    by the tree's release instead of overwriting the variant it came from.
    """
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
    version = record.get("version")
    by_subject = {r["subject"]: r for r in record["results"] if r.get("subject")}
    entries = {e.name: e for e in series.entries}
    changed: list[str] = []
    new_names: list[str] = []
    seen: set[str] = set()
    for commit in _branch_commits(tree):
        subject = gitlib.out(["log", "-1", "--format=%s", commit], tree)
        result = by_subject.get(subject)
        excluded = result.get("excluded", []) if result else []
        if result is not None:
            seen.add(result["name"])
            target = series.root / result["file"]
            entry = entries.get(result["name"])
            if new_variant and entry is not None and entry.is_variant_dir:
                if version:
                    target = entry.path / f"{versions.normalize(version)}.patch"
        else:
            number = len(series.entries) + len(new_names) + 1
            name = f"{number:04d}-{gitlib.munge_subject(subject)}.patch"
            new_names.append(name)
            target = series.root / name
        if target.exists() and same_result(tree, commit, target, excluded):
            continue
        text = gitlib.format_patch(tree, commit)
        if excluded:
            # A partial tree lacks these files: carry their hunks over unchanged.
            source = series.root / result["file"]
            text = gitlib.replace_file_diffs(text, source.read_text(), excluded)
        changed.append(str(target.relative_to(series.root)))
        if not check:
            target.write_text(text)
    if new_names and not check:
        with (series.root / "series").open("a") as fh:
            for name in new_names:
                fh.write(name + "\n")
    missing = [
        r["name"]
        for r in record["results"]
        if r["status"] not in ("already-upstream", "excluded") and r["name"] not in seen
    ]
    if missing:
        print(
            "warning: no commit on the branch for "
            + ", ".join(missing)
            + " (dropped?): their patch files were left as they are; remove them from "
            "patches/series by hand if they are gone for good"
        )
    return changed
