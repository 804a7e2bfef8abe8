"""``ssm train``: :func:`keras_ssm.train` with a run folder.

ssm train --model fcn --out runs/fcn                    # the paper's FCN, default recipe
ssm train --model conv6 --recipe paper --out runs/conv6
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_ssm.cli.args import UsageError, add_data_dir, add_verbose, number


def run(args: argparse.Namespace) -> dict[str, Any]:
    import keras_ssm
    from keras_ssm.run_dir import RunDir, RunFolderError

    try:  # the same check keras_ssm.train makes, reported with the flag's name
        RunDir(args.out).prepare(overwrite=args.force, resume=args.resume)
    except RunFolderError as err:
        raise UsageError(f"--out {err}") from err

    result = keras_ssm.train(
        args.model,
        args.dataset,
        mask=args.mask,
        recipe=args.recipe,
        out=args.out,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        threshold=args.threshold,
        batch_size=args.batch_size,
        weight_scale=args.weight_scale,
        unit_penalty=args.unit_penalty,
        warmup_epochs=args.warmup_epochs,
        augment=True if args.augment else None,
        seed=args.seed,
        precision=args.precision,
        jit="auto" if args.jit is None else args.jit,
        limit=args.limit,
        data_dir=args.data_dir,
        strategy=args.strategy,
        resume=args.resume,
        overwrite=args.force,
        deterministic=args.deterministic,
        verbose=args.verbose,
        recalibrate_batches=args.recalibrate_batches,
    )
    metrics = result.metrics
    line = f"test accuracy {metrics['test_accuracy']:.4f}"
    if "remaining" in metrics:
        line += f", remaining {metrics['remaining']:.4%}"
    if args.limit:
        line += f" (first {metrics['test_images']} test images: --limit)"
    took = f"{metrics['wall_time_s']:.0f} s"
    if metrics.get("resumed"):  # the epochs of the interrupted sessions count too
        took = f"{metrics['train_time_s']:.0f} s over all sessions ({took} in this one)"
    print(
        f"{line}; {took} ({metrics['precision']}); wrote "
        f"{args.out}/model.keras, metrics.json, history.csv"
    )
    return metrics


def register(subparsers: Any) -> None:
    from keras_ssm import masks, models, recipes
    from keras_ssm.training.precision import PRECISIONS
    from keras_ssm.training.trainer import STRATEGIES

    train = subparsers.add_parser("train", help="train a model of the zoo and write a run folder")
    train.add_argument("--model", required=True, choices=models.MODELS)
    train.add_argument(
        "--dataset",
        choices=("mnist", "fashion_mnist", "cifar10", "cifar100"),
        help="default: the model's dataset in the paper",
    )
    train.add_argument(
        "--mask",
        choices=[*masks.ALLOWED, "none"],  # registered masks included
        default="signed",
        help="'none' trains the dense baseline (default: signed)",
    )
    train.add_argument(
        "--recipe",
        choices=recipes.VARIANTS,
        default="default",
        help="'paper' = the paper's literal hyperparameters",
    )
    train.add_argument("--epochs", type=number(int, "epochs", 0))
    train.add_argument(
        "--seed", type=number(int, "seed", 0, 2**32, low_inclusive=True), default=7531
    )
    train.add_argument("--lr", type=number(float, "learning rate", 0))
    train.add_argument(
        "--weight-decay",
        type=number(float, "weight decay", 0, low_inclusive=True),
        help="decoupled (SGDW) decay",
    )
    train.add_argument(
        "--threshold",
        type=number(float, "threshold", 0, 1),
        help="signed mask threshold in (0, 1)",
    )
    train.add_argument("--batch-size", type=number(int, "batch size", 0))
    train.add_argument(
        "--weight-scale",
        type=number(float, "weight scale", 0),
        help="ELUS variance scale of the frozen weights (1: sqrt(3/fan_in), 2: sqrt(6/fan_in))",
    )
    train.add_argument(
        "--unit-penalty",
        type=number(float, "unit penalty", 0, low_inclusive=True),
        help="group penalty on the hidden layers' scores that empties whole units/filters, so "
        "that export --shrink removes them (ResNets: each block's first convolution; default "
        "0: none)",
    )
    train.add_argument(
        "--warmup-epochs",
        type=number(float, "warm-up epochs", 0, low_inclusive=True),
        help="ramp the learning rate linearly over this many epochs (0: none; default: the "
        "recipe's, 1 for the dense Conv6/Conv8, else 0)",
    )
    train.add_argument("--augment", action="store_true", help="pad-4 random crop + flip")
    train.add_argument(
        "--recalibrate-batches",
        type=number(int, "recalibrate batches", 0, low_inclusive=True),
        default=50,
        help="after training, recompute BatchNorm's moving statistics over this many training "
        "batches (0: keep those training left; models without BatchNorm: no effect)",
    )
    add_data_dir(train)
    train.add_argument(
        "--limit",
        type=number(int, "limit", 0),
        help="use only the first N training and test examples (quick runs)",
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force XLA compilation of the train step on (--jit) or off (--no-jit); default: "
        "Keras' choice (no XLA on a TensorFlow CPU, where oneDNN is faster)",
    )
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training precision; auto: bfloat16 mixed precision for conv nets on a CPU with "
        "AMX or AVX512-BF16 (TensorFlow), else float32. Reported accuracy is always the float32 "
        "folded model's",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow deterministic ops (slower; bit-repeatable on CPU)",
    )
    add_verbose(train)
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--force", action="store_true", help="replace an existing run in --out")
    train.add_argument(
        "--resume",
        action="store_true",
        help="back up every epoch to OUT/backup and continue an interrupted run from there",
    )
    train.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="none",
        help="tf.distribute strategy: local devices, or the workers named in TF_CONFIG",
    )
    train.set_defaults(func=run)
