"""A corrupt object in the upstream cache is found, and the snapshot rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib

import pytest

from .fixtures import QUANT, git

METHODS = f"{QUANT}/methods.py"


def cache_git(cli):
    return cli.tmp / "cache" / "upstream.git"


def object_file(cli, oid):
    return cache_git(cli) / "objects" / oid[:2] / oid[2:]


def corrupt(path, how):
    path.chmod(0o644)
    if how == "garbage":
        path.write_bytes(b"not a zlib stream")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:12])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "swapped":  # well-formed, but not the content its name promises
        body = b"METHODS = []\n"
        path.write_bytes(zlib.compress(b"blob %d\0" % len(body) + body))


def statuses(tree):
    record = json.loads((tree / ".git" / "petit-series" / "record.json").read_text())
    return [r["status"] for r in record["results"]]


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "swapped"])
def test_corrupt_blob_of_a_pypi_snapshot_is_rebuilt(cli, tmp_path, how):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    corrupt(object_file(cli, blob), how)
    shutil.rmtree(cli.tree("v0.5.9"))
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", ok=None)
    assert proc.returncode == 0, proc.output
    lines = [line for line in proc.output.splitlines() if line.startswith("cache:")]
    assert len(lines) == 1, proc.output
    assert f"had 1 corrupt object ({METHODS}: " in lines[0]
    assert "rebuilt it from sglang-0.5.9.tar.gz (sha256 verified)" in lines[0]
    tree = cli.tree("v0.5.9")
    assert statuses(tree) == ["applied", "applied", "applied", "applied"]
    assert '"fp8",\n    "petit_nvfp4",\n    "petit_mxfp4",' in (tree / METHODS).read_text()
    assert git(cache_git(cli), "fsck", "--no-dangling") == ""
    # Every later apply uses the repaired cache without a word.
    again = cli("apply", "--ref", "v0.5.9", "--source", "pypi", "--dir", str(tmp_path / "t2"))
    assert "cache:" not in again.output


def test_a_tree_left_half_made_by_an_older_run_is_finished(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    corrupt(object_file(cli, blob), "garbage")
    tree = cli.tree("v0.5.9")
    shutil.rmtree(tree)
    tree.mkdir(parents=True)
    git(tree, "init", "-q")  # "No commits yet", as the failed runs left it
    alternates = tree / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str(cache_git(cli) / "objects") + "\n")
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    assert "rebuilt it from" in proc.output
    assert statuses(tree) == ["applied"] * 4


def test_corrupt_commit_of_a_snapshot_is_rebuilt(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    commit = git(cache_git(cli), "rev-parse", "refs/pypi/v0.5.9")
    corrupt(object_file(cli, commit), "garbage")
    shutil.rmtree(cli.tree("v0.5.9"))
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    assert "the commit of refs/pypi/v0.5.9" in proc.output and "rebuilding it" in proc.output
    assert git(cache_git(cli), "rev-parse", "refs/pypi/v0.5.9") == commit  # reproducible
    assert statuses(cli.tree("v0.5.9")) == ["applied"] * 4


def test_corrupt_loose_object_of_a_git_snapshot_is_fetched_again(cli):
    cli("apply", "--ref", "v0.5.10", "--source", "git")
    blob = git(cache_git(cli), "rev-parse", f"refs/git/v0.5.10:{METHODS}")
    path = object_file(cli, blob)
    assert path.exists()
    corrupt(path, "garbage")
    shutil.rmtree(cli.tree("v0.5.10"))
    proc = cli("apply", "--ref", "v0.5.10", "--source", "git", ok=None)
    assert proc.returncode == 0, proc.output
    assert "rebuilt it from" in proc.output and "(fetched again)" in proc.output
    assert "applied with offsets" in proc.output
    assert git(cache_git(cli), "fsck", "--no-dangling") == ""


def test_corrupt_pack_of_a_git_snapshot_is_fetched_again(cli):
    cli("apply", "--ref", "v0.5.10", "--source", "git")
    cache = cache_git(cli)
    git(cache, "repack", "-a", "-d", "-q")
    git(cache, "prune-packed")
    blob = git(cache, "rev-parse", f"refs/git/v0.5.10:{METHODS}")
    assert not object_file(cli, blob).exists()
    # Damage the blob inside the pack: find its offset in the index, flip bytes there.
    (pack,) = (cache / "objects" / "pack").glob("*.pack")
    with pack.with_suffix(".idx").open("rb") as idx:
        index = subprocess.run(["git", "show-index"], stdin=idx, capture_output=True, text=True, check=True).stdout
    offset = next(int(line.split()[0]) for line in index.splitlines() if line.split()[1] == blob)
    data = bytearray(pack.read_bytes())
    for i in range(offset + 4, offset + 12):
        data[i] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    shutil.rmtree(cli.tree("v0.5.10"))
    proc = cli("apply", "--ref", "v0.5.10", "--source", "git", ok=None)
    assert proc.returncode == 0, proc.output
    assert "(fetched again)" in proc.output
    assert git(cache, "fsck", "--no-dangling") == ""


def test_unrepairable_snapshot_is_a_message_and_leaves_no_tree(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    corrupt(object_file(cli, blob), "garbage")
    shutil.rmtree(cli.tree("v0.5.9"))
    shutil.rmtree(cli.tmp / "cache" / "downloads")  # and PyPI is out of reach
    offline = (tmp_path / "nowhere").as_uri()
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", ok=None, PETIT_PYPI_URL=offline)
    assert proc.returncode == 1, proc.output
    assert "Traceback" not in proc.output
    assert "1 corrupt object" in proc.output and "rebuilding it failed" in proc.output
    assert not cli.tree("v0.5.9").exists()
    # The bad object and the snapshot's ref are gone: once PyPI answers again, the
    # next run builds the snapshot as if for the first time.
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    assert "built v0.5.9 from sglang-0.5.9.tar.gz" in proc.output
    assert statuses(cli.tree("v0.5.9")) == ["applied"] * 4
    assert git(cache_git(cli), "fsck", "--no-dangling") == ""


def test_no_op_run_does_not_read_the_snapshot(cli, monkeypatch):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    # A tree that is up to date needs nothing from the cache: no check, no repair.
    corrupt(object_file(cli, blob), "garbage")
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    assert "up to date" in proc.output and "cache:" not in proc.output
    assert os.path.getsize(object_file(cli, blob)) == len(b"not a zlib stream")


def test_a_passed_check_is_remembered_by_the_objects_bytes(cli, tmp_path):
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    commit = git(cache_git(cli), "rev-parse", "refs/pypi/v0.5.9")
    stamp = cache_git(cli) / "petit-checked" / commit
    oids = stamp.read_text().split()[1:]
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    assert commit in oids and blob in oids
    written = stamp.stat().st_mtime_ns
    # git "freshens" objects it meets again (a new mtime): no new full check.
    for oid in oids:
        os.utime(object_file(cli, oid))
    cli("apply", "--ref", "v0.5.9", "--source", "pypi", "--dir", str(tmp_path / "t2"))
    assert stamp.stat().st_mtime_ns == written
    # Changed bytes, even of the same length in the same file, are checked in full.
    path = object_file(cli, blob)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", "--dir", str(tmp_path / "t3"))
    assert "had 1 corrupt object" in proc.output


def test_deleting_the_ref_of_a_corrupt_snapshot_is_enough(cli):
    # Rebuilding writes the same objects again; git skips one it believes it has,
    # so the corrupt file must go first: the check does that.
    cli("apply", "--ref", "v0.5.9", "--source", "pypi")
    blob = git(cache_git(cli), "rev-parse", f"refs/pypi/v0.5.9:{METHODS}")
    corrupt(object_file(cli, blob), "garbage")
    git(cache_git(cli), "update-ref", "-d", "refs/pypi/v0.5.9")
    shutil.rmtree(cli.tree("v0.5.9"))
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", ok=None)
    assert proc.returncode == 0, proc.output
    assert "had 1 corrupt object" in proc.output
    assert statuses(cli.tree("v0.5.9")) == ["applied"] * 4
