"""The mobile path: run the exported ``.tflite`` with the LiteRT interpreter.

    ssm export runs/fcn --format litert --shrink
    KERAS_SSM_DATA_DIR=../shared/datasets python examples/litert_mobile.py \\
        runs/fcn/export/model.tflite

``ai_edge_litert.interpreter.Interpreter`` is the same runtime as LiteRT on Android/iOS
(``tf.lite.Interpreter`` is deprecated). The model keeps its weights sparse
(``Optimize.EXPERIMENTAL_SPARSITY``); one image at a time is the typical on-device call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_ssm import data


def main() -> None:
    """Classify test images one at a time (batch 1, as on a phone) and print the accuracy."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a .tflite file written by `ssm export`")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--limit", type=int, default=1000, help="test images to classify")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    _, (images, labels) = data.load_arrays(a.dataset)
    x = data.standardize_images(images[: a.limit])
    labels = labels[: a.limit]

    interpreter = Interpreter(model_path=a.model, num_threads=a.threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
    interpreter.allocate_tensors()
    print(f"input {inp['name']} {x.shape[1:]} {inp['dtype'].__name__}, output {out['name']}")

    pred = np.empty(len(x), dtype=np.int64)
    times = []
    for i in range(len(x)):
        t0 = time.perf_counter()
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        pred[i] = int(np.argmax(interpreter.get_tensor(out["index"])[0]))
        times.append(time.perf_counter() - t0)
    print(
        f"{a.model}: accuracy {np.mean(pred == labels):.4f} on {len(labels)} images, "
        f"median {np.median(times) * 1e6:.1f} us per image"
    )


if __name__ == "__main__":
    main()
