"""``ssm eval``: re-evaluate a run's model on its test set, in float32 (the folded model)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from keras_ssm.cli.args import add_data_dir, add_verbose, number


def run(args: argparse.Namespace) -> dict[str, Any]:
    import keras_ssm
    from keras_ssm import data
    from keras_ssm.run_dir import open_run

    _, model, metrics = open_run(args.run)
    dataset = args.dataset or metrics.get("dataset")
    if dataset is None:
        raise ValueError("the run has no metrics.json naming its dataset; pass --dataset")
    test = data.load(dataset, "test", batch_size=512, data_dir=args.data_dir, limit=args.limit)
    # The float32 model (what metrics.json's test_accuracy and every export report).
    deployed = keras_ssm.wrap.to_float32(model)
    deployed.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = deployed.evaluate(test, verbose=args.verbose)
    result = {
        "dataset": dataset,
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "test_images": sum(int(y.shape[0]) for _, y in test),
    }
    try:
        result["remaining"] = keras_ssm.mask_stats(model)["remaining"]
    except ValueError:
        pass
    print(json.dumps(result))
    return result


def register(subparsers: Any) -> None:
    evaluate = subparsers.add_parser("eval", help="re-evaluate a run folder on its test set")
    evaluate.add_argument("run", help="run folder from `ssm train` (or a .keras file)")
    evaluate.add_argument("--dataset", help="default: the run's metrics.json")
    add_data_dir(evaluate)
    evaluate.add_argument("--limit", type=number(int, "limit", 0))
    add_verbose(evaluate)
    evaluate.set_defaults(func=run)
