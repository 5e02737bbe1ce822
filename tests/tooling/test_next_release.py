"""The next-release builder on the synthetic upstream: overlay, label, check."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from petit_series import nextrel  # noqa: E402

from . import fixtures  # noqa: E402
from .fixtures import QUANT, git  # noqa: E402

METHODS = f"{QUANT}/methods.py"
HELPER = "python/sglang/srt/new_helper.py"
VERSION_FIX = """diff --git a/python/sglang/version.py b/python/sglang/version.py
--- a/python/sglang/version.py
+++ b/python/sglang/version.py
@@ -1 +1 @@
-__version__ = "0.5.13"
+__version__ = "0.5.14.dev0"
"""


def make_fixture(root: Path, methods_text: str, base: str = "0.5.13") -> Path:
    """A tests/next_release-like directory: methods.py as upstream now has it, a
    module it gained, and a fixup."""
    fx = root / "next"
    files = {METHODS: methods_text, HELPER: "HELPER = 1\n"}
    sources = {"base": base, "files": {}}
    for rel, text in files.items():
        (fx / "overlay" / rel).parent.mkdir(parents=True, exist_ok=True)
        (fx / "overlay" / rel).write_text(text)
        sources["files"][rel] = {
            "repo": "example/sglang",
            "commit": "0" * 40,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    (fx / "fixups").mkdir()
    (fx / "fixups" / "0001-version.patch").write_text(VERSION_FIX)
    (fx / "SOURCES.json").write_text(json.dumps(sources))
    return fx


def moved_methods() -> str:
    """0.5.13's list with the neighbour of petit_nvfp4 renamed: needs a 3-way merge."""
    return fixtures.methods(0, "fp8_e4m3").replace('"marlin"', '"marlin_24"')


def conflicting_methods() -> str:
    text = fixtures.methods(0, "fp8").replace('"marlin"', '"marlin_24"')
    return text.replace('    "petit_nvfp4",\n', '    "petit_nvfp4",\n    "quark_mxfp4",\n')


def record(tree: Path) -> dict:
    return json.loads((tree / ".git" / "petit-series" / "record.json").read_text())


def test_build_lays_the_fixture_over_the_pypi_snapshot(cli, tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    proc = cli("next-release", "--fixture", str(fx), "--build-only")
    tree = cli.build / "next-release" / "v0.5.14.dev0"
    assert f"-> {tree}" in proc.stdout
    head = git(tree, "rev-parse", "HEAD")
    assert git(tree, "rev-parse", "v0.5.14.dev0^{commit}") == head
    snapshot = git(cli.tmp, "--git-dir", str(cli.tmp / "cache" / "upstream.git"), "rev-parse", "refs/pypi/v0.5.13")
    assert git(tree, "rev-parse", "HEAD^") == snapshot
    # Exactly the overlay and the fixup on top of the snapshot.
    assert sorted(git(tree, "diff", "--name-only", "HEAD^", "HEAD").splitlines()) == sorted(
        [METHODS, HELPER, "python/sglang/version.py"]
    )
    assert (tree / METHODS).read_text() == moved_methods()
    assert (tree / HELPER).read_text() == "HELPER = 1\n"
    assert (tree / "python/sglang/version.py").read_text() == '__version__ = "0.5.14.dev0"\n'
    message = git(tree, "log", "-1", "--format=%B")
    assert "Petit-Version: 0.5.14.dev0" in message and "Petit-Base-Version: 0.5.13" in message
    assert "Petit-Coverage: python/sglang/" in message
    # Reproducible: a rebuild gives the same commit (and a fresh tree).
    (tree / "stray.txt").write_text("x")
    cli("next-release", "--fixture", str(fx), "--build-only")
    assert git(tree, "rev-parse", "HEAD") == head and not (tree / "stray.txt").exists()


def test_series_applies_with_3way_merges_and_the_newest_variant(cli, tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    proc = cli("next-release", "--fixture", str(fx))
    assert "next-release check OK: 0.5.14.dev0: 3-way merged: 0003-register-petit-mxfp4/" in proc.stdout
    tree = cli.build / "next-release" / "v0.5.14.dev0"
    rec = record(tree)
    assert rec["version"] == "0.5.14.dev0" and rec["coverage"] == ["python/sglang/"]
    assert [(r["status"], r["variant"]) for r in rec["results"]] == [
        ("applied", None), ("applied", None), ("applied-3way", "0.5.13"), ("excluded", None),
    ]
    assert '"petit_mxfp4"' in (tree / METHODS).read_text()
    # The tree is what `apply --source <tree> --ref <label>` takes, and it agrees.
    again = cli("apply", "--source", str(tree), "--ref", "0.5.14.dev0")
    assert "up to date" in again.stdout
    assert (cli.build / "reports" / "v0.5.14.dev0.md").exists()


def test_a_conflict_fails_the_check_with_the_report(cli, tmp_path):
    fx = make_fixture(tmp_path, conflicting_methods())
    proc = cli("next-release", "--fixture", str(fx), ok=None)
    assert proc.returncode == 3
    report = cli.build / "reports" / "v0.5.14.dev0.md"
    assert f"next-release check FAILED: the series does not apply to 0.5.14.dev0; report: {report}" in proc.stdout
    assert "## Conflict in `0003-register-petit-mxfp4/`" in report.read_text()


def test_explicit_label_and_bad_labels(cli, tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    cli("next-release", "--fixture", str(fx), "--label", "0.6.0.dev1")
    tree = cli.build / "next-release" / "v0.6.0.dev1"
    assert record(tree)["version"] == "0.6.0.dev1"
    low = cli("next-release", "--fixture", str(fx), "--label", "0.5.13", ok=None)
    assert low.returncode == 1 and "must come after the base release 0.5.13" in low.output
    bad = cli("next-release", "--fixture", str(fx), "--label", "next", ok=None)
    assert bad.returncode == 1 and "not a release version" in bad.output


def test_a_tree_not_built_here_is_never_removed(cli, tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    mine = cli.build / "next-release" / "v0.5.14.dev0"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("keep")
    proc = cli("next-release", "--fixture", str(fx), ok=None)
    assert proc.returncode == 1 and "was not built by next-release" in proc.output
    assert (mine / "precious.txt").read_text() == "keep"


def test_fixture_is_checked_against_sources_json(tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    assert nextrel.load_fixture(fx).base == "0.5.13"
    (fx / "overlay" / METHODS).write_text("changed\n")
    with pytest.raises(nextrel.NextReleaseError, match="is not the recorded"):
        nextrel.load_fixture(fx)
    (fx / "overlay" / METHODS).write_text(moved_methods())
    (fx / "overlay" / "python/sglang/unlisted.py").write_text("")
    with pytest.raises(nextrel.NextReleaseError, match="not in SOURCES.json: python/sglang/unlisted.py"):
        nextrel.load_fixture(fx)


def test_default_label_is_the_pre_release_after_base():
    assert nextrel.default_label("0.5.23") == "0.5.24.dev0"
    assert nextrel.default_label("v0.5.12.post1") == "0.5.13.dev0"


def test_the_repository_fixture_is_consistent():
    fx = nextrel.load_fixture(Path(__file__).resolve().parents[1] / "next_release")
    assert fx.files and all(m["repo"] == "sgl-project/sglang" and len(m["commit"]) == 40 for m in fx.files.values())


def test_a_fixture_behind_the_newest_release_is_flagged(cli, tmp_path):
    fx = make_fixture(tmp_path, moved_methods())
    proc = cli("next-release", "--fixture", str(fx), "--build-only")
    # The synthetic PyPI's newest release is 0.5.15; the fixture sits on 0.5.13.
    assert "note: PyPI has v0.5.15, newer than the fixture's base 0.5.13" in proc.stdout
