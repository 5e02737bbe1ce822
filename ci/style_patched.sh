#!/usr/bin/env bash
# Run SGLang's own style tools on the Python files the patch series ADDS or
# MODIFIES, inside an applied tree (the .py files only exist there).
#
#   ci/style_patched.sh [TREE] [--base REV] [--apply] [--any-version] [--dry-run]
#
#   TREE           applied tree (git repo), default $PETIT_STYLE_TREE, else
#                  build/sglang/<ref> with ref = $SGLANG_REF or `@base` of patches/series
#   --base REV     upstream commit the series sits on (default refs/petit/upstream,
#                  then the tag petit-base); files = git diff --name-only REV..HEAD -- '*.py'
#   --apply        run `make apply SGLANG_REF=<ref>` first if TREE does not exist
#                  (or PETIT_STYLE_APPLY=1: the pre-commit hook cannot pass flags)
#   --any-version  do not insist on SGLang's pins (isort 5.13.2, black 24.10.0,
#                  codespell 2.4.1); normally a mismatch is an error
#
# Tools (as SGLang's .pre-commit-config.yaml runs them, from the tree's root so
# the tree's own config files apply): isort --check-only, black --check,
# codespell (with python/pyproject.toml when present), ruff --select F401.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

tree="${PETIT_STYLE_TREE:-}" base="" do_apply="${PETIT_STYLE_APPLY:-0}" any_version=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --base) base="${2:?--base needs a revision}"; shift ;;
    --apply) do_apply=1 ;;
    --any-version) any_version=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown argument: $1 (see --help)" ;;
    *) tree="$1" ;;
  esac
  shift
done

cd "$CI_ROOT"
ref="$(default_ref)"
if [[ -z "$tree" ]]; then
  [[ -n "$ref" ]] || die "no TREE given, SGLANG_REF unset and no '@base' in patches/series"
  tree="build/sglang/${ref}"
fi

if [[ ! -d "$tree" ]]; then
  if [[ "$do_apply" == 1 ]]; then
    [[ -n "$ref" ]] || die "--apply needs SGLANG_REF or '@base' in patches/series"
    run make apply "SGLANG_REF=${ref}"
  elif [[ "$DRY_RUN" != 1 ]]; then
    die "tree $tree does not exist (run 'make apply SGLANG_REF=...' or pass --apply)"
  fi
fi

# --- pinned tool versions (SGLang's .pre-commit-config.yaml) -------------------
want_isort=5.13.2 want_black=24.10.0 want_codespell=2.4.1
check_version() {  # name wanted actual
  if [[ "$3" != *"$2"* ]]; then
    if [[ "$any_version" == 1 ]]; then
      log "warning: $1 is '$3', SGLang pins $2"
    else
      die "$1 is '$3' but SGLang pins $2 (install via pre-commit hook env or pass --any-version)"
    fi
  fi
}
if [[ "$DRY_RUN" != 1 ]]; then
  for t in isort black codespell ruff; do
    command -v "$t" >/dev/null 2>&1 || die "$t not on PATH (run via: ci/lint.sh --only-patched)"
  done
  check_version isort "$want_isort" "$(isort --version-number)"
  check_version black "$want_black" "$(black --version | head -n1)"
  check_version codespell "$want_codespell" "$(codespell --version)"
fi

# --- which files ---------------------------------------------------------------
resolve_base() {
  local cand
  for cand in "$@"; do
    if git -C "$tree" rev-parse --verify --quiet "${cand}^{commit}" >/dev/null; then
      printf '%s\n' "$cand"; return 0
    fi
  done
  return 1
}
if [[ "$DRY_RUN" == 1 ]]; then
  base="${base:-refs/petit/upstream}"
  run git -C "$tree" diff --name-only --diff-filter=AM "${base}..HEAD" -- '*.py'
  files=("<changed .py files>")
  added=("<added .py files>")
else
  if [[ -n "$base" ]]; then
    resolve_base "$base" >/dev/null || die "base '$base' is not a commit in $tree"
  else
    base="$(resolve_base refs/petit/upstream refs/tags/petit-base)" \
      || die "no refs/petit/upstream or petit-base in $tree; pass --base REV"
  fi
  mapfile -t files < <(git -C "$tree" diff --name-only --diff-filter=AM "${base}..HEAD" -- '*.py')
  mapfile -t added < <(git -C "$tree" diff --name-only --diff-filter=A "${base}..HEAD" -- '*.py')
  if [[ ${#files[@]} -eq 0 ]]; then
    die "no .py files added/modified between $base and HEAD in $tree: is the series applied?"
  fi
  log "checking ${#files[@]} file(s) changed since $base in $tree:"
  printf '  %s\n' "${files[@]}" >&2
fi

codespell_cfg=()
if [[ "$DRY_RUN" == 1 || -f "$tree/python/pyproject.toml" ]]; then
  codespell_cfg=(--toml python/pyproject.toml)
fi

# A PyPI tree has no repository root, so no SGLang .isort.cfg: use its settings.
isort_cfg=()
if [[ "$DRY_RUN" != 1 && ! -f "$tree/.isort.cfg" ]]; then
  log "$tree has no .isort.cfg (a PyPI tree): using SGLang's settings (profile black, first party sglang)"
  isort_cfg=(--profile black -p sglang)
fi

added=("${added[@]+"${added[@]}"}")
rc=0
(
  cd "$tree" 2>/dev/null || [[ "$DRY_RUN" == 1 ]]
  run isort "${isort_cfg[@]}" --check-only --diff "${files[@]}" || rc=1
  run black --check --diff "${files[@]}" || rc=1
  run codespell "${codespell_cfg[@]}" "${files[@]}" || rc=1
  # SGLang runs ruff F401 only on benchmark/, docs/ and examples/, so upstream's own
  # modules keep unused imports; hold the files the series adds to it.
  if [[ ${#added[@]} -gt 0 ]]; then
    run ruff check --isolated --select F401 --output-format=full "${added[@]}" || rc=1
  fi
  exit "$rc"
) || rc=$?
if [[ "$rc" != 0 ]]; then
  log "style check failed; fix in the tree, then 'make refresh SGLANG_REF=${ref:-<ref>}'"
fi
exit "$rc"
