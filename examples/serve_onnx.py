"""Serve an exported signed-supermask model with onnxruntime and classify MNIST test images.

    ssm export runs/fcn --format onnx --shrink --int8
    KERAS_SSM_DATA_DIR=../shared/datasets python examples/serve_onnx.py runs/fcn/export/model.onnx

Only numpy, onnxruntime and keras_ssm.data (for the idx files) are needed: no TensorFlow graph
is built. Images are standardized per image exactly as in training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from keras_ssm import data


def session(path: str, threads: int = 1) -> ort.InferenceSession:
    """A CPU session. ``disable_quant_qdq`` keeps an int8 export exact (no activation
    quantization): the int8 model then computes exactly what the float model computes."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main() -> None:
    """Classify the test set in batches and print the accuracy."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an .onnx file written by `ssm export`")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, help="first N test images only")
    a = p.parse_args()
    _, (images, labels) = data.load_arrays(a.dataset)
    if a.limit:
        images, labels = images[: a.limit], labels[: a.limit]
    x = data.standardize_images(images)
    sess = session(a.model)
    name = sess.get_inputs()[0].name
    start = time.perf_counter()
    pred = np.concatenate(
        [
            np.argmax(sess.run(None, {name: x[i : i + a.batch_size]})[0], -1)
            for i in range(0, len(x), a.batch_size)
        ]
    )
    wall = time.perf_counter() - start
    print(
        f"{a.model}: accuracy {np.mean(pred == labels):.4f} on {len(labels)} images "
        f"({len(labels) / wall:,.0f} images/s)"
    )
    print("first predictions:", pred[:10].tolist(), "labels:", labels[:10].tolist())


if __name__ == "__main__":
    main()
