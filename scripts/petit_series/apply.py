"""Apply the series onto an upstream tree as one commit per patch.

The tree's branch `petit/<ref>` starts at the upstream commit (also kept as
`refs/petit/upstream`). Each patch is checked first, then applied with `git am`:

- already upstream: the patch reverse-applies and does not apply: skipped;
- excluded: every file it touches is outside a partial (PyPI) tree;
- applied / applied with offsets: exact context found (offsets are reported);
- applied by 3-way merge: context changed, `git am --3way` merged it;
- conflict: the run stops, the tree is left mid-`git am` for resolution, and
  `continue` / `abort` resume or roll back.

Never fuzz. State lives in `<git-dir>/petit-series/`: `state.json` while an
operation is in progress, `record.json` for the last finished one, and
`report.json` / `report.md`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tempfile
from pathlib import Path
from typing import Callable, Optional

from . import gitlib, hints, locking, report, versions
from .locking import FileLock
from .series import Series
from . import upstream as upstream_mod
from .upstream import Upstream

STATE_DIR = "petit-series"
UPSTREAM_REF = "refs/petit/upstream"

APPLIED = ("applied", "applied-offsets", "applied-3way", "resolved")
SKIPPED = ("already-upstream", "excluded")
# A patch the user dropped while resolving (`git am --skip`): the branch lacks it.
SKIPPED_BY_USER = "skipped"
# Each commit the tool makes names the patch file it came from, so that a reworded,
# reordered or amended commit still maps to its file (stripped again on export).
PATCH_TRAILER = "Petit-Patch"
EXPORTED_REF = "refs/petit/exported"  # the head that patches/ last reproduced
EXPORTED_BASE_REF = "refs/petit/exported-base"  # ... and the upstream it sat on


class ApplyError(RuntimeError):
    """The series cannot be applied as asked; nothing was changed."""


class Conflict(RuntimeError):
    """A patch conflicted; the tree is left for resolution."""

    def __init__(self, result: dict, tree: Path):
        self.result = result
        self.tree = tree
        super().__init__(f"{result['name']} conflicts")


@dataclasses.dataclass
class Context:
    tree: Path
    upstream: Upstream
    series: Series
    provide_base: Callable[[str], Optional[str]] = lambda version: None
    explain: Callable[[Optional[str], list], list] = lambda version, files: []
    quiet: bool = False
    check_upstream: Callable[[], None] = lambda: None  # objects sound before checkout
    # Patches parsed by validate_patches, so each is read and parsed once per run.
    mails: dict = dataclasses.field(default_factory=dict)

    @property
    def branch(self) -> str:
        return f"petit/{versions.safe_ref_name(self.upstream.ref)}"


def make_context(
    tree: Path, up: Upstream, series: Series, cache: "upstream_mod.Cache", repo: str, quiet: bool = False
) -> Context:
    """A Context whose 3-way preimages and conflict history come from `cache`/`repo`."""
    return Context(
        tree=tree,
        upstream=up,
        series=series,
        provide_base=upstream_mod.base_provider(cache, up, repo),
        explain=upstream_mod.history_explainer(cache, up, repo),
        quiet=quiet,
        check_upstream=upstream_mod.snapshot_checker(cache, up, repo),
    )


def state_dir(tree: Path) -> Path:
    return gitlib.git_dir_of(tree) / STATE_DIR


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def save_state(tree: Path, state: dict) -> None:
    """The one writer of state.json (the operation in progress)."""
    locking.write_json(state_dir(tree) / "state.json", state)


def save_record(tree: Path, record: dict) -> None:
    """The one writer of record.json (apply, continue and refresh all end here)."""
    locking.write_json(state_dir(tree) / "record.json", record)


def load_record(tree: Path) -> Optional[dict]:
    return _read_json(state_dir(tree) / "record.json")


def load_state(tree: Path) -> Optional[dict]:
    return _read_json(state_dir(tree) / "state.json")


def say(ctx_quiet: bool, msg: str) -> None:
    if not ctx_quiet:
        print(msg, flush=True)


# ---------------------------------------------------------------------------
# One patch


def _excluded_paths(upstream: Upstream, mail: gitlib.PatchMail) -> list[str]:
    if not upstream.partial:
        return []
    return sorted({p for fp in mail.files for p in fp.paths if not upstream.covers(p)})


def _hunk_header(mail: gitlib.PatchMail, path: str, line: int) -> str:
    for fp in mail.files:
        if path in fp.paths:
            for hunk in fp.hunks:
                if hunk.old_start == line:
                    return hunk.header
    return f"@@ -{line} (first hunk git could not place)"


def _failing_hunks(check: gitlib.ApplyCheck, mail: gitlib.PatchMail) -> list[dict]:
    """Where the patch does not fit the target, as `git apply --check -v` told it
    (git stops at the first hunk it cannot place in each file)."""
    hunks = [
        {"file": path, "hunk": _hunk_header(mail, path, line), "why": "context not found upstream"}
        for path, line in check.failed
    ]
    for err in check.errors:
        path, _, why = err.partition(": ")
        if why in ("No such file or directory", "does not exist in index"):
            hunks.append({"file": path, "hunk": "(whole file)", "why": "file missing upstream"})
        elif why == "already exists in working directory" or why == "already exists in index":
            hunks.append({"file": path, "hunk": "(whole file)", "why": "upstream already has this file"})
    return hunks


def stamp(tree: Path, patch_file: str) -> str:
    """Record on HEAD which patch file it came from (the PATCH_TRAILER); returns HEAD."""
    head = gitlib.out(["rev-parse", "HEAD"], tree)
    message = gitlib.commit_message(tree, head)
    stamped = gitlib.add_trailer(tree, message, PATCH_TRAILER, patch_file)
    if stamped == message:
        return head
    new = gitlib.rewrite_message(tree, head, stamped)
    gitlib.run(["update-ref", "-m", "petit-series: name the patch file", "HEAD", new, head], tree)
    return new


def _patch_version(tree: Path, base: str, patch: Path, fp: gitlib.FilePatch) -> Optional[str]:
    """The content the patch gives `fp.new_path` when applied to `base` without
    upstream's own file there (a scratch index; the tree is not touched)."""
    with tempfile.TemporaryDirectory(prefix="petit-own-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        gitlib.run(["read-tree", base], tree, env=env)
        gitlib.run(["update-index", "--force-remove", fp.new_path], tree, env=env)
        include = [f"--include={p}" for p in fp.paths]
        if gitlib.ok(["apply", "--cached", *include, str(patch)], tree, env=env):
            proc = gitlib.run(["show", f":{fp.new_path}"], tree, env=env, check=False)
            if proc.returncode == 0:
                return proc.stdout
    if fp.old_path is None:  # a new file: its hunks are the whole content
        return "".join(line + "\n" for hunk in fp.hunks for line in hunk.new_lines)
    return None


def _upstream_versions(
    tree: Path, base: str, mail: gitlib.PatchMail, patch: Path, excluded: list[str]
) -> list[dict]:
    """Files the patch creates (new, or a rename's target) that upstream already has:
    each with a unified diff from the patch's version to upstream's."""
    found = []
    for fp in mail.files:
        new = fp.new_path
        if new is None or new == fp.old_path or new in excluded:
            continue
        theirs = _read_file_at(tree, base, new)
        if theirs is None:
            continue
        ours = _patch_version(tree, base, patch, fp)
        how = "creates it" if fp.old_path is None else f"renames `{fp.old_path}` to it"
        diff = "".join(
            difflib.unified_diff(
                (ours or "").splitlines(keepends=True),
                theirs.splitlines(keepends=True),
                f"a/{new} (the patch's version)",
                f"b/{new} (upstream's version)",
            )
        )
        found.append({"file": new, "how": how, "identical": ours == theirs, "diff": diff})
    return found


def _read_file_at(tree: Path, commit: str, path: str) -> Optional[str]:
    proc = gitlib.run(["show", f"{commit}:{path}"], tree, check=False)
    return proc.stdout if proc.returncode == 0 else None


def apply_one(ctx: Context, name: str, path: Path, floor: Optional[str]) -> dict:
    """Apply one patch file as a commit; returns its result record.

    Raises Conflict (tree left mid-am) or ApplyError (corrupt patch).
    """
    tree = ctx.tree
    mail = ctx.mails.get(path)
    if mail is None:
        try:
            mail = gitlib.parse_patch(path.read_text())
        except ValueError as exc:
            raise ApplyError(f"patch {path} is corrupt: {exc}") from exc
    result: dict = {
        "name": name,
        "file": str(path.relative_to(ctx.series.root)),
        "subject": mail.subject,
        "variant": floor,
        "status": None,
        "excluded": _excluded_paths(ctx.upstream, mail),
    }
    excluded = result["excluded"]
    if excluded and all(p in excluded for fp in mail.files for p in fp.paths):
        result["status"] = "excluded"
        return result
    forward = gitlib.apply_check(tree, path, exclude=excluded)
    if not forward.ok and gitlib.apply_check(tree, path, exclude=excluded, reverse=True).ok:
        result["status"] = "already-upstream"
        result["evidence"] = "the patch reverse-applies cleanly: upstream already has it"
        return result
    am = ["am", "--committer-date-is-author-date", "--no-gpg-sign", *gitlib.exclude_args(excluded)]
    result["parent"] = gitlib.out(["rev-parse", "HEAD"], tree)
    if forward.ok:
        gitlib.run([*am, str(path)], tree)
        result["status"] = "applied-offsets" if forward.offsets else "applied"
        if forward.offsets:
            result["offsets"] = forward.offsets
        return result
    # The context moved or changed upstream: make the preimages available, then merge.
    if floor or ctx.series.base:
        ctx.provide_base(floor or ctx.series.base)
    if gitlib.applies_to_own_preimage(tree, path, mail, excluded) is False:
        raise ApplyError(
            f"{result['file']}: the patch itself does not match the blobs it names (its "
            "`index` lines): it was edited by hand or is corrupt, so no upstream can take "
            "it. Restore it from git (`git checkout -- patches/`) or re-export it with "
            "`make refresh` from a tree where it applies"
        )
    proc = gitlib.run([*am, "--3way", str(path)], tree, check=False)
    if proc.returncode == 0:
        result["status"] = "applied-3way"
        result["base"] = floor or ctx.series.base
        return result
    conflicted = gitlib.conflicted_files(tree)
    result["status"] = "conflict"
    result["files"] = conflicted or sorted({fp.path for fp in mail.files} - set(excluded))
    result["hunks"] = _failing_hunks(forward, mail)
    own = _upstream_versions(tree, result["parent"], mail, path, excluded)
    if own:
        result["upstream_versions"] = own
        mine = {o["file"] for o in own}
        result["hunks"] = [h for h in result["hunks"] if h["file"] not in mine]
    result["three_way"] = "lacks the necessary blob" not in proc.stderr
    if not result["three_way"]:
        result["note"] = "3-way merge impossible: the patch's preimage blobs are not in this repository"
    result["upstream_changes"] = ctx.explain(floor or ctx.series.base, result["files"])
    result["git_output"] = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
    # Both sides of each conflict, as the 3-way merge left them in the tree.
    sides = {}
    for path in conflicted:
        try:
            blocks = gitlib.conflict_blocks((tree / path).read_text(errors="replace"))
        except OSError:
            continue
        if blocks:
            sides[path] = blocks
    if sides:
        result["conflict_sides"] = sides
    raise Conflict(result, tree)


# ---------------------------------------------------------------------------
# The series


def _describe(result: dict) -> str:
    status = result["status"]
    text = {
        "applied": "applied",
        "applied-offsets": "applied with offsets",
        "applied-3way": "applied by 3-way merge",
        "resolved": "applied after manual resolution (not in patches/ until `make refresh`)",
        "skipped": "SKIPPED by hand (git am --skip): the branch lacks this patch",
        "already-upstream": "already upstream, skipped",
        "excluded": "hunks excluded (partial tree), skipped",
        "conflict": "CONFLICT",
    }[status]
    if status == "applied-offsets":
        parts = [
            f"{Path(f).name} {','.join(f'{o:+d}' for o in offs if o)}"
            for f, offs in result["offsets"].items()
        ]
        text += f" ({'; '.join(parts)})"
    if result.get("excluded") and status != "excluded":
        text += f"; excluded (not in this partial tree): {', '.join(result['excluded'])}"
    elif status == "excluded":
        text += f": {', '.join(result['excluded'])}"
    if status == "conflict":
        text += f" in {', '.join(result['files'])}"
        for own in result.get("upstream_versions", []):
            text += f"; upstream has its own version of {own['file']}"
    return text


def _new_state(ctx: Context, orig_head: Optional[str], orig_branch: Optional[str], op: str) -> dict:
    version = ctx.upstream.version
    return {
        "op": op,
        "status": "running",
        "ref": ctx.upstream.ref,
        "version": version,
        "source": ctx.upstream.source,
        "source_detail": ctx.upstream.detail,
        "coverage": list(ctx.upstream.coverage) if ctx.upstream.coverage else None,
        "base": ctx.upstream.commit,
        "branch": ctx.branch,
        "digest": ctx.series.digest(version),
        "orig_head": orig_head,
        "orig_branch": orig_branch,
        "entries": [
            {"name": e.name, "file": str(p.relative_to(ctx.series.root)), "variant": floor}
            for e, p, floor in ctx.series.selected(version)
        ],
        "next": 0,
        "results": [],
        "previous_export": previous_export(ctx.tree),
    }


def _current_branch(tree: Path) -> Optional[str]:
    proc = gitlib.run(["symbolic-ref", "--quiet", "--short", "HEAD"], tree, check=False)
    name = proc.stdout.strip()
    # An unborn branch (a fresh tree) is no place to return to.
    return name if name and gitlib.rev_parse(tree, f"refs/heads/{name}") else None


def unexported(record: dict) -> list[str]:
    """Work on the branch that patches/ does not hold: resolutions not yet refreshed."""
    return [r["name"] for r in record.get("results", []) if r["status"] == "resolved" and not r.get("exported")]


def skipped_by_user(record: dict) -> list[str]:
    return [r["name"] for r in record.get("results", []) if r["status"] == SKIPPED_BY_USER]


def _precheck(ctx: Context, force: bool) -> Optional[dict]:
    """Refuse unsafe starts; returns the previous record when the tree is up to date."""
    tree = ctx.tree
    state = load_state(tree)
    if state and state["status"] == "conflict":
        cont, abort = hints.resume_commands(tree, state["ref"], state.get("source"))
        raise ApplyError(
            f"{tree}: a series {state['op']} stopped on a conflict in "
            f"{state['results'][-1]['name']}; resolve it and run `{cont}`, or `{abort}`"
        )
    if state is None and gitlib.am_in_progress(tree):
        raise ApplyError(f"{tree}: a `git am` not started by this tool is in progress; finish it first")
    dirty = gitlib.is_dirty(tree)
    if dirty and not (state and state["status"] == "running"):
        shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise ApplyError(
            f"{tree} has uncommitted changes ({shown}); commit or stash them first "
            "(nothing was changed)"
        )
    record = load_record(tree)
    head = gitlib.rev_parse(tree, f"refs/heads/{ctx.branch}")
    version = ctx.upstream.version
    pending = (unexported(record) + skipped_by_user(record)) if record else []
    if (
        record
        and state is None
        and not pending
        and head == record.get("head")
        and record.get("base") == ctx.upstream.commit
        and record.get("digest") == ctx.series.digest(version)
    ):
        return record
    if head and not force and state is None:
        refresh_cmd = hints.make_command("refresh", tree, ctx.upstream.ref, ctx.upstream.source)
        if record is None and head != ctx.upstream.commit:
            raise ApplyError(
                f"branch {ctx.branch} already exists in {tree} and was not made by this tool; "
                "rename it, or pass FORCE=1 to replace it"
            )
        if record is not None and head != record.get("head"):
            raise ApplyError(
                f"branch {ctx.branch} in {tree} has commits that are not in patches/ "
                f"(head {head[:12]}, last applied {record.get('head', '?')[:12]}); export them "
                f"with `{refresh_cmd}` or pass FORCE=1 to discard them"
            )
        if record is not None and unexported(record):
            raise ApplyError(
                f"branch {ctx.branch} in {tree} holds your conflict resolution of "
                f"{', '.join(unexported(record))}, which is not in patches/ yet; write it there "
                f"with `{refresh_cmd}`, or pass FORCE=1 to discard it"
            )
        if record is not None and skipped_by_user(record):
            raise ApplyError(
                f"branch {ctx.branch} in {tree} lacks {', '.join(skipped_by_user(record))} "
                "(skipped by hand while resolving), so it is not the series in patches/. If the "
                "patch is gone for good, remove it from patches/series; to rebuild the branch "
                "with it, pass FORCE=1"
            )
    return None


def validate_patches(ctx: Context) -> None:
    """Parse every selected patch before the tree is touched."""
    for entry, path, _ in ctx.series.selected(ctx.upstream.version):
        try:
            ctx.mails[path] = gitlib.parse_patch(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApplyError(
                f"patch {path} ({entry.name}) is corrupt: {exc}. Nothing was applied; "
                "restore it from git (`git checkout -- patches/`) or re-export it"
            ) from exc


def run_series(ctx: Context, *, op: str = "apply", force: bool = False) -> dict:
    """Apply the whole series; returns the record. Raises Conflict or ApplyError."""
    tree = ctx.tree
    validate_patches(ctx)
    with FileLock(state_dir(tree) / "lock", f"the tree {tree}"):
        done = _precheck(ctx, force)
        if done is not None:
            say(ctx.quiet, f"{ctx.branch}: up to date ({len(done['results'])} patches, head {done['head'][:12]})")
            return done
        state = load_state(tree)
        if state and state["status"] == "running":
            say(ctx.quiet, "recovering from an interrupted run: starting the series again")
            if gitlib.am_in_progress(tree):
                gitlib.run(["am", "--abort"], tree, check=False)
            orig_head, orig_branch = state["orig_head"], state["orig_branch"]
        else:
            orig_head = gitlib.rev_parse(tree, f"refs/heads/{ctx.branch}")
            orig_branch = _current_branch(tree)
        ctx.check_upstream()
        gitlib.run(["update-ref", UPSTREAM_REF, ctx.upstream.commit], tree)
        gitlib.run(["checkout", "--quiet", "--force", "-B", ctx.branch, ctx.upstream.commit], tree)
        state = _new_state(ctx, orig_head, orig_branch, op)
        save_state(tree, state)
        say(ctx.quiet, _banner(ctx))
        return _continue_from(ctx, state)


def _banner(ctx: Context) -> str:
    up = ctx.upstream
    lines = [f"upstream {up.ref} ({up.source}: {up.detail}) at {up.commit[:12]}"]
    if up.partial:
        lines.append(
            f"note: partial tree (only {', '.join(up.coverage)}): hunks outside it are "
            "excluded and listed"
        )
    lines.append(f"branch {ctx.branch} in {ctx.tree}")
    return "\n".join(lines)


def _continue_from(ctx: Context, state: dict) -> dict:
    tree = ctx.tree
    total = len(state["entries"])
    while state["next"] < total:
        entry = state["entries"][state["next"]]
        path = Path(entry["file"])
        if not path.is_absolute():
            path = ctx.series.root / path
        shown = entry["name"] + (f"{entry['variant']}.patch" if entry["variant"] else "")
        prefix = f"[{state['next'] + 1}/{total}] {shown}"
        try:
            result = apply_one(ctx, entry["name"], path, entry["variant"])
        except Conflict as exc:
            state["status"] = "conflict"
            state["results"].append(exc.result)
            save_state(tree, state)
            report.write(state_dir(tree), state, tree=tree)
            say(ctx.quiet, f"{prefix}: {_describe(exc.result)}")
            raise
        except ApplyError:
            _roll_back(tree, state)
            raise
        if result["status"] in APPLIED:
            result["commit"] = stamp(tree, result["file"])
            result["exported"] = True
        state["results"].append(result)
        state["next"] += 1
        save_state(tree, state)
        say(ctx.quiet, f"{prefix}: {_describe(result)}")
    return _finish(ctx, state)


def _finish(ctx: Context, state: dict) -> dict:
    tree = ctx.tree
    state["status"] = "ok"
    state["head"] = gitlib.out(["rev-parse", "HEAD"], tree)
    record = {k: v for k, v in state.items() if k not in ("next", "orig_head", "orig_branch")}
    save_record(tree, record)
    if not unexported(record) and not skipped_by_user(record):
        mark_exported(tree, state["head"], state["base"])
    (state_dir(tree) / "state.json").unlink(missing_ok=True)
    report.write(state_dir(tree), record, tree=tree)
    say(ctx.quiet, report.summary_line(record))
    return record


def continue_series(ctx: Context) -> dict:
    """Resume after the user resolved a conflict (`git add` done)."""
    tree = ctx.tree
    with FileLock(state_dir(tree) / "lock", f"the tree {tree}"):
        state = load_state(tree)
        if not state or state["status"] != "conflict":
            raise ApplyError(f"{tree}: no stopped series operation to continue")
        if gitlib.am_in_progress(tree):
            unresolved = gitlib.conflicted_files(tree)
            if unresolved:
                raise ApplyError(
                    f"still unresolved: {', '.join(unresolved)}; edit them, `git add` them, "
                    "then continue again"
                )
            proc = gitlib.run(["am", "--continue"], tree, check=False)
            if proc.returncode != 0:
                raise ApplyError(
                    "git am --continue failed (did you `git add` the resolved files?):\n"
                    + (proc.stdout + proc.stderr).strip()
                )
        last = state["results"][-1]
        head = gitlib.out(["rev-parse", "HEAD"], tree)
        if last.get("parent") and head == last["parent"]:
            # `git am --skip` (or `--abort`): nothing was committed for this patch.
            last["status"] = SKIPPED_BY_USER
            say(
                ctx.quiet,
                f"{last['name']}: SKIPPED (no commit was made for it): the branch will lack "
                "this patch; remove it from patches/series if it is gone for good",
            )
        else:
            last["status"] = "resolved"
            last["commit"] = stamp(tree, last["file"])
            last["exported"] = False
            say(ctx.quiet, f"{last['name']}: resolved, continuing")
        state["next"] += 1
        state["status"] = "running"
        save_state(tree, state)
        return _continue_from(ctx, state)


def previous_export(tree: Path) -> Optional[list]:
    """[base, head] of the series as patches/ last reproduced it in this tree."""
    head = gitlib.rev_parse(tree, EXPORTED_REF)
    base = gitlib.rev_parse(tree, EXPORTED_BASE_REF)
    return [base, head] if head and base else None


def mark_exported(tree: Path, head: str, base: str) -> None:
    """patches/ now reproduces `head` (on `base`): the reference for range-diffs."""
    gitlib.run(["update-ref", EXPORTED_REF, head], tree)
    gitlib.run(["update-ref", EXPORTED_BASE_REF, base], tree)


def _roll_back(tree: Path, state: dict) -> None:
    """Put the branch back where it was before this operation started."""
    if gitlib.am_in_progress(tree):
        gitlib.run(["am", "--abort"], tree, check=False)
    branch = state["branch"]
    if state["orig_head"]:
        gitlib.run(["checkout", "--quiet", "--force", "-B", branch, state["orig_head"]], tree)
    if state["orig_branch"] and state["orig_branch"] != branch:
        gitlib.run(["checkout", "--quiet", "--force", state["orig_branch"]], tree)
        if not state["orig_head"]:
            gitlib.run(["branch", "-D", branch], tree, check=False)
    elif not state["orig_head"]:
        gitlib.run(["checkout", "--quiet", "--force", "--detach", state["base"]], tree)
        gitlib.run(["branch", "-D", branch], tree, check=False)
    (state_dir(tree) / "state.json").unlink(missing_ok=True)


def abort_series(tree: Path) -> dict:
    """Roll back a stopped operation: the branch returns to where it was."""
    with FileLock(state_dir(tree) / "lock", f"the tree {tree}"):
        state = load_state(tree)
        if not state:
            raise ApplyError(f"{tree}: no series operation in progress")
        _roll_back(tree, state)
        return state
