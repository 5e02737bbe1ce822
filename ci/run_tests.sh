#!/usr/bin/env bash
# The project's test suite as CI runs it: `make test` (the README's command),
# plus this directory's own tests (tests/ci) with pytest.
#
#   ci/run_tests.sh [--dry-run] [--no-ci-tests] [-- EXTRA make VARS]
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

ci_tests=1 extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-ci-tests) ci_tests=0 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

cd "$CI_ROOT"
rc=0
run make test ${extra[@]+"${extra[@]}"} || rc=$?
if [[ "$ci_tests" == 1 ]]; then
  run python3 -m pytest -q tests/ci || rc=$?
fi
exit "$rc"
