"""A file the series creates (or renames onto) that upstream already has."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from petit_series import report  # noqa: E402

from . import fixtures  # noqa: E402
from .fixtures import QUANT, git  # noqa: E402

NVFP4 = f"{QUANT}/petit_nvfp4.py"
TEST_FILE = "test/registered/test_petit_mxfp4.py"


def _report(cli, ref):
    data = json.loads((cli.build / "reports" / f"{ref}.json").read_text())
    md = (cli.build / "reports" / f"{ref}.md").read_text()
    return data, md


def test_rename_onto_upstreams_own_file_is_reported_with_a_diff(cli):
    proc = cli("apply", "--ref", "v0.5.16", "--source", "git", ok=None)
    assert proc.returncode == 3
    line = next(x for x in proc.stdout.splitlines() if x.startswith("[1/4]"))
    assert "CONFLICT" in line and f"upstream has its own version of {NVFP4}" in line
    data, md = _report(cli, "v0.5.16")
    res = data["results"][-1]
    assert res["name"].startswith("0001-") and res["status"] == "conflict"
    [own] = res["upstream_versions"]
    assert own["file"] == NVFP4 and own["identical"] is False
    assert own["how"] == f"renames `{QUANT}/petit.py` to it"
    # The patch's version (upstream's old petit.py) against upstream's own file.
    assert f'-{fixtures.PETIT.splitlines()[0]}' in own["diff"].splitlines()
    assert '+    backend = "upstream"' in own["diff"].splitlines()
    section = md.split("## Conflict in")[1]
    assert f"upstream has its own version of `{NVFP4}`" in section
    assert "```diff" in section and '+    backend = "upstream"' in section
    assert f"git checkout --ours -- {NVFP4}" in section and "make rebase-continue SGLANG_REF=v0.5.16" in section

    # The hint works: keep upstream's file, continue; the rest of the series goes on.
    tree = cli.tree("v0.5.16")
    git(tree, "checkout", "--ours", "--", NVFP4)
    git(tree, "add", NVFP4)
    cont = cli("rebase-continue", "--ref", "v0.5.16", "--source", "git")
    assert "OK: v0.5.16" in cont.stdout
    assert (tree / NVFP4).read_text() == fixtures.OWN_NVFP4
    assert (tree / QUANT / "petit.py").read_text() == fixtures.SHIM


def test_new_file_upstream_already_has_is_reported(cli):
    proc = cli("apply", "--ref", "v0.5.17", "--source", "git", ok=None)
    assert proc.returncode == 3
    assert f"[4/4] 0004-test-add-petit-mxfp4-tests.patch: CONFLICT in {TEST_FILE}; " \
        f"upstream has its own version of {TEST_FILE}" in proc.stdout
    data, md = _report(cli, "v0.5.17")
    [own] = data["results"][-1]["upstream_versions"]
    assert own["how"] == "creates it"
    diff = own["diff"].splitlines()
    assert "-def test_it():" in diff and "+def test_upstream_own():" in diff
    assert f"upstream has its own version of `{TEST_FILE}` (the patch creates it)" in md
    # Resolved by hand (both tests kept), the series finishes.
    tree = cli.tree("v0.5.17")
    (tree / TEST_FILE).write_text(fixtures.OWN_TEST + "\n\ndef test_it():\n    assert True\n")
    git(tree, "add", TEST_FILE)
    cont = cli("rebase-continue", "--ref", "v0.5.17", "--source", "git")
    assert "OK: v0.5.17" in cont.stdout


def test_an_ordinary_conflict_has_no_upstream_version(cli):
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    data, md = _report(cli, "v0.5.14")
    assert "upstream_versions" not in data["results"][-1]
    assert "upstream has its own version" not in md
    assert "edit the conflicted files in the tree" in md


def test_markdown_caps_the_diff_and_json_keeps_it_whole():
    diff = "".join(f"+line {i}\n" for i in range(report.DIFF_LINES_SHOWN + 25))
    res = {"upstream_versions": [{"file": "a.py", "how": "creates it", "identical": False, "diff": diff}]}
    lines = report._upstream_version_lines(res)
    shown = [x for x in lines if x.startswith("+line")]
    assert len(shown) == report.DIFF_LINES_SHOWN
    assert "... 25 more lines in report.json" in lines
    identical = report._upstream_version_lines(
        {"upstream_versions": [{"file": "a.py", "how": "creates it", "identical": True, "diff": ""}]}
    )
    assert identical == ["- upstream has its own version of `a.py` (the patch creates it); it is identical to the patch's"]
