"""Where a ``model.fit`` step's CPU time goes, by oneDNN primitive: dense vs masked, side by side.

Wall times on a shared or throttled CPU can mislead (on one VM here every step snapped to a
multiple of about 215 ms), so this script reads the time oneDNN itself reports for each
primitive it executes (``ONEDNN_VERBOSE=1``: convolutions, matmuls, reorders, pooling). Each
mask trains in its own child process on the same random batches: a few warm-up steps, then
``--steps`` profiled steps. The table gives each primitive's milliseconds per step, summed over
threads (so the total can exceed the wall time), and each child's wall milliseconds per step.
TensorFlow backend only (oneDNN is TensorFlow's CPU library).

    python examples/onednn_profile.py --model conv6 --masks none signed --precision bfloat16
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

START, END = "ONEDNN_PROFILE_START", "ONEDNN_PROFILE_END"


def child(model_name: str, mask: str, precision: str, steps: int, batch: int) -> None:
    """Train ``steps`` profiled steps between the two markers (runs in the child process)."""
    import keras
    import numpy as np

    import keras_ssm
    from keras_ssm.training import policy_scope

    keras.utils.set_random_seed(0)
    with policy_scope(precision):
        model = keras_ssm.models.get(model_name, mask=None if mask == "none" else mask)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, model.output_shape[-1], size=batch * steps)
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0)  # tracing and warm-up
    print(START, flush=True)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    print(END, (time.perf_counter() - start) / steps, flush=True)


def parse(output: str, steps: int) -> tuple[dict[str, float], float]:
    """``({primitive: ms per step}, wall ms per step)`` from a child's verbose output."""
    times: dict[str, float] = collections.Counter()
    inside, wall = False, float("nan")
    for line in output.splitlines():
        if line.startswith(START):
            inside = True
        elif line.startswith(END):
            inside, wall = False, 1000 * float(line.split()[1])
        elif inside and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            try:
                ms = float(fields[-1])
            except ValueError:
                continue
            at = fields.index("exec")  # exec, engine, primitive kind, implementation, ...
            kind = f"{fields[at + 2]} ({fields[at + 3]})"  # convolution (brg_conv_fwd:avx512...)
            times[kind] += ms / steps
    return dict(times), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conv6", help="a keras_ssm.models name")
    parser.add_argument("--masks", nargs="+", default=["none", "signed"])
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the mask a child process profiles
    a = parser.parse_args(argv)
    if a.steps < 1:
        parser.error(f"--steps must be at least 1; received {a.steps}")
    if a.child is not None:
        child(a.model, a.child, a.precision, a.steps, a.batch)
        return 0
    from keras_ssm import masks, models

    if a.model not in models.MODELS:
        parser.error(
            f"--model {a.model!r} is not a keras_ssm.models name; choose from {models.MODELS}"
        )
    bad = [m for m in a.masks if m != "none" and m.lower() not in masks.ALLOWED]
    if bad:
        parser.error(f"--masks {bad} unknown; choose from 'none' and {masks.ALLOWED}")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "KERAS_BACKEND": "tensorflow"}
    results = {}
    for mask in a.masks:
        cmd = [sys.executable, __file__, "--model", a.model, "--precision", a.precision,
               "--steps", str(a.steps), "--batch", str(a.batch), "--child", mask]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"profiling mask {mask!r} failed:\n{proc.stderr[-3000:]}")
        results[mask] = parse(proc.stdout, a.steps)

    def heaviest(kind: str) -> float:
        return -max(times.get(kind, 0.0) for times, _ in results.values())

    kinds = sorted({k for times, _ in results.values() for k in times}, key=heaviest)
    print(f"{a.model}, {a.precision}, batch {a.batch}, {a.steps} profiled steps; ms per step")
    print("| primitive (implementation) | " + " | ".join(a.masks) + " |")
    print("|---|" + "---|" * len(a.masks))
    for kind in kinds:
        cells = " | ".join(f"{results[m][0].get(kind, 0.0):.1f}" for m in a.masks)
        print(f"| {kind} | {cells} |")
    totals = " | ".join(f"{sum(results[m][0].values()):.1f}" for m in a.masks)
    print(f"| all oneDNN primitives (summed over threads) | {totals} |")
    print("| wall, per step | " + " | ".join(f"{results[m][1]:.1f}" for m in a.masks) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
