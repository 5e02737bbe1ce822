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
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

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


def format_patch(cwd: Path, commit: str) -> str:
    """Deterministic single-commit export of `commit`."""
    return run(["format-patch", *FORMAT_PATCH_FLAGS, "-1", commit], cwd).stdout


# ---------------------------------------------------------------------------
# Pure functions over unified diffs (as written by git format-patch / git diff).


@dataclasses.dataclass(frozen=True)
class Hunk:
    header: str
    old_start: int
    old_lines: tuple[str, ...]  # context and removed lines, without the prefix
    new_lines: tuple[str, ...]


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
                elif tag == "+":
                    new.append(rest)
                    new_count -= 1
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
            hunks.append(Hunk(line, int(m.group(1)), tuple(old), tuple(new)))
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


def find_hunk(file_lines: Sequence[str], hunk: Hunk) -> Optional[int]:
    """Line number (1-based) where the hunk's preimage occurs exactly, nearest to
    its declared position; None when it occurs nowhere (no fuzz)."""
    pre = list(hunk.old_lines)
    if not pre:
        return hunk.old_start if hunk.old_start <= len(file_lines) + 1 else None
    n = len(pre)
    hits = [
        start + 1
        for start in range(0, len(file_lines) - n + 1)
        if file_lines[start] == pre[0] and list(file_lines[start : start + n]) == pre
    ]
    if not hits:
        return None
    return min(hits, key=lambda at: (abs(at - hunk.old_start), at))


def hunk_offsets(file_text: str, fp: FilePatch) -> list[Optional[int]]:
    """Offset of each hunk of `fp` against `file_text` (None: not found)."""
    lines = file_text.split("\n")
    result: list[Optional[int]] = []
    for hunk in fp.hunks:
        at = find_hunk(lines, hunk)
        result.append(None if at is None else at - hunk.old_start)
    return result


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
