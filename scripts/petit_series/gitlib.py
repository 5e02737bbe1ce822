"""Project-agnostic git and patch helpers.

Nothing in this module knows about SGLang or Petit: it runs git with a pinned,
reproducible configuration and offers small pure functions over unified diffs.
Everything project-specific lives in the command modules that import it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

# Identity and configuration used for every commit the tooling makes, so that the
# same inputs always give the same commit ids, whatever the user's git config says.
BOT_NAME = "sglang-petit"
BOT_EMAIL = "sglang-petit@users.noreply.github.com"

# Configuration that makes `git format-patch` output independent of user settings.
PINNED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.abbrev", "12"),
    ("core.quotePath", "true"),
    ("core.attributesFile", "/dev/null"),
    ("diff.algorithm", "myers"),
    ("diff.noprefix", "false"),
    ("diff.mnemonicPrefix", "false"),
    ("diff.relative", "false"),
    ("diff.suppressBlankEmpty", "false"),
    ("diff.renames", "false"),
    ("diff.context", "3"),
    ("diff.interHunkContext", "0"),
    ("format.signature", ""),
    ("format.numbered", "false"),
    ("format.coverLetter", "false"),
    ("format.signOff", "false"),
    ("commit.gpgSign", "false"),
    ("am.threeWay", "false"),
    ("am.keepcr", "false"),
    ("apply.whitespace", "nowarn"),
    ("color.ui", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
)

# Flags of a deterministic export: no commit id, no signature, no numbering, the
# subject kept as is, no diffstat, full blob ids (needed by 3-way merges) and only
# exact renames (a pure `git mv` stays a rename, anything else is a full diff).
FORMAT_PATCH_FLAGS: tuple[str, ...] = (
    "--zero-commit",
    "--no-signature",
    "--no-numbered",
    "--keep-subject",
    "--no-stat",
    "--full-index",
    "--find-renames=100%",
    "--no-color",
    "--no-notes",
    "--no-textconv",
    "--no-ext-diff",
    "--stdout",
)


class GitError(RuntimeError):
    """A git command failed; carries the command and what it printed."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip()
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {detail}")


def git_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for git: no system/global config, fixed committer, C locale."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("GIT_") and key not in ("GIT_SSH_COMMAND", "GIT_ASKPASS"):
            del env[key]
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_COMMITTER_NAME": BOT_NAME,
            "GIT_COMMITTER_EMAIL": BOT_EMAIL,
            "GIT_AUTHOR_NAME": BOT_NAME,
            "GIT_AUTHOR_EMAIL": BOT_EMAIL,
            "LC_ALL": "C",
            "LANG": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


def pinned_args() -> list[str]:
    out: list[str] = []
    for key, value in PINNED_CONFIG:
        out += ["-c", f"{key}={value}"]
    return out


def run(
    args: Sequence[str],
    cwd: Optional[Path] = None,
    *,
    git_dir: Optional[Path] = None,
    check: bool = True,
    input: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
) -> subprocess.CompletedProcess:
    """Run `git <args>` with the pinned configuration and return the result."""
    cmd = ["git", *pinned_args()]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env=git_env(env),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def out(args: Sequence[str], cwd: Optional[Path] = None, **kw) -> str:
    """Run git and return its stripped standard output."""
    return run(args, cwd, **kw).stdout.strip()


def ok(args: Sequence[str], cwd: Optional[Path] = None, **kw) -> bool:
    """Run git and tell whether it succeeded."""
    return run(args, cwd, check=False, **kw).returncode == 0


def rev_parse(cwd: Path, rev: str) -> Optional[str]:
    proc = run(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd, check=False)
    return proc.stdout.strip() or None


def has_object(cwd: Path, oid: str) -> bool:
    return ok(["cat-file", "-e", oid], cwd)


def is_dirty(cwd: Path) -> list[str]:
    """Tracked files with uncommitted changes (untracked files are ignored)."""
    # -z: entries end in NUL, paths unquoted, nothing stripped (the first entry's
    # status may begin with a space: " M path"). A rename or copy is followed by
    # an entry holding its source path.
    fields = run(["status", "--porcelain", "-z", "--untracked-files=no"], cwd).stdout.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC" or entry[1] in "RC":
            i += 1  # the source path of the rename/copy
    return paths


def am_in_progress(cwd: Path) -> bool:
    git_dir = Path(out(["rev-parse", "--git-dir"], cwd))
    if not git_dir.is_absolute():
        git_dir = cwd / git_dir
    return (git_dir / "rebase-apply").exists()


def git_dir_of(cwd: Path) -> Path:
    path = Path(out(["rev-parse", "--absolute-git-dir"], cwd))
    return path


def conflicted_files(cwd: Path) -> list[str]:
    text = out(["diff", "--name-only", "--diff-filter=U"], cwd)
    return [line for line in text.splitlines() if line]


def conflict_blocks(text: str) -> list[str]:
    """The `<<<<<<<` ... `>>>>>>>` sections a merge left in a file's text (pure)."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("<<<<<<< "):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith(">>>>>>> "):
                blocks.append("\n".join(current))
                current = None
    return blocks


def exclude_args(paths: Iterable[str]) -> list[str]:
    return [f"--exclude={p}" for p in sorted(set(paths))]


def cone_patterns(dirs: Iterable[str]) -> str:
    """`info/sparse-checkout` content (cone mode) holding the files directly inside
    each of `dirs` and inside their parents, no subdirectories."""
    wanted: set[str] = set()
    for d in dirs:
        parts = [p for p in d.strip("/").split("/") if p]
        wanted.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    lines = ["/*", "!/*/"]
    for d in sorted(wanted):
        lines += [f"/{d}/", f"!/{d}/*/"]
    return "\n".join(lines) + "\n"


def set_sparse(cwd: Path, dirs: Optional[Iterable[str]]) -> None:
    """Limit the work tree to `dirs` (from the next checkout on); None: the whole tree."""
    if dirs is None:
        if rev_parse(cwd, "HEAD"):
            run(["sparse-checkout", "disable"], cwd)  # also brings the rest back
        return
    run(["config", "core.sparseCheckout", "true"], cwd)
    run(["config", "core.sparseCheckoutCone", "true"], cwd)
    path = git_dir_of(cwd) / "info" / "sparse-checkout"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cone_patterns(dirs))


def format_patch(cwd: Path, commit: str, drop_trailers: Sequence[str] = ()) -> str:
    """Deterministic single-commit export of `commit`, without the trailers
    named in `drop_trailers` (bookkeeping the tool wrote on import)."""
    message = commit_message(cwd, commit)
    stripped = strip_trailers(message, drop_trailers)
    if stripped != message:
        commit = rewrite_message(cwd, commit, stripped)  # a dangling twin, for export only
    return run(["format-patch", *FORMAT_PATCH_FLAGS, "-1", commit], cwd).stdout


# ---------------------------------------------------------------------------
# Commit messages and trailers (git parses them; see git-interpret-trailers(1))


def commit_message(cwd: Path, commit: str) -> str:
    return run(["log", "-1", "--format=%B", commit], cwd).stdout.rstrip("\n") + "\n"


def add_trailer(cwd: Path, message: str, key: str, value: str) -> str:
    """`message` with the trailer `key: value` (replacing one with the same key)."""
    return run(
        ["-c", f"trailer.{key}.ifExists=replace", "interpret-trailers", "--trailer", f"{key}: {value}"],
        cwd,
        input=message,
    ).stdout


def trailer_values(cwd: Path, commits: Sequence[str], key: str) -> dict[str, Optional[str]]:
    """The value of trailer `key` of each commit (None where it has none)."""
    if not commits:
        return {}
    fmt = f"%H%x00%(trailers:key={key},valueonly,separator=%x01)%x00"
    text = run(["log", "--no-walk=unsorted", f"--format={fmt}", *commits], cwd).stdout
    fields = text.replace("\n", "").split("\x00")
    found = {}
    for sha, value in zip(fields[0::2], fields[1::2]):
        found[sha] = value.split("\x01")[-1].strip() or None
    return found


def parse_trailers(message: str) -> dict[str, str]:
    """The trailers of a commit message (`git interpret-trailers --parse`); the
    last value wins where a key repeats."""
    text = run(["interpret-trailers", "--parse"], input=message).stdout
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            found[key] = value.strip()
    return found


TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
CHERRY_PICK_LINE = re.compile(r"^\(cherry picked from commit [0-9a-f]{7,40}\)$")


def _is_trailer_block(lines: Sequence[str]) -> bool:
    """Git's notion: a last paragraph made of `Key: value` lines (and their continuations)."""
    if not lines or not (TRAILER_LINE.match(lines[0]) or CHERRY_PICK_LINE.match(lines[0])):
        return False
    return all(TRAILER_LINE.match(x) or CHERRY_PICK_LINE.match(x) or x[:1] in (" ", "\t") for x in lines)


def drop_trailers(message: str, drop: Callable[[str], bool]) -> str:
    """`message` without the trailer lines (and their continuations) `drop` picks.

    Only the trailer block (the last paragraph, when every line of it is a
    trailer) is touched; the subject and the prose are kept; an emptied block
    goes with its blank line."""
    paragraphs = re.split(r"\n[ \t]*\n", message.strip("\n"))
    if len(paragraphs) > 1 and _is_trailer_block(paragraphs[-1].splitlines()):
        kept, dropping = [], False
        for line in paragraphs[-1].splitlines():
            if line[:1] not in (" ", "\t"):  # not a continuation of the previous trailer
                dropping = drop(line)
            if not dropping:
                kept.append(line)
        paragraphs = paragraphs[:-1] + (["\n".join(kept)] if kept else [])
    return "\n\n".join(p.rstrip() for p in paragraphs).rstrip() + "\n"


def strip_trailers(message: str, keys: Iterable[str]) -> str:
    """`message` without the trailers whose key is in `keys` (case-insensitive)."""
    wanted = {k.lower() for k in keys}
    if not wanted:
        return message

    def named(line: str) -> bool:
        m = TRAILER_LINE.match(line)
        return m is not None and m.group(1).lower() in wanted

    stripped = drop_trailers(message, named)
    return message if stripped.rstrip("\n") == message.rstrip("\n") else stripped


def rewrite_message(cwd: Path, commit: str, message: str, parent: Optional[str] = None) -> str:
    """A copy of `commit` (same tree, author and dates) with another message and,
    optionally, another parent; returns its id (no ref is moved)."""
    fmt = "%an%x00%ae%x00%ad%x00%cn%x00%ce%x00%cd%x00%T%x00%P"
    fields = run(["log", "-1", "--date=raw", f"--format={fmt}", commit], cwd).stdout.rstrip("\n")
    an, ae, ad, cn, ce, cd, tree, parents = fields.split("\x00")
    env = {
        "GIT_AUTHOR_NAME": an,
        "GIT_AUTHOR_EMAIL": ae,
        "GIT_AUTHOR_DATE": ad,
        "GIT_COMMITTER_NAME": cn,
        "GIT_COMMITTER_EMAIL": ce,
        "GIT_COMMITTER_DATE": cd,
    }
    parent_args: list[str] = []
    for p in ([parent] if parent else parents.split()):
        parent_args += ["-p", p]
    return out(["commit-tree", tree, *parent_args], cwd, input=message, env=env)


# ---------------------------------------------------------------------------
# Checks that git itself answers


@dataclasses.dataclass(frozen=True)
class ApplyCheck:
    ok: bool
    offsets: dict[str, list[int]]  # file -> offset of each hunk that moved (git's report)
    failed: list[tuple[str, int]]  # (file, line of the first hunk git could not place)
    errors: list[str]  # git's other error lines


_HUNK_OK_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+)(?: \(offset (-?\d+) lines?\))?")
_CHECKING_RE = re.compile(r"^Checking patch (.*)\.\.\.$")
_FAILED_RE = re.compile(r"^error: patch failed: (.*):(\d+)$")


def apply_check(
    cwd: Path,
    patch: Path,
    *,
    exclude: Iterable[str] = (),
    reverse: bool = False,
    cached: bool = False,
    env: Optional[Mapping[str, str]] = None,
) -> ApplyCheck:
    """`git apply --check -v`: whether `patch` applies exactly, and git's account of
    where each hunk landed (offsets) or which hunk it could not place."""
    args = ["apply", "--check", "-v", *exclude_args(exclude)]
    if reverse:
        args.append("-R")
    if cached:
        args.append("--cached")
    proc = run([*args, str(patch)], cwd, check=False, env=env)
    return parse_apply_check(proc.returncode == 0, proc.stderr + proc.stdout)


def parse_apply_check(ok: bool, text: str) -> ApplyCheck:
    """Parse `git apply --check -v` output (pure)."""
    offsets: dict[str, list[int]] = {}
    failed: list[tuple[str, int]] = []
    errors: list[str] = []
    current = ""
    searching = False
    for line in text.splitlines():
        m = _CHECKING_RE.match(line)
        if m:
            current, searching = m.group(1), False
            continue
        m = _HUNK_OK_RE.match(line)
        if m:
            if m.group(3):
                offsets.setdefault(current, []).append(int(m.group(3)))
            continue
        m = _FAILED_RE.match(line)
        if m:
            failed.append((m.group(1), int(m.group(2))))
            searching = False
            continue
        if line.startswith("error: while searching for:"):
            searching = True
            continue
        if line.startswith("error: ") and not searching:
            errors.append(line[len("error: ") :])
    return ApplyCheck(ok, offsets, failed, errors)


def applies_to_own_preimage(cwd: Path, patch_path: Path, mail: "PatchMail", exclude: Iterable[str] = ()) -> Optional[bool]:
    """Does the patch apply to the very blobs its `index` lines name?

    None when that cannot be told (a preimage blob is not in the object store);
    False means the patch text itself is inconsistent (edited by hand, corrupt)."""
    excluded = set(exclude)
    entries = []
    for fp in mail.files:
        if fp.old_path is None or fp.old_path in excluded or not fp.hunks:
            continue
        if not fp.old_oid or set(fp.old_oid) == {"0"} or not has_object(cwd, fp.old_oid):
            return None
        entries.append(f"100644 {fp.old_oid}\t{fp.old_path}")
    if not entries:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        run(["update-index", "--index-info"], cwd, input="\n".join(entries) + "\n", env=env)
        only = [f"--include={fp.old_path}" for fp in mail.files if fp.old_path and fp.old_path not in excluded and fp.hunks]
        proc = run(["apply", "--cached", "--check", *only, str(patch_path)], cwd, check=False, env=env)
        return proc.returncode == 0


def range_diff(cwd: Path, old: str, new: str) -> str:
    """`git range-diff old new` (two `base..head` ranges), without colour."""
    proc = run(["range-diff", "--no-color", old, new], cwd, check=False)
    return proc.stdout if proc.returncode == 0 else ""


# ---------------------------------------------------------------------------
# Pure functions over unified diffs (as written by git format-patch / git diff).


@dataclasses.dataclass(frozen=True)
class Hunk:
    header: str
    old_start: int
    old_lines: tuple[str, ...]  # context and removed lines, without the prefix
    new_lines: tuple[str, ...]
    removed: int = 0  # `-` lines
    added: int = 0  # `+` lines


@dataclasses.dataclass(frozen=True)
class FilePatch:
    old_path: Optional[str]  # None for a created file
    new_path: Optional[str]  # None for a deleted file
    old_oid: Optional[str]
    new_oid: Optional[str]
    hunks: tuple[Hunk, ...]
    is_rename: bool = False

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in dict.fromkeys((self.old_path, self.new_path)) if p)


@dataclasses.dataclass(frozen=True)
class PatchMail:
    author: str
    date: str
    subject: str
    files: tuple[FilePatch, ...]


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_INDEX_RE = re.compile(r"^index ([0-9a-f]+)\.\.([0-9a-f]+)")


def _strip_prefix(path: str, prefix: str) -> Optional[str]:
    if path == "/dev/null":
        return None
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1]
    return path[len(prefix) :] if path.startswith(prefix) else path


def parse_patch(text: str) -> PatchMail:
    """Parse a git mail-style patch into its header fields and per-file hunks.

    Raises ValueError when the text is not a well-formed git patch.
    """
    lines = text.split("\n")
    author = date = subject = ""
    i = 0
    # Mail headers (folded subject lines start with a space).
    while i < len(lines) and lines[i] != "":
        line = lines[i]
        if line.startswith("From: "):
            author = line[6:]
        elif line.startswith("Date: "):
            date = line[6:]
        elif line.startswith("Subject: "):
            subject = line[9:]
            while i + 1 < len(lines) and lines[i + 1].startswith(" "):
                i += 1
                subject += lines[i]
        i += 1
    if not subject:
        raise ValueError("no 'Subject:' header: not a git format-patch file")
    files: list[FilePatch] = []
    cur: Optional[dict] = None
    hunks: list[Hunk] = []

    def close() -> None:
        if cur is not None:
            files.append(FilePatch(hunks=tuple(hunks), **cur))

    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            close()
            hunks = []
            m = re.match(r"^diff --git (\"?a/.*?\"?) (\"?b/.*\"?)$", line)
            if not m:
                raise ValueError(f"malformed diff header: {line!r}")
            cur = {
                "old_path": _strip_prefix(m.group(1), "a/"),
                "new_path": _strip_prefix(m.group(2), "b/"),
                "old_oid": None,
                "new_oid": None,
                "is_rename": False,
            }
            i += 1
            continue
        if cur is not None and not hunks and not line.startswith("@@"):
            if line.startswith("new file mode"):
                cur["old_path"] = None
            elif line.startswith("deleted file mode"):
                cur["new_path"] = None
            elif line.startswith("rename from "):
                cur["old_path"] = line[len("rename from ") :]
                cur["is_rename"] = True
            elif line.startswith("rename to "):
                cur["new_path"] = line[len("rename to ") :]
            else:
                m = _INDEX_RE.match(line)
                if m:
                    cur["old_oid"], cur["new_oid"] = m.group(1), m.group(2)
            i += 1
            continue
        m = _HUNK_RE.match(line)
        if m and cur is not None:
            old_count = int(m.group(2) if m.group(2) is not None else 1)
            new_count = int(m.group(4) if m.group(4) is not None else 1)
            old: list[str] = []
            new: list[str] = []
            removed = added = 0
            i += 1
            while (old_count > 0 or new_count > 0) and i < len(lines):
                body = lines[i]
                tag, rest = body[:1], body[1:]
                if tag == " " or (body == "" and old_count > 0 and new_count > 0):
                    old.append(rest)
                    new.append(rest)
                    old_count -= 1
                    new_count -= 1
                elif tag == "-":
                    old.append(rest)
                    old_count -= 1
                    removed += 1
                elif tag == "+":
                    new.append(rest)
                    new_count -= 1
                    added += 1
                elif tag == "\\":
                    pass
                else:
                    raise ValueError(
                        f"corrupt hunk in {cur['new_path'] or cur['old_path']}: "
                        f"unexpected line {body!r} (hunk line counts do not match)"
                    )
                i += 1
            if old_count > 0 or new_count > 0:
                raise ValueError(
                    f"truncated hunk in {cur['new_path'] or cur['old_path']}: "
                    f"{line.strip()}"
                )
            hunks.append(Hunk(line, int(m.group(1)), tuple(old), tuple(new), removed, added))
            continue
        if line == "-- ":
            break  # the signature
        if cur is not None and hunks and line != "":
            raise ValueError(
                f"corrupt patch in {cur['new_path'] or cur['old_path']}: unexpected line "
                f"{line!r} after a hunk (hunk line counts do not match its content)"
            )
        i += 1
    close()
    if not files:
        raise ValueError("the patch contains no diff")
    return PatchMail(author, date, subject, tuple(files))


def split_file_diffs(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A patch's mail part and its per-file sections as (path, text), in order."""
    head, *chunks = re.split(r"(?m)^(?=diff --git )", text)
    sections = []
    for chunk in chunks:
        m = re.match(r"^diff --git \"?a/(.*?)\"? \"?b/(.*?)\"?$", chunk.split("\n", 1)[0])
        if not m:
            raise ValueError(f"malformed diff header: {chunk.splitlines()[0]!r}")
        sections.append((m.group(2), chunk))
    return head, sections


def replace_file_diffs(new: str, old: str, paths: Iterable[str]) -> str:
    """`new` with the sections for `paths` taken from `old` (git's path order)."""
    wanted = set(paths)
    head, new_sections = split_file_diffs(new)
    _, old_sections = split_file_diffs(old)
    kept = [s for s in new_sections if s[0] not in wanted]
    carried = [s for s in old_sections if s[0] in wanted]
    if carried and not kept:
        return old
    merged = sorted(kept + carried, key=lambda s: s[0].encode())
    body = "".join(section if section.endswith("\n") else section + "\n" for _, section in merged)
    return head + body


def munge_subject(subject: str, limit: int = 60) -> str:
    """File-name friendly form of a commit subject."""
    text = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    text = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return text[:limit].rstrip("-") or "patch"
