#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install imagen_pipeline with its dev extras, pinned by
# scripts/constraints.txt. Re-running is cheap: nothing is reinstalled unless
# pyproject.toml or the constraints changed. Source it or run it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMAGEN_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "imagen_pipeline needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
  }
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

STAMP="$VENV/.imagen-install-stamp"
WANT="$(cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/scripts/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # pip byte-compiles one file at a time; compileall does it on every core (about half
  # the install's time on two cores). Like pip, it goes on past files that do not compile
  # (test data some packages ship).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    -c "$REPO_ROOT/scripts/constraints.txt" -e "$REPO_ROOT[dev]"
  "$VENV/bin/python" -m compileall -qq -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
  echo "$WANT" > "$STAMP"
fi
