#!/usr/bin/env bash
# Set up the environment, then run the main job: train a signed supermask FCN on MNIST.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup_env.sh
python examples/quickstart.py "$@"
