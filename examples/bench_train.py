"""Training speed: ``model.fit`` step time of the masked vs the dense version of a model.

    python examples/bench_train.py --models fcn conv6 --epochs 7 --steps 20

Each model is trained on a fixed slice of random data (``--steps`` batches of 128 per epoch);
the first epoch (tracing, warm-up) is dropped and the median of the rest is reported, for the
dense baseline and for the signed supermask, with and without ``jit_compile``.  Prints a
Markdown table with the masked/dense ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import keras
import numpy as np

import keras_ssm

SHAPES = {
    "fcn": (28, 28, 1),
    "conv2": (32, 32, 3),
    "conv4": (32, 32, 3),
    "conv6": (32, 32, 3),
    "conv8": (32, 32, 3),
    "resnet20": (32, 32, 3),
}


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def time_fit(
    name: str, mask: str | None, jit: bool | str, epochs: int, steps: int, batch: int
) -> float:
    """Median seconds per training step after the first (warm-up) epoch."""
    keras.utils.set_random_seed(0)
    model = keras_ssm.models.get(name, mask=mask)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, *SHAPES[name])).astype("float32")
    y = rng.integers(0, 10, size=steps * batch)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=jit)
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[timer])
    return statistics.median(timer.seconds[1:]) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fcn", "conv6"], choices=sorted(SHAPES))
    parser.add_argument("--epochs", type=int, default=7, help="epochs incl. 1 warm-up (>= 6)")
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jit", choices=["auto", "true", "both"], default="both")
    args = parser.parse_args(argv)
    jits = {"auto": ["auto"], "true": [True], "both": ["auto", True]}[args.jit]

    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, batch {args.batch}, "
        f"median of {args.epochs - 1} epochs x {args.steps} steps after 1 warm-up epoch\n"
    )
    print("| model | jit_compile | dense ms/step | signed ms/step | masked/dense |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for jit in jits:
            dense = time_fit(name, None, jit, args.epochs, args.steps, args.batch)
            masked = time_fit(name, "signed", jit, args.epochs, args.steps, args.batch)
            print(
                f"| {name} | {jit} | {1000 * dense:.2f} | {1000 * masked:.2f} | "
                f"{masked / dense:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
