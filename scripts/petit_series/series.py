"""The ordered patch series in `patches/`.

`patches/series` lists the patches in apply order, one a line; `#` starts a
comment. An entry is either a patch file (`0001-name.patch`), the same for every
release, or a directory (`0005-name/`) holding variants of one logical patch
named by the oldest release each applies to (`0.5.9.patch`, `0.5.13.patch`,
...). A target release takes the variant with the greatest floor not above its
own version, so a logic change is made once, in the shared patches, and only
the touch points that upstream moved have per-range copies.

The directive `@base <version>` names the release the shared patches were
exported from; 3-way merges use it to find the patches' preimages.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Optional

from . import versions


class SeriesError(RuntimeError):
    """The series file and the patch files disagree, or the series is malformed."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str  # as written in the series file
    path: Path  # file, or directory of variants
    variants: tuple[str, ...] = ()  # floors, oldest first (directory entries)

    @property
    def is_variant_dir(self) -> bool:
        return bool(self.variants)

    def select(self, version: Optional[str]) -> tuple[Path, Optional[str]]:
        """The patch file for a target version and the floor it was chosen by."""
        if not self.variants:
            return self.path, None
        floor = versions.select_floor(version, self.variants)
        if floor is None:
            raise SeriesError(
                f"{self.name}: no variant for release {version} "
                f"(oldest variant: {self.variants[0]})"
            )
        return self.path / f"{floor}.patch", floor


@dataclasses.dataclass(frozen=True)
class Series:
    root: Path
    entries: tuple[Entry, ...]
    base: Optional[str]

    def selected(self, version: Optional[str]) -> list[tuple[Entry, Path, Optional[str]]]:
        return [(e, *e.select(version)) for e in self.entries]

    def digest(self, version: Optional[str]) -> str:
        """Hash of what would be applied to `version` (series file + chosen files)."""
        h = hashlib.sha256()
        h.update((self.root / "series").read_bytes())
        for entry, path, _ in self.selected(version):
            h.update(entry.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()


def load(root: Path) -> Series:
    """Read and validate `root/series` against the files in `root`."""
    root = root.resolve()
    series_file = root / "series"
    if not series_file.is_file():
        raise SeriesError(f"{series_file} is missing")
    entries: list[Entry] = []
    base: Optional[str] = None
    seen: set[str] = set()
    for lineno, raw in enumerate(series_file.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{series_file}:{lineno}"
        if line.startswith("@"):
            word, _, value = line.partition(" ")
            if word == "@base" and versions.is_version(value.strip()):
                base = versions.normalize(value.strip())
                continue
            raise SeriesError(f"{where}: unknown directive {line!r}")
        if line in seen:
            raise SeriesError(f"{where}: {line} is listed twice")
        seen.add(line)
        if line.endswith("/"):
            directory = root / line.rstrip("/")
            if not directory.is_dir():
                raise SeriesError(f"{where}: variant directory {line} does not exist")
            floors = []
            for child in sorted(directory.iterdir()):
                stem = child.name[: -len(".patch")] if child.name.endswith(".patch") else ""
                if not stem or not versions.is_version(stem):
                    raise SeriesError(
                        f"{child}: variant files must be named <release>.patch "
                        "(the oldest release they apply to)"
                    )
                floors.append(versions.normalize(stem))
            if not floors:
                raise SeriesError(f"{where}: variant directory {line} is empty")
            entries.append(Entry(line, directory, tuple(versions.sort(floors))))
        elif line.endswith(".patch"):
            path = root / line
            if not path.is_file():
                raise SeriesError(f"{where}: patch {line} is listed but missing")
            entries.append(Entry(line, path))
        else:
            raise SeriesError(f"{where}: {line!r} is neither a .patch file nor a directory/")
    listed = {e.path.name for e in entries}
    stray = sorted(
        p.name
        for p in root.iterdir()
        if p.name != "series" and not p.name.startswith(".") and p.name not in listed
    )
    if stray:
        raise SeriesError(
            f"not listed in {series_file}: {', '.join(stray)} "
            "(add them to the series or delete them)"
        )
    return Series(root, tuple(entries), base)
