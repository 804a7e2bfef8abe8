"""Where a masked layer's extra training time goes: plain ``model.fit`` of the FCN at Keras'
defaults (float32, ``jit_compile="auto"``), dense vs three masks that add one piece each:

- ``scores``: ``M = s`` with its ordinary gradient, so the kernel is ``w0 * s`` (what every
  masked layer pays: forming the kernel and multiplying its gradient by ``w0``);
- ``ste-identity``: ``M = s`` through the straight-through custom gradient (adds its wrapper);
- ``signed``: the signed supermask (adds the comparisons with ``±tau``).

All four models are built in one process and trained on the same fixed random batches, one
epoch each in a shuffled order, round after round; the first round (tracing) is dropped and the
median seconds per step of the rest is reported, with each mask's ratio to dense.

    python examples/bench_mask_step.py --rounds 25 --json times.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import keras
import numpy as np

import keras_ssm
from keras_ssm import masks


@masks.register
class ScoresAsMask(masks.Mask):
    """``M = s``: the scores themselves, ordinary gradient (a timing probe, not a mask)."""

    name = "scores"

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        return scores


@masks.register
class StraightThroughIdentity(masks.Mask):
    """``M = s`` through :func:`keras_ssm.masks.straight_through` (a timing probe)."""

    name = "ste-identity"

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        return masks.straight_through(lambda s: s, scores)


VARIANTS = ("dense", "scores", "ste-identity", "signed")


def time_variants(rounds: int, steps: int, batch: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per ``fit`` step of the FCN with each of :data:`VARIANTS`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * batch, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=steps * batch)
    models = {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(seed)
        model = keras_ssm.models.get("fcn", mask=None if variant == "dense" else variant)
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        models[variant] = model
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in np.random.default_rng(r).permutation(VARIANTS):
            start = time.perf_counter()
            models[variant].fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            seconds[variant].append((time.perf_counter() - start) / steps)
    return {v: statistics.median(s[1:]) for v, s in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="rounds incl. 1 warm-up (>= 2)")
    parser.add_argument("--steps", type=int, default=30, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", help="also write the times here")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds must be at least 2 (the first is dropped); received {args.rounds}")
    from keras_ssm.training import cpu_description

    load = os.getloadavg()[0]
    times = time_variants(args.rounds, args.steps, args.batch)
    print(f"{cpu_description()}, keras {keras.__version__}, 1-minute load {load:.2f}")
    print("| mask | ms/step | over dense |\n|---|---|---|")
    for variant, sec in times.items():
        print(f"| {variant} | {1000 * sec:.3f} | {sec / times['dense']:.3f} |")
    if args.json:
        from keras_ssm.atomic import write_json

        rows = {v: {"ms": round(1000 * s, 3), "over_dense": round(s / times["dense"], 4)}
                for v, s in times.items()}  # fmt: skip
        config = {"rounds": args.rounds, "steps": args.steps, "batch": args.batch}
        write_json(args.json, {"cpu": cpu_description(), "load_start": load, "config": config,
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
