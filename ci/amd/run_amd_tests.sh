#!/usr/bin/env bash
# AMD GPU tests of the series, host side: start SGLang's ROCm image, run
# ci/amd/in_container.sh inside it, always remove the container.
#
#   ci/amd/run_amd_tests.sh --ref REF [--arch mi300|mi250] [--custom-image IMG]
#       [--rocm-version 720] [--model HF_ID] [--gsm8k-threshold 0.60]
#       [--num-questions 200] [--petit-kernel-spec 'petit-kernel==0.0.5']
#       [--results-dir build/amd-results] [--moe-model openai/gpt-oss-20b]
#       [--moe-gsm8k-threshold 0.30] [--keep-container] [--dry-run]
#
# Image: lmsysorg/sglang:<ref>-rocm<ver>-mi30x for MI300X/MI325X (gfx942).
# MI250 (gfx90a): SGLang publishes no gfx90a image, so --custom-image is REQUIRED
# (an image with a gfx90a-capable PyTorch/ROCm and SGLang at <ref>); the server
# then runs with SGLANG_USE_AITER=0 and --attention-backend triton.
# --arch defaults from the runner name (linux-mi250-gpu-N -> mi250, else mi300).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/../lib.sh"

ref="${SGLANG_REF:-}" arch="" image="" rocm="${PETIT_ROCM_VERSION:-720}"
name="petit_ci_${GITHUB_RUN_ID:-local}_$$" keep=0 pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --ref) ref="${2:?}"; shift ;;
    --arch) arch="${2:?}"; shift ;;
    --custom-image|--image) image="${2:?}"; shift ;;
    --rocm-version) rocm="${2:?}"; shift ;;
    --keep-container) keep=1 ;;
    --model|--gsm8k-threshold|--num-questions|--petit-kernel-spec|--results-dir|--bench-prompts|--moe-model|--moe-gsm8k-threshold)
      pass+=("$1" "${2:?}"); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "$ref" ]] || die "--ref (or SGLANG_REF) is required, e.g. v0.5.23"

if [[ -z "$arch" ]]; then
  host="${RUNNER_NAME:-$(hostname)}"
  case "$host" in
    *mi250*|*mi210*) arch=mi250 ;;
    *) arch=mi300 ;;
  esac
fi
case "$arch" in
  mi300|mi325)
    [[ -n "$image" ]] || image="lmsysorg/sglang:${ref}-rocm${rocm}-mi30x" ;;
  mi250)
    [[ -n "$image" ]] || die "MI250 (gfx90a): SGLang publishes no gfx90a image; pass --custom-image" ;;
  *) die "unknown --arch $arch (mi300, mi325, mi250)" ;;
esac
log "ref=$ref arch=$arch image=$image"

# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  # files the container wrote as root must stay removable by the runner user
  run docker exec "$name" chown -R "$(id -u):$(id -g)" /petit/build || true
  if [[ "$keep" == 0 ]]; then run docker rm -f "$name" || true; fi
}
trap cleanup EXIT

dry=()
if [[ "$DRY_RUN" == 1 ]]; then dry=(--dry-run); fi
"$CI_ROOT/ci/amd/start_container.sh" "${dry[@]}" --image "$image" --name "$name"
rc=0
run docker exec -w /petit \
  -e "GITHUB_RUN_ID=${GITHUB_RUN_ID:-}" -e "GITHUB_SHA=${GITHUB_SHA:-}" \
  -e "PETIT_RUN_URL=${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-}/actions/runs/${GITHUB_RUN_ID:-}" \
  -e "RUNNER_NAME=${RUNNER_NAME:-}" \
  "$name" bash ci/amd/in_container.sh --ref "$ref" --arch "$arch" --image "$image" \
  ${pass[@]+"${pass[@]}"} || rc=$?
exit "$rc"
