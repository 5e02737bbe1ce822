"""Where the build lives, and the `make` command lines the tool prints as hints.

Every hint that tells the user what to run next (after a conflict, in a refusal,
in report.md) is built by `make_command`, so that it names the variables that
address that very tree again:

- a local checkout (`SGLANG_SOURCE=<path>`): `SGLANG_SOURCE=<path>`;
- a tree in the default place, `<build>/sglang/<ref>`: `SGLANG_REF=<ref>`;
- any other tree (`SGLANG_DIR=<dir>`): `SGLANG_DIR=<dir>`.

`rebase-continue`, `rebase-abort` and `refresh` find the tree from any of these
alone. The hints assume the same `PETIT_BUILD_DIR` as the run that printed them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Optional

from . import versions

ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value or default).resolve()


def build_dir() -> Path:
    """`PETIT_BUILD_DIR`, default `build/` of this repository."""
    return _env_path("PETIT_BUILD_DIR", ROOT / "build")


def cache_dir() -> Path:
    """`PETIT_CACHE_DIR`, default `<build>/cache`."""
    return _env_path("PETIT_CACHE_DIR", build_dir() / "cache")


def default_tree(ref: str) -> Path:
    """The tree `make apply SGLANG_REF=<ref>` works in."""
    return build_dir() / "sglang" / versions.safe_ref_name(ref)


def tree_vars(tree: Path, ref: Optional[str], source: Optional[str]) -> list[tuple[str, str]]:
    """The make variables that address `tree` (made for `ref` from `source`)."""
    tree = Path(tree).resolve()
    if source == "path":
        return [("SGLANG_SOURCE", str(tree))]
    if ref and tree == default_tree(ref):
        return [("SGLANG_REF", ref)]
    return [("SGLANG_DIR", str(tree))]


def make_command(target: str, tree: Path, ref: Optional[str], source: Optional[str]) -> str:
    """`make <target> VAR=value ...` for the tree, shell-quoted where needed."""
    assigns = tree_vars(tree, ref, source)
    if target in ("apply", "rebase") and ref and assigns[0][0] == "SGLANG_DIR":
        assigns.insert(0, ("SGLANG_REF", ref))  # a tree elsewhere: say which release too
    return " ".join(["make", target, *(shlex.quote(f"{k}={v}") for k, v in assigns)])


def resume_commands(tree: Path, ref: Optional[str], source: Optional[str]) -> tuple[str, str]:
    """The continue and abort command lines for a stopped operation on `tree`."""
    return (
        make_command("rebase-continue", tree, ref, source),
        make_command("rebase-abort", tree, ref, source),
    )
