"""The series' footprint on upstream: what the next upstream edit can conflict with.

For the patches selected for one release, count per patch and per file:

- `upstream -`: the `-` lines of hunks against files that exist upstream (lines
  the series deletes or changes; a changed line is a `-` plus a `+`);
- `hunks`: the hunks touching such files, each a point where an upstream edit
  nearby makes the patch stop;
- `+`: the lines added (in any file).

A file is upstream's unless an earlier patch of the series created it; a rename
keeps the origin of its source (`petit.py` -> `petit_nvfp4.py` is upstream code).
A pure rename has no hunks and counts 0. Everything is computed from the patch
files; no tree is needed, so a `-` line in an upstream file counts even where an
earlier patch added it (the later patch still edits a file upstream edits too).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from . import gitlib, series, versions


@dataclasses.dataclass(frozen=True)
class FileFootprint:
    path: str
    old_path: Optional[str]  # the source of a rename or a deletion
    kind: str  # "upstream", "rename", "series" (created by the series), "deleted"
    removed: int  # `-` lines against an upstream file
    hunks: int  # hunks against an upstream file
    added: int

    @property
    def label(self) -> str:
        if self.kind != "rename" or self.old_path is None:
            return self.path
        old_dir, _, old_name = self.old_path.rpartition("/")
        new_dir, _, new_name = self.path.rpartition("/")
        if old_dir == new_dir and old_dir:
            return f"{old_dir}/{{{old_name} -> {new_name}}}"
        return f"{self.old_path} -> {self.path}"


@dataclasses.dataclass(frozen=True)
class PatchFootprint:
    name: str  # series entry
    file: str  # the patch file, relative to patches/
    files: tuple[FileFootprint, ...]

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)

    @property
    def hunks(self) -> int:
        return sum(f.hunks for f in self.files)

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)


def release_of(ref: Optional[str], patches: series.Series) -> Optional[str]:
    """The release whose variants are selected: `ref` when it is a version, the
    `@base` release when no ref is given, None (the newest variants) for a branch."""
    if ref is None:
        return patches.base
    return versions.normalize(ref) if versions.is_version(ref) else None


def compute(patches: series.Series, version: Optional[str]) -> list[PatchFootprint]:
    created: set[str] = set()  # paths the series created so far
    result = []
    for entry, path, _ in patches.selected(version):
        mail = gitlib.parse_patch(path.read_text())
        files = []
        for fp in mail.files:
            added = sum(h.added for h in fp.hunks)
            if fp.old_path is None:
                created.add(fp.path)
                files.append(FileFootprint(fp.path, None, "series", 0, 0, added))
                continue
            ours = fp.old_path in created
            if fp.new_path is None:
                created.discard(fp.old_path)
                kind = "series" if ours else "deleted"
            elif fp.is_rename:
                created.discard(fp.old_path)
                if ours:
                    created.add(fp.new_path)
                kind = "series" if ours else "rename"
            else:
                kind = "series" if ours else "upstream"
            removed = 0 if ours else sum(h.removed for h in fp.hunks)
            hunks = 0 if ours else len(fp.hunks)
            files.append(FileFootprint(fp.path, fp.old_path, kind, removed, hunks, added))
        result.append(PatchFootprint(entry.name, str(path.relative_to(patches.root)), tuple(files)))
    return result


def to_json(ref: Optional[str], version: Optional[str], result: list[PatchFootprint]) -> str:
    data = {
        "ref": ref,
        "release": version,
        "patches": [
            {
                "name": p.name,
                "file": p.file,
                "removed": p.removed,
                "hunks": p.hunks,
                "added": p.added,
                "files": [dataclasses.asdict(f) for f in p.files],
            }
            for p in result
        ],
        "totals": totals(result),
    }
    return json.dumps(data, indent=2) + "\n"


def totals(result: list[PatchFootprint]) -> dict:
    upstream_files = {f.path for p in result for f in p.files if f.hunks}
    return {
        "removed": sum(p.removed for p in result),
        "hunks": sum(p.hunks for p in result),
        "added": sum(p.added for p in result),
        "upstream_files": len(upstream_files),
    }


def to_table(version: Optional[str], result: list[PatchFootprint]) -> str:
    rows = [("patch / file", "kind", "upstream -", "hunks", "+")]
    for p in result:
        rows.append((p.file, "", str(p.removed), str(p.hunks), str(p.added)))
        for f in p.files:
            rows.append((f"  {f.label}", f.kind, str(f.removed), str(f.hunks), str(f.added)))
    t = totals(result)
    rows.append(("total", "", str(t["removed"]), str(t["hunks"]), str(t["added"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"footprint of the series on release {version or '(newest variants)'}:"]
    for i, row in enumerate(rows):
        if i in (1, len(rows) - 1):
            lines.append("-" * (sum(widths) + 8))
        lines.append(
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
            + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[2:], widths[2:]))
        )
    lines.append(
        f"{t['removed']} upstream lines deleted or changed, {t['hunks']} hunks on "
        f"{t['upstream_files']} upstream files (conflict points), {t['added']} lines added"
    )
    return "\n".join(lines) + "\n"
