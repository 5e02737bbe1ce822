"""The PR branch (`make pr`, step 1): commit messages without downstream
trailers, the commits rewritten onto upstream (`refs/petit/upstream`) beside the
applied branch, and the file list of what the branch changes. See `pr.py`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional, Sequence

from . import apply, gitlib, locking

PR_STATE = "pr.json"  # in <git-dir>/petit-series/: the branch head `make pr` wrote


class PrError(apply.ApplyError):
    """The PR cannot be prepared or published as asked; the message says why."""


# ---------------------------------------------------------------------------
# Commit messages (pure)

# Trailers that only mean something in this repository (DEP-3 bookkeeping,
# the tooling's own metadata); matched case-insensitively on the key.
DOWNSTREAM_TRAILER_KEYS = re.compile(
    r"^(petit-[a-z0-9-]+|origin|forwarded|applied-upstream|last-update|bug-[a-z0-9-]+"
    r"|gbp-[a-z0-9-]+|patch-name)$",
    re.IGNORECASE,
)
BOT_IDENTITIES = (gitlib.BOT_NAME, gitlib.BOT_EMAIL, "petit@example.com")
def is_downstream_trailer(line: str) -> bool:
    if gitlib.CHERRY_PICK_LINE.match(line):
        return True
    m = gitlib.TRAILER_LINE.match(line)
    if not m:
        return False
    key, value = m.group(1), m.group(2).lower()
    if DOWNSTREAM_TRAILER_KEYS.match(key):
        return True
    return key.lower() == "signed-off-by" and any(b.lower() in value for b in BOT_IDENTITIES)


def strip_downstream_trailers(message: str) -> str:
    """The commit message without downstream-only trailers (see the module docstring)."""
    return gitlib.drop_trailers(message, is_downstream_trailer)


def split_message(message: str) -> tuple[str, str]:
    """(subject, body) of a commit message."""
    subject, _, body = message.strip("\n").partition("\n")
    return subject.strip(), body.strip("\n")


def squash_message(title: str, messages: Sequence[str]) -> str:
    """One message for the squashed branch: the title, then each commit, indented."""
    parts = [title.strip()]
    for msg in messages:
        subject, body = split_message(msg)
        item = f"* {subject}"
        if body:
            item += "\n\n" + "\n".join(f"  {x}" if x else "" for x in body.splitlines())
        parts.append(item)
    return "\n\n".join(parts) + "\n"


def is_bot(name: str, email: str) -> bool:
    """An identity of the tooling: its name or email, or a GitHub noreply address of its name."""
    bots = {b.lower() for b in BOT_IDENTITIES}
    local, _, domain = email.lower().partition("@")
    return (name.lower() in bots or email.lower() in bots
            or (domain == "users.noreply.github.com" and local.split("+")[-1] in bots))


def parse_identity(text: str) -> tuple[str, str]:
    """`Name <email>` -> (name, email)."""
    m = re.fullmatch(r"\s*([^<>]+?)\s*<([^<>@\s]+@[^<>\s]+)>\s*", text or "")
    if not m:
        raise PrError(f"PR_AUTHOR must look like 'Name <email>', got {text!r}")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------------------
# The branch


@dataclasses.dataclass
class Commit:
    sha: str
    author_name: str
    author_email: str
    author_date: str
    message: str

    @property
    def subject(self) -> str:
        return split_message(self.message)[0]


def series_commits(tree: Path, head: str) -> list[Commit]:
    shas = gitlib.out(["rev-list", "--reverse", f"{apply.UPSTREAM_REF}..{head}"], tree).split()
    commits = []
    for sha in shas:
        raw = gitlib.out(["show", "-s", "--format=%an%x00%ae%x00%aI%x00%B", sha], tree)
        name, email, date, message = raw.split("\x00", 3)
        commits.append(Commit(sha, name, email, date, message))
    return commits


def _commit_tree(tree: Path, tree_id: str, parent: str, message: str, who: tuple[str, str, str], as_committer: bool) -> str:
    name, email, date = who
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    if as_committer:
        env.update(GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)
    return gitlib.out(["commit-tree", tree_id, "-p", parent], tree, input=message, env=env)


def build_branch(tree: Path, base: str, commits: Sequence[Commit], opts) -> str:
    """Write the PR commits (not checked out); returns the new head.

    `opts` is a `pr.Options` (its author, squash and title are used)."""
    if not commits:
        raise PrError(f"{tree}: the series added no commit on top of upstream; nothing to propose")
    author = parse_identity(opts.author) if opts.author else None

    def who(c: Commit) -> tuple[str, str, str]:
        return (*(author or (c.author_name, c.author_email)), c.author_date)

    head = base
    if opts.squash:
        last = commits[-1]
        message = squash_message(opts.title, [strip_downstream_trailers(c.message) for c in commits])
        tree_id = gitlib.out(["rev-parse", f"{last.sha}^{{tree}}"], tree)
        return _commit_tree(tree, tree_id, base, message, who(last), author is not None)
    for c in commits:
        tree_id = gitlib.out(["rev-parse", f"{c.sha}^{{tree}}"], tree)
        head = _commit_tree(tree, tree_id, head, strip_downstream_trailers(c.message), who(c), author is not None)
    return head


def _load_pr_state(tree: Path) -> dict:
    path = apply.state_dir(tree) / PR_STATE
    return json.loads(path.read_text()) if path.exists() else {}


def update_branch(tree: Path, branch: str, new_head: str, force: bool) -> None:
    """Point `branch` at new_head unless it holds something `make pr` did not write."""
    ref = f"refs/heads/{branch}"
    current = gitlib.rev_parse(tree, ref)
    written = _load_pr_state(tree).get("heads", {}).get(branch)
    if current and current != written and current != new_head and not force:
        raise PrError(
            f"branch {branch} in {tree} was changed since `make pr` wrote it "
            f"(head {current[:12]}); rename it, set PR_BRANCH=<other>, or pass FORCE=1"
        )
    if gitlib.out(["symbolic-ref", "--quiet", "HEAD"], tree, check=False) == ref:
        raise PrError(f"{branch} is checked out in {tree}; check out petit/<ref> first")
    gitlib.run(["update-ref", ref, new_head], tree)
    state = _load_pr_state(tree)
    state.setdefault("heads", {})[branch] = new_head
    locking.write_json(apply.state_dir(tree) / PR_STATE, state)


def changed_files(tree: Path, base: str, head: str) -> list[tuple[str, str, Optional[str]]]:
    """(status letter, path, source of a copy or rename) of the files the branch changes."""
    text = gitlib.out(["diff", "--name-status", "-M", "-C", "--find-copies-harder", f"{base}..{head}"], tree)
    rows = []
    for line in text.splitlines():
        status, *paths = line.split("\t")
        rows.append((status[0], paths[-1], paths[0] if len(paths) == 2 else None))
    return rows
