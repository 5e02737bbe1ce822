"""The pure helpers: versions, patch parsing, hunk offsets, sparse cones, unpacking."""

from __future__ import annotations

import errno
import io
import sys
import tarfile

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from petit_series import gitlib, harness, locking, pypi, pytestlog, versions  # noqa: E402

PATCH = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Dev <dev@example.com>
Date: Thu, 1 Jan 2026 00:00:00 +0000
Subject: [PATCH] quantization: register
 petit_mxfp4

Body.

diff --git a/pkg/methods.py b/pkg/methods.py
index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100644
--- a/pkg/methods.py
+++ b/pkg/methods.py
@@ -2,3 +2,4 @@ METHODS = [
     "a",
     "b",
+    "c",
     "d",
diff --git a/pkg/new.py b/pkg/new.py
new file mode 100644
index 0000000000000000000000000000000000000000..3333333333333333333333333333333333333333
--- /dev/null
+++ b/pkg/new.py
@@ -0,0 +1 @@
+x = 1
"""


def test_versions_order_and_support():
    order = ["0.5.10rc0", "0.5.9", "0.5.10.post1", "0.5.10", "0.5.23", "0.5.12"]
    assert versions.sort(order) == ["0.5.9", "0.5.10rc0", "0.5.10", "0.5.10.post1", "0.5.12", "0.5.23"]
    assert versions.supported(order + ["0.5.8"]) == ["0.5.9", "0.5.10", "0.5.10.post1", "0.5.12", "0.5.23"]
    assert versions.normalize("v0.5.9") == "0.5.9" and versions.tag("0.5.9") == "v0.5.9"
    assert not versions.is_version("main") and versions.safe_ref_name("feature/x") == "feature_x"


RELEASES = ["0.5.9", "0.5.10rc0", "0.5.10rc1", "0.5.10", "0.5.10.post1", "0.5.10.post2", "0.5.11.dev0",
            "0.5.11a1", "0.5.11b2", "0.5.11rc0", "0.5.11", "0.5.12", "0.5.20", "0.5.23", "0.5.23.post1",
            "0.6.0.dev3", "0.6.0", "1.0.0", "10.0.0"]


def test_versions_order_is_pep440_order():
    """`make apply` runs on a bare Python (no `packaging`), so versions.py keeps its
    own parser; on every form SGLang uses its order is packaging's (PEP 440)."""
    packaging_version = pytest.importorskip("packaging.version")
    shuffled = RELEASES[::3] + RELEASES[1::3] + RELEASES[2::3]
    assert versions.sort(shuffled) == sorted(shuffled, key=packaging_version.Version) == RELEASES
    for text in RELEASES:
        parsed = packaging_version.Version(text)
        assert versions.is_final(text) == (not parsed.is_prerelease), text
        assert versions.key(text)[:3] == parsed.release[:3], text


def test_one_release_order_for_the_harness_and_the_nightly():
    meta = "Requires-Dist: xgrammar==0.1.25\nRequires-Dist: tokenizers==0.22.1\n"
    assert "xgrammar==0.1.25" not in harness.release_requirements("0.5.10.post1", meta)
    assert "xgrammar==0.1.25" in harness.release_requirements("0.5.16", meta)
    assert "tokenizers==0.22.1" in harness.release_requirements("0.5.24.dev0", meta)
    assert "tokenizers==0.22.1" not in harness.release_requirements("0.5.16", meta)


def test_a_build_that_cannot_fit_is_refused_before_it_starts(tmp_path):
    env = tmp_path / "venvs" / "style"
    with pytest.raises(harness.HarnessError) as err:
        harness.ensure_tool_venv(env, ["black==24.10.0"], tmp_path / "style.log", "style", need_gib=1e9)
    text = str(err.value)
    assert "needs about 1000000000.0 GiB free under" in text and "GiB is free" in text
    assert "TEST_SERIES=0" in text
    assert not env.exists() and not (tmp_path / "style.log").exists()


def test_junit_counts_sum_the_suites():
    xml = ('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/>'
           '<testsuite tests="3" failures="0" errors="1" skipped="0"/></testsuites>')
    assert pytestlog.junit_counts(xml) == {"tests": 8, "failures": 1, "errors": 1, "skipped": 2, "passed": 4}
    assert pytestlog.junit_counts('<testsuite tests="2"/>')["passed"] == 2


def test_write_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "d" / "record.json"
    locking.write_json(target, {"b": 1, "a": [1]})
    assert target.read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'

    def full_disk(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_text", full_disk)
    with pytest.raises(OSError):
        locking.write_json(target, {"c": 2})
    monkeypatch.undo()
    assert target.read_text().startswith('{\n  "a"') and [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_variant_floor_selection():
    floors = ["0.5.9", "0.5.13", "0.5.16", "0.5.20"]
    assert versions.select_floor("0.5.9", floors) == "0.5.9"
    assert versions.select_floor("0.5.12.post1", floors) == "0.5.9"
    assert versions.select_floor("0.5.13", floors) == "0.5.13"
    assert versions.select_floor("0.5.15.post1", floors) == "0.5.13"
    assert versions.select_floor("0.5.23", floors) == "0.5.20"
    assert versions.select_floor(None, floors) == "0.5.20"  # a branch: newest
    assert versions.select_floor("0.5.8", floors) is None


def test_suggest_near_matches():
    assert versions.suggest("v0.5.91", ["0.5.9", "0.5.19", "0.4.0"])[0] in ("0.5.9", "0.5.19")


def test_parse_patch_fields_and_hunks():
    mail = gitlib.parse_patch(PATCH)
    assert mail.subject == "[PATCH] quantization: register petit_mxfp4"
    assert [f.path for f in mail.files] == ["pkg/methods.py", "pkg/new.py"]
    methods, new = mail.files
    assert methods.old_oid == "1" * 40 and new.old_path is None
    (hunk,) = methods.hunks
    assert hunk.old_start == 2 and hunk.old_lines == ('    "a",', '    "b",', '    "d",')


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda t: t.replace('+    "c",\n', ""), "unexpected line"),
        (lambda t: t.replace("Subject:", "Subjekt:"), "Subject"),
        (lambda t: t.split("diff --git")[0], "no diff"),
        (lambda t: t.replace('     "d",\n', "", 1), "unexpected line"),
    ],
)
def test_parse_patch_rejects_corruption(mangle, message):
    with pytest.raises(ValueError, match=message):
        gitlib.parse_patch(mangle(PATCH))


def test_parse_apply_check_reads_offsets_and_the_failing_hunk():
    moved = (
        "Checking patch a.py...\n"
        "Hunk #1 succeeded at 4 (offset 2 lines).\n"
        "Hunk #2 succeeded at 30 (offset -1 line).\n"
        "Checking patch b.py...\n"
    )
    check = gitlib.parse_apply_check(True, moved)
    assert check.ok and check.offsets == {"a.py": [2, -1]} and not check.failed
    failed = (
        "Checking patch a.py...\n"
        "error: while searching for:\n"
        "error: not a real error line inside the searched text\n"
        "\n"
        "error: patch failed: a.py:12\n"
        "error: a.py: patch does not apply\n"
        "Checking patch gone.py...\n"
        "error: gone.py: No such file or directory\n"
    )
    check = gitlib.parse_apply_check(False, failed)
    assert not check.ok and check.failed == [("a.py", 12)]
    assert check.errors == ["a.py: patch does not apply", "gone.py: No such file or directory"]


def test_strip_trailers_only_touches_the_trailer_block():
    msg = "subj\n\nPetit-Patch: in prose stays\n\nSigned-off-by: A <a@b>\nPetit-Patch: 0001-x.patch\n"
    assert gitlib.strip_trailers(msg, ["petit-patch"]) == (
        "subj\n\nPetit-Patch: in prose stays\n\nSigned-off-by: A <a@b>\n"
    )
    assert gitlib.strip_trailers("subj\n\nPetit-Patch: 1\n", ["Petit-Patch"]) == "subj\n"
    assert gitlib.strip_trailers("only a subject\n", ["Petit-Patch"]) == "only a subject\n"


def test_cone_patterns_hold_direct_files_only():
    text = gitlib.cone_patterns(["python/sglang/srt", "python"])
    assert text.splitlines() == [
        "/*", "!/*/",
        "/python/", "!/python/*/",
        "/python/sglang/", "!/python/sglang/*/",
        "/python/sglang/srt/", "!/python/sglang/srt/*/",
    ]


def test_munge_subject():
    assert gitlib.munge_subject("[PATCH] quantization: add petit.py shim") == "quantization-add-petit-py-shim"


def _sdist(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [
            ("sglang-1.0/sglang/a.py", b"a"),
            ("sglang-1.0/PKG-INFO", b"x"),
            ("sglang-1.0/sglang.egg-info/SOURCES.txt", b"x"),
            ("sglang-1.0/pyproject.toml", b"[project]"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "sglang-1.0.tar.gz"
    path.write_bytes(buf.getvalue())
    return path


def test_unpack_sdist_into_upstream_layout(tmp_path):
    dest = tmp_path / "out"
    assert pypi.unpack(_sdist(tmp_path), "sdist", dest) == 2
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "python/pyproject.toml",
        "python/sglang/a.py",
    ]


def test_full_disk_while_unpacking_keeps_nothing(tmp_path, monkeypatch):
    def full(path, data, executable):
        path.parent.mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pypi, "_write", full)
    dest = tmp_path / "out"
    with pytest.raises(pypi.PypiError, match="disk full"):
        pypi.unpack(_sdist(tmp_path), "sdist", dest)
    assert not dest.exists()


def test_unsafe_archive_paths_are_refused():
    with pytest.raises(pypi.PypiError, match="unsafe"):
        pypi._safe_rel("sglang/../../etc/passwd")
