# Every target maps to one command of scripts/petit-series (or a script in ci/).
# Variables: SGLANG_REF, SGLANG_SOURCE (auto|git|pypi|<path>), SGLANG_DIR, SGLANG_REPO,
# REFS (matrix), FORCE=1 (apply over a branch with unexported commits).
# Exit status: the tool exits 0 done, 1 error, 2 usage, 3 stopped on a conflict; make turns
# every failure into its own status 2, and its last line carries the tool's ("Error 3").
# Call scripts/petit-series directly where the difference matters.
PYTHON ?= python3
SERIES := $(PYTHON) scripts/petit-series
export SGLANG_REF SGLANG_SOURCE SGLANG_DIR SGLANG_REPO REFS FORCE TESTS JOBS NEXT_LABEL

.PHONY: apply refresh rebase rebase-continue rebase-abort matrix bench footprint next-release test lint pr help

help:
	@sed -n 's/^## //p' Makefile

## apply            apply the series to SGLANG_REF (default: newest release) in build/sglang/<ref>
apply:
	$(SERIES) apply

## refresh          export build/sglang/<ref>'s branch back to patches/ (deterministic)
refresh:
	$(SERIES) refresh

## rebase           move the series onto SGLANG_REF with 3-way merges, then export it
rebase:
	$(SERIES) rebase

## rebase-continue  resume a stopped apply/rebase after resolving the conflict
rebase-continue:
	$(SERIES) rebase-continue

## rebase-abort     roll a stopped apply/rebase back
rebase-abort:
	$(SERIES) rebase-abort

## matrix           apply the series on every supported release -> build/matrix.{json,md}
##                  (TESTS=1: also run tests/series on each, in its own environment)
matrix:
	$(SERIES) matrix

## bench            time a cold and a warm matrix
bench:
	$(SERIES) bench

## footprint        upstream lines and hunks the series deletes or changes, per patch and file
##                  (SGLANG_REF picks the variants; default the @base release)
footprint:
	$(SERIES) footprint

## next-release     the series on upstream's files past the newest release (tests/next_release)
##                  -> build/next-release/v<label>; fails if a patch needs more than a 3-way merge
next-release:
	$(SERIES) next-release

## test             the test suite (what CI runs)
test:
	bash scripts/run-tests.sh

## lint             pre-commit (ruff, shellcheck, actionlint, hygiene), all hooks pinned from PyPI
lint:
	bash ci/lint.sh

## pr               upstream PR from the series on SGLANG_REF (default main): branch, style, tests, build/pr/PR_BODY.md;
##                  SQUASH=1 TESTS=0 STYLE=0 PR_BRANCH= PR_TITLE= PR_AUTHOR=; PUSH=1 SGLANG_FORK=<fork> pushes and runs gh
pr:
	$(SERIES) pr
