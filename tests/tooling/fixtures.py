"""Small real upstreams for the tooling tests (no mocks of git).

`make_upstream` builds a git repository whose tags play SGLang releases, each a
few lines apart in the ways that matter (moved context, changed context, a
conflicting edit, a change already upstream). `make_series` writes a patch
series against it with real `git format-patch`, and `make_pypi` publishes the
releases as a file:// PyPI JSON index with sdists and wheels.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

QUANT = "python/sglang/srt/layers/quantization"

PETIT = '''"""NVFP4 via Petit."""


class PetitNvFp4Config:
    name = "petit_nvfp4"
'''

SHIM = '''"""Backward-compatible import path."""

from sglang.srt.layers.quantization.petit_nvfp4 import PetitNvFp4Config  # noqa: F401
'''


def methods(extra_top: int = 0, neighbour: str = "fp8", mxfp4_already: bool = False) -> str:
    lines = [f"# header line {i}" for i in range(extra_top)]
    lines += [
        "METHODS = [",
        '    "awq",',
        '    "gptq",',
        f'    "{neighbour}",',
        '    "petit_nvfp4",',
    ]
    if mxfp4_already:
        lines.append('    "petit_mxfp4",')
    lines += ['    "w8a8",', '    "marlin",', '    "bitsandbytes",', "]", ""]
    return "\n".join(lines)


def git(cwd: Path, *args: str, env: dict | None = None) -> str:
    full_env = dict(os.environ)
    full_env.update(
        {
            "GIT_AUTHOR_NAME": "Upstream Dev",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Upstream Dev",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
            "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
            "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
    )
    full_env.update(env or {})
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=full_env
    ).stdout.strip()


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# Release name -> how its methods list and files look.
RELEASES = {
    "0.5.9": dict(extra_top=0, neighbour="fp8"),
    "0.5.10": dict(extra_top=5, neighbour="fp8"),  # context moved: offsets
    "0.5.11": dict(extra_top=0, neighbour="fp8_e4m3"),  # context changed: 3-way
    "0.5.13": dict(extra_top=0, neighbour="fp8", renamed_marlin=True),  # variant floor
    "0.5.14": dict(extra_top=0, neighbour="fp8", conflict=True),  # same line: conflict
    "0.5.15": dict(extra_top=0, neighbour="fp8", renamed_marlin=True, mxfp4_already=True),
}


# Releases tagged on a side branch off v0.5.15 (main and the PyPI index are left as
# they are): upstream already carries its own version of a file the series creates.
OWN_NVFP4 = '''"""Upstream's own NVFP4 module."""


class PetitNvFp4Config:
    name = "petit_nvfp4"
    backend = "upstream"
'''
OWN_TEST = "def test_upstream_own():\n    assert 1 + 1 == 2\n"
GIT_ONLY_RELEASES = {
    "0.5.16": {f"{QUANT}/petit_nvfp4.py": OWN_NVFP4},  # 0001 renames petit.py onto it
    "0.5.17": {"test/registered/test_petit_mxfp4.py": OWN_TEST},  # 0004 creates it
}


def make_upstream(root: Path) -> Path:
    """A work repo with tags v0.5.9 ... and a bare clone to fetch from."""
    work = root / "upstream-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    for version, spec in RELEASES.items():
        text = methods(spec["extra_top"], spec["neighbour"], spec.get("mxfp4_already", False))
        if spec.get("renamed_marlin"):
            text = text.replace('"marlin"', '"marlin_24"')
        if spec.get("conflict"):
            text = text.replace('    "petit_nvfp4",\n', '    "petit_nvfp4",\n    "quark_mxfp4",\n')
        _write(work, f"{QUANT}/methods.py", text)
        _write(work, f"{QUANT}/petit.py", PETIT)
        _write(work, "python/pyproject.toml", '[project]\nname = "sglang"\ndependencies = []\n')
        _write(work, "python/sglang/version.py", f'__version__ = "{version}"\n')
        _write(work, "test/README.md", "tests\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"release {version}")
        git(work, "tag", f"v{version}")
    for version, files in GIT_ONLY_RELEASES.items():
        git(work, "checkout", "-q", "--detach", "v0.5.15")
        for rel, text in files.items():
            _write(work, rel, text)
        _write(work, "python/sglang/version.py", f'__version__ = "{version}"\n')
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"release {version}")
        git(work, "tag", f"v{version}")
    git(work, "checkout", "-q", "main")
    bare = root / "upstream.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return work


def make_series(root: Path, work: Path) -> Path:
    """Write the series with real format-patch, from v0.5.9 (and v0.5.13 for the variant)."""
    patches = root / "patches"
    (patches / "0003-register-petit-mxfp4").mkdir(parents=True)
    git(work, "checkout", "-q", "-b", "series-0.5.9", "v0.5.9")
    git(work, "mv", f"{QUANT}/petit.py", f"{QUANT}/petit_nvfp4.py")
    git(work, "commit", "-q", "-m", "quantization: move petit.py to petit_nvfp4.py")
    _write(work, f"{QUANT}/petit.py", SHIM)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "quantization: keep petit.py as a shim")
    text = (work / f"{QUANT}/methods.py").read_text()
    _write(work, f"{QUANT}/methods.py", text.replace('"petit_nvfp4",\n', '"petit_nvfp4",\n    "petit_mxfp4",\n'))
    git(work, "commit", "-q", "-am", "quantization: register petit_mxfp4")
    _write(work, "test/registered/test_petit_mxfp4.py", "def test_it():\n    assert True\n")
    _write(work, "python/pyproject.toml", (work / "python/pyproject.toml").read_text() + "# petit-kernel\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "test: add petit_mxfp4 tests")
    names = [
        "0001-quantization-move-petit-py-to-petit-nvfp4-py.patch",
        "0002-quantization-keep-petit-py-as-a-shim.patch",
        "0003-register-petit-mxfp4/0.5.9.patch",
        "0004-test-add-petit-mxfp4-tests.patch",
    ]
    for i, name in enumerate(names):
        (patches / name).write_text(_export(work, f"HEAD~{3 - i}"))
    # The 0.5.13 variant: same change against the renamed neighbour.
    git(work, "checkout", "-q", "-b", "series-0.5.13", "v0.5.13")
    text = (work / f"{QUANT}/methods.py").read_text()
    _write(work, f"{QUANT}/methods.py", text.replace('"petit_nvfp4",\n', '"petit_nvfp4",\n    "petit_mxfp4",\n'))
    git(work, "commit", "-q", "-am", "quantization: register petit_mxfp4")
    (patches / "0003-register-petit-mxfp4/0.5.13.patch").write_text(_export(work, "HEAD"))
    git(work, "checkout", "-q", "main")
    (patches / "series").write_text(
        "# test series\n@base 0.5.9\n"
        "0001-quantization-move-petit-py-to-petit-nvfp4-py.patch\n"
        "0002-quantization-keep-petit-py-as-a-shim.patch\n"
        "0003-register-petit-mxfp4/\n"
        "0004-test-add-petit-mxfp4-tests.patch\n"
    )
    return patches


def _export(work: Path, commit: str) -> str:
    return git(
        work, "format-patch", "--stdout", "-1", "--zero-commit", "--no-signature",
        "--keep-subject", "--no-stat", "--full-index", "--find-renames=100%", commit,
    ) + "\n"


def make_pypi(root: Path, work: Path, wheels_from: str = "0.5.11") -> Path:
    """A file:// PyPI JSON index: sdists before `wheels_from`, wheels after."""
    index = root / "pypi"
    files_dir = index / "files"
    files_dir.mkdir(parents=True)
    releases: dict = {}
    for version in RELEASES:
        listing = git(work, "ls-tree", "-r", "--name-only", f"v{version}").splitlines()
        contents = {p: git(work, "show", f"v{version}:{p}") + "\n" for p in listing}
        wheel = tuple(int(x) for x in version.split(".")) >= tuple(int(x) for x in wheels_from.split("."))
        if wheel:
            name = f"sglang-{version}-py3-none-any.whl"
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                for p, text in contents.items():
                    if p.startswith("python/sglang/"):
                        zf.writestr(p[len("python/"):], text)
                zf.writestr(f"sglang-{version}.dist-info/METADATA", "Name: sglang\n")
                zf.writestr("sglang/_native.so", b"\x7fELF")
            kind = "bdist_wheel"
        else:
            name = f"sglang-{version}.tar.gz"
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for p, text in list(contents.items()) + [("python/PKG-INFO", "Name: sglang\n")]:
                    if not p.startswith("python/"):
                        continue
                    data = text.encode()
                    info = tarfile.TarInfo(f"sglang-{version}/{p[len('python/'):]}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            kind = "sdist"
        data = buf.getvalue()
        (files_dir / name).write_bytes(data)
        releases[version] = [
            {
                "filename": name,
                "packagetype": kind,
                "url": f"../files/{name}",
                "digests": {"sha256": hashlib.sha256(data).hexdigest()},
                "upload_time_iso_8601": "2026-01-02T00:00:00Z",
                "yanked": False,
            }
        ]
    releases["0.5.12rc0"] = releases["0.5.11"]
    (index / "sglang").mkdir()
    (index / "sglang" / "json").write_text(json.dumps({"releases": releases}))
    return index


def resolve_keep_both(tree: Path) -> None:
    """Resolve the v0.5.14 conflict in methods.py as a user would: keep both
    entries, then `git add`."""
    path = tree / QUANT / "methods.py"
    text = path.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    path.write_text(text[:start] + '    "petit_mxfp4",\n    "quark_mxfp4",\n' + text[text.index("\n", end) + 1 :])
    git(tree, "add", str(path))
