#!/usr/bin/env bash
# The main job: set up the environment, train a signed supermask FCN on MNIST (the default
# recipe, 100 epochs), print its summary, fold + shrink + export it (ONNX, int8 ONNX, LiteRT,
# compact .ssm), and benchmark it against a dense baseline and TF-MOT magnitude pruning at the
# same sparsity (both trained on first use), printing the table (also in runs/main/RESULTS.md).
#   bash scripts/main.sh               # everything (about 15 minutes on 2 CPU cores)
#   EPOCHS=5 bash scripts/main.sh      # a quick look: shorter training everywhere
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup_env.sh
RUN="${RUN:-runs/main/fcn_signed}"
EXTRA=()
if [[ -n "${EPOCHS:-}" ]]; then
    EXTRA=(--epochs "$EPOCHS")
    RUN="runs/main/fcn_signed_${EPOCHS}ep"
fi

if [[ ! -f "$RUN/metrics.json" ]]; then
    echo "== training a signed supermask FCN on MNIST -> $RUN" >&2
    ssm train --model fcn --dataset mnist --verbose 2 --resume "${EXTRA[@]}" --out "$RUN"
fi
echo "== summary" >&2
ssm summary "$RUN"
echo "== fold, shrink, export" >&2
ssm export "$RUN" --format onnx,litert,compact --shrink --int8 --force
echo "== benchmark against dense and TF-MOT (trained on first use)" >&2
BENCH=(--signed-run "$RUN" --work-dir runs/main --results runs/main/RESULTS.md)
if [[ -n "${EPOCHS:-}" ]]; then
    BENCH+=(--dense-epochs "$EPOCHS" --tfmot-epochs "$EPOCHS")
fi
python export/benchmark.py "${BENCH[@]}"
echo "== the table: runs/main/RESULTS.md" >&2
cat runs/main/RESULTS.md
