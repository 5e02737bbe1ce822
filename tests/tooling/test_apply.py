"""The series tooling on small real upstream repositories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import fixtures
from .fixtures import QUANT, git


def record(tree):
    return json.loads((tree / ".git" / "petit-series" / "record.json").read_text())


def statuses(tree):
    return [r["status"] for r in record(tree)["results"]]


def branch_subjects(tree):
    return git(tree, "log", "--format=%s", "refs/petit/upstream..HEAD").splitlines()[::-1]


def test_apply_from_git_makes_one_commit_per_patch(cli):
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    assert statuses(tree) == ["applied"] * 4
    assert branch_subjects(tree) == [
        "quantization: move petit.py to petit_nvfp4.py",
        "quantization: keep petit.py as a shim",
        "quantization: register petit_mxfp4",
        "test: add petit_mxfp4 tests",
    ]
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "petit/v0.5.9"
    assert '"petit_mxfp4"' in (tree / QUANT / "methods.py").read_text()
    assert (tree / QUANT / "petit_nvfp4.py").read_text() == fixtures.PETIT
    # The author of each patch is preserved; the committer is pinned.
    assert set(git(tree, "log", "--format=%an|%cn", "refs/petit/upstream..HEAD").splitlines()) == {
        "Upstream Dev|sglang-petit"
    }
    assert "[4/4]" in proc.stdout and "OK: v0.5.9" in proc.stdout
    report = json.loads((cli.build / "reports" / "v0.5.9.json").read_text())
    assert report["status"] == "ok" and len(report["results"]) == 4


def test_rerun_is_idempotent_and_reproducible(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    head = git(tree, "rev-parse", "HEAD")
    again = cli("apply", "--ref", "v0.5.9", "--source", "git")
    assert "up to date" in again.stdout
    assert git(tree, "rev-parse", "HEAD") == head
    # A second tree elsewhere gets the very same commits (pinned committer and dates).
    other = cli("apply", "--ref", "v0.5.9", "--source", "git", "--dir", str(tmp_path / "other"))
    assert other.returncode == 0
    assert git(tmp_path / "other", "rev-parse", "HEAD") == head


def test_moved_context_is_applied_with_offsets(cli):
    proc = cli("apply", "--ref", "v0.5.10", "--source", "git")
    res = record(cli.tree("v0.5.10"))["results"][2]
    assert res["status"] == "applied-offsets"
    assert res["offsets"] == {f"{QUANT}/methods.py": [5]}
    assert "applied with offsets (methods.py +5)" in proc.stdout


def test_changed_context_is_merged_three_way(cli):
    proc = cli("apply", "--ref", "v0.5.11", "--source", "git")
    tree = cli.tree("v0.5.11")
    assert statuses(tree)[2] == "applied-3way"
    text = (tree / QUANT / "methods.py").read_text()
    assert '"fp8_e4m3",\n    "petit_nvfp4",\n    "petit_mxfp4",' in text
    assert "3-way" in proc.stdout


def test_variant_is_chosen_by_release(cli):
    cli("apply", "--ref", "v0.5.13", "--source", "git")
    res = record(cli.tree("v0.5.13"))["results"][2]
    assert res["variant"] == "0.5.13" and res["status"] == "applied"
    assert res["file"] == "0003-register-petit-mxfp4/0.5.13.patch"


def test_already_upstream_patch_is_skipped_with_evidence(cli):
    proc = cli("apply", "--ref", "v0.5.15", "--source", "git")
    res = record(cli.tree("v0.5.15"))["results"][2]
    assert res["status"] == "already-upstream"
    assert "reverse-applies" in res["evidence"]
    assert "already upstream, skipped" in proc.stdout
    assert len(branch_subjects(cli.tree("v0.5.15"))) == 3


def test_conflict_stops_reports_and_continues(cli):
    proc = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert proc.returncode == 3, proc.output
    tree = cli.tree("v0.5.14")
    report = json.loads((cli.build / "reports" / "v0.5.14.json").read_text())
    bad = report["results"][-1]
    assert bad["status"] == "conflict" and bad["name"] == "0003-register-petit-mxfp4/"
    assert bad["files"] == [f"{QUANT}/methods.py"]
    assert bad["hunks"] and bad["hunks"][0]["hunk"].startswith("@@")
    assert bad["three_way"] is True
    assert any("release 0.5.14" in c for c in bad["upstream_changes"])
    md = (cli.build / "reports" / "v0.5.14.md").read_text()
    assert "## Conflict in `0003-register-petit-mxfp4/`" in md and "rebase-continue" in md
    # A new apply refuses to clobber the stopped one.
    again = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert again.returncode == 1 and "rebase-continue" in again.output
    # Continuing before resolving is refused.
    early = cli("rebase-continue", "--ref", "v0.5.14", ok=None)
    assert early.returncode == 1 and "unresolved" in early.output
    # Resolve: keep both entries.
    path = tree / QUANT / "methods.py"
    text = path.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    end = text.index("\n", end) + 1
    path.write_text(text[:start] + '    "petit_mxfp4",\n    "quark_mxfp4",\n' + text[end:])
    git(tree, "add", str(path))
    done = cli("rebase-continue", "--ref", "v0.5.14")
    assert "resolved, continuing" in done.stdout
    assert statuses(tree) == ["applied", "applied", "resolved", "applied"]
    assert not (tree / ".git" / "petit-series" / "state.json").exists()


def test_abort_rolls_back(cli):
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    tree = cli.tree("v0.5.14")
    cli("rebase-abort", "--ref", "v0.5.14")
    assert not (tree / ".git" / "rebase-apply").exists()
    assert git(tree, "status", "--porcelain") == ""
    assert git(tree, "rev-parse", "HEAD") == git(tree, "rev-parse", "refs/petit/upstream")
    nothing = cli("rebase-abort", "--ref", "v0.5.14", ok=None)
    assert nothing.returncode == 1 and "no series operation" in nothing.output


def test_dirty_local_checkout_is_refused_and_untouched(cli, world, tmp_path):
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(world["bare"]), str(checkout))
    git(checkout, "checkout", "-q", "-b", "mine", "v0.5.9")
    (checkout / QUANT / "petit.py").write_text("# local edit\n")
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 1 and "uncommitted changes" in proc.output
    assert (checkout / QUANT / "petit.py").read_text() == "# local edit\n"
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD") == "mine"
    git(checkout, "checkout", "-q", "--", ".")
    ok = cli("apply", "--source", str(checkout))
    assert "petit/v0.5.9" in ok.stdout  # version found by `git describe`
    assert git(checkout, "rev-parse", "mine") == git(checkout, "rev-parse", "v0.5.9")


def test_corrupt_patch_is_reported_before_anything_changes(cli):
    patch = cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch"
    text = patch.read_text()
    patch.write_text(text.replace("+from sglang", "+from sglang\ngarbage line", 1))
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1
    assert "0002-quantization-keep-petit-py-as-a-shim.patch" in proc.output and "corrupt" in proc.output
    assert not (cli.tree("v0.5.9") / ".git" / "petit-series" / "record.json").exists()


def test_series_and_files_out_of_sync(cli):
    (cli.patches / "0099-stray.patch").write_text("x")
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1 and "not listed" in proc.output and "0099-stray.patch" in proc.output
    (cli.patches / "0099-stray.patch").unlink()
    (cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch").unlink()
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1 and "listed but missing" in proc.output


def test_unknown_ref_suggests_near_matches(cli):
    proc = cli("apply", "--ref", "v0.5.91", "--source", "git", ok=None)
    assert proc.returncode == 1 and "Did you mean" in proc.output and "v0.5.9" in proc.output
    proc = cli("apply", "--ref", "0.5.16", "--source", "pypi", ok=None)
    assert proc.returncode == 1 and "not on PyPI" in proc.output


def test_network_failure_names_the_source_and_the_way_out(cli, tmp_path):
    proc = cli(
        "apply", "--ref", "v0.5.9", "--source", "pypi", ok=None,
        PETIT_PYPI_URL=(tmp_path / "nowhere").as_uri(),
    )
    assert proc.returncode == 1
    assert "cannot reach" in proc.output and "SGLANG_SOURCE=git" in proc.output
    proc = cli("apply", "--ref", "main", "--source", "git", ok=None, SGLANG_REPO=(tmp_path / "nope.git").as_uri())
    assert proc.returncode == 1 and "cannot reach" in proc.output


def test_auto_falls_back_to_pypi_and_says_so(cli, tmp_path):
    proc = cli("apply", "--ref", "v0.5.9", ok=True, SGLANG_REPO=(tmp_path / "nope.git").as_uri())
    assert "using PyPI" in proc.stdout
    assert record(cli.tree("v0.5.9"))["source"] == "pypi"


def test_partial_pypi_tree_excludes_and_lists_hunks(cli):
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    assert "partial tree" in proc.stdout
    res = record(cli.tree("v0.5.9"))["results"][3]
    # An sdist has python/ but no test/: the test file is excluded, pyproject kept.
    assert res["status"] == "applied" and res["excluded"] == ["test/registered/test_petit_mxfp4.py"]
    assert "excluded (not in this partial tree): test/registered/test_petit_mxfp4.py" in proc.stdout
    # A wheel has neither test/ nor python/pyproject.toml: the whole patch is excluded.
    proc = cli("apply", "--ref", "v0.5.11", "--source", "pypi")
    res = record(cli.tree("v0.5.11"))["results"][3]
    assert res["status"] == "excluded"
    assert res["excluded"] == ["python/pyproject.toml", "test/registered/test_petit_mxfp4.py"]
    tree = cli.tree("v0.5.11")
    assert not (tree / "python" / "sglang" / "_native.so").exists()
    assert "PKG-INFO" not in git(cli.tree("v0.5.9"), "ls-files")


def test_pypi_download_is_verified(cli, world, tmp_path):
    import shutil

    bad = tmp_path / "badpypi"
    shutil.copytree(world["pypi"], bad)
    archive = bad / "files" / "sglang-0.5.9.tar.gz"
    archive.write_bytes(archive.read_bytes() + b"tampered")
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", ok=None, PETIT_PYPI_URL=bad.as_uri())
    assert proc.returncode == 1 and "does not match" in proc.output
    assert not any((cli.tmp / "cache" / "downloads").glob("*"))


def test_second_run_needs_no_network(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    offline = (tmp_path / "gone").as_uri()
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", "--dir", str(tmp_path / "t2"), PETIT_PYPI_URL=offline)
    assert proc.returncode == 0


def test_lock_refuses_a_second_run(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); print('x', flush=True); time.sleep(30)",
         str(tree / ".git" / "petit-series" / "lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        holder.stdout.readline()
        proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
        assert proc.returncode == 1 and "in use by another run" in proc.output
    finally:
        holder.kill()


def test_interrupted_run_recovers(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    state_dir = tree / ".git" / "petit-series"
    rec = record(tree)
    # Simulate a run killed in the middle of `git am`: state says running, am half done.
    git(tree, "checkout", "-q", "-B", "petit/v0.5.9", "refs/petit/upstream")
    patch = cli.patches / "0001-quantization-move-petit-py-to-petit-nvfp4-py.patch"
    subprocess.run(["git", "am", "--3way", str(cli.patches / "0003-register-petit-mxfp4/0.5.13.patch")], cwd=tree, capture_output=True)
    assert (tree / ".git" / "rebase-apply").exists()
    state = dict(rec, status="running", next=1, orig_head=rec["head"], orig_branch="petit/v0.5.9", op="apply")
    (state_dir / "state.json").write_text(json.dumps(state))
    (state_dir / "record.json").unlink()
    assert patch.exists()
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git")
    assert "recovering from an interrupted run" in proc.stdout
    assert statuses(tree) == ["applied"] * 4
    assert git(tree, "rev-parse", "HEAD") == rec["head"]


def test_branch_with_unexported_commits_is_not_clobbered(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    (tree / "extra.txt").write_text("mine\n")
    git(tree, "add", "extra.txt")
    git(tree, "commit", "-q", "-m", "my local fix")
    (cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch").write_text(
        (cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch").read_text().replace("Backward", "Backwards")
    )
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1 and "not in patches/" in proc.output
    assert git(tree, "log", "-1", "--format=%s") == "my local fix"
    forced = cli("apply", "--ref", "v0.5.9", "--source", "git", FORCE="1")
    assert forced.returncode == 0 and "Backwards" in (tree / QUANT / "petit.py").read_text()


def untagged_clone(world, dest, tag):
    git(dest.parent, "clone", "-q", str(world["bare"]), str(dest))
    git(dest, "checkout", "-q", "-b", "release", tag)
    for name in git(dest, "tag").split():
        git(dest, "tag", "-d", name)
    return dest


def test_untagged_image_checkout_takes_its_version_from_the_install(cli, world, tmp_path):
    # Release images carry a checkout without tags, installed in editable mode.
    checkout = untagged_clone(world, tmp_path / "sgl-workspace", "v0.5.13")
    (checkout / ".git" / "info" / "exclude").write_text("python/sglang/_version.py\n")
    (checkout / "python" / "sglang" / "_version.py").write_text("__version__ = version = '0.5.13'\n")
    proc = cli("apply", "--source", str(checkout))
    assert "0003-register-petit-mxfp4/0.5.13.patch: applied" in proc.stdout
    # Naming the release works too, with a note that HEAD stands for it.
    other = untagged_clone(world, tmp_path / "other", "v0.5.13")
    proc = cli("apply", "--ref", "v0.5.13", "--source", str(other))
    assert "has no tag v0.5.13; applying to its HEAD as release 0.5.13" in proc.stdout
    assert "0003-register-petit-mxfp4/0.5.13.patch: applied" in proc.stdout


PARSE_COUNTER = """
import collections, sys
sys.path.insert(0, sys.argv[1])
from petit_series import cli, gitlib
seen = collections.Counter()
real = gitlib.parse_patch
def counting(text):
    seen[text.split("\\n", 4)[3]] += 1
    return real(text)
gitlib.parse_patch = counting
code = cli.main(sys.argv[2:])
print("PARSES", max(seen.values()), len(seen))
sys.exit(code)
"""


def test_apply_parses_each_patch_once(cli):
    """apply checks every patch before touching the tree and then applies them:
    each patch file is read and parsed once, not once per step."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PARSE_COUNTER,
            str(Path(__file__).resolve().parents[2] / "scripts"),
            "apply",
            "--ref",
            "v0.5.9",
            "--source",
            "git",
            "--patches",
            str(cli.patches),
        ],
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    most, patches = map(int, proc.stdout.split("PARSES")[1].split())
    assert patches == len(statuses(cli.tree("v0.5.9"))) and most == 1, proc.stdout
