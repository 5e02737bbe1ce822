# shellcheck shell=bash
# Shared helpers for the bash scripts in ci/. Source it; do not execute it.
#
#   DRY_RUN=1   every command passed to `run` is printed as `+ cmd args...`
#               (shell-quoted) and NOT executed. Scripts set it from --dry-run.

DRY_RUN="${DRY_RUN:-0}"

# Repository root (ci/..), independent of the caller's cwd.
CI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CI_ROOT

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Print a command the way it would be typed, then run it unless dry-running.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" == 1 ]]; then
    return 0
  fi
  "$@"
}

# Like run, but the single argument is a shell snippet (pipes, redirections).
run_sh() {
  printf '+ %s\n' "$1"
  if [[ "$DRY_RUN" == 1 ]]; then
    return 0
  fi
  bash -c "$1"
}

# `@base <version>` from patches/series: the release the shared patches were
# exported from. Prints "v<version>" or nothing.
series_base_ref() {
  local series="${CI_ROOT}/patches/series" v
  [[ -f "$series" ]] || return 0
  v="$(sed -n 's/^[[:space:]]*@base[[:space:]]\{1,\}v\{0,1\}\([0-9][^[:space:]]*\).*/\1/p' "$series" | head -n1)"
  [[ -n "$v" ]] && printf 'v%s\n' "$v"
  return 0
}

# Default ref for single-ref CI steps: $SGLANG_REF, else @base of the series.
default_ref() {
  if [[ -n "${SGLANG_REF:-}" ]]; then
    printf '%s\n' "$SGLANG_REF"
  else
    series_base_ref
  fi
}

# Append a file to the GitHub step summary when running in Actions.
publish_summary() {
  local file="$1"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    run_sh "cat $(printf '%q' "$file") >> \"\$GITHUB_STEP_SUMMARY\""
  else
    log "GITHUB_STEP_SUMMARY unset; summary left in $file"
  fi
}
