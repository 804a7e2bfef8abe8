#!/usr/bin/env bash
# CIFAR-10 rows on a lent GPU machine (JAX, no TensorFlow, no registry): two `device` calls.
#
# Here, once (the pieces and wheels are git-ignored; each call carries at most 64 MiB):
#   python scripts/device_data.py pack ../shared/datasets/cifar10 .data
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# Then, back to back (the machine stays warm 30 s between calls):
#   run(command="bash scripts/device_run.sh stage", carry=[".data/a", ".whl"], timeout_s=240)
#   run(command="bash scripts/device_run.sh train 420", carry=[".data/b"], timeout_s=540)
#   give_back()
# `stage` installs the wheels, unpacks the first half of CIFAR-10 and times masked vs dense
# steps on the GPU (examples/bench_train.py); `train SECONDS` unpacks the rest, trains the runs
# of DEVICE_JOBS in parallel for at most SECONDS, collects the finished ones (metrics.json,
# history.csv, model.ssm: `reproduce.py collect`) and returns them as $OUT/device_results.tgz;
# unfinished runs come back as their per-epoch history (backup/history.json) only.
# Unpack here with `tar xzf device_results.tgz -C runs/device` and commit finished runs from
# runs/device/results/ into examples/paper/results/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/device_out}"
mkdir -p "$OUT" .data/logs
export PYTHONPATH="$PWD/.data/site:$PWD" KERAS_BACKEND=jax KERAS_SSM_DATA_DIR="$PWD/.data"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 KERAS_SSM_OFFLINE=1
PY="${PYTHON:-python3}"

# One job per line: reproduce.py run arguments (each job is its own process on the one GPU).
DEFAULT_JOBS="--rows conv4 --masks signed --seeds 1 --precision float32
--rows conv4 --masks signed --seeds 1 --precision bfloat16
--rows conv6 --masks signed --seeds 1 --precision float32
--rows conv8 --masks signed --seeds 1 --precision float32
--rows conv8 --masks none --seeds 1 --precision float32
--rows resnet20 --masks signed --seeds 1 --precision float32"
JOBS="${DEVICE_JOBS:-$DEFAULT_JOBS}"

case "${1:-}" in
stage)
    if ! "$PY" -c "import keras" 2>/dev/null; then  # the device's python has no Keras
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target .data/site .whl/*.whl || exit 1
    fi
    "$PY" scripts/device_data.py unpack .data/a --out .data/cifar10 || exit 1
    nvidia-smi -L 2>&1 | tee "$OUT/stage.txt"
    "$PY" -c "import jax, keras, keras_ssm; print(jax.devices(), keras.__version__)" \
        2>&1 | tee -a "$OUT/stage.txt" || exit 1
    # masked vs dense step time on the GPU (float32 and bfloat16, XLA: JAX always compiles)
    timeout 150 "$PY" examples/bench_train.py --models conv6 --epochs 4 --steps 20 \
        --jit auto ${STAGE_BENCH_ARGS:-} --json "$OUT/bench_train_gpu.json" 2>&1 \
        | tail -20 | tee -a "$OUT/stage.txt"
    ;;
train)
    seconds="${2:?usage: device_run.sh train SECONDS}"
    "$PY" scripts/device_data.py unpack .data/b --out .data/cifar10 || exit 1
    start=$(date +%s)
    pids=()
    i=0
    while IFS= read -r job; do
        [[ -z "$job" ]] && continue
        i=$((i + 1))
        # shellcheck disable=SC2086  # a job line is a list of arguments
        "$PY" examples/paper/reproduce.py run $job --out .data/runs ${DEVICE_EXTRA:-} \
            >".data/logs/job$i.log" 2>&1 &
        pids+=($!)
        echo "[device] job$i (pid ${pids[-1]}): $job" | tee -a "$OUT/train.txt"
    done <<<"$JOBS"
    while (($(date +%s) - start < seconds)); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 5
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait
    echo "[device] trained for $(($(date +%s) - start)) s" | tee -a "$OUT/train.txt"
    "$PY" examples/paper/reproduce.py collect --out .data/runs --results .data/results \
        >>.data/logs/collect.log 2>&1
    for folder in .data/runs/*/; do  # an unfinished run: its per-epoch history
        name=$(basename "$folder")
        if [[ ! -f "$folder/metrics.json" && -f "$folder/backup/history.json" ]]; then
            mkdir -p ".data/results/unfinished/$name"
            cp "$folder/backup/history.json" ".data/results/unfinished/$name/"
        fi
    done
    tail -n 3 .data/logs/*.log >>"$OUT/train.txt"
    mkdir -p .data/results
    tar czf "$OUT/device_results.tgz" -C .data results logs
    ls -la .data/results | tee -a "$OUT/train.txt"
    ;;
*)
    echo "usage: bash scripts/device_run.sh stage | train SECONDS" >&2
    exit 2
    ;;
esac
