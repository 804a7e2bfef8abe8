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

# The whole suite and every docstring example (>>>) of the library, on each backend; tests that
# need TensorFlow itself (ONNX/LiteRT conversion, tf.distribute) skip themselves on JAX.
echo "[test] TensorFlow backend: the whole suite + doctests" >&2
KERAS_BACKEND=tensorflow run_pytest -q -p no:cacheprovider tests --doctest-modules keras_ssm "$@"
echo "[test] JAX backend: the whole suite + doctests" >&2
KERAS_BACKEND=jax run_pytest -q -p no:cacheprovider tests --doctest-modules keras_ssm "$@"
