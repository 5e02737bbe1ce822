#!/usr/bin/env bash
# The project's test suite as CI runs it: `make test` (the README's command; it
# includes this directory's own tests, tests/ci).
#
#   ci/run_tests.sh [--dry-run] [-- EXTRA make VARS]
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

cd "$CI_ROOT"
run make test ${extra[@]+"${extra[@]}"}
