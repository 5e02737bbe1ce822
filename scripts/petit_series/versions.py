"""SGLang release versions and ref names.

SGLang tags releases as `v<X.Y.Z>` or `v<X.Y.Z>.post<N>`; PyPI uses the same
numbers without the `v`. Pre-releases (rc, dev, a, b) are never "supported".
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable, Optional

_VERSION_RE = re.compile(
    r"^v?(\d+)\.(\d+)\.(\d+)(?:\.post(\d+))?(?:(rc|a|b|\.dev)(\d+))?$"
)

# The oldest release the series supports.
MIN_SUPPORTED = "0.5.9"


def parse(text: str) -> Optional[tuple]:
    """Sort key of a release version, or None when `text` is not one."""
    m = _VERSION_RE.match(text.strip())
    if not m:
        return None
    major, minor, micro, post, pre_kind, pre_num = m.groups()
    # A pre-release sorts before its final release; post releases after it.
    pre = (0, pre_kind, int(pre_num)) if pre_kind else (1, "", 0)
    return (int(major), int(minor), int(micro), pre, int(post or 0))


def is_version(text: str) -> bool:
    return parse(text) is not None


def is_final(text: str) -> bool:
    """A final or post release (no rc/dev/alpha/beta)."""
    key = parse(text)
    return key is not None and key[3][0] == 1


def normalize(text: str) -> str:
    """`v0.5.9` and `0.5.9` both give `0.5.9`."""
    if not is_version(text):
        raise ValueError(f"not a release version: {text!r}")
    return text.strip().lstrip("v").replace(".dev", ".dev")


def tag(version: str) -> str:
    """Git tag of a release version."""
    return "v" + normalize(version)


def key(version: str) -> tuple:
    parsed = parse(version)
    if parsed is None:
        raise ValueError(f"not a release version: {version!r}")
    return parsed


def sort(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=key)


def supported(versions: Iterable[str], minimum: str = MIN_SUPPORTED) -> list[str]:
    """Final and post releases from `minimum` on, oldest first."""
    low = key(minimum)
    return sort(v for v in versions if is_final(v) and key(v) >= low)


def unsupported(version: str, minimum: str = MIN_SUPPORTED, allow_pre: bool = False) -> Optional[str]:
    """Why the series cannot be applied to release `version`, or None when it can.

    `allow_pre`: a pre-release is fine (a local checkout, which needs no download).
    """
    if not allow_pre and not is_final(version):
        return (
            f"{tag(version)} is a pre-release; the series supports final releases "
            f"(and .postN) from v{minimum} on: name one, e.g. SGLANG_REF={tag(minimum)}"
        )
    if key(version) < key(minimum):
        return (
            f"{tag(version)} is older than the oldest release the series supports "
            f"(v{minimum}); name v{minimum} or later"
        )
    return None


def suggest(wanted: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names closest to `wanted` (for 'did you mean')."""
    known = list(known)
    bare = wanted.lstrip("v")
    return difflib.get_close_matches(bare, known, n=n, cutoff=0.5)


def select_floor(version: Optional[str], floors: Iterable[str]) -> Optional[str]:
    """The greatest floor <= version; for an unknown version, the newest floor.

    Used to choose the variant of a patch whose variants are named by the oldest
    release they apply to.
    """
    ordered = sort(floors)
    if not ordered:
        return None
    if version is None or not is_version(version):
        return ordered[-1]
    chosen = None
    for floor in ordered:
        if key(floor) <= key(version):
            chosen = floor
    return chosen


def safe_ref_name(ref: str) -> str:
    """A directory/branch friendly form of a ref (`v0.5.9`, `main`, `a1b2c3`)."""
    if is_version(ref):
        return tag(ref)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ref).strip("._") or "ref"
