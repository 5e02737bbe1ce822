#!/usr/bin/env bash
# `make test`: the whole test suite, as the README and CI run it.
#
#  1. the tooling and the CI scripts on small synthetic git repos (tests/tooling, tests/ci);
#  2. the series on real SGLang releases (oldest, a middle one and the newest from
#     PyPI by default; TEST_REFS="v0.5.9 ..." to choose, or SGLANG_REF=<ref> for one
#     ref from SGLANG_SOURCE, as the nightly job does): apply, then a refresh
#     check that must change nothing (a patch that the tree reproduces the way
#     apply applied it, 3-way merge included, keeps its bytes);
#  3. the series' own tests (tests/series) in a CPU SGLang environment per release;
#  4. the next release (tests/next_release: upstream's files past the newest PyPI
#     release laid over it): the series must apply with at most 3-way merges, then
#     tests/series run on it in the base release's environment.
#
# Set TEST_SERIES=0 to skip step 3 and the tests of step 4 (they build a ~6 GiB
# torch environment once); TEST_NEXT=0 skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TOOLS=build/venv/tools
DEFAULT_REFS="v0.5.9 v0.5.16 v0.5.23"
if [ -n "${SGLANG_REF:-}" ]; then
  TEST_REFS=${TEST_REFS:-$SGLANG_REF}
  SOURCE=${SGLANG_SOURCE:-auto}
else
  TEST_REFS=${TEST_REFS:-$DEFAULT_REFS}
  SOURCE=pypi
fi
TEST_SERIES=${TEST_SERIES:-1}
TEST_NEXT=${TEST_NEXT:-1}

if ! "$TOOLS/bin/python" -c "import pytest, yaml" 2>/dev/null; then
  echo "== creating $TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet -r scripts/requirements-tools.txt
fi

echo "== 1. tooling and CI scripts"
"$TOOLS/bin/python" -m pytest -q -p no:cacheprovider tests/tooling tests/ci

echo "== 2. the series on real releases: $TEST_REFS"
for ref in $TEST_REFS; do
  "$PYTHON" scripts/petit-series apply --ref "$ref" --source "$SOURCE"
  # Exporting what was applied must change nothing, 3-way merges included.
  "$PYTHON" scripts/petit-series refresh --ref "$ref" --check --source "$SOURCE"
done

if [ "$TEST_SERIES" = 1 ]; then
  echo "== 3. the series' tests in a CPU SGLang environment per release"
  for ref in $TEST_REFS; do
    # A branch such as main runs in the newest release's environment.
    case "$ref" in v[0-9]*|[0-9]*) version=${ref#v} ;; *) version=${DEFAULT_REFS##*v} ;; esac
    case "$SOURCE" in
      auto|git|pypi) case "$ref" in [0-9]*) tree="build/sglang/v$ref" ;; *) tree="build/sglang/$ref" ;; esac ;;
      *) tree=$SOURCE ;;
    esac
    echo "-- $ref (environment: sglang $version)"
    PYTHONPATH=scripts "$PYTHON" -m petit_series.harness test --version "$version" --tree "$tree"
  done
fi

if [ "$TEST_NEXT" = 1 ]; then
  read -r next_base next_label < <(PYTHONPATH=scripts "$PYTHON" -c '
import os, pathlib
from petit_series import nextrel
f = nextrel.load_fixture(pathlib.Path("tests/next_release"))
print(f.base, os.environ.get("NEXT_LABEL") or nextrel.default_label(f.base))')
  echo "== 4. the next release $next_label: tests/next_release over sglang $next_base from PyPI;"
  echo "   the series must apply with at most 3-way merges, then tests/series run on it"
  "$PYTHON" scripts/petit-series next-release --label "$next_label"
  if [ "$TEST_SERIES" = 1 ]; then
    echo "-- $next_label (environment: sglang $next_base)"
    PYTHONPATH=scripts "$PYTHON" -m petit_series.harness test --version "$next_base" --tree "build/next-release/v$next_label"
  fi
fi
