"""Every ci/ script's --dry-run prints the commands it would run and runs none.

A trap directory first on PATH replaces make, docker, git, gh, pre-commit, pip,
curl and rocminfo with stubs that log any call: after a dry run the log must be
empty, and stdout must contain the key commands.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAPPED = ["make", "docker", "git", "gh", "pre-commit", "pip", "curl", "rocminfo", "isort",
           "black", "codespell", "ruff"]


@pytest.fixture()
def trap(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "trap.log"
    for name in TRAPPED:
        p = bindir / name
        p.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 99\n')
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "SGLANG_", "PETIT_"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env, log


def dry(trap, *argv, extra_env=None):
    env, log = trap
    env = {**env, **(extra_env or {})}
    proc = subprocess.run([*argv, "--dry-run"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not log.exists(), "dry run executed: " + log.read_text()
    return proc.stdout


def test_lint(trap):
    out = dry(trap, "ci/lint.sh", "--patched", "build/sglang/v0.5.23")
    assert "+ pre-commit run --all-files --show-diff-on-failure" in out
    assert "+ pre-commit run --hook-stage manual sglang-style-patched --all-files" in out


def test_style_patched(trap):
    # A ref with no tree yet (a developer's build/ may hold real ones).
    out = dry(trap, "ci/style_patched.sh", "--apply", extra_env={"SGLANG_REF": "v9.9.9"})
    assert "+ make apply SGLANG_REF=v9.9.9" in out
    assert "git -C build/sglang/v9.9.9 diff --name-only --diff-filter=AM refs/petit/upstream..HEAD" in out
    assert "+ isort --check-only --diff" in out
    assert "+ black --check --diff" in out
    assert "+ codespell --toml python/pyproject.toml" in out
    assert "+ ruff check --isolated --select F401" in out


def test_style_patched_explicit_base(trap):
    out = dry(trap, "ci/style_patched.sh", "/some/tree", "--base", "v0.5.23")
    assert "git -C /some/tree diff --name-only --diff-filter=AM v0.5.23..HEAD" in out
    assert "make apply" not in out


def test_run_tests(trap):
    out = dry(trap, "ci/run_tests.sh")
    assert "+ make test" in out


def test_check_refresh(trap):
    out = dry(trap, "ci/check_refresh.sh", "--ref", "v0.5.9", "--ref", "v0.5.23")
    for ref in ("v0.5.9", "v0.5.23"):
        assert f"+ make apply SGLANG_REF={ref}" in out
        assert f"+ make refresh SGLANG_REF={ref}" in out
    assert "+ git diff --exit-code --stat -- patches/" in out
    assert "+ git ls-files --others --exclude-standard -- patches/" in out
    # order: apply, refresh, then diff
    assert out.index("make apply") < out.index("make refresh") < out.index("git diff --exit-code")


def test_matrix(trap, tmp_path):
    summary = tmp_path / "summary.md"
    out = dry(trap, "ci/matrix.sh", "--refs", "v0.5.9 v0.5.23",
              extra_env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert "+ make matrix REFS=v0.5.9\\ v0.5.23" in out
    assert '+ cat build/matrix.md >> "$GITHUB_STEP_SUMMARY"' in out
    assert not summary.exists()


def test_amd_mi300(trap):
    out = dry(trap, "ci/amd/run_amd_tests.sh", "--ref", "v0.5.23", "--arch", "mi300")
    assert "+ docker pull lmsysorg/sglang:v0.5.23-rocm720-mi30x" in out
    run_line = next(line for line in out.splitlines() if line.startswith("+ docker run"))
    for flag in ("--device=/dev/kfd", "--group-add video", "--shm-size 32g", "--ipc=host",
                 "--cap-add=SYS_PTRACE", "--security-opt seccomp=unconfined"):
        assert flag in run_line, flag
    assert "bash ci/amd/in_container.sh --ref v0.5.23 --arch mi300" in out
    assert "+ docker rm -f" in out.splitlines()[-1]  # cleanup always last


def test_amd_mi250_needs_custom_image(trap):
    env, _ = trap
    proc = subprocess.run(["ci/amd/run_amd_tests.sh", "--ref", "v0.5.23", "--arch", "mi250",
                           "--dry-run"], cwd=ROOT, env=env, text=True, capture_output=True)
    assert proc.returncode != 0 and "--custom-image" in proc.stderr
    out = dry(trap, "ci/amd/run_amd_tests.sh", "--ref", "v0.5.23", "--arch", "mi250",
              "--custom-image", "example/sglang:gfx90a")
    assert "+ docker pull example/sglang:gfx90a" in out


@pytest.mark.parametrize("arch", ["mi300", "mi250"])
def test_amd_in_container(trap, arch):
    out = dry(trap, "ci/amd/in_container.sh", "--ref", "v0.5.23", "--arch", arch,
              "--model", "org/model-mxfp4", "--gsm8k-threshold", "0.7")
    assert "+ make apply SGLANG_REF=v0.5.23 SGLANG_SOURCE=/sgl-workspace/sglang" in out
    assert "pip install --no-deps --no-build-isolation -e /sgl-workspace/sglang/python" in out
    assert "pip install petit-kernel==0.0.5" in out
    assert "PETIT_REQUIRE_ROCM=1 PYTHONPATH=scripts python3 -m pytest tests/series" in out
    bench = next(line for line in out.splitlines() if "bench_petit_mxfp4_triton.py" in line)
    assert "/sgl-workspace/sglang/benchmark/kernels/quantization/" in bench
    assert "gemm_bench.txt" in bench
    assert out.index("bench_petit_mxfp4_triton.py") < out.index("sglang.launch_server")
    serve = next(line for line in out.splitlines() if "sglang.launch_server" in line)
    assert "--model-path org/model-mxfp4 --quantization petit_mxfp4" in serve
    if arch == "mi250":
        assert "SGLANG_USE_AITER=0" in serve and "--attention-backend triton" in serve
    else:
        assert "SGLANG_USE_AITER=1" in serve and "--attention-backend" not in serve
    assert "python3 -m sglang.test.few_shot_gsm8k --num-questions 200" in out
    assert "python3 -m sglang.bench_serving --backend sglang" in out
    assert f"python3 ci/amd/results.py assemble --out build/amd-results/{arch}-v0.5.23.json" in out
    assert "--threshold 0.7" in out


def test_nightly_rebase(trap):
    out = dry(trap, sys.executable, "ci/nightly_rebase.py", "rebase")
    assert "+ git ls-remote --tags --refs https://github.com/sgl-project/sglang.git 'refs/tags/v*'" in out
    assert "+ make rebase SGLANG_REF=main" in out
    assert "+ make rebase 'SGLANG_REF=<newest-release-tag>'" in out
    assert "+ make refresh 'SGLANG_REF=<newest-release-tag>'" in out
    assert "+ make test SGLANG_REF=main" in out
    assert "+ make matrix" in out
    assert "+ git status --porcelain -- patches/" in out


def test_nightly_rebase_explicit_tag(trap):
    out = dry(trap, sys.executable, "ci/nightly_rebase.py", "rebase", "--tag", "v0.5.23",
              "--targets", "latest")
    assert "ls-remote --tags" not in out
    assert "+ make rebase SGLANG_REF=v0.5.23" in out
    assert "SGLANG_REF=main" not in out


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_nightly_publish(trap, tmp_path, outcome):
    out = dry(trap, sys.executable, "ci/nightly_rebase.py", "publish", "--results",
              str(tmp_path / "none.json"), "--repo", "o/r", "--assume-outcome", outcome)
    assert "+ gh pr list --head bot/nightly-rebase --state open" in out
    assert "+ gh issue list --label nightly-rebase-failure --state open" in out
    if outcome == "success":
        assert "+ git push --force origin HEAD:refs/heads/bot/nightly-rebase" in out
        assert "+ gh pr create --base main --head bot/nightly-rebase" in out
        assert "issue create" not in out
    else:
        assert "+ gh issue create --title" in out and "--label nightly-rebase-failure" in out
        assert "pr create" not in out and "git push" not in out


def test_results_py(trap):
    out = dry(trap, sys.executable, "ci/amd/results.py", "validate", "x.json")
    assert "+ validate x.json" in out


@pytest.mark.parametrize("arch", ["mi300", "mi250"])
def test_amd_in_container_gpt_oss_step(trap, arch):
    out = dry(trap, "ci/amd/in_container.sh", "--ref", "v0.5.23", "--arch", arch,
              "--model", "org/model-mxfp4", "--moe-gsm8k-threshold", "0.4")
    serves = [line for line in out.splitlines() if "sglang.launch_server" in line]
    assert len(serves) == 2, serves
    moe = serves[1]
    assert "--model-path openai/gpt-oss-20b --quantization petit_mxfp4" in moe
    assert ("--attention-backend triton" in moe) == (arch == "mi250")
    assert out.index("sglang.bench_serving") < out.index("openai/gpt-oss-20b")
    assert "grep -m1 'Load weight end'" in out and "moe/weight_memory.txt" in out
    assert "moe/gsm8k.log" in out
    assert out.index("moe/gsm8k.log") < out.index("ci/amd/results.py assemble")
    skipped = dry(trap, "ci/amd/in_container.sh", "--ref", "v0.5.23", "--arch", arch, "--moe-model", "")
    assert "gpt-oss" not in skipped and sum("sglang.launch_server" in line for line in skipped.splitlines()) == 1
