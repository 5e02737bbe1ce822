"""refresh (deterministic export), rebase and matrix on the synthetic upstream."""

from __future__ import annotations

import hashlib
import json
import re

from .fixtures import QUANT, git


def snapshot(patches):
    return {
        str(p.relative_to(patches)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(patches.rglob("*"))
        if p.is_file()
    }


def test_refresh_of_an_unchanged_series_is_byte_identical(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    before = snapshot(cli.patches)
    proc = cli("refresh", "--ref", "v0.5.9")
    assert "nothing changed" in proc.stdout
    assert snapshot(cli.patches) == before
    # Even where upstream context moved (offsets) the bytes are kept.
    cli("apply", "--ref", "v0.5.10", "--source", "git")
    cli("refresh", "--ref", "v0.5.10")
    assert snapshot(cli.patches) == before
    assert cli("refresh", "--ref", "v0.5.10", "--check").returncode == 0


def test_refresh_exports_an_edited_commit_deterministically(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    before = snapshot(cli.patches)
    # Edit patch 2 in the tree: amend its commit and replay the rest.
    git(tree, "checkout", "-q", "HEAD~2")
    (tree / QUANT / "petit.py").write_text('"""Old import path: use petit_nvfp4."""\n')
    git(tree, "commit", "-q", "-a", "--amend", "--no-edit")
    amended = git(tree, "rev-parse", "HEAD")
    git(tree, "checkout", "-q", "petit/v0.5.9")
    git(tree, "rebase", "-q", "--onto", amended, "HEAD~2")
    check = cli("refresh", "--ref", "v0.5.9", "--check", ok=None)
    assert check.returncode == 1 and "0002-quantization-keep-petit-py-as-a-shim.patch" in check.output
    proc = cli("refresh", "--ref", "v0.5.9")
    # The exported branch is what patches/ now says: apply finds it up to date.
    assert "up to date" in cli("apply", "--ref", "v0.5.9", "--source", "git").stdout
    after = snapshot(cli.patches)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"0002-quantization-keep-petit-py-as-a-shim.patch"}
    text = (cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch").read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    assert "Old import path" in text and "\n-- \n" not in text
    assert "index 0000000000000000000000000000000000000000.." in text  # full index
    # Exporting again gives the very same bytes, and so does a fresh apply + refresh.
    cli("refresh", "--ref", "v0.5.9")
    assert snapshot(cli.patches) == after
    cli("apply", "--ref", "v0.5.9", "--source", "git", "--dir", str(tmp_path / "again"))
    cli("refresh", "--dir", str(tmp_path / "again"))
    assert snapshot(cli.patches) == after
    assert "refreshed" in proc.stdout


def test_rename_patch_is_exported_as_a_pure_rename(cli):
    import sys

    from .conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from petit_series import gitlib

    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    first = git(tree, "rev-list", "--reverse", "refs/petit/upstream..HEAD").split()[0]
    text = gitlib.format_patch(tree, first)
    assert "similarity index 100%" in text and "rename from" in text
    assert "\n@@" not in text
    assert gitlib.format_patch(tree, first) == text


def test_rebase_moves_the_series_and_writes_a_new_variant(cli):
    proc = cli("rebase", "--ref", "v0.5.11", "--source", "git")
    assert "rebase done" in proc.stdout
    # What moved is shown against the series on its base release (git range-diff):
    # the registration patch's context changed, the other commits are equal.
    assert "(git range-diff)" in proc.stdout
    diff = proc.stdout.split("(git range-diff):", 1)[1]
    marks = re.findall(r"(?m)^\d+:  [0-9a-f]+ ([=!]) ", diff)
    assert marks == ["=", "=", "!", "="] and "fp8_e4m3" in diff
    # The 3-way merged registration patch becomes a new variant for 0.5.11 on.
    assert (cli.patches / "0003-register-petit-mxfp4" / "0.5.11.patch").exists()
    assert (cli.patches / "0003-register-petit-mxfp4" / "0.5.9.patch").exists()
    # Applying 0.5.11 now needs no merge; 0.5.9 still uses its own variant.
    again = cli("apply", "--ref", "v0.5.11", "--source", "git", "--dir", str(cli.tmp / "t11"))
    assert "3-way" not in again.stdout
    rec = json.loads((cli.tmp / "t11" / ".git" / "petit-series" / "record.json").read_text())
    assert rec["results"][2]["variant"] == "0.5.11" and rec["results"][2]["status"] == "applied"


def test_rebase_conflict_continue_exports(cli):
    proc = cli("rebase", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert proc.returncode == 3
    tree = cli.tree("v0.5.14")
    path = tree / QUANT / "methods.py"
    text = path.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    path.write_text(text[:start] + '    "petit_mxfp4",\n    "quark_mxfp4",\n' + text[text.index("\n", end) + 1 :])
    git(tree, "add", str(path))
    done = cli("rebase-continue", "--ref", "v0.5.14")
    assert "patches/ updated: 0003-register-petit-mxfp4/0.5.14.patch" in done.stdout
    new = (cli.patches / "0003-register-petit-mxfp4" / "0.5.14.patch").read_text()
    assert '+    "petit_mxfp4",\n     "quark_mxfp4",' in new


def test_matrix_reports_every_release(cli):
    proc = cli("matrix", "--source", "pypi", ok=None)
    assert proc.returncode == 1  # 0.5.14 conflicts
    rows = json.loads((cli.build / "matrix.json").read_text())
    assert [r["ref"] for r in rows] == ["v0.5.9", "v0.5.10", "v0.5.11", "v0.5.13", "v0.5.14", "v0.5.15"]
    ok = {r["ref"]: r["ok"] for r in rows}
    assert ok == {"v0.5.9": True, "v0.5.10": True, "v0.5.11": True, "v0.5.13": True, "v0.5.14": False, "v0.5.15": True}
    by_ref = {r["ref"]: [p["status"] for p in r["patches"]] for r in rows}
    assert by_ref["v0.5.11"] == ["applied", "applied", "applied-3way", "excluded"]
    assert by_ref["v0.5.15"][2] == "already-upstream"
    md = (cli.build / "matrix.md").read_text()
    assert "| v0.5.14 | **no**" in md and "3-way" in md
    # The failing tree is rolled back, and a warm re-run gives the same table.
    again = cli("matrix", "--source", "pypi", "--refs", "v0.5.9", "v0.5.15")
    assert json.loads((cli.build / "matrix.json").read_text())[1]["patches"] == rows[5]["patches"]
    assert "2/2 ok" in again.stdout


def test_refresh_from_a_partial_tree_keeps_the_excluded_hunks(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    tree = cli.tree("v0.5.9")
    patch = cli.patches / "0004-test-add-petit-mxfp4-tests.patch"
    # Edit the included part of the last patch (python/pyproject.toml).
    (tree / "python" / "pyproject.toml").write_text(
        (tree / "python" / "pyproject.toml").read_text().replace("# petit-kernel", "# petit-kernel>=0.0.3")
    )
    git(tree, "commit", "-q", "-a", "--amend", "--no-edit")
    cli("refresh", "--ref", "v0.5.9")
    text = patch.read_text()
    assert "+# petit-kernel>=0.0.3" in text
    assert "diff --git a/test/registered/test_petit_mxfp4.py b/test/registered/test_petit_mxfp4.py" in text
    assert text.index("python/pyproject.toml") < text.index("test/registered/")
    # The carried-over hunks still apply on a full tree, and a second refresh is a no-op.
    full = cli("apply", "--ref", "v0.5.9", "--source", "git", "--dir", str(tmp_path / "full"))
    assert full.returncode == 0
    assert (tmp_path / "full" / "test" / "registered" / "test_petit_mxfp4.py").exists()
    assert "0.0.3" in (tmp_path / "full" / "python" / "pyproject.toml").read_text()
    before = patch.read_bytes()
    cli("refresh", "--dir", str(tmp_path / "full"))
    assert patch.read_bytes() == before
