"""`make bench`: wall time of the matrix, cold and warm, printed as a table.

- cold: an empty cache (downloads from PyPI, snapshots built) and no trees;
- warm: the cache kept, every tree rebuilt from scratch (the usual CI case);
- no-op: everything kept: each tree is found up to date.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from . import matrix, upstream


def _timed(label: str, fn) -> tuple[str, float, list]:
    started = time.monotonic()
    rows = fn()
    return label, time.monotonic() - started, rows


def main(*, patches: Path, build: Path, refs: Optional[list[str]] = None, cold: bool = True) -> int:
    work = Path(tempfile.mkdtemp(prefix="petit-bench-", dir=build if build.exists() else None))
    cache = upstream.Cache(work / "cache")
    bench_build = work / "build"

    def run() -> list:
        return matrix.run(
            refs=refs, source="pypi", repo=upstream.DEFAULT_REPO, patches=patches,
            build=bench_build, cache=cache, jobs=2,
        )

    results = []
    try:
        if not cold:
            # Seed the cache from the user's, so no download is timed.
            shutil.copytree(build / "cache", work / "cache", dirs_exist_ok=True)
        results.append(_timed("cold (empty cache)" if cold else "seeded cache", run))
        shutil.rmtree(bench_build / "matrix", ignore_errors=True)
        results.append(_timed("warm (cache kept, trees rebuilt)", run))
        results.append(_timed("no-op (trees up to date)", run))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(results[0][2])
    ok = all(all(r["ok"] for r in rows) for _, _, rows in results)
    print(f"\nmatrix over {n} releases ({'all ok' if ok else 'FAILURES'}):")
    print(f"| {'run':34} | {'wall s':>7} | {'s/release':>9} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 11}|")
    for label, seconds, _ in results:
        print(f"| {label:34} | {seconds:7.1f} | {seconds / max(n, 1):9.2f} |")
    return 0 if ok else 1
