"""The "next release": upstream's newer files laid over the newest PyPI release.

Upstream keeps moving past its newest release. `tests/next_release/` holds the
upstream files the series touches (and the modules they need) as they are after
that release, with where each came from (`SOURCES.json`), plus small fixups where
the stored files do not fit together (see that directory's README). `build` lays
them over the PyPI snapshot of `base` as one commit on top of it, made in the
upstream cache (`refs/next-release/v<label>`, reproducible), and checks it out as
a git tree under `build/next-release/v<label>/` that

    petit-series apply --source build/next-release/v<label> --ref <label>

takes like any checkout: the release tag `v<label>` names the commit, and its
`Petit-Coverage` trailer makes it as partial as the snapshot it is built on.
`<label>` is a pre-release after `base` (default `<base + 1 micro>.dev0`), so the
series picks its newest variants for it.

`check` tells whether a run on it is acceptable: every patch applied (exactly,
with offsets or by a 3-way merge) or excluded (outside the partial tree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from . import gitlib, versions
from .upstream import Cache, UpstreamError, _trailers

MARKER = "petit-next-release"  # file in a built tree's git dir: ours to rebuild
ALLOWED = ("applied", "applied-offsets", "applied-3way", "excluded")


class NextReleaseError(UpstreamError):
    """The fixture is inconsistent or the tree cannot be built; nothing changed."""


@dataclasses.dataclass(frozen=True)
class Fixture:
    root: Path
    base: str  # the release the overlay goes on
    files: dict  # repo path -> {"repo", "commit", "sha256", ...} (SOURCES.json)
    fixups: tuple[Path, ...]  # patches applied after the overlay, in name order

    def overlay_path(self, rel: str) -> Path:
        return self.root / "overlay" / rel

    def digest(self) -> str:
        """sha256 over every input of the tree: overlay files and fixups."""
        h = hashlib.sha256()
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + self.overlay_path(rel).read_bytes() + b"\0")
        for fix in self.fixups:
            h.update(fix.name.encode() + b"\0" + fix.read_bytes() + b"\0")
        return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_fixture(root: Path) -> Fixture:
    """Read `SOURCES.json` and check it against `overlay/` (both ways, by sha256)."""
    sources = root / "SOURCES.json"
    if not sources.is_file():
        raise NextReleaseError(f"{sources} is missing")
    data = json.loads(sources.read_text())
    files = data.get("files", {})
    overlay = root / "overlay"
    present = sorted(
        p.relative_to(overlay).as_posix() for p in overlay.rglob("*") if p.is_file()
    ) if overlay.is_dir() else []
    unlisted = [p for p in present if p not in files]
    if unlisted:
        raise NextReleaseError(
            f"{overlay}: not in SOURCES.json: {', '.join(unlisted)} "
            "(record where each file came from)"
        )
    for rel, meta in sorted(files.items()):
        path = overlay / rel
        if not path.is_file():
            raise NextReleaseError(f"SOURCES.json lists {rel}, which is not in {overlay}")
        if _sha256(path) != meta.get("sha256"):
            raise NextReleaseError(
                f"{path}: sha256 {_sha256(path)[:12]} is not the recorded "
                f"{str(meta.get('sha256'))[:12]} (refresh SOURCES.json with the file)"
            )
    fixups = tuple(sorted((root / "fixups").glob("*.patch"))) if (root / "fixups").is_dir() else ()
    base = data.get("base")
    if not base or not versions.is_version(base):
        raise NextReleaseError(f"{sources}: `base` must name a release, not {base!r}")
    return Fixture(root=root, base=versions.normalize(base), files=files, fixups=fixups)


def default_label(base: str) -> str:
    """The pre-release after `base`: 0.5.23 -> 0.5.24.dev0."""
    major, minor, micro = (int(x) for x in versions.normalize(base).split(".")[:3])
    return f"{major}.{minor}.{micro + 1}.dev0"


def check_label(label: str, base: str) -> str:
    if not versions.is_version(label):
        raise NextReleaseError(f"label {label!r} is not a release version (e.g. 0.5.24.dev0)")
    label = versions.normalize(label)
    if versions.key(label) <= versions.key(base):
        raise NextReleaseError(f"label {label} must come after the base release {base}")
    return label


def build_commit(cache: Cache, fixture: Fixture, label: str) -> str:
    """The next-release commit in the cache: the base snapshot plus the fixture.

    Reproducible: same snapshot and fixture, same commit id. Kept as
    `refs/next-release/v<label>`.
    """
    snapshot = cache.materialize_pypi(fixture.base)  # takes the cache lock itself
    trailers = _trailers(cache.message(snapshot.commit))
    git_dir = cache.git_dir
    tmp = Path(tempfile.mkdtemp(prefix="next-release-", dir=cache.root))
    env = {"GIT_INDEX_FILE": str(tmp / "index")}
    try:
        gitlib.run(["read-tree", snapshot.commit], git_dir=git_dir, env=env)
        for rel in sorted(fixture.files):
            blob = gitlib.out(
                ["hash-object", "-w", str(fixture.overlay_path(rel))], git_dir=git_dir
            )
            gitlib.run(
                ["update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}"],
                git_dir=git_dir, env=env,
            )
        for fix in fixture.fixups:
            proc = gitlib.run(["apply", "--cached", str(fix)], git_dir=git_dir, env=env, check=False)
            if proc.returncode != 0:
                raise NextReleaseError(
                    f"fixup {fix.name} does not apply to {fixture.base} plus the overlay: "
                    f"{proc.stderr.strip()}"
                )
        tree = gitlib.out(["write-tree"], git_dir=git_dir, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    when = gitlib.out(["log", "-1", "--format=%cI", snapshot.commit], git_dir=git_dir)
    listed = "\n".join(f"  {rel}" for rel in sorted(fixture.files))
    fixes = "\n".join(f"  {f.name}" for f in fixture.fixups) or "  (none)"
    message = (
        f"sglang next release {label}: {fixture.base} plus newer upstream files\n\n"
        f"Test fixture (tests/next_release/): the {fixture.base} PyPI snapshot with\n"
        f"these upstream files laid over it:\n{listed}\n"
        f"and these fixups applied:\n{fixes}\n"
        f"Partial like the snapshot: only {trailers.get('Petit-Coverage', 'python/')}.\n\n"
        f"Petit-Source: next-release\n"
        f"Petit-Base-Version: {fixture.base}\n"
        f"Petit-Version: {label}\n"
        f"Petit-Coverage: {trailers.get('Petit-Coverage', 'python/')}\n"
        f"Petit-Fixture-Sha256: {fixture.digest()}\n"
    )
    ident = {
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
        "GIT_AUTHOR_NAME": "sglang-petit next-release fixture",
        "GIT_AUTHOR_EMAIL": gitlib.BOT_EMAIL,
    }
    commit = gitlib.out(
        ["commit-tree", tree, "-p", snapshot.commit, "-m", message], git_dir=git_dir, env=ident
    )
    gitlib.run(["update-ref", f"refs/next-release/{versions.tag(label)}", commit], git_dir=git_dir)
    return commit


def build(
    cache: Cache, fixture: Fixture, dest_root: Path, label: Optional[str] = None
) -> tuple[Path, str, str]:
    """Build the next release and check it out; returns (tree, label, commit).

    The tree `dest_root/v<label>` is rebuilt from scratch every time (a tree this
    function did not make is never removed). Its branch `next-release` and tag
    `v<label>` point at the commit; objects are borrowed from the cache.
    """
    label = check_label(label or default_label(fixture.base), fixture.base)
    cache.ensure()
    commit = build_commit(cache, fixture, label)
    tree = dest_root / versions.tag(label)
    if tree.exists():
        if not (tree / ".git" / MARKER).exists():
            raise NextReleaseError(f"{tree} exists and was not built by next-release; move it away")
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    gitlib.run(["init", "--quiet", str(tree)])
    (tree / ".git" / "objects" / "info" / "alternates").write_text(
        str((cache.git_dir / "objects").resolve()) + os.linesep
    )
    (tree / ".git" / MARKER).write_text(f"{label} {commit}\n")
    gitlib.run(["update-ref", f"refs/tags/{versions.tag(label)}", commit], tree)
    gitlib.run(["checkout", "--quiet", "--force", "-B", "next-release", commit], tree)
    return tree, label, commit


def needed_floors(series, version: str) -> list[str]:
    """Releases whose snapshots hold the preimages of the patches `version` takes."""
    floors = {floor for _, _, floor in series.selected(version) if floor}
    if series.base:
        floors.add(series.base)
    return versions.sort(floors)


def check(record: dict) -> list[str]:
    """Problems with a series run on the next release ([] when acceptable)."""
    return [
        f"{r['name']}: {r['status']}" for r in record["results"] if r["status"] not in ALLOWED
    ]
