"""The series' own upstream-style tests, run against the patched tree.

The patches add tests under ``test/registered/`` for SGLang's CI; a PyPI tree
has no ``test/`` folder, so the apply leaves them out there. Here they are taken
from the patches themselves (their ``test/`` hunks applied in series order to
an empty folder, so a later patch's change to an earlier patch's test counts)
and run by pytest in a child process, as upstream's CI runs a test file: with
no conftest of ours and no petit_kernel stand-in on the path.

On this CPU machine the Petit (ROCm) and GPU tests skip with their reasons; the
CPU tests must pass; and the Triton backend's kernel tests run on CPU under
``TRITON_INTERPRET=1`` (a second run, so that the other tests see the
environment upstream's CPU CI gives them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
PATCHES = REPO / "patches"

pytestmark = pytest.mark.petit_mxfp4


def _series_entries() -> List[Path]:
    entries = []
    for line in (PATCHES / "series").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "@")):
            entries.append(PATCHES / line.rstrip("/"))
    return entries


def _touches_tests(patch: Path) -> bool:
    return any(
        line.startswith("diff --git a/test/")
        for line in patch.read_text().splitlines()
    )


@pytest.fixture(scope="module")
def upstream_tests(tmp_path_factory) -> Path:
    """A folder holding the ``test/`` files the series creates, as it leaves them."""
    root = tmp_path_factory.mktemp("upstream-tests")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for entry in _series_entries():
        if entry.is_dir():
            # Per-release variants would need this release's pick; none adds tests.
            variants = sorted(entry.glob("*.patch"))
            assert not any(map(_touches_tests, variants)), f"{entry.name} variants touch test/"
            continue
        if _touches_tests(entry):
            subprocess.run(
                ["git", "apply", "--include=test/*", str(entry)], cwd=root, check=True
            )
    if not list(root.glob("test/**/test_*.py")):
        pytest.fail("the series adds no upstream-style tests")
    return root


def _run_pytest(root: Path, run: str, extra_env: Dict[str, str], *args: str) -> dict:
    """pytest on the series' test files in a child process; its JUnit counts
    and the reasons of its skips."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(extra_env)
    files = sorted(str(p.relative_to(root)) for p in root.glob("test/**/test_*.py"))
    report = root / f"junit-{run}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         f"--junitxml={report}", *args, *files],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    cases = ET.parse(report).getroot().iter("testcase")
    result = {"rc": proc.returncode, "output": proc.stdout, "passed": [], "skipped": {}}
    for case in cases:
        name = f"{case.get('classname')}.{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            result["skipped"][name] = skipped.get("message", "")
        elif case.find("failure") is None and case.find("error") is None:
            result["passed"].append(name)
    return result


def test_series_tests_pass_as_upstream_ci_runs_them(upstream_tests):
    result = _run_pytest(upstream_tests, "plain", {})
    assert result["rc"] == 0, result["output"][-4000:]
    # The CPU tests (config detection, the opt-in, exclude patterns, checks).
    assert sum(".test_petit_mxfp4_config." in n for n in result["passed"]) >= 10
    # The rest need hardware this machine lacks (or, on older releases, the
    # sgl_kernel that importing FusedMoE needs), and say so.
    for name, reason in result["skipped"].items():
        assert any(need in reason for need in ("ROCm", "GPU", "sgl_kernel")), (name, reason)


def test_triton_kernel_tests_pass_in_the_interpreter(upstream_tests):
    # Only the kernel tests: on a GPU machine the others would run interpreted.
    result = _run_pytest(
        upstream_tests, "interpreted", {"TRITON_INTERPRET": "1"}, "-k", "TritonKernels"
    )
    assert result["rc"] == 0, result["output"][-4000:]
    kernels = [n for n in result["passed"] if "TritonKernels" in n]
    assert len(kernels) >= 2, result["output"][-4000:]


def test_pr_plan_names_tests_the_series_has(upstream_tests):
    """Every test `make pr`'s PR plan tells reviewers to run exists (file,
    class and method)."""
    import ast
    import json

    plan = json.loads((REPO / "scripts" / "pr_plan.json").read_text())
    for pr in plan["prs"]:
        for test_id in pr.get("tests", []):
            path, *names = test_id.split("::")
            file = upstream_tests / path
            assert file.is_file(), f"{pr['title']}: {path} is not a test the series adds"
            scope = ast.parse(file.read_text()).body
            for name in names:
                found = [
                    node for node in scope
                    if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name
                ]  # fmt: skip
                assert found, f"{pr['title']}: {test_id}: no {name}"
                scope = found[0].body
