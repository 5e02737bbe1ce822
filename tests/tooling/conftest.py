"""Shared fixtures: one synthetic upstream per session, fresh build dirs per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import fixtures

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "scripts" / "petit-series"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("world")
    work = fixtures.make_upstream(root)
    patches = fixtures.make_series(root, work)
    pypi = fixtures.make_pypi(root, work)
    return {"root": root, "work": work, "bare": root / "upstream.git", "patches": patches, "pypi": pypi}


class Runner:
    """Runs the real CLI against the synthetic upstream, like a user would."""

    def __init__(self, world: dict, tmp: Path):
        self.tmp = tmp
        self.patches = tmp / "patches"
        shutil.copytree(world["patches"], self.patches)
        self.build = tmp / "build"
        self.env = dict(os.environ)
        self.env.update(
            {
                "PETIT_BUILD_DIR": str(self.build),
                "PETIT_CACHE_DIR": str(tmp / "cache"),
                "PETIT_PYPI_URL": (world["pypi"]).as_uri(),
                "SGLANG_REPO": world["bare"].as_uri(),
            }
        )
        for var in ("SGLANG_REF", "SGLANG_SOURCE", "SGLANG_DIR", "REFS", "FORCE"):
            self.env.pop(var, None)

    def __call__(self, *args: str, ok: bool | None = True, **env: str) -> subprocess.CompletedProcess:
        full = dict(self.env, **env)
        proc = subprocess.run(
            [sys.executable, str(CLI), *args, "--patches", str(self.patches)],
            capture_output=True,
            text=True,
            env=full,
            timeout=300,
        )
        proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        if ok is True:
            assert proc.returncode == 0, proc.output
        return proc

    def tree(self, ref: str) -> Path:
        return self.build / "sglang" / ref


@pytest.fixture
def cli(world, tmp_path) -> Runner:
    return Runner(world, tmp_path)
