"""Training speed: ``model.fit`` step time of the masked vs the dense version of a model.

    python examples/bench_train.py --models fcn conv6 --epochs 7 --steps 20

The dense and the signed version of each model are trained on a fixed slice of random data
(``--steps`` batches of 128 per epoch), one epoch each in turn; the first round (tracing,
warm-up) is dropped and the median of the rest is reported, with and without ``jit_compile``.
Prints a Markdown table with the masked/dense ratio.
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


def _compiled(name: str, mask: str | None, jit: bool | str) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras_ssm.models.get(name, mask=mask)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=jit)
    return model


def time_pair(name: str, jit: bool | str, epochs: int, steps: int, batch: int) -> tuple:
    """Median seconds per step of the dense and the signed model, epochs interleaved.

    Each round fits one epoch of the dense model and one of the masked model on the same fixed
    data slice, so load from other processes hits both alike; round 0 (tracing) is dropped.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, *SHAPES[name])).astype("float32")
    y = rng.integers(0, 10, size=steps * batch)
    models = {"dense": _compiled(name, None, jit), "signed": _compiled(name, "signed", jit)}
    seconds: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(epochs):
        for key, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            seconds[key].append((time.perf_counter() - start) / steps)
    dense, masked = (statistics.median(seconds[key][1:]) for key in ("dense", "signed"))
    return dense, masked


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
            dense, masked = time_pair(name, jit, args.epochs, args.steps, args.batch)
            print(
                f"| {name} | {jit} | {1000 * dense:.2f} | {1000 * masked:.2f} | "
                f"{masked / dense:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
