#!/usr/bin/env bash
# Start SGLang's ROCm image the way SGLang's AMD CI does
# (scripts/ci/amd/amd_ci_start_container.sh upstream): detached, root, GPU devices,
# video group, 32g shm, SYS_PTRACE, seccomp unconfined, host IPC, 65536 nofile.
#
#   ci/amd/start_container.sh --image IMG [--name NAME] [--workspace DIR]
#                             [--hf-cache DIR] [--no-pull] [--dry-run]
#
# The workspace (this repository) is mounted at /petit; the host HF cache (if it
# exists; default /home/runner/sglang-data) at /sgl-data with HF_HOME pointing into it.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/../lib.sh"

image="" name="${PETIT_CONTAINER:-petit_ci}" workspace="$CI_ROOT"
hf_cache="${PETIT_HF_CACHE:-/home/runner/sglang-data}" pull=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --image) image="${2:?}"; shift ;;
    --name) name="${2:?}"; shift ;;
    --workspace) workspace="${2:?}"; shift ;;
    --hf-cache) hf_cache="${2:?}"; shift ;;
    --no-pull) pull=0 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "$image" ]] || die "--image is required"

# GPU devices: Kubernetes-isolated runners list their render nodes here (as upstream).
devices=(--device=/dev/kfd)
if [[ -f /etc/podinfo/gha-render-devices ]]; then
  while read -r -a words; do
    for d in ${words[@]+"${words[@]}"}; do devices+=("--device=$d"); done
  done < /etc/podinfo/gha-render-devices
else
  devices+=(--device=/dev/dri)
fi

mounts=(-v "${workspace}:/petit")
envs=(-e "HF_TOKEN=${HF_TOKEN:-}" -e PETIT_IN_CONTAINER=1)
if [[ -d "$hf_cache" ]]; then
  mounts+=(-v "${hf_cache}:/sgl-data")
  envs+=(-e HF_HOME=/sgl-data/hf-cache)
else
  log "no host cache at $hf_cache; models download into the container"
fi

run docker rm -f "$name" || true  # leftover from an aborted run
if [[ "$pull" == 1 ]]; then run docker pull "$image"; fi
run docker run -d --name "$name" --user root \
  "${devices[@]}" --group-add video \
  --shm-size 32g --ipc=host \
  --cap-add=SYS_PTRACE --security-opt seccomp=unconfined \
  --ulimit nofile=65536:65536 \
  "${mounts[@]}" "${envs[@]}" -w /petit \
  "$image" sleep infinity
run docker exec "$name" git config --global --add safe.directory '*'
