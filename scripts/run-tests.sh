#!/usr/bin/env bash
# `make test`: the whole test suite, as the README and CI run it.
#
#  1. the tooling and the CI scripts on small synthetic git repos (tests/tooling, tests/ci);
#  2. the series on real SGLang releases from PyPI (oldest, a middle one, newest by
#     default; TEST_REFS="v0.5.9 ..." to choose): apply, then a refresh that must
#     change nothing;
#  3. the series' own tests (tests/series) in a CPU SGLang environment per release.
#
# Set TEST_SERIES=0 to skip step 3 (it builds a ~6 GiB torch environment once).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TOOLS=build/venv/tools
TEST_REFS=${TEST_REFS:-v0.5.9 v0.5.16 v0.5.23}
TEST_SERIES=${TEST_SERIES:-1}

if ! "$TOOLS/bin/python" -c "import pytest" 2>/dev/null; then
  echo "== creating $TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet -r scripts/requirements-tools.txt
fi

echo "== 1. tooling and CI scripts"
"$TOOLS/bin/python" -m pytest -q -p no:cacheprovider tests/tooling tests/ci

echo "== 2. the series on real releases: $TEST_REFS"
for ref in $TEST_REFS; do
  "$PYTHON" scripts/petit-series apply --ref "$ref" --source pypi
  "$PYTHON" scripts/petit-series refresh --ref "$ref" --check
done

if [ "$TEST_SERIES" = 1 ]; then
  echo "== 3. the series' tests in a CPU SGLang environment per release"
  for ref in $TEST_REFS; do
    echo "-- $ref"
    PYTHONPATH=scripts "$PYTHON" -m petit_series.harness test \
      --version "${ref#v}" --tree "build/sglang/$ref"
  done
fi
