"""Reports of a series run: JSON for machines, Markdown for people."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from . import hints


def summary_line(record: dict) -> str:
    counts = Counter(r["status"] for r in record["results"])
    parts = [f"{n} {status}" for status, n in sorted(counts.items())]
    verdict = "OK" if record["status"] == "ok" else record["status"].upper()
    return f"{verdict}: {record['ref']}: " + ", ".join(parts)


def to_markdown(record: dict, tree: Optional[Path] = None) -> str:
    """The report; `tree` (where the series ran) lets it name the commands to resume."""
    lines = [
        f"# Series on SGLang {record['ref']}: {record['status']}",
        "",
        f"- upstream: `{record['base'][:12]}` from {record['source']} ({record.get('source_detail', '')})",
        f"- branch: `{record['branch']}`",
    ]
    if record.get("coverage"):
        lines.append(
            f"- partial tree: only `{'`, `'.join(record['coverage'])}` is present; "
            "hunks outside it were excluded (listed below)"
        )
    lines += ["", "| # | patch | status | notes |", "|---|---|---|---|"]
    for i, res in enumerate(record["results"], 1):
        notes = []
        if res.get("variant"):
            notes.append(f"variant {res['variant']}")
        if res.get("offsets"):
            notes.append(
                "offsets "
                + "; ".join(f"`{f}` {offs}" for f, offs in res["offsets"].items())
            )
        if res.get("excluded"):
            notes.append("excluded: " + ", ".join(f"`{p}`" for p in res["excluded"]))
        if res.get("evidence"):
            notes.append(res["evidence"])
        if res.get("files") and res["status"] == "conflict":
            notes.append("conflicted: " + ", ".join(f"`{p}`" for p in res["files"]))
        lines.append(f"| {i} | `{res['name']}` | {res['status']} | {'<br>'.join(notes)} |")
    conflicts = [r for r in record["results"] if r["status"] == "conflict"]
    for res in conflicts:
        lines += ["", f"## Conflict in `{res['name']}`", ""]
        for hunk in res.get("hunks", []):
            lines.append(f"- `{hunk['file']}` `{hunk['hunk']}`: {hunk['why']}")
        if res.get("note"):
            lines.append(f"- {res['note']}")
        lines += _conflict_side_lines(res)
        lines += _upstream_version_lines(res)
        if res.get("upstream_changes"):
            lines += ["", "Upstream changes to these files since the patch's base:", ""]
            lines += [f"- {c}" for c in res["upstream_changes"]]
        cont, abort = hints.resume_commands(
            tree if tree is not None else hints.default_tree(record["ref"]),
            record["ref"],
            record.get("source"),
        )
        lines += ["", _resolution_hint(res, f"`{cont}`", f"`{abort}`", tree)]
    return "\n".join(lines) + "\n"


# Lines of an "upstream has its own version" diff shown in report.md (report.json
# holds it whole).
DIFF_LINES_SHOWN = 40


def _conflict_side_lines(res: dict) -> list[str]:
    """Each conflict with both sides (upstream's above `=======`, the patch's below)."""
    lines = []
    for path, blocks in res.get("conflict_sides", {}).items():
        shown = [line for block in blocks for line in block.splitlines()]
        lines += [
            "",
            f"`{path}`: upstream's lines (ours, above `=======`) against the patch's (theirs):",
            "",
            "```",
            *shown[:DIFF_LINES_SHOWN],
        ]
        if len(shown) > DIFF_LINES_SHOWN:
            lines.append(f"... {len(shown) - DIFF_LINES_SHOWN} more lines in the tree and report.json")
        lines.append("```")
    return lines


def _upstream_version_lines(res: dict) -> list[str]:
    lines = []
    for own in res.get("upstream_versions", []):
        path = own["file"]
        if own.get("identical"):
            lines.append(
                f"- upstream has its own version of `{path}` (the patch {own['how']}); "
                "it is identical to the patch's"
            )
            continue
        diff = own["diff"].splitlines()
        lines += [
            f"- upstream has its own version of `{path}` (the patch {own['how']}); "
            f"the patch's version against upstream's ({len(diff)} lines"
            + (f", the first {DIFF_LINES_SHOWN} here, all in report.json" if len(diff) > DIFF_LINES_SHOWN else "")
            + "):",
            "",
            "```diff",
            *diff[:DIFF_LINES_SHOWN],
        ]
        if len(diff) > DIFF_LINES_SHOWN:
            lines.append(f"... {len(diff) - DIFF_LINES_SHOWN} more lines in report.json")
        lines += ["```", ""]
    return lines


def _resolution_hint(res: dict, cont: str, abort: str, tree: Optional[Path]) -> str:
    where = f" (`{tree}`)" if tree is not None else ""
    own = [o["file"] for o in res.get("upstream_versions", [])]
    if not own:
        return (
            f"To resolve: edit the conflicted files in the tree{where}, `git add` them, then run "
            f"{cont}; to roll back, {abort}."
        )
    paths = " ".join(own)
    return (
        f"To resolve{where}: upstream now has its own `{'`, `'.join(own)}`. Either keep upstream's "
        f"(`git checkout --ours -- {paths} && git add {paths}`; the rest of the patch stays "
        "staged) or merge the patch's version into it by hand and `git add` it; then run "
        f"{cont}. If keeping upstream's leaves the patch with nothing to commit, the series "
        f"no longer needs it: {abort}, remove it from `patches/series` and apply again. "
        f"To roll back, {abort}."
    )


def write(directory: Path, record: dict, tree: Optional[Path] = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (directory / "report.md").write_text(to_markdown(record, tree))
