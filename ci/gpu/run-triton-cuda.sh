#!/usr/bin/env bash
# The Triton backend of petit_mxfp4 on a CUDA GPU, without SGLang installed:
# tests/gpu (decode exactness, GEMM vs an FP32 reference, two streams, CUDA
# graphs) against the series' petit_mxfp4_triton.py; optionally the GEMM
# benchmark with the same module.
#
#   ci/gpu/run-triton-cuda.sh [--module PATH] [--bench BENCH.py [-- BENCH ARGS]]
#       [--dry-run] [-- PYTEST ARGS]   (pytest args only without --bench)
#
#   --module PATH   petit_mxfp4_triton.py to test (default: $PETIT_TRITON_MODULE,
#                   else build/sglang/v0.5.23/python/sglang/srt/layers/
#                   quantization/petit_mxfp4_triton.py)
#   --bench FILE    after the tests, run FILE (the benchmark) with the module
#                   loaded the same way (tests/gpu/petit_triton_module.py)
#
# Needs python3 with torch (CUDA), triton and pytest; gemlite for the
# benchmark's gemlite column (pip install --no-index --find-links DIR gemlite).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/../lib.sh"

module="${PETIT_TRITON_MODULE:-build/sglang/v0.5.23/python/sglang/srt/layers/quantization/petit_mxfp4_triton.py}"
bench="" pytest_args=() bench_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --module) module="${2:?}"; shift ;;
    --bench) bench="${2:?}"; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift
      if [[ -n "$bench" ]]; then bench_args=("$@"); else pytest_args=("$@"); fi
      break ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

cd "$CI_ROOT"
[[ "$module" = /* ]] || module="$CI_ROOT/$module"
[[ -f "$module" || "$DRY_RUN" == 1 ]] || die "no such module: $module (--module PATH)"
export PETIT_TRITON_MODULE="$module"
log "module: $PETIT_TRITON_MODULE"

rc=0
run python3 -m pytest -q tests/gpu ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
if [[ -n "$bench" ]]; then
  run python3 tests/gpu/petit_triton_module.py "$bench" \
    ${bench_args[@]+"${bench_args[@]}"} || rc=$?
fi
exit "$rc"
