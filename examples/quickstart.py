"""Quickstart: train a signed supermask on MNIST with plain ``model.fit`` and look at it.

    python examples/quickstart.py [--epochs 5] [--data-dir ../shared/datasets]

The network's weights stay frozen at their random ELUS values; training only decides, per
weight, to keep it, hide it or invert its sign.  The paper's FCN (784-300-100-10, no biases).
"""

from __future__ import annotations

import argparse
import time

import keras

import keras_ssm
from keras_ssm.layers import MaskedDense


def build_fcn(threshold: float = 0.4) -> keras.Model:
    """The paper's FCN as a signed supermask: every Dense layer is masked."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            MaskedDense(300, activation="elu", use_bias=False, threshold=threshold),
            MaskedDense(100, activation="elu", use_bias=False, threshold=threshold),
            MaskedDense(10, activation="softmax", use_bias=False, threshold=threshold),
        ],
        name="fcn_signed",
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST idx files")
    parser.add_argument("--seed", type=int, default=7531, help="random seed (default 7531)")
    parser.add_argument("--lr", type=float, default=0.05, help="initial learning rate")
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=2.5e-4,
        help="decoupled weight decay on the scores (SGDW-style)",
    )
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train = keras_ssm.data.load("mnist", "train", data_dir=args.data_dir, seed=args.seed)
    test = keras_ssm.data.load("mnist", "test", data_dir=args.data_dir)

    model = build_fcn()
    steps = len(train)
    schedule = keras.optimizers.schedules.ExponentialDecay(args.lr, 10 * steps, 0.9)
    # Keras applies weight_decay * lr_t each step: wd / lr0 reproduces SGDW's decayed wd.
    optimizer = keras.optimizers.SGD(
        schedule, momentum=0.9, nesterov=True, weight_decay=args.weight_decay / args.lr
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(
        train,
        epochs=args.epochs,
        validation_data=test,
        shuffle=False,  # the dataset reshuffles itself every epoch
        callbacks=[keras_ssm.MaskStatsCallback()],
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(test, verbose=0)

    keras_ssm.summary(model)
    stats = keras_ssm.mask_stats(model)
    print(
        f"\nTest accuracy {accuracy:.2%} with {stats['remaining']:.2%} of the weights "
        f"remaining ({stats['flipped']:.1%} of them sign-flipped); {seconds:.0f} s of training."
    )
    return {"model": model, "test_accuracy": accuracy, "stats": stats}


if __name__ == "__main__":
    main()
