#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with the pinned requirements.
# Idempotent: a venv whose requirement files have not changed is reused as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KERAS_SSM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-tfmot.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    echo "[setup] creating $VENV (pinned requirements; about a minute)" >&2
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-tfmot.txt" \
        2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -m pip check >&2
    echo "$WANT" > "$STAMP"
fi
# Offline data: ../shared/datasets beside the checkout, unless the user chose a folder.
if [[ -z "${KERAS_SSM_DATA_DIR:-}" && -d "$ROOT/../shared/datasets" ]]; then
    export KERAS_SSM_DATA_DIR="$(cd "$ROOT/../shared/datasets" && pwd)"
fi
export PATH="$VENV/bin:$PATH" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
