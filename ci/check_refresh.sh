#!/usr/bin/env bash
# Deterministic-refresh check: apply the series, re-export it, and require that
# patches/ is byte-for-byte unchanged (no modified, deleted or new files).
#
#   ci/check_refresh.sh [--dry-run] [--ref REF]...
#
# REF defaults to $SGLANG_REF, else the `@base` release named in patches/series
# (the release the shared patches are exported from). Repeat --ref to check
# several releases (e.g. each variant floor).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

refs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --ref) refs+=("${2:?--ref needs a value}"); shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

cd "$CI_ROOT"
if [[ ${#refs[@]} -eq 0 ]]; then
  r="$(default_ref)"
  [[ -n "$r" ]] || die "no --ref, SGLANG_REF unset and no '@base' in patches/series"
  refs=("$r")
fi

# Refuse to start from a dirty patches/: the check would be meaningless.
if [[ "$DRY_RUN" != 1 && -n "$(git status --porcelain -- patches/)" ]]; then
  git status --short -- patches/ >&2
  die "patches/ has uncommitted changes before the check"
fi

rc=0
for ref in "${refs[@]}"; do
  log "refresh check for $ref"
  run make apply "SGLANG_REF=${ref}"
  run make refresh "SGLANG_REF=${ref}"
  if ! run git diff --exit-code --stat -- patches/; then
    run git --no-pager diff -- patches/ || true
    log "refresh of $ref changed patches/: the committed export is stale or not deterministic"
    rc=1
  fi
  # New or deleted-and-recreated files do not show in `git diff`.
  if [[ "$DRY_RUN" != 1 ]]; then
    untracked="$(git ls-files --others --exclude-standard -- patches/)"
    if [[ -n "$untracked" ]]; then
      printf '%s\n' "$untracked" >&2
      log "refresh of $ref created untracked files in patches/"
      rc=1
    fi
  else
    run git ls-files --others --exclude-standard -- patches/
  fi
done
exit "$rc"
