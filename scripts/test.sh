#!/usr/bin/env bash
# Set up the environment, then run the test suite on TensorFlow and the core tests on JAX.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup_env.sh

run_pytest() {  # pytest's exit code 5 ("no tests collected") is a failure here, never a pass
    local rc=0
    python -m pytest "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "[test] pytest collected no tests for: $*" >&2
        return 1
    fi
    return $rc
}

echo "[test] TensorFlow backend: the whole suite" >&2
KERAS_BACKEND=tensorflow run_pytest -q -p no:cacheprovider tests "$@"
echo "[test] JAX backend: the core tests" >&2
KERAS_BACKEND=jax run_pytest -q -p no:cacheprovider -m core tests "$@"
