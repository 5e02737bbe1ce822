#!/usr/bin/env python3
"""Assemble and validate the AMD GPU job's result JSON (schema petit-amd-result/v1).

  results.py assemble --out build/amd-results/mi300-v0.5.23.json [inputs...]
      parse the layer-test JUnit XML, the few_shot_gsm8k log and the bench_serving
      JSONL, apply the GSM8K threshold, write the JSON; exit 1 if status is "fail".
  results.py validate FILE...
      check files against the schema (used by tests and by the PR-preparation step).
  results.py --dry-run ...  print what would be read and written; write nothing.

Schema (all keys present; a section is null when its step did not produce output):
  schema        "petit-amd-result/v1"
  status        "pass" | "fail";   failures: [str]  (why it failed; empty on pass)
  created       ISO-8601 UTC
  run           {url, sha, runner}
  hardware      {arch: "mi300"|"mi325"|"mi250", gfx: "gfx942"|"gfx90a"|null}
  sglang        {ref, image, checkout, apply: "ok"|"failed(rc=N)"}
  petit_kernel  {spec, status}
  model, quantization ("petit_mxfp4"), server_args: str
  layer_tests   {status, tests, passed, failed, errors, skipped, junit} | null
  gsm8k         {num_questions, accuracy, invalid, latency_s, output_throughput,
                 threshold, passed} | null
  throughput    {tool: "sglang.bench_serving", args, completed, request_throughput,
                 input_throughput, output_throughput, total_throughput,
                 median_ttft_ms, median_itl_ms, median_e2e_latency_ms} | null
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from petit_series import pytestlog  # noqa: E402

SCHEMA = "petit-amd-result/v1"
TOP_KEYS = {
    "schema": str, "status": str, "failures": list, "created": str, "run": dict,
    "hardware": dict, "sglang": dict, "petit_kernel": dict, "model": str,
    "quantization": str, "server_args": str, "layer_tests": (dict, type(None)),
    "gsm8k": (dict, type(None)), "throughput": (dict, type(None)),
}
GSM8K_KEYS = ("num_questions", "accuracy", "invalid", "latency_s", "output_throughput",
              "threshold", "passed")
BENCH_KEYS = ("completed", "request_throughput", "input_throughput", "output_throughput",
              "total_throughput", "median_ttft_ms", "median_itl_ms", "median_e2e_latency_ms")
_GSM8K_RE = {
    "accuracy": re.compile(r"^Accuracy:\s*([0-9.]+)", re.MULTILINE),
    "invalid": re.compile(r"^Invalid:\s*([0-9.]+)", re.MULTILINE),
    "latency_s": re.compile(r"^Latency:\s*([0-9.]+)\s*s", re.MULTILINE),
    "output_throughput": re.compile(r"^Output throughput:\s*([0-9.]+)", re.MULTILINE),
}


def parse_gsm8k(text: str) -> dict | None:
    """Numbers printed by `python3 -m sglang.test.few_shot_gsm8k` (last run wins)."""
    out: dict[str, Any] = {}
    for key, rx in _GSM8K_RE.items():
        found = rx.findall(text)
        out[key] = float(found[-1]) if found else None
    return out if out["accuracy"] is not None else None


def parse_bench(text: str) -> dict | None:
    """The last JSON line `sglang.bench_serving --output-file` appended."""
    for line in reversed(text.strip().splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "output_throughput" in row:
            return {k: row.get(k) for k in BENCH_KEYS}
    return None


def parse_junit(text: str) -> dict:
    """The layer tests' counts in this schema's names (`failed`, not JUnit's `failures`)."""
    counts = pytestlog.junit_counts(text)
    counts["failed"] = counts.pop("failures")
    return counts


def _read(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None


def assemble(a: argparse.Namespace) -> dict:
    failures: list[str] = list(a.failure or [])
    if a.apply_status != "ok":
        failures.append(f"apply/install of the series: {a.apply_status}")

    layer = None
    junit = _read(a.junit)
    if junit:
        try:
            layer = {"status": a.layer_status, "junit": a.junit, **parse_junit(junit)}
        except ET.ParseError as e:
            failures.append(f"layer tests: unreadable JUnit XML ({e})")
    if layer is None:
        failures.append("layer tests: no JUnit XML (did pytest run?)")
    else:
        if layer["failed"] or layer["errors"] or a.layer_status != "ok":
            failures.append(f"layer tests: {layer['failed']} failed, {layer['errors']} errors")
        if layer["skipped"] and not a.allow_skips:
            failures.append(f"layer tests: {layer['skipped']} skipped on a GPU runner "
                            "(ROCm or petit_kernel not detected?)")
        if layer["tests"] == 0:
            failures.append("layer tests: none collected")

    gsm8k = None
    g = parse_gsm8k(_read(a.gsm8k_log) or "")
    if g is None:
        failures.append("gsm8k: no 'Accuracy:' in the few_shot_gsm8k output")
    else:
        passed = g["accuracy"] >= a.threshold
        gsm8k = {"num_questions": a.num_questions, **g, "threshold": a.threshold, "passed": passed}
        if not passed:
            failures.append(f"gsm8k: accuracy {g['accuracy']:.3f} < threshold {a.threshold}")

    throughput = None
    b = parse_bench(_read(a.bench_jsonl) or "")
    if b is None:
        failures.append("throughput: no result line from sglang.bench_serving")
    else:
        throughput = {"tool": "sglang.bench_serving", "args": a.bench_args, **b}

    gfx = (_read(a.gfx_file) or "").strip() or None
    return {
        "schema": SCHEMA,
        "status": "fail" if failures else "pass",
        "failures": failures,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {"url": os.environ.get("PETIT_RUN_URL"), "sha": os.environ.get("GITHUB_SHA"),
                "runner": os.environ.get("RUNNER_NAME")},
        "hardware": {"arch": a.arch, "gfx": gfx},
        "sglang": {"ref": a.ref, "image": a.image, "checkout": a.checkout, "apply": a.apply_status},
        "petit_kernel": {"spec": a.petit_kernel_spec, "status": a.kernel_status},
        "model": a.model,
        "quantization": "petit_mxfp4",
        "server_args": a.server_args,
        "layer_tests": layer,
        "gsm8k": gsm8k,
        "throughput": throughput,
    }


def validate(doc: Any) -> list[str]:
    """Schema violations of one result document (empty list = valid)."""
    errs: list[str] = []
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    for key, typ in TOP_KEYS.items():
        if key not in doc:
            errs.append(f"missing key {key}")
        elif not isinstance(doc[key], typ):
            errs.append(f"{key}: wrong type {type(doc[key]).__name__}")
    if doc.get("schema") != SCHEMA:
        errs.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    if doc.get("status") not in ("pass", "fail"):
        errs.append("status must be 'pass' or 'fail'")
    if doc.get("status") == "pass" and doc.get("failures"):
        errs.append("status 'pass' with failures")
    if doc.get("status") == "fail" and not doc.get("failures"):
        errs.append("status 'fail' without failures")
    for section, keys in (("gsm8k", GSM8K_KEYS), ("throughput", BENCH_KEYS)):
        if isinstance(doc.get(section), dict):
            errs += [f"{section}.{k} missing" for k in keys if k not in doc[section]]
    return errs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("assemble")
    s.add_argument("--out", required=True)
    for opt in ("ref", "arch", "model"):
        s.add_argument(f"--{opt}", required=True)
    for opt in ("image", "checkout", "petit-kernel-spec", "gfx-file", "junit", "gsm8k-log",
                "bench-jsonl", "server-args", "bench-args"):
        s.add_argument(f"--{opt}", default="")
    for opt in ("apply-status", "kernel-status", "layer-status"):
        s.add_argument(f"--{opt}", default="ok")
    s.add_argument("--threshold", type=float, default=0.60)
    s.add_argument("--num-questions", type=int, default=200)
    s.add_argument("--allow-skips", action="store_true")
    s.add_argument("--failure", action="append", help="extra failure reason (repeatable)")
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+")
    for sp in (s, v):
        sp.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.cmd == "validate":
        bad = 0
        for f in a.files:
            if a.dry_run:
                print(f"+ validate {f}")
                continue
            errs = validate(json.loads(Path(f).read_text()))
            for e in errs:
                print(f"{f}: {e}", file=sys.stderr)
            bad += bool(errs)
        return 1 if bad else 0

    if a.dry_run:
        print(f"+ read {a.junit} {a.gsm8k_log} {a.bench_jsonl}; write {a.out}")
        return 0
    doc = assemble(a)
    errs = validate(doc)
    assert not errs, errs
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"{a.out}: {doc['status']}" + "".join(f"\n  - {f}" for f in doc["failures"]))
    return 0 if doc["status"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
