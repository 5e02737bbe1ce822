#!/usr/bin/env bash
# AMD GPU tests, inside SGLang's ROCm container (started by run_amd_tests.sh; the
# repository is the cwd). Steps, each recorded in the result JSON:
#   1. apply the series to the image's SGLang checkout (SGLANG_SOURCE=<path>) and
#      install the patched tree over the image's sglang (editable, --no-deps)
#   2. install petit-kernel (>= 0.0.3 has MXFP4; default pin below) and check its API
#   3. layer tests (tests/series) against the real kernel: PETIT_REQUIRE_ROCM=1 and
#      no skips allowed (a skip here means the GPU or kernel was not found)
#   3b. the Triton backend's real-GPU tests (tests/gpu: decode exactness, GEMM, two
#      streams, CUDA graphs, the custom op) on this GPU, against the patched tree
#   4. GEMM benchmark (informational): the series' Triton backend against Petit
#      and hipBLASLt on the Llama shapes -> <results-dir>/<tag>/gemm_bench.txt
#   5. serve MODEL with --quantization petit_mxfp4, GSM8K (few_shot_gsm8k) with a
#      threshold, throughput with sglang.bench_serving
#   5b. serve MOE_MODEL (gpt-oss, MXFP4 MoE through Petit's fused MoE) the same way:
#      weight memory from the server log, GSM8K with its own threshold (skipped
#      with --moe-model '')
#   6. write build/amd-results/<arch>-<ref>.json (schema: ci/README.md)
#
#   ci/amd/in_container.sh --ref REF --arch mi300|mi250 [--image IMG]
#       [--sglang-checkout /sgl-workspace/sglang] [--model HF_ID]
#       [--gsm8k-threshold 0.60] [--num-questions 200] [--bench-prompts 64]
#       [--moe-model openai/gpt-oss-20b] [--moe-gsm8k-threshold 0.30]
#       [--petit-kernel-spec 'petit-kernel==0.0.5'] [--results-dir build/amd-results]
#       [--port 30000] [--server-timeout 1800] [--dry-run]
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/../lib.sh"

ref="${SGLANG_REF:-}" arch=mi300 image="${PETIT_IMAGE:-}"
checkout="${SGLANG_CHECKOUT:-/sgl-workspace/sglang}"
model="${PETIT_MODEL:-amd/Llama-3.1-8B-Instruct-MXFP4-W4A4-MLCAL-C1000-GPTQ}"
threshold="${PETIT_GSM8K_THRESHOLD:-0.60}" nq=200 prompts=64
petit_spec="${PETIT_KERNEL_SPEC:-petit-kernel==0.0.5}"
moe_model="${PETIT_MOE_MODEL-openai/gpt-oss-20b}"
moe_threshold="${PETIT_MOE_GSM8K_THRESHOLD:-0.30}"
results="build/amd-results" port=30000 server_timeout=1800
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --ref) ref="${2:?}"; shift ;;
    --arch) arch="${2:?}"; shift ;;
    --image) image="${2:?}"; shift ;;
    --sglang-checkout) checkout="${2:?}"; shift ;;
    --model) model="${2:?}"; shift ;;
    --gsm8k-threshold) threshold="${2:?}"; shift ;;
    --num-questions) nq="${2:?}"; shift ;;
    --bench-prompts) prompts="${2:?}"; shift ;;
    --petit-kernel-spec) petit_spec="${2:?}"; shift ;;
    --moe-model) moe_model="${2?}"; shift ;;
    --moe-gsm8k-threshold) moe_threshold="${2:?}"; shift ;;
    --results-dir) results="${2:?}"; shift ;;
    --port) port="${2:?}"; shift ;;
    --server-timeout) server_timeout="${2:?}"; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "$ref" ]] || die "--ref is required"
cd "$CI_ROOT"

tag="${arch}-${ref//\//-}"
out="${results}/${tag}"
run mkdir -p "$out"
failures=()
status_of() { if [[ "$1" == 0 ]]; then echo ok; else echo "failed(rc=$1)"; fi; }

# Server flags per architecture. gfx90a: AITER kernels are CDNA3+, so use triton.
server_env=(SGLANG_USE_AITER=1)
server_extra=()
if [[ "$arch" == mi250 ]]; then
  server_env=(SGLANG_USE_AITER=0)
  server_extra=(--attention-backend triton)
fi

# --- 0. what hardware is this ------------------------------------------------------
run_sh "rocminfo | grep -o -m1 'gfx[0-9a-f]*' > $out/gfx.txt || true"

# --- 1. apply + install the patched SGLang --------------------------------------------
rc=0
run make apply "SGLANG_REF=${ref}" "SGLANG_SOURCE=${checkout}" || rc=$?
if [[ "$rc" == 0 ]]; then
  # The series was applied in the image's own checkout (a new branch there).
  run python3 -m pip install --no-deps --no-build-isolation -e "${checkout}/python" || rc=$?
fi
apply_status="$(status_of "$rc")"
[[ "$rc" == 0 ]] || failures+=("apply/install: $apply_status")

# --- 2. petit-kernel ----------------------------------------------------------------
rc=0
run python3 -m pip install "$petit_spec" || rc=$?
run python3 -c 'import petit_kernel as p; assert hasattr(p, "mul_mxfp4_a16"), "petit_kernel without MXFP4 (need >= 0.0.3)"; print(p.__file__)' || rc=$?
kernel_status="$(status_of "$rc")"
[[ "$rc" == 0 ]] || failures+=("petit-kernel: $kernel_status")

# --- 3. layer tests on the real kernel ------------------------------------------------
rc=0
run env PETIT_REQUIRE_ROCM=1 PYTHONPATH=scripts python3 -m pytest tests/series -v -rs \
  "--junitxml=${out}/layer-tests.xml" || rc=$?
layer_status="$(status_of "$rc")"

# --- 3b. the Triton backend on this GPU (its ROCm decode path, streams, graphs) ------
rc=0
run env "PETIT_TRITON_MODULE=${checkout}/python/sglang/srt/layers/quantization/petit_mxfp4_triton.py" \
  python3 -m pytest tests/gpu -v -rs "--junitxml=${out}/triton-gpu-tests.xml" || rc=$?
[[ "$rc" == 0 ]] || failures+=("Triton backend GPU tests (tests/gpu): $(status_of "$rc"), see triton-gpu-tests.xml")

# --- 4. GEMM benchmark: Triton backend vs Petit vs hipBLASLt (before the server) -----
run_sh "python3 ${checkout}/benchmark/kernels/quantization/bench_petit_mxfp4_triton.py --tp 1 8 --m 1 16 256 4096 2>&1 | tee ${out}/gemm_bench.txt" || true

# --- 5. serve, GSM8K, throughput ------------------------------------------------------
server_args=(--model-path "$model" --quantization petit_mxfp4 --host 127.0.0.1 --port "$port"
  --tp 1 --trust-remote-code --mem-fraction-static 0.8 ${server_extra[@]+"${server_extra[@]}"})
gsm8k_args=(--num-questions "$nq" --parallel "$nq" --host http://127.0.0.1 --port "$port")
bench_args=(--backend sglang --host 127.0.0.1 --port "$port" --dataset-name random-ids
  --random-input-len 1024 --random-output-len 256 --random-range-ratio 1.0
  --num-prompts "$prompts" --max-concurrency 16 --seed 1 --output-file "${out}/bench.jsonl")
serve_rc=0
server_cmd=(env "${server_env[@]}" python3 -m sglang.launch_server "${server_args[@]}")
printf '+'; printf ' %q' "${server_cmd[@]}"; printf ' >%q 2>&1 &\n' "${out}/server.log"
server_pid=""
if [[ "$DRY_RUN" != 1 ]]; then
  "${server_cmd[@]}" >"${out}/server.log" 2>&1 &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null || true' EXIT
  up=0
  for _ in $(seq 1 $((server_timeout / 10))); do
    if curl -sf "http://127.0.0.1:${port}/health_generate" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 10
  done
  if [[ "$up" != 1 ]]; then
    tail -n 80 "${out}/server.log" >&2 || true
    serve_rc=1
  fi
else
  run curl -sf "http://127.0.0.1:${port}/health_generate"
fi
if [[ "$serve_rc" == 0 ]]; then
  run_sh "python3 -m sglang.test.few_shot_gsm8k ${gsm8k_args[*]} 2>&1 | tee ${out}/gsm8k.log" || true
  run python3 -m sglang.bench_serving "${bench_args[@]}" || true
else
  failures+=("server did not become healthy within ${server_timeout}s (see server.log)")
fi
if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi

# --- 5b. gpt-oss: MXFP4 MoE through Petit's fused MoE -----------------------------------
# The weight memory is SGLang's "Load weight end ... mem usage" line; the GSM8K
# threshold is a smoke test (broken expert kernels score near 0).
if [[ -n "$moe_model" ]]; then
  moe_out="${out}/moe"
  run mkdir -p "$moe_out"
  moe_args=(--model-path "$moe_model" --quantization petit_mxfp4 --host 127.0.0.1 --port "$port"
    --tp 1 --mem-fraction-static 0.8 ${server_extra[@]+"${server_extra[@]}"})
  moe_cmd=(env "${server_env[@]}" python3 -m sglang.launch_server "${moe_args[@]}")
  printf '+'; printf ' %q' "${moe_cmd[@]}"; printf ' >%q 2>&1 &\n' "${moe_out}/server.log"
  moe_up=0
  if [[ "$DRY_RUN" != 1 ]]; then
    "${moe_cmd[@]}" >"${moe_out}/server.log" 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 1 $((server_timeout / 10))); do
      if curl -sf "http://127.0.0.1:${port}/health_generate" >/dev/null 2>&1; then moe_up=1; break; fi
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 10
    done
    [[ "$moe_up" == 1 ]] || tail -n 80 "${moe_out}/server.log" >&2 || true
  else
    moe_up=1
  fi
  run_sh "grep -m1 'Load weight end' ${moe_out}/server.log | tee ${moe_out}/weight_memory.txt" || true
  if [[ "$moe_up" == 1 ]]; then
    run_sh "python3 -m sglang.test.few_shot_gsm8k ${gsm8k_args[*]} 2>&1 | tee ${moe_out}/gsm8k.log" || true
    moe_acc="$(grep -m1 -oE '^Accuracy: *[0-9.]+' "${moe_out}/gsm8k.log" 2>/dev/null | grep -oE '[0-9.]+$' || true)"
    if [[ "$DRY_RUN" != 1 ]] && ! python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= float(sys.argv[2]))' "${moe_acc:-0}" "$moe_threshold"; then
      failures+=("gpt-oss ${moe_model}: GSM8K accuracy ${moe_acc:-missing} < ${moe_threshold}")
    fi
  else
    failures+=("gpt-oss ${moe_model}: server did not become healthy within ${server_timeout}s (see moe/server.log)")
  fi
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
fi

# --- 6. result JSON (exit status = pass/fail) -----------------------------------------
extra_fail=()
for f in ${failures[@]+"${failures[@]}"}; do extra_fail+=(--failure "$f"); done
run python3 ci/amd/results.py assemble --out "${results}/${tag}.json" \
  --ref "$ref" --arch "$arch" --image "$image" --checkout "$checkout" \
  --model "$model" --petit-kernel-spec "$petit_spec" --threshold "$threshold" \
  --num-questions "$nq" --gfx-file "${out}/gfx.txt" \
  --junit "${out}/layer-tests.xml" --layer-status "$layer_status" \
  --gsm8k-log "${out}/gsm8k.log" --bench-jsonl "${out}/bench.jsonl" \
  "--server-args=${server_args[*]}" "--bench-args=${bench_args[*]}" \
  --apply-status "$apply_status" --kernel-status "$kernel_status" \
  ${extra_fail[@]+"${extra_fail[@]}"}
