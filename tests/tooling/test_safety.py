"""Nothing a user resolved, committed or skipped is lost; patches keep their identity.

Each test replays what a user did on a real git tree (see fixtures.py) and checks
the tool refuses, reports or exports instead of throwing work away.
"""

from __future__ import annotations

import json

from .fixtures import QUANT, git, resolve_keep_both

REG = "0003-register-petit-mxfp4"


def record(tree):
    return json.loads((tree / ".git" / "petit-series" / "record.json").read_text())


def patch_bytes(cli) -> dict:
    return {str(p.relative_to(cli.patches)): p.read_bytes() for p in sorted(cli.patches.rglob("*")) if p.is_file()}


def edit_commit(tree, subject: str, change, reword=None):
    """`git rebase -i`: stop at the commit whose subject contains `subject`, let
    `change(tree)` edit files, amend (`reword(message)` edits the message as an
    editor would, trailers included), continue."""
    target = git(tree, "log", "--format=%h %s", "refs/petit/upstream..HEAD")
    sha = next(line.split()[0] for line in target.splitlines() if subject in line)
    editor = f"sed -i 's/^pick {sha}/edit {sha}/'"
    git(tree, "rebase", "-q", "-i", "refs/petit/upstream", env={"GIT_SEQUENCE_EDITOR": editor})
    change(tree)
    args = ["commit", "-q", "-a", "--amend", "--no-edit"]
    if reword:
        (tree / ".git" / "NEW_MSG").write_text(reword(git(tree, "log", "-1", "--format=%B")))
        args = ["commit", "-q", "-a", "--amend", "-F", str(tree / ".git" / "NEW_MSG")]
    git(tree, *args)
    git(tree, "rebase", "--continue", env={"GIT_EDITOR": "true"})


def add_top_line(tree):
    path = tree / QUANT / "methods.py"
    path.write_text("# registry of quantization methods\n" + path.read_text())


def test_resolution_survives_until_refreshed(cli):
    """apply -> conflict -> resolve -> continue -> apply must not drop the resolution."""
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    tree = cli.tree("v0.5.14")
    resolve_keep_both(tree)
    done = cli("rebase-continue", "--ref", "v0.5.14")
    assert "make refresh SGLANG_REF=v0.5.14" in done.stdout
    resolved_head = git(tree, "rev-parse", "HEAD")
    again = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert again.returncode == 1 and "conflict resolution" in again.output and "FORCE=1" in again.output
    assert git(tree, "rev-parse", "HEAD") == resolved_head
    assert '"quark_mxfp4"' in (tree / QUANT / "methods.py").read_text()
    # Refresh writes it as the release's own variant; the floor's variant is untouched.
    before = patch_bytes(cli)
    cli("refresh", "--ref", "v0.5.14")
    after = patch_bytes(cli)
    assert {k for k in after if before.get(k) != after[k]} == {f"{REG}/0.5.14.patch"}
    assert '+    "petit_mxfp4",' in after[f"{REG}/0.5.14.patch"].decode()
    assert "Petit-Patch" not in after[f"{REG}/0.5.14.patch"].decode()
    assert "up to date" in cli("apply", "--ref", "v0.5.14", "--source", "git").stdout
    # A fresh tree now applies the new variant exactly; 0.5.13 still takes its own.
    fresh = cli("apply", "--ref", "v0.5.14", "--source", "git", "--dir", str(cli.tmp / "fresh"))
    assert "0.5.14.patch: applied" in fresh.stdout
    assert "0.5.13.patch: applied\n" in cli("apply", "--ref", "v0.5.13", "--source", "git").stdout


def test_force_discards_a_resolution_only_when_asked(cli):
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    tree = cli.tree("v0.5.14")
    resolve_keep_both(tree)
    cli("rebase-continue", "--ref", "v0.5.14")
    forced = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None, FORCE="1")
    assert forced.returncode == 3  # the conflict is back: the resolution was discarded on request


def test_resolution_on_a_local_checkout_branch_is_kept(cli, world, tmp_path):
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(world["bare"]), str(checkout))
    git(checkout, "checkout", "-q", "-b", "mine", "v0.5.14")
    stop = cli("apply", "--source", str(checkout), ok=None)
    assert stop.returncode == 3, stop.output
    resolve_keep_both(checkout)
    cli("rebase-continue", "--source", str(checkout))
    head = git(checkout, "rev-parse", "petit/v0.5.14")
    git(checkout, "checkout", "-q", "mine")
    again = cli("apply", "--source", str(checkout), ok=None)
    assert again.returncode == 1 and "conflict resolution" in again.output
    assert git(checkout, "rev-parse", "petit/v0.5.14") == head


def test_skipped_patch_is_reported_and_not_taken_for_the_series(cli):
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    tree = cli.tree("v0.5.14")
    git(tree, "am", "--skip")
    done = cli("rebase-continue", "--ref", "v0.5.14")
    assert "SKIPPED" in done.stdout and "resolved" not in done.stdout
    assert [r["status"] for r in record(tree)["results"]] == ["applied", "applied", "skipped", "applied"]
    again = cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    assert again.returncode == 1 and "lacks 0003-register-petit-mxfp4/" in again.output
    assert "up to date" not in again.output
    before = patch_bytes(cli)
    refused = cli("refresh", "--ref", "v0.5.14", ok=None)
    assert refused.returncode == 1 and "no commit for 0003-register-petit-mxfp4/" in refused.output
    assert patch_bytes(cli) == before


def test_apply_then_refresh_changes_nothing_on_every_release(cli):
    """Exact, offsets, 3-way, variants, already upstream and a partial PyPI tree."""
    before = patch_bytes(cli)
    for ref, source in [
        ("v0.5.9", "git"),
        ("v0.5.10", "git"),
        ("v0.5.11", "git"),
        ("v0.5.13", "git"),
        ("v0.5.15", "git"),
        ("v0.5.11", "pypi"),
    ]:
        tree = cli.tmp / f"{ref}-{source}"
        cli("apply", "--ref", ref, "--source", source, "--dir", str(tree))
        check = cli("refresh", "--ref", ref, "--dir", str(tree), "--check", ok=None)
        assert check.returncode == 0, (ref, source, check.output)
        cli("refresh", "--ref", ref, "--dir", str(tree))
        assert patch_bytes(cli) == before, (ref, source)
    assert "applied-3way" in [r["status"] for r in record(cli.tmp / "v0.5.11-git")["results"]]


def reword_registration(cli, reword):
    """Apply v0.5.9, then reword the registration commit as an editor would."""
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    edit_commit(tree, "register petit_mxfp4", lambda t: None, reword)
    return tree


def test_reworded_commit_keeps_its_file_and_new_commit_is_appended(cli):
    tree = reword_registration(cli, lambda m: m.replace("register petit_mxfp4", "register the petit_mxfp4 method", 1))
    (tree / "NOTES.md").write_text("notes\n")
    git(tree, "add", "NOTES.md")
    git(tree, "commit", "-q", "-m", "docs: add notes")
    out = cli("refresh", "--ref", "v0.5.9").stdout
    assert f"{REG}/0.5.9.patch" in out and "0005-docs-add-notes.patch" in out
    text = (cli.patches / REG / "0.5.9.patch").read_text()
    assert "Subject: quantization: register the petit_mxfp4 method\n" in text
    assert (cli.patches / "series").read_text().endswith("0005-docs-add-notes.patch\n")
    assert "range-diff" in out and "register the petit_mxfp4 method" in out
    # The branch is the series again: apply is a no-op, a second refresh writes nothing.
    assert "up to date" in cli("apply", "--ref", "v0.5.9", "--source", "git").stdout
    assert "nothing changed" in cli("refresh", "--ref", "v0.5.9").stdout


def test_commit_that_lost_its_trailer_is_matched_by_subject(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    edit_commit(tree, "register petit_mxfp4", add_top_line, lambda m: "quantization: register petit_mxfp4\n")
    out = cli("refresh", "--ref", "v0.5.9").stdout
    assert f"refreshed: {REG}/0.5.9.patch" in out
    assert "# registry of quantization methods" in (cli.patches / REG / "0.5.9.patch").read_text()


def test_dropped_commit_is_reported_not_lost(cli):
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    sha = git(tree, "log", "--format=%h", "--grep", "register petit_mxfp4", "refs/petit/upstream..HEAD")
    git(tree, "rebase", "-q", "-i", "refs/petit/upstream", env={"GIT_SEQUENCE_EDITOR": f"sed -i '/^pick {sha}/d'"})
    before = patch_bytes(cli)
    proc = cli("refresh", "--ref", "v0.5.9", ok=None)
    assert proc.returncode == 1 and "no commit for 0003-register-petit-mxfp4/" in proc.output
    assert patch_bytes(cli) == before


def test_editing_an_earlier_patch_reexports_the_ones_above_it(cli):
    """A patch above an edited one gets fresh `index` lines: it applies exactly again."""
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    tree = cli.tree("v0.5.9")
    path = tree / QUANT / "methods.py"
    path.write_text(path.read_text().replace('"bitsandbytes",\n', '"bitsandbytes",\n    "gguf",\n'))
    git(tree, "commit", "-q", "-am", "quantization: register gguf")
    cli("refresh", "--ref", "v0.5.9")
    edit_commit(tree, "register petit_mxfp4", add_top_line)
    proc = cli("refresh", "--ref", "v0.5.9")
    assert f"{REG}/0.5.9.patch" in proc.stdout and "0005-quantization-register-gguf.patch" in proc.stdout
    fresh = cli("apply", "--ref", "v0.5.9", "--source", "git", "--dir", str(cli.tmp / "fresh"))
    assert "0005-quantization-register-gguf.patch: applied\n" in fresh.stdout, fresh.stdout


def test_export_has_one_blank_line_after_the_subject(cli):
    reword_registration(cli, lambda m: m.replace("register petit_mxfp4\n", "register petit_mxfp4\n\nWhy it is needed.\n", 1))
    cli("refresh", "--ref", "v0.5.9")
    text = (cli.patches / REG / "0.5.9.patch").read_text()
    assert "Subject: quantization: register petit_mxfp4\n\nWhy it is needed.\n\ndiff --git" in text


def test_commits_name_their_patch_file(cli):
    cli("apply", "--ref", "v0.5.13", "--source", "git")
    tree = cli.tree("v0.5.13")
    names = git(tree, "log", "--reverse", "--format=%(trailers:key=Petit-Patch,valueonly)", "refs/petit/upstream..HEAD")
    assert [n for n in names.splitlines() if n] == [
        "0001-quantization-move-petit-py-to-petit-nvfp4-py.patch",
        "0002-quantization-keep-petit-py-as-a-shim.patch",
        f"{REG}/0.5.13.patch",
        "0004-test-add-petit-mxfp4-tests.patch",
    ]


def test_patch_that_does_not_match_its_own_blobs_is_named_and_nothing_changes(cli):
    path = cli.patches / REG / "0.5.9.patch"
    text = path.read_text()
    broken = text.replace('     "gptq",\n', '     "gptq_marlin",\n', 1)
    assert broken != text
    path.write_text(broken)
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1, proc.output
    assert "the patch itself does not match the blobs it names" in proc.output
    assert "context not found upstream" not in proc.output
    tree = cli.tree("v0.5.9")
    assert not tree.exists()  # the tree this run made is gone again
    # On an existing tree the branch is rolled back to where it was.
    path.write_text(text)
    cli("apply", "--ref", "v0.5.9", "--source", "git")
    head = git(tree, "rev-parse", "HEAD")
    path.write_text(broken)
    proc = cli("apply", "--ref", "v0.5.9", "--source", "git", ok=None)
    assert proc.returncode == 1 and "does not match the blobs it names" in proc.output
    assert git(tree, "rev-parse", "HEAD") == head and git(tree, "status", "--porcelain") == ""
    assert not (tree / ".git" / "rebase-apply").exists()


def test_conflict_report_shows_both_sides(cli):
    cli("apply", "--ref", "v0.5.14", "--source", "git", ok=None)
    report = json.loads((cli.build / "reports" / "v0.5.14.json").read_text())
    sides = report["results"][-1]["conflict_sides"][f"{QUANT}/methods.py"]
    assert len(sides) == 1 and '"quark_mxfp4"' in sides[0] and '"petit_mxfp4"' in sides[0]
    md = (cli.build / "reports" / "v0.5.14.md").read_text()
    assert "upstream's lines (ours" in md and '    "quark_mxfp4",' in md and '    "petit_mxfp4",' in md


def test_make_apply_then_make_refresh_on_the_default_release(cli):
    """`make apply && make refresh` with no SGLANG_REF: the same tree, nothing rewritten."""
    before = patch_bytes(cli)
    cli("apply", "--source", "git")
    done = cli("refresh", "--source", "git")
    assert "the newest release, v0.5.15" in done.stdout and "nothing changed" in done.stdout
    assert patch_bytes(cli) == before
