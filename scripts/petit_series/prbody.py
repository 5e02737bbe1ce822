"""The PR body of `make pr` (step 4): `scripts/pr_body_template.md` filled with
Markdown rendered from the collected facts. Pure: no git, no files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .prbranch import PrError
from .prstyle import Check
from .pytestlog import failed_tests

TEMPLATE = Path(__file__).resolve().parents[2] / "scripts" / "pr_body_template.md"
OUTPUT_LIMIT = 200  # lines of tool output quoted in the body


def render_template(template: str, values: dict[str, str]) -> str:
    """Replace each `{{name}}`; an unknown or unused name is an error."""
    wanted = set(re.findall(r"\{\{([a-z_]+)\}\}", template))
    missing, unused = wanted - set(values), set(values) - wanted
    if missing or unused:
        raise PrError(
            f"PR body template {TEMPLATE.name}: placeholders without values {sorted(missing)}, "
            f"values without placeholders {sorted(unused)}"
        )
    return re.sub(r"\{\{([a-z_]+)\}\}", lambda m: values[m.group(1)].rstrip("\n"), template)



TODO = "> **TODO (no data)**: "


def _quote_output(text: str, limit: int = OUTPUT_LIMIT) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines in the log)"]
    return "```\n" + "\n".join(lines).replace("```", "` ` `") + "\n```"


def render_modifications(facts: dict) -> str:
    out = [f"Based on SGLang `{facts['ref']}` (`{facts['base'][:12]}`, {facts['source']}).", ""]
    for i, c in enumerate(facts["commits"], 1):
        out += [f"**{i}. {c['subject']}**", ""]
        if c["body"]:
            out += [c["body"], ""]
    if facts["squash"]:
        out += ["(Squashed into one commit.)", ""]
    if facts["bot_authored"]:
        out += [f"> **Warning**: {len(facts['bot_authored'])} of {len(facts['pr_commits'])} commits are authored by "
                f"the tooling's identity ({', '.join(f'`{a}`' for a in sorted(set(facts['bot_authored'])))}); "
                "run `make pr PR_AUTHOR='Name <email>'` to sign them as the person opening the PR.", ""]
    out += ["Files:", ""] + [_file_row(*row) for row in facts["files"]] + [""]
    if facts["dropped"]:
        out += [f"Not in this PR (already in SGLang `{facts['ref']}`):", ""]
        out += [f"- `{d['name']}`: {d['subject']}" for d in facts["dropped"]] + [""]
    if facts["excluded"]:
        out += ["Not in this PR (outside this partial PyPI tree; a git tree has them):", ""]
        out += [f"- `{d['name']}`: {d['subject']} ({', '.join(d['files'])})" for d in facts["excluded"]] + [""]
    return "\n".join(out)


_STATUS = {"A": "new", "M": "modified", "R": "renamed", "C": "copied", "D": "deleted"}


def _file_row(status: str, path: str, source: Optional[str]) -> str:
    word = _STATUS.get(status, status)
    return f"- `{path}` ({word} from `{source}`)" if source else f"- `{path}` ({word})"


def render_compatibility(m: Optional[dict]) -> str:
    """What a reviewer of the base branch needs: the branch is built on the commit
    named above; the release matrix is one line (and the releases it misses)."""
    if m is None:
        return TODO + "`build/matrix.json` is absent; run `make matrix` and `make pr` again."
    if "error" in m:
        return TODO + m["error"]
    rows = m["rows"]
    ok = [r["ref"] for r in rows if r.get("ok")]
    span = f", `{rows[0]['ref']}` to `{rows[-1]['ref']}`" if rows else ""
    out = [
        "This branch is built on the SGLang commit named under Modifications. The same series "
        f"also applies to {len(ok)} of {len(rows)} SGLang releases tried{span} "
        f"(`build/matrix.json`, generated {m['generated']}; `make matrix` for the table)."
    ]
    failed = [r for r in rows if not r.get("ok")]
    if failed:
        out += ["", "It does not apply to:", ""]
        out += [f"- `{r['ref']}`: {r.get('error') or 'failed'}" for r in failed]
    if m["stale"]:
        out += ["", f"> **Note**: the matrix may be stale: {'; '.join(m['stale'])}. Run `make matrix`."]
    return "\n".join(out)


def render_plan(commits: list[dict], plan: Optional[dict]) -> str:
    """The PRs reviewers would ask for (`scripts/pr_plan.json`), in merge order: each
    with the numbers of its commits under Modifications and the tests to run."""
    by_patch: dict[Optional[str], list[int]] = {}
    for i, c in enumerate(commits, 1):
        by_patch.setdefault(c.get("patch"), []).append(i)
    out, placed = [], set()
    for group in (plan or {}).get("prs", []):
        numbers = [i for name in group["patches"] for i in by_patch.get(name, [])]
        placed.update(group["patches"])
        if not numbers:
            continue
        out.append(f"{len(out) + 1}. **{group['title']}** (commits {', '.join(map(str, numbers))}): {group['why']}"
                   + (f" Tests: {', '.join(f'`{t}`' for t in group['tests'])}." if group.get("tests") else ""))
    if not out:
        return "One PR: `scripts/pr_plan.json` assigns none of these commits."
    rest = sorted(i for name, numbers in by_patch.items() if name not in placed for i in numbers)
    if rest:
        out.append(f"{len(out) + 1}. Not in `scripts/pr_plan.json` (commits {', '.join(map(str, rest))}): to be placed.")
    return "\n".join(["If reviewers prefer smaller PRs, this one splits into these, merged in this order:", ""] + out)


def _fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def _amd_source(doc: dict) -> str:
    run = doc.get("run") or {}
    where = f"[CI run]({run['url']})" if run.get("url") else "CI run (no URL)"
    hw = doc["hardware"]
    return (
        f"{hw.get('arch')} ({hw.get('gfx') or 'gfx ?'}), SGLang `{doc['sglang'].get('ref')}`, "
        f"`{doc['model']}`, {doc['petit_kernel'].get('spec')}, {where}, `{doc['_file']}` ({doc['created']}, "
        f"status {doc['status']})"
    )


def render_accuracy(amd: dict, tests: Check) -> str:
    out = [f"CPU (no GPU): {tests.summary}."]
    out += [f"- `{x}`" for x in failed_tests(tests.output)] + [""]
    rows = [d for d in amd["latest"] if d.get("gsm8k")]
    if not rows:
        out.append(TODO + "no AMD GPU GSM8K result (`build/amd-results/*.json` absent or without `gsm8k`). "
                   "Run the `amd-gpu` workflow, download its `amd-results-<arch>` artifact into "
                   "`build/amd-results/`, then `make pr` again.")
    else:
        out += ["`python3 -m sglang.test.few_shot_gsm8k`, from the AMD GPU job:", "",
                "| GPU | questions | accuracy | invalid | threshold | passed |", "|---|---|---|---|---|---|"]
        for d in rows:
            g = d["gsm8k"]
            out.append(f"| {d['hardware'].get('arch')} | {_fmt(g.get('num_questions'))} | {_fmt(g.get('accuracy'), '.3f')} "
                       f"| {_fmt(g.get('invalid'), '.3f')} | {_fmt(g.get('threshold'))} | {g.get('passed')} |")
        out += [""] + [f"- {_amd_source(d)}" for d in rows]
    for d in amd["latest"]:
        lt = d.get("layer_tests")
        if lt:
            out.append(f"- layer tests on {d['hardware'].get('arch')}: {lt.get('passed')} passed, {lt.get('failed')} failed, "
                       f"{lt.get('errors')} errors, {lt.get('skipped')} skipped")
    out += _invalid_amd(amd)
    return "\n".join(out)


def render_speed(amd: dict) -> str:
    rows = [d for d in amd["latest"] if d.get("throughput")]
    if not rows:
        return TODO + ("no AMD GPU throughput result (`build/amd-results/*.json` absent or without "
                       "`throughput`); run the `amd-gpu` workflow and `make pr` again.")
    out = ["`python3 -m sglang.bench_serving`, from the AMD GPU job:", "",
           "| GPU | args | req/s | output tok/s | total tok/s | median TTFT ms | median ITL ms | median E2E ms |",
           "|---|---|---|---|---|---|---|---|"]
    for d in rows:
        t = d["throughput"]
        out.append(f"| {d['hardware'].get('arch')} | `{t.get('args')}` | {_fmt(t.get('request_throughput'), '.2f')} "
                   f"| {_fmt(t.get('output_throughput'), '.1f')} | {_fmt(t.get('total_throughput'), '.1f')} "
                   f"| {_fmt(t.get('median_ttft_ms'), '.1f')} | {_fmt(t.get('median_itl_ms'), '.1f')} "
                   f"| {_fmt(t.get('median_e2e_latency_ms'), '.1f')} |")
    out += [""] + [f"- {_amd_source(d)}" for d in rows]
    return "\n".join(out + _invalid_amd(amd))


def _invalid_amd(amd: dict) -> list[str]:
    return [f"- ignored `{i['file']}`: fails `ci/amd/results.py validate` ({i['why']})" for i in amd["invalid"]]


def _box(done: bool) -> str:
    return "[x]" if done else "[ ]"


def render_checklist(facts: dict, style: Check, amd: dict) -> str:
    paths = [p for _, p, _ in facts["files"]]
    has_tests = any(p.startswith("test/") for p in paths)
    has_docs = any(p.startswith("docs/") for p in paths)
    bench = any(d.get("gsm8k") and d.get("throughput") and d["status"] == "pass" for d in amd["latest"])
    return "\n".join([
        f"- {_box(style.status == 'pass')} Format your code according to the Code Formatting with "
        f"Pre-Commit guide. (SGLang's pre-commit tools on the changed files: {style.summary})",
        f"- {_box(has_tests)} Add unit tests according to the Run and Add Unit Tests guide."
        + ("" if has_tests else " (no `test/` files on this branch)"),
        f"- {_box(has_docs)} Update documentation according to the Write Documentations guide."
        + ("" if has_docs else " (no `docs/` files on this branch)"),
        f"- {_box(bench)} Provide accuracy and speed benchmark results according to the Test the "
        "Accuracy and Benchmark the Speed guides." + ("" if bench else " (no passing AMD GPU results yet)"),
        "- [ ] Follow the SGLang code style guidance. (for the author to confirm)",
    ])


def render_style_details(style: Check) -> str:
    if style.status != "fail" or not style.output:
        return ""  # upstream-only findings stay in build/pr/style.txt
    return "\n".join(["", "", "<details><summary>pre-commit tools output</summary>", "",
                      _quote_output(style.output), "", "</details>"])


def render_body(facts: dict, style: Check, tests: Check, matrix_facts: Optional[dict], amd: dict, template: str,
                plan: Optional[dict] = None) -> str:
    return render_template(template, {
        "modifications": render_modifications(facts),
        "plan": render_plan(facts["commits"], plan),
        "compatibility": render_compatibility(matrix_facts),
        "accuracy": render_accuracy(amd, tests),
        "speed": render_speed(amd),
        "checklist": render_checklist(facts, style, amd) + render_style_details(style),
        "generated": f"series digest {facts['digest'][:12]}, SGLang {facts['ref']} {facts['base'][:12]}",
    })
