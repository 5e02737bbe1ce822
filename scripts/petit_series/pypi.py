"""SGLang releases from PyPI, laid out like the upstream repository.

Up to 0.5.10.post1 the sdist is the repository's `python/` folder; later releases
ship only binary wheels whose `.py` files are the same sources. Either way the
result is an upstream-layout tree (`python/sglang/...`), partial by nature: the
repository's `test/`, `docs/`, `.github/` never reach PyPI, and a wheel has no
`python/pyproject*.toml` either. `coverage()` says which paths a tree holds.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from . import versions

DEFAULT_INDEX = "https://pypi.org/pypi"
PROJECT = "sglang"


class PypiError(RuntimeError):
    """The index or a download failed, or a file did not verify."""


@dataclasses.dataclass(frozen=True)
class ReleaseFile:
    version: str
    filename: str
    url: str
    sha256: str
    kind: str  # "sdist" or "wheel"
    upload_time: str

    @property
    def coverage(self) -> tuple[str, ...]:
        """Repository paths this kind of file holds."""
        return ("python/",) if self.kind == "sdist" else ("python/sglang/",)


def index_url() -> str:
    return os.environ.get("PETIT_PYPI_URL", DEFAULT_INDEX).rstrip("/")


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise PypiError(f"cannot reach {url}: {exc}") from exc


def load_index(cache_dir: Path, *, max_age: float = 3600.0, offline: bool = False) -> dict:
    """The project's JSON index, from the cache when fresh or when offline."""
    cache = cache_dir / "pypi" / f"{PROJECT}.json"
    if cache.exists() and (offline or time.time() - cache.stat().st_mtime < max_age):
        return json.loads(cache.read_text())
    url = f"{index_url()}/{PROJECT}/json"
    try:
        data = _fetch(url, timeout=30)
        parsed = json.loads(data)
    except (PypiError, ValueError) as exc:
        if cache.exists():
            return json.loads(cache.read_text())
        raise PypiError(
            f"{exc}. No cached copy of the PyPI index either: check the network, "
            "or use SGLANG_SOURCE=git or SGLANG_SOURCE=<path to a checkout>."
        ) from exc
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(parsed))
    tmp.replace(cache)
    return parsed


def release_versions(index: dict) -> list[str]:
    """Versions with at least one non-yanked file, oldest first."""
    found = [
        v
        for v, files in index.get("releases", {}).items()
        if versions.is_version(v) and any(not f.get("yanked") for f in files)
    ]
    return versions.sort(found)


def _wheel_rank(filename: str) -> tuple:
    # Any wheel has the same .py files; prefer a pure one, then a stable choice.
    return (
        "py3-none-any" not in filename,
        "cp311" not in filename,
        "x86_64" not in filename,
        filename,
    )


def pick_file(index: dict, version: str) -> ReleaseFile:
    """The sdist when there is one, else a wheel (deterministic choice)."""
    files = [f for f in index.get("releases", {}).get(version, []) if not f.get("yanked")]
    sdists = [f for f in files if f.get("packagetype") == "sdist"]
    wheels = sorted(
        (f for f in files if f.get("packagetype") == "bdist_wheel"),
        key=lambda f: _wheel_rank(f["filename"]),
    )
    chosen = sdists[0] if sdists else (wheels[0] if wheels else None)
    if chosen is None:
        raise PypiError(f"sglang {version} has no sdist or wheel on the index")
    sha = chosen.get("digests", {}).get("sha256")
    if not sha:
        raise PypiError(f"{chosen['filename']}: the index publishes no sha256")
    return ReleaseFile(
        version=version,
        filename=chosen["filename"],
        # Mirrors may publish URLs relative to the JSON document.
        url=urllib.parse.urljoin(f"{index_url()}/{PROJECT}/json", chosen["url"]),
        sha256=sha,
        kind="sdist" if chosen in sdists else "wheel",
        upload_time=chosen.get("upload_time_iso_8601") or chosen.get("upload_time", ""),
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(release: ReleaseFile, cache_dir: Path) -> Path:
    """The release file, downloaded once and verified against the index's sha256."""
    target = cache_dir / "downloads" / release.filename
    if target.exists() and sha256_of(target) == release.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last: Optional[Exception] = None
    for attempt in range(3):
        try:
            with urllib.request.urlopen(release.url, timeout=120) as resp, part.open("wb") as fh:
                shutil.copyfileobj(resp, fh, 1 << 20)
            break
        except OSError as exc:
            part.unlink(missing_ok=True)
            if getattr(exc, "errno", None) == errno.ENOSPC:
                raise PypiError(f"disk full while downloading {release.filename}") from exc
            last = exc
            time.sleep(1 + attempt)
    else:
        raise PypiError(
            f"cannot download {release.url}: {last}. Check the network, or use "
            "SGLANG_SOURCE=git or a local checkout (SGLANG_SOURCE=<path>)."
        )
    digest = sha256_of(part)
    if digest != release.sha256:
        part.unlink(missing_ok=True)
        raise PypiError(
            f"{release.filename}: sha256 {digest} does not match the index's "
            f"{release.sha256}; the download was discarded"
        )
    part.replace(target)
    return target


# Files an sdist adds that the repository does not track.
_SDIST_GENERATED = ("PKG-INFO", "setup.cfg", "sglang/_version.py")


def _keep_sdist(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    return rel not in _SDIST_GENERATED and not top.endswith(".egg-info")


def unpack(archive: Path, kind: str, dest: Path) -> int:
    """Unpack into `dest` in upstream layout; returns the number of files.

    A full disk raises PypiError and removes what was written.
    """
    count = 0
    try:
        if kind == "sdist":
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar.getmembers():
                    if not member.isfile():
                        continue
                    parts = member.name.split("/", 1)
                    if len(parts) != 2 or not _keep_sdist(parts[1]):
                        continue
                    rel = _safe_rel(parts[1])
                    data = tar.extractfile(member).read()
                    _write(dest / "python" / rel, data, bool(member.mode & 0o111))
                    count += 1
        else:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if info.is_dir() or not name.startswith("sglang/"):
                        continue
                    if name.endswith((".so", ".pyd")) or name == "sglang/_version.py":
                        continue
                    rel = _safe_rel(name)
                    executable = bool((info.external_attr >> 16) & 0o111)
                    _write(dest / "python" / rel, zf.read(info), executable)
                    count += 1
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise PypiError(
                f"disk full while unpacking {archive.name} into {dest}; "
                "nothing was kept: free some space and run again"
            ) from exc
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise PypiError(f"{archive} is not a valid {kind}: {exc}") from exc
    return count


def _safe_rel(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PypiError(f"refusing unsafe path in archive: {name}")
    return "/".join(parts)


def _write(path: Path, data: bytes, executable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if executable:
        path.chmod(0o755)
