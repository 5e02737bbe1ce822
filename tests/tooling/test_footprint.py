"""footprint: upstream lines and hunks the series deletes or changes, from the patch files.

The expected numbers come from git itself on the repository the patches were
exported from: `git diff --numstat` and the diff's `@@` lines per commit, and
`git blame` (which follows the rename) to tell upstream's files from the ones
the series created.
"""

from __future__ import annotations

import json
import re
import sys

from .conftest import ROOT
from .fixtures import QUANT, git

sys.path.insert(0, str(ROOT / "scripts"))

from petit_series import gitlib  # noqa: E402


def _add_edit_patch(cli, work, tmp_path) -> tuple:
    """Append a patch that changes upstream lines (also in the renamed file) and
    lines of a file the series created; return (repo, its series commits)."""
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", "-b", "series-0.5.9", str(work), str(repo))
    methods = repo / QUANT / "methods.py"
    text = methods.read_text().replace('    "awq",\n', "").replace('"bitsandbytes"', '"bnb"')
    methods.write_text(text)
    nvfp4 = repo / QUANT / "petit_nvfp4.py"
    nvfp4.write_text(nvfp4.read_text().replace('    name = "petit_nvfp4"', '    name: str = "petit_nvfp4"'))
    (repo / QUANT / "petit.py").write_text("from x import y  # noqa: F401\n")  # the series' shim
    git(repo, "commit", "-q", "-am", "quantization: edit upstream lines")
    patch = gitlib.run(["format-patch", *gitlib.FORMAT_PATCH_FLAGS, "-1", "HEAD"], repo).stdout
    (cli.patches / "0005-edit.patch").write_text(patch)
    with open(cli.patches / "series", "a") as f:
        f.write("0005-edit.patch\n")
    git(repo, "fetch", "-q", "origin", "refs/tags/*:refs/tags/*")
    commits = git(repo, "rev-list", "--reverse", "v0.5.9..HEAD").split()
    return repo, commits


def _expected(repo, commit: str) -> dict:
    """{path: (upstream -, hunks on upstream files, +)} for one series commit, from git."""
    upstream = set(git(repo, "rev-list", "v0.5.9").split())
    span = ["--find-renames=100%", f"{commit}^", commit]
    result = {}
    for line in git(repo, "diff", "--name-status", *span).splitlines():
        status, source, path = line.split("\t")[0], line.split("\t")[1], line.split("\t")[-1]
        added, removed = git(repo, "diff", "--numstat", *span, "--", source, path).split("\t")[:2]
        hunks = len(re.findall(r"(?m)^@@ ", git(repo, "diff", *span, "--", source, path)))
        # Upstream's file: blame of the parent (following renames) finds upstream commits.
        blamed = set()
        if status != "A":
            porcelain = git(repo, "blame", "--porcelain", f"{commit}^", "--", source)
            blamed = set(re.findall(r"(?m)^([0-9a-f]{40}) \d+ \d+", porcelain))
        ours = not blamed & upstream
        result[path] = (0 if ours else int(removed), 0 if ours else hunks, int(added))
    return result


def test_footprint_counts_match_git(cli, world, tmp_path):
    repo, commits = _add_edit_patch(cli, world["work"], tmp_path)
    data = json.loads(cli("footprint", "--json").stdout)
    assert data["release"] == "0.5.9"  # the @base release by default
    assert [p["file"] for p in data["patches"]] == [
        "0001-quantization-move-petit-py-to-petit-nvfp4-py.patch",
        "0002-quantization-keep-petit-py-as-a-shim.patch",
        "0003-register-petit-mxfp4/0.5.9.patch",
        "0004-test-add-petit-mxfp4-tests.patch",
        "0005-edit.patch",
    ]
    got_all = {}
    for patch, commit in zip(data["patches"], commits):
        got = {f["path"]: (f["removed"], f["hunks"], f["added"]) for f in patch["files"]}
        assert got == _expected(repo, commit), patch["file"]
        got_all.update({(patch["file"], k): v for k, v in got.items()})
    # What git says, spelled out: the rename counts 0, the shim is the series' own.
    rename = data["patches"][0]["files"][0]
    assert (rename["kind"], rename["old_path"], rename["removed"], rename["hunks"]) == (
        "rename", f"{QUANT}/petit.py", 0, 0,
    )
    assert got_all[("0003-register-petit-mxfp4/0.5.9.patch", f"{QUANT}/methods.py")] == (0, 1, 1)
    edit = {f["path"]: f for f in data["patches"][4]["files"]}
    assert edit[f"{QUANT}/methods.py"]["removed"] == 2 and edit[f"{QUANT}/methods.py"]["kind"] == "upstream"
    assert (edit[f"{QUANT}/petit_nvfp4.py"]["removed"], edit[f"{QUANT}/petit_nvfp4.py"]["hunks"]) == (1, 1)
    assert (edit[f"{QUANT}/petit.py"]["kind"], edit[f"{QUANT}/petit.py"]["removed"]) == ("series", 0)
    totals = data["totals"]
    assert totals["removed"] == sum(v[0] for v in got_all.values()) == 3
    assert totals["hunks"] == sum(v[1] for v in got_all.values())
    assert totals["added"] == sum(v[2] for v in got_all.values())
    assert totals["upstream_files"] == 3  # methods.py, pyproject.toml, petit_nvfp4.py


def test_footprint_table_and_variant_selection(cli):
    table = cli("footprint").stdout
    data = json.loads(cli("footprint", "--json").stdout)
    added = data["totals"]["added"]
    assert added == 3 + 1 + 3  # the shim, the registered line, the test file and pyproject
    assert "release 0.5.9" in table
    assert re.search(r"\{petit\.py -> petit_nvfp4\.py\}\s+rename\s+0\s+0\s+0", table), table
    assert re.search(rf"^total\s+0\s+2\s+{added}$", table, re.M), table
    assert f"0 upstream lines deleted or changed, 2 hunks on 2 upstream files (conflict points), {added} lines added" in table
    newer = json.loads(cli("footprint", "--json", "--ref", "v0.5.13").stdout)
    assert newer["patches"][2]["file"] == "0003-register-petit-mxfp4/0.5.13.patch"
    env_ref = json.loads(cli("footprint", "--json", SGLANG_REF="0.5.14").stdout)
    assert env_ref["release"] == "0.5.14" and env_ref["patches"][2]["file"].endswith("0.5.13.patch")
    branch = json.loads(cli("footprint", "--json", "--ref", "main").stdout)
    assert branch["release"] is None and branch["patches"][2]["file"].endswith("0.5.13.patch")
