#!/usr/bin/env bash
# README command 2: install into .venv, check lint and formatting, run the whole test
# suite. Tests that need PostgreSQL use 127.0.0.1:5432 (user postgres) and create and drop
# their own databases; with CI=true a missing server fails the run instead of skipping.
# Extra arguments go to pytest.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/bootstrap.sh"
cd "$REPO_ROOT"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/pytest "$@"
