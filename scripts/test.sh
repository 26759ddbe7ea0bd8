#!/usr/bin/env bash
# README command 2: install into .venv, check lint and formatting, run the whole test
# suite. Tests that need PostgreSQL use 127.0.0.1:5432 (user postgres) and create and drop
# their own databases; with CI=true a missing server fails the run instead of skipping.
# Extra arguments go to pytest. The suite runs in $IMAGEN_TEST_WORKERS processes (default 3,
# one module per process at a time, the longest modules first; 0 runs it in this one).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/bootstrap.sh"
cd "$REPO_ROOT"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Byte-compile the project's own modules once: where PYTHONDONTWRITEBYTECODE is set (it is on
# the development machines) every process the suite starts would otherwise compile them again.
.venv/bin/python -m compileall -q imagen_pipeline imagen_pipeline_tests scripts
.venv/bin/pytest -n "${IMAGEN_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
