#!/usr/bin/env bash
# Run the full compatibility matrix and publish its Markdown table.
#
#   ci/matrix.sh [--dry-run] [--refs "v0.5.9 v0.5.23"]
#
# Writes build/matrix.json + build/matrix.md (via `make matrix`), appends the
# table to $GITHUB_STEP_SUMMARY when set, and exits with make's status (non-zero
# when a supported ref fails) AFTER publishing, so the table is always visible.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

refs="${REFS:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --refs) refs="${2:?--refs needs a value}"; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

cd "$CI_ROOT"
args=(matrix)
if [[ -n "$refs" ]]; then args+=("REFS=${refs}"); fi
rc=0
run make "${args[@]}" || rc=$?

md=build/matrix.md
if [[ "$DRY_RUN" == 1 || -f "$md" ]]; then
  publish_summary "$md"
else
  log "make matrix did not write $md"
  [[ "$rc" != 0 ]] || rc=1
fi
exit "$rc"
