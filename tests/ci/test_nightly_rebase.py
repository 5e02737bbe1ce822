"""ci/nightly_rebase.py publish against a FAKE gh (tests/ci/fakes/gh) and a local
bare "origin": PR vs issue, dedupe, update instead of create, close on success."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKES = Path(__file__).resolve().parent / "fakes"


def load_module():
    spec = importlib.util.spec_from_file_location("nightly_rebase", ROOT / "ci" / "nightly_rebase.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nightly_rebase"] = mod
    spec.loader.exec_module(mod)
    return mod


nr = load_module()
import nightly_publish as pub  # noqa: E402  (ci/ is on sys.path once nightly_rebase is loaded)


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, text=True, capture_output=True).stdout


def results(ok=True, changed=True, report="CONFLICT in python/sglang/srt/layers/quantization/petit_mxfp4.py",
            matrix_rc=0, failing="v0.5.24"):
    targets = [{"ref": "v0.5.24", "status": "ok", "steps": {"rebase": 0, "refresh": 0, "test": 0}},
               {"ref": "main", "status": "ok", "steps": {"rebase": 0, "test": 0}}]
    if not ok:
        for t in targets:
            if t["ref"] == failing:
                t.update(status="conflict", steps={"rebase": 3, "rebase-abort": 0}, report_md=report)
    return {"schema": nr.SCHEMA, "tag": "v0.5.24", "main_sha": "abc123", "refresh_ref": "v0.5.24",
            "upstream_url": "https://example.invalid/sglang.git", "targets": targets,
            "matrix": {"rc": matrix_rc, "md": "| ref | ok |\n|---|---|\n| v0.5.24 | yes |"},
            "patches_changed": changed, "diffstat": " patches/0001-x.patch | 2 +-",
            "range_diff": "1:  aaaa ! 1:  bbbb petit: add petit_mxfp4", "range_diff_note": "v0.5.23 -> v0.5.24",
            "errors": [], "run_url": "https://github.com/o/r/actions/runs/1"}


@pytest.fixture()
def world(tmp_path):
    """A clone of a bare origin holding ci/ and patches/, plus fake gh state."""
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "--quiet", "-b", "main", str(work))
    (work / "ci").mkdir()
    for name in ("nightly_rebase.py", "nightly_publish.py"):
        shutil.copy(ROOT / "ci" / name, work / "ci" / name)
    shutil.copytree(ROOT / "scripts" / "petit_series", work / "scripts" / "petit_series",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "patches").mkdir()
    (work / "patches" / "series").write_text("@base 0.5.23\n0001-x.patch\n")
    (work / "patches" / "0001-x.patch").write_text("old\n")
    for k, v in (("user.name", "t"), ("user.email", "t@e")):
        git(work, "config", k, v)
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "init")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "--quiet", "origin", "main")
    # the rebase job's output: results.json + refreshed patches/
    out = tmp_path / "nightly"
    (out / "patches").mkdir(parents=True)
    (out / "patches" / "series").write_text("@base 0.5.24\n0001-x.patch\n")
    (out / "patches" / "0001-x.patch").write_text("new\n")

    class World:
        pass

    w = World()
    w.tmp, w.origin, w.work, w.out = tmp_path, origin, work, out
    w.state, w.log = tmp_path / "gh-state.json", tmp_path / "gh-log.jsonl"

    def set_state(prs=(), issues=()):
        w.state.write_text(json.dumps({"prs": list(prs), "issues": list(issues), "next": 100}))

    def publish(res, *extra, gh_fail=None):
        (out / "results.json").write_text(json.dumps(res))
        env = {**os.environ, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
               "FAKE_GH_STATE": str(w.state), "FAKE_GH_LOG": str(w.log), "GH_TOKEN": "fake"}
        env.pop("GITHUB_REPOSITORY", None)
        if gh_fail:
            env["FAKE_GH_FAIL"] = gh_fail
        return subprocess.run([sys.executable, "ci/nightly_rebase.py", "publish", "--results",
                               str(out / "results.json"), "--repo", "o/r", *extra],
                              cwd=work, env=env, text=True, capture_output=True)

    def state():
        return json.loads(w.state.read_text())

    def calls():
        if not w.log.exists():
            return []
        return [json.loads(line) for line in w.log.read_text().splitlines()]

    w.set_state, w.publish, w.get, w.calls = set_state, publish, state, calls
    set_state()
    return w


def open_items(items):
    return [i for i in items if i["state"] == "open"]


# ---------------------------------------------------------------- success path

def test_success_creates_one_pr_and_pushes(world):
    p = world.publish(results())
    assert p.returncode == 0, p.stdout + p.stderr
    st = world.get()
    assert len(st["prs"]) == 1
    pr = st["prs"][0]
    assert pr["headRefName"] == "bot/nightly-rebase" and pr["state"] == "open"
    assert "range-diff" in pr["body"] and "| v0.5.24 | yes |" in pr["body"]
    assert "1:  aaaa ! 1:  bbbb" in pr["body"]
    assert not st["issues"]
    # the branch on origin carries the refreshed series
    assert git(world.origin, "show", "bot/nightly-rebase:patches/0001-x.patch") == "new\n"
    argvs = world.calls()
    assert ["auth", "setup-git"] in argvs
    create = next(a for a in argvs if a[:2] == ["pr", "create"])
    assert create[create.index("--head") + 1] == "bot/nightly-rebase"
    assert create[create.index("--base") + 1] == "main"


def test_success_twice_updates_instead_of_duplicating(world):
    assert world.publish(results()).returncode == 0
    p = world.publish(results())
    assert p.returncode == 0, p.stderr
    st = world.get()
    assert len(st["prs"]) == 1, "second run must not open a second PR"
    kinds = [a[:2] for a in world.calls()]
    assert kinds.count(["pr", "create"]) == 1
    assert ["pr", "edit"] in kinds


def test_success_closes_open_tracking_issue(world):
    world.set_state(issues=[{"number": 7, "state": "open", "title": "x", "body": "b", "url": "u",
                             "labels": ["nightly-rebase-failure"]}])
    assert world.publish(results()).returncode == 0
    st = world.get()
    assert st["issues"][0]["state"] == "closed"
    assert any(c["number"] == 7 and "clean again" in c["body"] for c in st["comments"])


def test_unrelated_issues_are_left_alone(world):
    world.set_state(issues=[{"number": 8, "state": "open", "title": "bug", "body": "", "url": "u",
                             "labels": ["bug"]}])
    assert world.publish(results()).returncode == 0
    assert world.get()["issues"][0]["state"] == "open"


def test_success_without_changes_pushes_nothing(world):
    p = world.publish(results(changed=False))
    assert p.returncode == 0, p.stderr
    assert not world.get()["prs"]
    assert not any(a[:1] == ["auth"] for a in world.calls())
    assert "bot/nightly-rebase" not in git(world.origin, "branch", "--list")


def test_success_without_changes_closes_superseded_pr(world):
    world.set_state(prs=[{"number": 5, "headRefName": "bot/nightly-rebase", "state": "open",
                          "title": "t", "body": "b", "url": "u", "labels": []}])
    assert world.publish(results(changed=False)).returncode == 0
    assert world.get()["prs"][0]["state"] == "closed"


# ---------------------------------------------------------------- failure path

def test_conflict_opens_one_issue_with_report(world):
    p = world.publish(results(ok=False))
    assert p.returncode == 1, "a failing nightly must exit non-zero after reporting"
    st = world.get()
    assert len(open_items(st["issues"])) == 1
    issue = st["issues"][0]
    assert "nightly-rebase-failure" in issue["labels"]
    assert "CONFLICT in python/sglang/srt/layers/quantization/petit_mxfp4.py" in issue["body"]
    assert "v0.5.24=conflict" in issue["body"]
    assert not st["prs"], "no PR from a failing run"
    assert ["label", "create"] in [a[:2] for a in world.calls()]
    assert "bot/nightly-rebase" not in git(world.origin, "branch", "--list")


def test_conflict_twice_updates_the_same_issue_quietly(world):
    world.publish(results(ok=False))
    world.publish(results(ok=False))
    st = world.get()
    assert len(st["issues"]) == 1, "no duplicate issue"
    kinds = [a[:2] for a in world.calls()]
    assert kinds.count(["issue", "create"]) == 1
    assert ["issue", "edit"] in kinds
    assert ["issue", "comment"] not in kinds, "same failure: edit the body, no new comment"


def test_changed_failure_comments(world):
    world.publish(results(ok=False, failing="v0.5.24"))
    world.publish(results(ok=False, failing="main", report="CONFLICT in model_config.py"))
    st = world.get()
    assert len(st["issues"]) == 1
    assert "CONFLICT in model_config.py" in st["issues"][0]["body"]
    assert any("main=conflict" in c["body"] for c in st["comments"])


def test_duplicate_issues_are_collapsed(world):
    lab = ["nightly-rebase-failure"]
    world.set_state(issues=[{"number": 3, "state": "open", "title": "a", "body": "", "url": "u", "labels": lab},
                            {"number": 9, "state": "open", "title": "b", "body": "", "url": "u", "labels": lab}])
    world.publish(results(ok=False))
    st = world.get()
    by = {i["number"]: i for i in st["issues"]}
    assert by[3]["state"] == "open" and by[9]["state"] == "closed"
    assert len(st["issues"]) == 2


def test_failure_leaves_existing_pr_alone(world):
    world.set_state(prs=[{"number": 5, "headRefName": "bot/nightly-rebase", "state": "open",
                          "title": "t", "body": "old", "url": "u", "labels": []}])
    world.publish(results(ok=False))
    pr = world.get()["prs"][0]
    assert pr["state"] == "open" and pr["body"] == "old"


def test_matrix_failure_is_a_failure(world):
    assert world.publish(results(matrix_rc=2)).returncode == 1
    assert len(world.get()["issues"]) == 1


def test_missing_results_file_files_an_issue(world):
    (world.out / "results.json").unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
           "FAKE_GH_STATE": str(world.state), "FAKE_GH_LOG": str(world.log)}
    p = subprocess.run([sys.executable, "ci/nightly_rebase.py", "publish", "--results",
                        str(world.out / "results.json"), "--repo", "o/r"],
                       cwd=world.work, env=env, text=True, capture_output=True)
    assert p.returncode == 1
    issue = world.get()["issues"][0]
    assert "produced no" in issue["body"]


def test_gh_failure_is_reported(world):
    p = world.publish(results(), gh_fail="pr create")
    assert p.returncode == 2


# ---------------------------------------------------------------- pure helpers

def test_decide_is_pure_and_ordered():
    acts = pub.decide(results(), [], [{"number": 4, "body": ""}])
    assert [a.kind for a in acts] == ["push-branch", "pr-create", "issue-close"]
    acts = pub.decide(results(ok=False), [{"number": 2}], [])
    assert [a.kind for a in acts] == ["issue-create"]
    acts = pub.decide(results(changed=False), [], [])
    assert [a.kind for a in acts] == ["noop"]


def test_newest_release_tag():
    out = "\n".join(f"{i}\trefs/tags/{t}" for i, t in enumerate(
        ["v0.5.9", "v0.5.23", "v0.5.10.post1", "v0.5.24rc1", "v0.5.23.post2", "gateway-v1.0", "v0.4.99"]))
    assert nr.newest_release_tag(out) == "v0.5.23.post2"
    assert nr.newest_release_tag("") is None


def test_series_base(tmp_path):
    f = tmp_path / "series"
    (tmp_path / "0001-a.patch").write_text("")
    f.write_text("# comment\n@base 0.5.23  # shared patches exported here\n0001-a.patch\n")
    assert nr.series_base(f) == "v0.5.23"
    f.write_text("@base 0.5.23\n0002-missing.patch\n")  # a series `make apply` refuses
    assert nr.series_base(f) is None
    f.write_text("0001-a.patch\n")
    assert nr.series_base(f) is None


def test_body_is_truncated():
    r = results(ok=False, report="x" * 100000)
    assert len(pub.issue_body(r, "sig")) < 65536
