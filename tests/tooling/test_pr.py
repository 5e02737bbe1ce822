"""`petit-series pr` (make pr): pure helpers, then end to end on the synthetic upstream.

The style tools are faked by small scripts on PATH (PETIT_STYLE_BIN) that report
SGLang's pinned versions; the real pinned tools are exercised by hand (see the
module docstring of scripts/petit_series/pr.py). `gh` is faked the same way.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .fixtures import git

sys.path.insert(0, str(ROOT / "scripts"))

from petit_series import pr, prbody, prbranch, prstyle, pytestlog  # noqa: E402

# ---------------------------------------------------------------------------
# Pure helpers

MESSAGE = """quantization: register petit_mxfp4

Body line one.
Origin: this line is prose, not a trailer block, and stays.

Petit-Series: 0006
Forwarded: not-needed
Origin: vendor
Applied-Upstream: no
Last-Update: 2026-01-01
Bug-Petit: https://example.com/1
  continued line of the Bug-Petit trailer
(cherry picked from commit 0123456789abcdef)
Signed-off-by: sglang-petit <sglang-petit@users.noreply.github.com>
Signed-off-by: Real Dev <dev@example.com>
Co-authored-by: Other <o@example.com>
"""


def test_strip_downstream_trailers_keeps_prose_and_upstream_trailers():
    assert prbranch.strip_downstream_trailers(MESSAGE) == (
        "quantization: register petit_mxfp4\n\n"
        "Body line one.\nOrigin: this line is prose, not a trailer block, and stays.\n\n"
        "Signed-off-by: Real Dev <dev@example.com>\n"
        "Co-authored-by: Other <o@example.com>\n"
    )


def test_strip_downstream_trailers_edge_cases():
    # Only downstream trailers: the whole block goes.
    assert prbranch.strip_downstream_trailers("subj\n\nbody\n\nPetit-X: 1\nForwarded: no\n") == "subj\n\nbody\n"
    # A subject alone is never a trailer block, even if it looks like one.
    assert prbranch.strip_downstream_trailers("Origin: a subject\n") == "Origin: a subject\n"
    # A last paragraph with prose in it is not a trailer block.
    text = "subj\n\nForwarded: yes\nbut this is prose\n"
    assert prbranch.strip_downstream_trailers(text) == text
    # The bot is recognized by its name or either email, case-insensitively.
    for who in ("SGLang-Petit <x@y.z>", "X <petit@example.com>"):
        assert prbranch.strip_downstream_trailers(f"s\n\nb\n\nSigned-off-by: {who}\n") == "s\n\nb\n"
    # Idempotent.
    once = prbranch.strip_downstream_trailers(MESSAGE)
    assert prbranch.strip_downstream_trailers(once) == once


def test_squash_message_and_identity():
    msg = prbranch.squash_message("Title", ["a: one\n\nbody 1\n\n- item\n", "b: two\n"])
    assert msg == "Title\n\n* a: one\n\n  body 1\n\n  - item\n\n* b: two\n"
    assert prbranch.parse_identity("Jane Doe <jane@example.com>") == ("Jane Doe", "jane@example.com")
    with pytest.raises(pr.PrError, match="Name <email>"):
        prbranch.parse_identity("jane@example.com")


def test_small_parsers():
    assert pytestlog.pytest_summary("x\n===== 12 passed, 3 skipped in 4.56s =====\n") == "12 passed, 3 skipped"
    assert pytestlog.pytest_summary("== 1 failed, 2 passed in 61.00s (0:01:01) ==") == "1 failed, 2 passed"
    assert pytestlog.pytest_summary("no summary") is None
    assert pytestlog.failed_tests("x\nFAILED t.py::a - boom\nERROR t.py::b\n") == ["FAILED t.py::a - boom", "ERROR t.py::b"]
    for url in ("https://github.com/jane/sglang.git", "git@github.com:jane/sglang.git",
                "ssh://git@github.com/jane/sglang", "https://github.com/jane/sglang/"):
        assert pr.github_owner(url) == "jane", url
    assert pr.github_owner("/tmp/fork.git") is None
    assert pr.github_owner("https://gitlab.com/jane/sglang.git") is None
    assert pr.test_version("0.5.9", "v0.5.23") == "0.5.9"
    assert pr.test_version(None, "v0.5.23") == "0.5.23"
    assert pr.test_version(None, None) is None


def test_matrix_staleness_and_amd_selection():
    rows = [{"ref": "v1", "patches": [{"name": "a"}, {"name": "b"}]}]
    assert pr.matrix_staleness(rows, ["a", "b"], 10.0, 5.0) == []
    assert pr.matrix_staleness(rows, ["a", "c"], 10.0, 20.0) == [
        "its patch list differs from patches/series",
        "a file in patches/ is newer than it",
    ]
    docs = [
        {"hardware": {"arch": "mi300"}, "created": "2026-01-01"},
        {"hardware": {"arch": "mi300"}, "created": "2026-02-01"},
        {"hardware": {"arch": "mi250"}, "created": "2026-01-15"},
    ]
    assert [(d["hardware"]["arch"], d["created"]) for d in pr.newest_amd_results(docs)] == [
        ("mi300", "2026-02-01"),
        ("mi250", "2026-01-15"),
    ]


STYLE_OUTPUT = """[style_patched.sh] checking 2 file(s)
+ isort --check-only --diff pkg/a.py pkg/new.py
ERROR: /t/pkg/a.py Imports are incorrectly sorted and/or formatted.
--- /t/pkg/a.py:before\t2026-01-01 00:00:00
+++ /t/pkg/a.py:after\t2026-01-01 00:00:01
@@ -3,4 +3,2 @@
 import os
-from x import (
-    y,
-)
+from x import y
+ black --check --diff pkg/a.py pkg/new.py
--- pkg/new.py\t2026-01-01 00:00:00+00:00
+++ pkg/new.py\t2026-01-01 00:00:01+00:00
@@ -10,2 +10,3 @@
 a = 1
+
 b=2
would reformat pkg/new.py
+ codespell pkg/a.py pkg/new.py
pkg/a.py:40: teh ==> the
+ ruff check --isolated --select F401 --output-format=full pkg/a.py pkg/new.py
pkg/a.py:41:8: F401 [*] `os` imported but unused
"""

SERIES_DIFF = """diff --git a/pkg/a.py b/pkg/a.py
index 1..2 100644
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -39,0 +40,2 @@ def f():
+x = 1
+y = 2
@@ -60 +62 @@ def g():
-old
+new
@@ -70,2 +71,0 @@ def h():
-gone
-gone
diff --git a/pkg/new.py b/pkg/new.py
new file mode 100644
index 0..3
--- /dev/null
+++ b/pkg/new.py
@@ -0,0 +1,20 @@
+...
"""


def test_style_findings_are_attributed_to_the_series_or_upstream():
    findings = prstyle.tool_findings(STYLE_OUTPUT, "/t/")
    assert findings == [
        {"tool": "isort", "file": "pkg/a.py", "lines": {4, 5, 6, 7}},
        {"tool": "black", "file": "pkg/new.py", "lines": {11}},
        {"tool": "codespell", "file": "pkg/a.py", "lines": {40}},
        {"tool": "ruff", "file": "pkg/a.py", "lines": {41}},
    ]
    ours = prstyle.series_lines(SERIES_DIFF)
    assert ours == {"pkg/a.py": {40, 41, 62, 71, 72}, "pkg/new.py": None}
    mine, theirs = prstyle.attribute(findings, ours)
    assert [f["tool"] for f in mine] == ["black", "codespell", "ruff"]
    assert [f["tool"] for f in theirs] == ["isort"]  # upstream's own imports, untouched
    # A finding without line numbers is never waved through.
    assert prstyle.attribute([{"tool": "black", "file": "pkg/a.py", "lines": set()}], ours)[0]


def test_bot_identities():
    assert prbranch.is_bot("sglang-petit", "petit@example.com")
    assert prbranch.is_bot("Someone", "sglang-petit@users.noreply.github.com")
    assert prbranch.is_bot("Someone", "123+sglang-petit@users.noreply.github.com")
    assert not prbranch.is_bot("Jane Doe", "123+jane@users.noreply.github.com")
    assert not prbranch.is_bot("Jane Doe", "jane@example.com")


PLAN = {"prs": [
    {"title": "dense", "why": "the method.", "patches": ["0001-a.patch", "0003-v/"], "tests": ["test/t.py"]},
    {"title": "nvfp4", "why": "a change.", "patches": ["0002-b.patch"], "tests": []},
    {"title": "gone", "why": "already upstream.", "patches": ["0009-z.patch"]},
]}


def test_plan_numbers_the_commits_of_each_pr_in_merge_order():
    commits = [{"subject": s, "patch": p} for s, p in
               (("a", "0001-a.patch"), ("b", "0002-b.patch"), ("v", "0003-v/"), ("new", "0004-new.patch"), ("x", None))]
    text = prbody.render_plan(commits, PLAN)
    assert text.splitlines()[2:] == [
        "1. **dense** (commits 1, 3): the method. Tests: `test/t.py`.",
        "2. **nvfp4** (commits 2): a change.",
        "3. Not in `scripts/pr_plan.json` (commits 4, 5): to be placed.",
    ]
    assert prbody.render_plan(commits[3:], PLAN) == "One PR: `scripts/pr_plan.json` assigns none of these commits."


def test_the_repository_plan_places_every_patch_of_the_series_once():
    plan = pr.load_plan()
    listed = [name for group in plan["prs"] for name in group["patches"]]
    series_file = ROOT / "patches" / "series"
    entries = [x.split("#")[0].strip() for x in series_file.read_text().splitlines()]
    entries = [x for x in entries if x and not x.startswith("@")]
    assert sorted(listed) == sorted(set(listed))
    assert set(listed) <= set(entries), set(listed) - set(entries)


def test_bot_authored_commits_are_a_warning_in_the_body():
    facts = {"ref": "main", "base": "a" * 40, "source": "git", "squash": False, "files": [],
             "dropped": [], "excluded": [], "commits": [{"subject": "s", "body": ""}],
             "pr_commits": ["s", "t"], "bot_authored": ["sglang-petit <petit@example.com>"]}
    text = prbody.render_modifications(facts)
    assert "> **Warning**: 1 of 2 commits are authored by the tooling's identity (`sglang-petit <petit@example.com>`)" in text
    assert "Warning" not in prbody.render_modifications(dict(facts, bot_authored=[]))


def test_render_template_refuses_unknown_and_unused_names():
    assert prbody.render_template("a {{x}} b", {"x": "1\n"}) == "a 1 b"
    with pytest.raises(pr.PrError, match="without values"):
        prbody.render_template("{{x}} {{y}}", {"x": ""})
    with pytest.raises(pr.PrError, match="without placeholders"):
        prbody.render_template("{{x}}", {"x": "", "z": ""})


def test_options_from_env(monkeypatch):
    for var in ("PR_BRANCH", "SQUASH", "TESTS", "STYLE", "PUSH", "FORCE", "SGLANG_FORK", "PR_TITLE"):
        monkeypatch.delenv(var, raising=False)
    assert pr.Options.from_env() == pr.Options()
    monkeypatch.setenv("SQUASH", "1")
    monkeypatch.setenv("TESTS", "0")
    monkeypatch.setenv("SGLANG_FORK", " origin ")
    opts = pr.Options.from_env(force=True)
    assert (opts.squash, opts.tests, opts.push, opts.force, opts.fork) == (True, False, False, True, "origin")


# ---------------------------------------------------------------------------
# End to end

FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_TOOLS_LOG"
case "$(basename "$0") $1" in
  "isort --version-number") echo 5.13.2; exit 0 ;;
  "black --version") echo "black, 24.10.0 (compiled: yes)"; exit 0 ;;
  "codespell --version") echo 2.4.1; exit 0 ;;
esac
if [[ "$(basename "$0")" == black && "${FAKE_BLACK_FAIL:-}" == upstream ]]; then
  f=python/sglang/srt/layers/quantization/methods.py  # line 1 is upstream's
  echo "--- $f"; echo "+++ $f"; echo "@@ -1,1 +1,1 @@"; echo "-METHODS=["; echo "+METHODS = ["
  echo "would reformat $f"; exit 1
elif [[ "$(basename "$0")" == black && -n "${FAKE_BLACK_FAIL:-}" ]]; then
  f=python/sglang/srt/layers/quantization/petit.py  # new in the series
  echo "--- $f"; echo "+++ $f"; echo "@@ -2,1 +2,1 @@"; echo "-x=1"; echo "+x = 1"
  echo "would reformat $f"; exit 1
fi
exit 0
"""

FAKE_GH = """#!/usr/bin/env bash
echo "gh $*" >> "$FAKE_GH_LOG"
case "$1 $2" in
  "auth status") exit "${FAKE_GH_AUTH_RC:-0}" ;;
  "pr create") echo "https://github.com/sgl-project/sglang/pull/99999" ;;
esac
"""

TRAILERS = (
    "Petit-Series: shim\nForwarded: not-needed\n"
    "Signed-off-by: sglang-petit <sglang-petit@users.noreply.github.com>\n"
    "Signed-off-by: Upstream Dev <dev@example.com>\n\n"
)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def prcli(cli, tmp_path):
    """The CLI runner with fake style tools and gh, tests off, and trailers in one patch."""
    tools = tmp_path / "fake-bin"
    tools.mkdir()
    for name in prstyle.STYLE_TOOLS:
        _script(tools / name, FAKE_TOOL)
    _script(tools / "gh", FAKE_GH)
    shim = cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch"
    text = shim.read_text()
    shim.write_text(text.replace("\ndiff --git", "\n" + TRAILERS + "diff --git", 1))
    cli.env.update(
        PETIT_STYLE_BIN=str(tools),
        FAKE_TOOLS_LOG=str(tmp_path / "tools.log"),
        FAKE_GH_LOG=str(tmp_path / "gh.log"),
        PATH=f"{tools}{os.pathsep}{os.environ['PATH']}",
        TESTS="0",
    )
    for var in ("SQUASH", "PUSH", "SGLANG_FORK", "PR_BRANCH", "PR_TITLE", "PR_AUTHOR", "STYLE"):
        cli.env.pop(var, None)
    cli.tools_log = tmp_path / "tools.log"
    cli.gh_log = tmp_path / "gh.log"
    return cli


def _body(cli) -> str:
    return (cli.build / "pr" / "PR_BODY.md").read_text()


def _log(tree: Path, rev: str, fmt: str = "%s") -> list[str]:
    return git(tree, "log", f"--format={fmt}", f"refs/petit/upstream..{rev}").splitlines()[::-1]


def test_pr_from_git_builds_branch_runs_style_and_renders_body(prcli):
    proc = prcli("pr", "--ref", "v0.5.15", "--source", "git")
    tree = prcli.tree("v0.5.15")
    # The series commits minus the one already upstream, with downstream trailers gone.
    assert _log(tree, "petit-mxfp4-pr") == [
        "quantization: move petit.py to petit_nvfp4.py",
        "quantization: keep petit.py as a shim",
        "test: add petit_mxfp4 tests",
    ]
    shim_msg = git(tree, "log", "-1", "--format=%B", "petit-mxfp4-pr~1")
    assert "Petit-Series" not in shim_msg and "Forwarded" not in shim_msg and "sglang-petit" not in shim_msg
    assert "Signed-off-by: Upstream Dev <dev@example.com>" in shim_msg
    # The applied branch still has them, stays checked out, and holds the same files.
    assert "Petit-Series: shim" in git(tree, "log", "-1", "--format=%B", "petit/v0.5.15~1")
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "petit/v0.5.15"
    assert git(tree, "rev-parse", "petit-mxfp4-pr^{tree}") == git(tree, "rev-parse", "HEAD^{tree}")
    assert set(_log(tree, "petit-mxfp4-pr", "%an <%ae>")) == {"Upstream Dev <dev@example.com>"}
    assert "dropped (already upstream): 0003-register-petit-mxfp4/" in proc.stdout
    # The style tools ran on the changed .py files only, in check mode.
    calls = prcli.tools_log.read_text()
    assert "black --check --diff python/sglang/srt/layers/quantization/petit.py" in calls
    assert "test/registered/test_petit_mxfp4.py" in calls and "codespell --toml python/pyproject.toml" in calls
    assert "methods.py" not in calls  # already upstream: not part of the PR
    body = _body(prcli)
    for section in ("## Motivation", "## Modifications", "## Accuracy Tests",
                    "## Speed Tests and Profiling", "## Checklist"):
        assert section in body
    assert "**2. quantization: keep petit.py as a shim**" in body and "Petit-Series" not in body
    assert "Not in this PR (already in SGLang `v0.5.15`)" in body
    assert "- `0003-register-petit-mxfp4/`: quantization: register petit_mxfp4" in body
    assert "- [x] Format your code" in body and "- [x] Add unit tests" in body
    assert "CPU (no GPU): skipped (TESTS=0)" in body
    assert body.count("TODO (no data)") == 3  # matrix, accuracy, speed
    assert "{{" not in body
    # Nothing was pushed and gh was not even asked; the commands were printed.
    assert not prcli.gh_log.exists()
    assert "nothing was pushed" in proc.stdout and "gh pr create --repo sgl-project/sglang" in proc.stdout
    assert f"--body-file {prcli.build / 'pr' / 'PR_BODY.md'}" in proc.stdout
    facts = json.loads((prcli.build / "pr" / "pr.json").read_text())
    assert facts["style"]["status"] == "pass" and facts["tests"]["status"] == "skipped"
    # Running it again gives the same branch (reproducible commits).
    head = git(tree, "rev-parse", "petit-mxfp4-pr")
    prcli("pr", "--ref", "v0.5.15", "--source", "git")
    assert git(tree, "rev-parse", "petit-mxfp4-pr") == head


def test_pr_squash_author_matrix_and_amd_results(prcli):
    build = prcli.build
    build.mkdir(parents=True)
    (build / "matrix.json").write_text(json.dumps([
        {"ref": "v0.5.9", "ok": True, "patches": [{"name": "0001-x.patch", "status": "applied"}]},
        {"ref": "v0.5.14", "ok": False, "patches": [{"name": "0001-x.patch", "status": "conflict"}]},
    ]))
    results = build / "amd-results"
    results.mkdir()
    (results / "mi300-v0.5.9.json").write_text(json.dumps(_amd_doc()))
    (results / "broken.json").write_text(json.dumps({"schema": "petit-amd-result/v1"}))
    prcli("pr", "--ref", "v0.5.9", "--source", "git", SQUASH="1", PR_AUTHOR="Jane Doe <jane@example.com>",
          PR_TITLE="Add petit_mxfp4")
    tree = prcli.tree("v0.5.9")
    assert _log(tree, "petit-mxfp4-pr") == ["Add petit_mxfp4"]
    msg = git(tree, "log", "-1", "--format=%B", "petit-mxfp4-pr")
    assert "* quantization: keep petit.py as a shim" in msg and "Petit-Series" not in msg
    assert git(tree, "log", "-1", "--format=%an <%ae>|%cn", "petit-mxfp4-pr") == "Jane Doe <jane@example.com>|Jane Doe"
    body = _body(prcli)
    assert "applies to 1 of 2 SGLang releases tried, `v0.5.9` to `v0.5.14`" in body
    assert "- `v0.5.14`: failed" in body and "| v0.5.9 |" not in body  # the misses, not the table
    # scripts/pr_plan.json knows the fixture's 0001 (a real patch name), not the others
    assert "1. **[AMD] petit_mxfp4: MXFP4 dense linear layers through Petit** (commits 1): " in body
    assert "2. Not in `scripts/pr_plan.json` (commits 2, 3, 4): to be placed." in body
    assert "may be stale: its patch list differs from patches/series" in body
    assert "| mi300 | 200 | 0.785 | 0.000 | 0.6 | True |" in body
    assert "| 3.10 | 793.6 |" in body and "[CI run](https://github.com/o/r/actions/runs/1)" in body
    assert "ignored `" in body and "broken.json" in body
    assert "- [x] Provide accuracy and speed benchmark results" in body
    assert body.count("TODO (no data)") == 0


def _amd_doc() -> dict:
    return {
        "schema": "petit-amd-result/v1", "status": "pass", "failures": [],
        "created": "2026-07-21T04:43:00+00:00",
        "run": {"url": "https://github.com/o/r/actions/runs/1", "sha": "abc", "runner": "linux-mi300-gpu-1"},
        "hardware": {"arch": "mi300", "gfx": "gfx942"},
        "sglang": {"ref": "v0.5.9", "image": "img", "checkout": "/sgl-workspace/sglang", "apply": "ok"},
        "petit_kernel": {"spec": "petit-kernel==0.0.5", "status": "ok"},
        "model": "amd/Llama-3.1-8B-Instruct-MXFP4-W4A4-MLCAL-C1000-GPTQ", "quantization": "petit_mxfp4",
        "server_args": "--quantization petit_mxfp4",
        "layer_tests": {"status": "ok", "tests": 12, "passed": 12, "failed": 0, "errors": 0, "skipped": 0, "junit": "j"},
        "gsm8k": {"num_questions": 200, "accuracy": 0.785, "invalid": 0.0, "latency_s": 41.2,
                  "output_throughput": 1032.6, "threshold": 0.6, "passed": True},
        "throughput": {"tool": "sglang.bench_serving", "args": "--dataset-name random-ids", "completed": 64,
                       "request_throughput": 3.1, "input_throughput": 3174.4, "output_throughput": 793.6,
                       "total_throughput": 3968.0, "median_ttft_ms": 120.5, "median_itl_ms": 18.2,
                       "median_e2e_latency_ms": 4790.1},
    }


def test_pr_from_partial_pypi_tree_lists_excluded_and_refuses_push(prcli):
    proc = prcli("pr", "--ref", "v0.5.10", "--source", "pypi")
    tree = prcli.tree("v0.5.10")
    assert _log(tree, "petit-mxfp4-pr") == [
        "quantization: move petit.py to petit_nvfp4.py",
        "quantization: keep petit.py as a shim",
        "quantization: register petit_mxfp4",
        "test: add petit_mxfp4 tests",  # its python/pyproject.toml part is in the sdist
    ]
    assert "pypi: sglang-0.5.10.tar.gz" in _body(prcli)
    fork = prcli.tmp / "fork.git"
    git(prcli.tmp, "init", "-q", "--bare", str(fork))
    refused = prcli("pr", "--ref", "v0.5.10", "--source", "pypi", ok=None, PUSH="1", SGLANG_FORK=str(fork))
    assert refused.returncode == 1 and "not pushing" in refused.output and "PyPI snapshot" in refused.output
    assert git(fork, "for-each-ref") == "" and not prcli.gh_log.exists()
    assert proc.returncode == 0


def test_pr_from_wheel_tree_lists_the_excluded_patch(prcli):
    proc = prcli("pr", "--ref", "v0.5.13", "--source", "pypi")
    assert "not included (outside the partial tree): 0004-test-add-petit-mxfp4-tests.patch" in proc.stdout
    body = _body(prcli)
    assert "Not in this PR (outside this partial PyPI tree" in body
    assert "test/registered/test_petit_mxfp4.py" in body and "- [ ] Add unit tests" in body


def test_push_with_gh_opens_the_pr_with_the_body_file(prcli):
    fork = prcli.tmp / "fork.git"
    git(prcli.tmp, "init", "-q", "--bare", str(fork))
    proc = prcli("pr", "--ref", "v0.5.9", "--source", "git", PUSH="1", SGLANG_FORK=str(fork))
    tree = prcli.tree("v0.5.9")
    assert git(fork, "rev-parse", "refs/heads/petit-mxfp4-pr") == git(tree, "rev-parse", "petit-mxfp4-pr")
    calls = prcli.gh_log.read_text().splitlines()
    assert calls[0] == "gh auth status"
    body = prcli.build / "pr" / "PR_BODY.md"
    assert calls[1] == (
        "gh pr create --repo sgl-project/sglang --base main --head petit-mxfp4-pr "
        f"--title {pr.DEFAULT_TITLE} --body-file {body}"
    )
    assert "pull/99999" in proc.stdout


def test_push_without_gh_auth_pushes_and_prints_the_pr_command(prcli):
    fork = prcli.tmp / "fork.git"
    git(prcli.tmp, "init", "-q", "--bare", str(fork))
    proc = prcli("pr", "--ref", "v0.5.9", "--source", "git", PUSH="1", SGLANG_FORK=str(fork), FAKE_GH_AUTH_RC="1")
    assert git(fork, "rev-parse", "--verify", "refs/heads/petit-mxfp4-pr")
    assert "not authenticated" in proc.stdout and "gh pr create" in proc.stdout
    assert "pr create" not in prcli.gh_log.read_text()


def test_push_needs_a_fork(prcli):
    proc = prcli("pr", "--ref", "v0.5.9", "--source", "git", ok=None, PUSH="1")
    assert proc.returncode == 1 and "SGLANG_FORK is unset" in proc.output


def test_style_findings_are_reported_and_block_the_pr(prcli):
    proc = prcli("pr", "--ref", "v0.5.9", "--source", "git", ok=None, FAKE_BLACK_FAIL="1")
    assert proc.returncode == 1 and "the PR is not ready: style" in proc.output
    body = _body(prcli)
    assert "- [ ] Format your code" in body and "FAIL: the tools would change" in body
    assert "+x = 1" in body and "would reformat" in body
    assert "would reformat" in (prcli.build / "pr" / "style.txt").read_text()
    assert git(prcli.tree("v0.5.9"), "status", "--porcelain") == ""  # nothing modified


def test_style_findings_in_upstream_code_only_do_not_block(prcli):
    proc = prcli("pr", "--ref", "v0.5.9", "--source", "git", FAKE_BLACK_FAIL="upstream")
    assert "style: pass on every line this PR adds or changes" in proc.stdout
    body = _body(prcli)
    assert "- [x] Format your code" in body and "`python/sglang/srt/layers/quantization/methods.py` (black)" in body
    assert "would reformat" not in body  # the tools' output stays in build/pr/style.txt
    assert "would reformat" in (prcli.build / "pr" / "style.txt").read_text()


def test_tests_run_on_main_with_the_newest_release_env(prcli):
    out = prcli.tmp / "test-args"
    cmd = f"{sys.executable} -c \"import sys; open('{out}', 'w').write(' '.join(sys.argv[1:])); " \
          "print('=== 5 passed, 1 skipped in 0.10s ===')\" {version} {tree}"
    proc = prcli("pr", "--source", "git", TESTS="1", PETIT_PR_TEST_CMD=cmd)
    tree = prcli.tree("main")
    assert out.read_text() == f"0.5.15 {tree}"
    assert "tests: pass: 5 passed, 1 skipped" in proc.stdout
    body = _body(prcli)
    assert "pass: 5 passed, 1 skipped, `tests/series` in the CPU environment of SGLang 0.5.15 " \
           "(the newest release; main has no environment of its own)" in body
    failing = f"{sys.executable} -c \"print('FAILED t.py::x - boom'); print('=== 1 failed in 0.1s ==='); exit(1)\""
    bad = prcli("pr", "--source", "git", ok=None, TESTS="1", PETIT_PR_TEST_CMD=failing)
    assert bad.returncode == 1 and "FAIL: 1 failed" in _body(prcli)
    assert "- `FAILED t.py::x - boom`" in _body(prcli)


def test_a_hand_edited_pr_branch_is_not_overwritten(prcli):
    prcli("pr", "--ref", "v0.5.9", "--source", "git", STYLE="0")
    tree = prcli.tree("v0.5.9")
    edited = git(tree, "commit-tree", "petit-mxfp4-pr^{tree}", "-p", "petit-mxfp4-pr", "-m", "my fixup")
    git(tree, "update-ref", "refs/heads/petit-mxfp4-pr", edited)
    again = prcli("pr", "--ref", "v0.5.9", "--source", "git", ok=None, STYLE="0")
    assert again.returncode == 1 and "was changed since `make pr` wrote it" in again.output
    assert git(tree, "rev-parse", "petit-mxfp4-pr") == edited
    prcli("pr", "--ref", "v0.5.9", "--source", "git", STYLE="0", FORCE="1")
    assert git(tree, "rev-parse", "petit-mxfp4-pr") != edited
