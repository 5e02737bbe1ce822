"""Error paths and hints: every message names what to run, nothing is left half made."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from .conftest import CLI, ROOT
from .fixtures import QUANT, git, resolve_keep_both

sys.path.insert(0, str(ROOT / "scripts"))

from petit_series import gitlib  # noqa: E402


def hint(output: str, target: str) -> dict:
    """The variables of the `make <target> ...` command a message printed."""
    m = re.search(rf"`make {target}((?: [^`]*)?)`", output)
    assert m, f"no `make {target}` hint in:\n{output}"
    pairs = [word.split("=", 1) for word in shlex.split(m.group(1))]
    assert all(len(p) == 2 for p in pairs), m.group(0)
    return dict(pairs)


def clone(world, dest, tag, *, keep_tags=True):
    git(dest.parent, "clone", "-q", str(world["bare"]), str(dest))
    git(dest, "checkout", "-q", "-b", "mine", tag)
    if not keep_tags:
        for name in git(dest, "tag").split():
            git(dest, "tag", "-d", name)
    return dest


# -- 1. hints name the variables that address the tree -------------------------------


def test_conflict_in_a_local_checkout_hints_at_the_checkout(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "my sglang", "v0.5.14")
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 3, proc.output
    assert "SGLANG_REF=local" not in proc.output
    cont = hint(proc.output, "rebase-continue")
    assert cont == {"SGLANG_SOURCE": str(checkout)}
    assert hint(proc.output, "rebase-abort") == cont
    # report.md says the same.
    md = (cli.build / "reports" / "v0.5.14.md").read_text()
    assert hint(md, "rebase-continue") == cont and hint(md, "rebase-abort") == cont
    # A second apply refuses, naming the same commands.
    again = cli("apply", "--source", str(checkout), ok=None)
    assert again.returncode == 1 and hint(again.output, "rebase-continue") == cont
    # What the hint says is all rebase-continue needs.
    resolve_keep_both(checkout)
    done = cli("rebase-continue", **cont)
    assert "resolved, continuing" in done.stdout
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD") == "petit/v0.5.14"
    assert git(checkout, "rev-parse", "mine") == git(checkout, "rev-parse", "v0.5.14")


def test_abort_with_only_the_hint_in_a_tree_elsewhere(cli, tmp_path):
    other = tmp_path / "elsewhere"
    proc = cli("apply", "--ref", "v0.5.14", "--source", "git", "--dir", str(other), ok=None)
    assert proc.returncode == 3
    abort = hint(proc.output, "rebase-abort")
    assert abort == {"SGLANG_DIR": str(other)}
    done = cli("rebase-abort", **abort)
    assert "back where it was" in done.stdout
    assert not (other / ".git" / "petit-series" / "state.json").exists()


def test_default_tree_hint_is_unchanged(cli):
    proc = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert hint(proc.output, "rebase-continue") == {"SGLANG_REF": "v0.5.14"}


def test_refresh_hint_for_a_local_checkout_works_as_printed(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.9")
    cli("apply", "--source", str(checkout))
    (checkout / "extra.txt").write_text("mine\n")
    git(checkout, "add", "extra.txt")
    git(checkout, "commit", "-q", "-m", "my local fix")
    patch = cli.patches / "0002-quantization-keep-petit-py-as-a-shim.patch"
    patch.write_text(patch.read_text().replace("Backward", "Backwards"))
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 1 and "not in patches/" in proc.output
    refresh = hint(proc.output, "refresh")
    assert refresh == {"SGLANG_SOURCE": str(checkout)}
    patch.write_text(patch.read_text().replace("Backwards", "Backward"))
    done = cli("refresh", **refresh)
    assert "0005-my-local-fix.patch" in done.stdout
    assert "0005-my-local-fix.patch" in (cli.patches / "series").read_text()


def test_refresh_during_a_stopped_operation_names_the_commands(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.14")
    cli("apply", "--source", str(checkout), ok=None)
    proc = cli("refresh", "--source", str(checkout), ok=None)
    assert proc.returncode == 1
    assert hint(proc.output, "rebase-abort") == {"SGLANG_SOURCE": str(checkout)}


def test_naming_no_tree_says_how(cli):
    proc = cli("rebase-continue", ok=None)
    assert proc.returncode == 1
    assert "SGLANG_SOURCE=<path>" in proc.output and "SGLANG_DIR=<dir>" in proc.output


# -- 1b. which release a local checkout is -------------------------------------------


def test_untagged_checkout_release_comes_from_version_py(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.9", keep_tags=False)
    proc = cli("apply", "--source", str(checkout))
    assert f"note: {checkout} taken as SGLang 0.5.9: python/sglang/version.py" in proc.stdout
    assert "0003-register-petit-mxfp4/0.5.9.patch: applied" in proc.stdout
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD") == "petit/v0.5.9"


def test_nearest_tag_is_said_with_the_distance(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.13")
    (checkout / "NOTES").write_text("local\n")
    git(checkout, "add", "NOTES")
    git(checkout, "commit", "-q", "-m", "local commit")
    proc = cli("apply", "--source", str(checkout))
    assert "taken as SGLang 0.5.13: nearest release tag v0.5.13 (`git describe`; 1 commits after that tag)" in proc.stdout
    assert "0003-register-petit-mxfp4/0.5.13.patch: applied" in proc.stdout


def test_checkout_of_unknown_release_is_refused(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.9", keep_tags=False)
    git(checkout, "rm", "-q", "python/sglang/version.py")
    git(checkout, "commit", "-q", "-m", "no version file")
    head = git(checkout, "rev-parse", "HEAD")
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 1
    assert f"cannot tell which SGLang release {checkout} is; name it: SGLANG_REF=v0.5.x" in proc.output
    assert git(checkout, "rev-parse", "HEAD") == head
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD") == "mine"
    assert git(checkout, "branch", "--list", "petit/*") == ""
    assert not (checkout / ".git" / "petit-series").exists()
    # Naming it works.
    ok = cli("apply", "--source", str(checkout), SGLANG_REF="v0.5.9")
    assert "0003-register-petit-mxfp4/0.5.9.patch: applied" in ok.stdout


# -- 3. smaller ones ------------------------------------------------------------------


def test_dirty_refusal_shows_whole_paths(cli, world, tmp_path):
    checkout = clone(world, tmp_path / "co", "v0.5.9")
    (checkout / QUANT / "petit.py").write_text("# local edit\n")
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 1
    assert f"uncommitted changes ({QUANT}/petit.py)" in proc.output


def test_is_dirty_parses_every_entry(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    for name in ("a b.txt", "c", "e"):
        (repo / name).write_text(name + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "x")
    (repo / "a b.txt").write_text("changed\n")  # " M": the status begins with a space
    git(repo, "mv", "c", "c2")
    (repo / "e").write_text("staged\n")
    git(repo, "add", "e")
    assert sorted(gitlib.is_dirty(repo)) == ["a b.txt", "c", "c2", "e"]
    # With rename detection a rename is one entry followed by its source.
    git(repo, "config", "status.renames", "true")
    assert gitlib.is_dirty(repo)[0] == "a b.txt"


def test_unsupported_releases_are_refused_before_any_download(cli, world, tmp_path):
    # A PyPI that has 0.5.8 (the synthetic one starts at 0.5.9).
    pypi = tmp_path / "pypi"
    shutil.copytree(world["pypi"], pypi)
    index = json.loads((pypi / "sglang" / "json").read_text())
    index["releases"]["0.5.8"] = index["releases"]["0.5.9"]
    (pypi / "sglang" / "json").write_text(json.dumps(index))
    for ref, why in (("v0.5.8", "older than the oldest release"), ("v0.5.12rc0", "is a pre-release")):
        for source in ("pypi", "git", "auto"):
            proc = cli("apply", "--ref", ref, "--source", source, ok=None, PETIT_PYPI_URL=pypi.as_uri())
            assert proc.returncode == 1, proc.output
            assert why in proc.output and "Traceback" not in proc.output
            assert "downloading" not in proc.output
            assert not cli.tree(ref).exists()
    downloads = cli.tmp / "cache" / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())


def test_jobs_that_is_not_a_number_is_a_usage_error(cli):
    proc = cli("matrix", ok=None, JOBS="abc")
    assert proc.returncode == 2
    assert "JOBS='abc'" in proc.stderr and "Traceback" not in proc.output
    proc = cli("matrix", "--jobs", "0", ok=None)
    assert proc.returncode == 2 and "--jobs" in proc.stderr


@pytest.mark.parametrize("kind", ["proc", "file"])
def test_unusable_build_dir_is_a_message(cli, tmp_path, kind):
    if kind == "proc":
        build = "/proc/x"
    else:
        build = str(tmp_path / "a-file")
        (tmp_path / "a-file").write_text("")
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None, PETIT_BUILD_DIR=build)
    assert proc.returncode == 1, proc.output
    assert "Traceback" not in proc.output
    assert f"PETIT_BUILD_DIR {build}" in proc.output and "writable directory" in proc.output


def _read_only(path):
    """A command prefix under which `path` is read-only (None: cannot arrange it)."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0"', str(path)],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(path)]


def test_read_only_build_dir_is_a_message(cli, tmp_path):
    build = tmp_path / "ro-build"
    build.mkdir()
    prefix = _read_only(build)
    if prefix is None:
        pytest.skip("cannot make a read-only directory here")
    env = dict(cli.env, PETIT_BUILD_DIR=str(build))
    proc = subprocess.run(
        [*prefix, sys.executable, str(CLI), "apply", "--ref", "v0.5.9", "--source", "git",
         "--patches", str(cli.patches)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    build.chmod(0o755)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert f"PETIT_BUILD_DIR {build} is not writable" in out


def test_every_subcommand_help_has_description_defaults_and_exit_codes(cli):
    from petit_series import cli as cli_mod

    for name in cli_mod.COMMANDS:
        proc = cli(name, "--help", SGLANG_SOURCE="pypi")
        text = " ".join(proc.stdout.split())
        assert cli_mod.COMMANDS[name][1].split()[0] in text.split("options:")[0], name
        assert "exit status: 0 done" in text and " 1 error" in text, name
        if "--source" in text:  # footprint reads patch files only
            assert "env SGLANG_SOURCE; default: pypi" in text, name  # the effective default
        assert "PETIT_BUILD_DIR" in text, name
    apply_help = " ".join(cli("apply", "--help").stdout.split())
    assert "env SGLANG_REF; default: the newest supported release" in apply_help
    assert "3 stopped on a conflict" in apply_help and "env FORCE=1" in apply_help
    matrix_help = " ".join(cli("matrix", "--help").stdout.split())
    assert "env JOBS; default: 2" in matrix_help and "env REFS" in matrix_help
    assert "3 stopped" not in matrix_help
    footprint_help = " ".join(cli("footprint", "--help").stdout.split())
    assert "env SGLANG_REF; default: the @base release" in footprint_help


def _make(cli, *args, **env):
    full = dict(cli.env, **env)
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True, text=True, env=full, timeout=300,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_reports_the_tools_exit_status(cli):
    # make exits 2 on any failed recipe; its last line carries the tool's own status.
    proc = _make(cli, "apply", "SGLANG_REF=v0.5.8", "SGLANG_SOURCE=pypi")
    assert proc.returncode == 2
    assert "older than the oldest release" in proc.stderr
    assert re.search(r"\[Makefile:\d+: apply\] Error 1", proc.stderr), proc.stderr
    proc = _make(cli, "matrix", "JOBS=abc")
    assert proc.returncode == 2 and "JOBS='abc'" in proc.stderr
    assert re.search(r"\[Makefile:\d+: matrix\] Error 2", proc.stderr), proc.stderr


REAL_VERSION_PY = '''try:
    from sglang._version import __version__, __version_tuple__
except ImportError:
    try:
        import importlib.metadata

        __version__ = importlib.metadata.version("sglang")
    except Exception:
        # Fallback for development without build
        __version__ = "0.0.0.dev0"
'''


def test_version_py_that_defers_to_the_install_names_no_release(cli, world, tmp_path):
    # 0.5.x's version.py reads _version.py; its fallback "0.0.0.dev0" is no release.
    checkout = clone(world, tmp_path / "co", "v0.5.9", keep_tags=False)
    (checkout / "python" / "sglang" / "version.py").write_text(REAL_VERSION_PY)
    git(checkout, "commit", "-q", "-am", "version from the install")
    proc = cli("apply", "--source", str(checkout), ok=None)
    assert proc.returncode == 1
    assert "cannot tell which SGLang release" in proc.output and "0.0.0" not in proc.output
    # An editable install's _version.py says it (a dev version would not).
    generated = checkout / "python" / "sglang" / "_version.py"
    (checkout / ".git" / "info" / "exclude").write_text("python/sglang/_version.py\n")
    generated.write_text("__version__ = version = '0.5.10.dev3+gabcdef'\n")
    assert "cannot tell" in cli("apply", "--source", str(checkout), ok=None).output
    generated.write_text("version: str\n__version__: str\n__version__ = version = '0.5.9'\n")
    proc = cli("apply", "--source", str(checkout))
    assert "taken as SGLang 0.5.9: python/sglang/_version.py" in proc.stdout


def test_unusable_cache_dir_is_a_message(cli):
    proc = cli("apply", "--ref", "v0.5.9", "--source", "pypi", ok=None, PETIT_CACHE_DIR="/proc/y")
    assert proc.returncode == 1, proc.output
    assert "Traceback" not in proc.output
    assert "PETIT_CACHE_DIR=/proc/y" in proc.output and "writable directory" in proc.output
    assert not cli.tree("v0.5.9").exists()
