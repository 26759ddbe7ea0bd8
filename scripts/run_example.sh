#!/usr/bin/env bash
# README command 1: install into .venv, then run the generate_image job through
# `dagster job execute` on the embedded default (mock backend, ./output, SQLite instance
# in this folder, no cloud). Extra arguments go to `dagster job execute`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/bootstrap.sh"
cd "$REPO_ROOT"
export DAGSTER_HOME="${DAGSTER_HOME:-$REPO_ROOT}"
.venv/bin/dagster job execute -m imagen_pipeline.definitions -j generate_image \
  -c examples/generate.yaml "$@"
echo "Newest files in $REPO_ROOT/output:" >&2
ls -t "$REPO_ROOT/output" | head -n 2 >&2
