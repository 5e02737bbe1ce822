#!/usr/bin/env bash
# Lint everything with pre-commit (all hooks are `repo: local`, pinned from PyPI,
# so this works without GitHub access and runs the same here and in CI).
#
#   ci/lint.sh [--dry-run] [--patched [TREE]] [-- EXTRA pre-commit ARGS]
#
#   (default)        pre-commit run --all-files
#   --patched [TREE] also run the manual-stage hook `sglang-style-patched`
#                    (ci/style_patched.sh: isort/black/codespell/ruff F401, SGLang's
#                    pins) on the .py files the series adds or modifies in TREE
#                    (default build/sglang/<@base of patches/series>).
#   --only-patched   run only that hook.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

patched=0 only_patched=0 tree="" extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --patched) patched=1
      if [[ $# -gt 1 && "$2" != -* ]]; then tree="$2"; shift; fi ;;
    --only-patched) patched=1; only_patched=1
      if [[ $# -gt 1 && "$2" != -* ]]; then tree="$2"; shift; fi ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

cd "$CI_ROOT"
command -v pre-commit >/dev/null 2>&1 || [[ "$DRY_RUN" == 1 ]] \
  || die "pre-commit not found; pip install -r ci/requirements.txt"

# no-commit-to-branch style hooks do not exist here; SKIP is honoured if set.
export PRE_COMMIT_COLOR="${PRE_COMMIT_COLOR:-always}"
rc=0
if [[ "$only_patched" == 0 ]]; then
  run pre-commit run --all-files --show-diff-on-failure ${extra[@]+"${extra[@]}"} || rc=$?
fi
if [[ "$patched" == 1 ]]; then
  if [[ -n "$tree" ]]; then export PETIT_STYLE_TREE="$tree"; fi
  run pre-commit run --hook-stage manual sglang-style-patched --all-files \
    ${extra[@]+"${extra[@]}"} || rc=$?
fi
exit "$rc"
