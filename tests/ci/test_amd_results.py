"""ci/amd/results.py: parsing real tool output formats, thresholds, the schema."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "ci" / "amd" / "results.py"

GSM8K_LOG = """100%|██████████| 200/200
Accuracy: 0.785
Invalid: 0.000
Latency: 41.207 s
Output throughput: 1032.556 token/s
"""
BENCH = {"backend": "sglang", "completed": 64, "request_throughput": 3.1, "input_throughput": 3174.4,
         "output_throughput": 793.6, "total_throughput": 3968.0, "median_ttft_ms": 120.5,
         "median_itl_ms": 18.2, "median_e2e_latency_ms": 4790.1}
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="0" skipped="{skipped}" tests="12"></testsuite></testsuites>"""


def assemble(tmp_path, *, acc_log=GSM8K_LOG, skipped=0, threshold="0.6", extra=()):
    (tmp_path / "gsm8k.log").write_text(acc_log)
    (tmp_path / "bench.jsonl").write_text(json.dumps({"old": 1}) + "\n" + json.dumps(BENCH) + "\n")
    (tmp_path / "junit.xml").write_text(JUNIT.format(skipped=skipped))
    (tmp_path / "gfx.txt").write_text("gfx942\n")
    out = tmp_path / "mi300-v0.5.23.json"
    p = subprocess.run([sys.executable, str(RESULTS), "assemble", "--out", str(out),
                        "--ref", "v0.5.23", "--arch", "mi300", "--model", "m",
                        "--threshold", threshold, "--gsm8k-log", str(tmp_path / "gsm8k.log"),
                        "--bench-jsonl", str(tmp_path / "bench.jsonl"),
                        "--junit", str(tmp_path / "junit.xml"), "--gfx-file", str(tmp_path / "gfx.txt"),
                        "--server-args=--model-path m --quantization petit_mxfp4", *extra],
                       text=True, capture_output=True)
    return p, json.loads(out.read_text())


def validate(path):
    return subprocess.run([sys.executable, str(RESULTS), "validate", str(path)],
                          text=True, capture_output=True).returncode


def test_pass(tmp_path):
    p, doc = assemble(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert doc["status"] == "pass" and doc["failures"] == []
    assert doc["gsm8k"]["accuracy"] == 0.785 and doc["gsm8k"]["passed"] is True
    assert doc["throughput"]["output_throughput"] == 793.6
    assert doc["layer_tests"]["passed"] == 12
    assert doc["hardware"]["gfx"] == "gfx942"
    assert doc["server_args"].startswith("--model-path m")
    assert validate(tmp_path / "mi300-v0.5.23.json") == 0


def test_below_threshold_fails(tmp_path):
    p, doc = assemble(tmp_path, threshold="0.8")
    assert p.returncode == 1 and doc["status"] == "fail"
    assert any("0.785 < threshold 0.8" in f for f in doc["failures"])


def test_skips_on_gpu_runner_fail(tmp_path):
    p, doc = assemble(tmp_path, skipped=3)
    assert p.returncode == 1 and any("skipped" in f for f in doc["failures"])
    p, doc = assemble(tmp_path, skipped=3, extra=("--allow-skips",))
    assert p.returncode == 0


def test_missing_outputs_fail_not_pass(tmp_path):
    p, doc = assemble(tmp_path, acc_log="Traceback: server died\n",
                      extra=("--failure", "server did not become healthy"))
    assert p.returncode == 1
    assert doc["gsm8k"] is None
    assert "server did not become healthy" in doc["failures"]
    assert validate(tmp_path / "mi300-v0.5.23.json") == 0


def test_validate_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "petit-amd-result/v1", "status": "pass"}))
    assert validate(bad) == 1
