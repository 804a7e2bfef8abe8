"""What a masked ResNet's BatchNorm layers should do: a short run per ``batchnorm`` mode.

The three modes of ``keras_ssm.supermask(..., batchnorm=...)`` (and of the zoo ResNets):

- ``"stats"`` (supermask's default): batch statistics in training, moving statistics updated,
  gamma/beta fixed at 1/0 -- only the scores train (edge-popup's non-affine BatchNorm);
- ``"train"``: gamma and beta train too;
- ``"frozen"``: the paper's reference: BatchNorm in inference mode at its initial statistics
  (``x / sqrt(1 + eps)``).

Each mode trains the signed ResNet20 with the default recipe (shortened) on the first ``--limit``
CIFAR-10 training images and reports the first epoch's loss and the test accuracy of the float32
folded model, as trained and after :func:`keras_ssm.recalibrate_batchnorm` (the moving
statistics recomputed for the final network over ``--recalibrate-batches`` training batches)::

    python examples/batchnorm_modes.py --epochs 3 --limit 10000 \
        --json examples/results/batchnorm_modes_resnet20_e3_l10000.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import keras_ssm
from keras_ssm import recipes
from keras_ssm.atomic import write_json

MODES = ("stats", "train", "frozen")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit", type=int, default=10_000, help="first N train/test images")
    p.add_argument("--seed", type=int, default=7531)
    p.add_argument(
        "--recalibrate-batches",
        type=int,
        default=50,
        help="training batches keras_ssm.recalibrate_batchnorm averages after training",
    )
    p.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)

    rows = []
    for mode in a.modes:
        recipe = dataclasses.replace(
            recipes.get(a.model, mask="signed"), batchnorm=mode, epochs=a.epochs
        )
        start = time.perf_counter()
        result = keras_ssm.train(
            a.model,
            recipe=recipe,
            limit=a.limit,
            seed=a.seed,
            verbose=0,
            record_masks=False,
            recalibrate_batches=0,  # "as trained"; recalibrated below, for the second column
        )
        history = result.history
        recalibrated = _recalibrated_accuracy(result.model, a.limit, a.recalibrate_batches)
        rows.append(
            {
                "batchnorm": mode,
                "first_epoch_loss": float(history["loss"][0]),
                "last_epoch_loss": float(history["loss"][-1]),
                "test_accuracy": float(result.metrics["test_accuracy"]),
                "test_accuracy_recalibrated": recalibrated,
                "remaining": float(result.metrics["remaining"]),
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{a.model} signed, {a.epochs} epochs on the first {a.limit} CIFAR-10 images "
        f"(seed {a.seed})\n\n| batchnorm | loss, epoch 1 | loss, last | test accuracy | "
        "test accuracy, BatchNorm recalibrated | remaining | wall s |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['batchnorm']} | {r['first_epoch_loss']:.3f} | {r['last_epoch_loss']:.3f} | "
            f"{r['test_accuracy']:.2%} | {r['test_accuracy_recalibrated']:.2%} | "
            f"{r['remaining']:.2%} | {r['wall_s']} |"
        )
    if a.json:
        config = {"model": a.model, "epochs": a.epochs, "limit": a.limit, "seed": a.seed}
        write_json(Path(a.json), {**config, "rows": rows})
    return 0


def _recalibrated_accuracy(model: Any, limit: int, batches: int) -> float:
    """Test accuracy of the float32 folded model after :func:`keras_ssm.recalibrate_batchnorm`
    over ``batches`` training batches (what ``metrics.json``'s ``test_accuracy`` measures, with
    the moving statistics of the final network)."""
    from keras_ssm import data, wrap

    train = data.load("cifar10", "train", limit=limit, shuffle=False)
    keras_ssm.recalibrate_batchnorm(model, train, batches=batches)
    folded = wrap.fold(model)
    folded.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = folded.evaluate(data.load("cifar10", "test", limit=limit), verbose=0)
    return float(accuracy)


if __name__ == "__main__":
    raise SystemExit(main())
