#!/usr/bin/env bash
# README command 1: install into .venv, then run the generate_image job on the embedded
# default (mock backend, ./output, SQLite instance in this folder, no cloud) with
# `imagen generate`, which prints the image path (stdout) and a one-line summary (stderr).
# Extra arguments go to `imagen generate`: `-v` shows Dagster's full event log.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/bootstrap.sh"
cd "$REPO_ROOT"
export DAGSTER_HOME="${DAGSTER_HOME:-$REPO_ROOT}"
.venv/bin/imagen generate "a cat in a fishbowl" --style blog-header --seed 42 "$@"
