"""Two export choices timed under onnxruntime: cropping the unread input border, and Gemm vs MatMul.

Synthetic FCN graphs (28x28x1 input, ``Flatten -> Dense(units, elu) -> Dense(10) -> softmax``,
no biases, random weights) whose first kernel reads only a box of the image, built directly
with ``onnx.helper``:

* **crop**: ``Slice`` the box, then a smaller first ``Gemm`` (what
  :func:`keras_ssm.export.crop_inputs` exports), against no crop (the zero rows stay in a
  784-row ``Gemm``);
* **MatMul**: the same uncropped graph with ``MatMul`` + ``Elu`` instead of ``Gemm`` (what
  tf2onnx writes; :func:`keras_ssm.export.onnx.matmuls_as_gemm` turns it into a ``Gemm`` that
  onnxruntime fuses with the activation).

Median microseconds per ``session.run`` at batch 1, 64 and 256, in interleaved rounds, under
default session options and under one thread.  The numbers quoted in ``keras_ssm/export/crop.py``
and ``keras_ssm/export/onnx.py`` come from this script::

    python export/graph_timing.py --units 63 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

BOXES = ((2, 27, 3, 26), (4, 24, 4, 24), (7, 21, 7, 21), (10, 18, 10, 18))  # rows, cols
KINDS = ("crop", "no crop", "no crop, MatMul")
BATCHES = (1, 64, 256)


def graph(box: tuple[int, int, int, int], units: int, kind: str, seed: int = 0) -> bytes:
    """The serialized ONNX model of one variant."""
    from onnx import TensorProto, helper, numpy_helper

    r0, r1, c0, c1 = box
    rng = np.random.default_rng(seed)
    kernel = np.zeros((28, 28, 1, units), np.float32)
    fan_in = (r1 - r0) * (c1 - c0)
    kernel[r0:r1, c0:c1] = rng.normal(size=(r1 - r0, c1 - c0, 1, units)) / np.sqrt(fan_in)
    nodes, inits = [], []

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    node = helper.make_node
    if kind == "crop":
        starts, ends = const("starts", np.int64([r0, c0])), const("ends", np.int64([r1, c1]))
        axes = const("axes", np.int64([1, 2]))
        nodes.append(node("Slice", ["input", starts, ends, axes], ["box"]))
        first = kernel[r0:r1, c0:c1].reshape(-1, units)
        shape = const("shape", np.int64([-1, len(first)]))
        nodes.append(node("Reshape", ["box", shape], ["flat"]))
    else:
        first = kernel.reshape(784, units)
        nodes.append(node("Reshape", ["input", const("shape", np.int64([-1, 784]))], ["flat"]))
    op = "MatMul" if kind.endswith("MatMul") else "Gemm"
    second = (rng.normal(size=(units, 10)) / np.sqrt(units)).astype(np.float32)
    nodes += [
        node(op, ["flat", const("k1", first)], ["h"]),
        node("Elu", ["h"], ["a"]),
        node(op, ["a", const("k2", second)], ["logits"]),
        node("Softmax", ["logits"], ["output"]),
    ]
    g = helper.make_graph(
        nodes,
        "fcn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _median_us(session: Any, x: np.ndarray, runs: int) -> float:
    feed = {"input": x}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=63, help="first hidden layer's width")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=300, help="timed runs per cell and round")
    a = p.parse_args(argv)
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    inputs = {b: rng.random((b, 28, 28, 1), np.float32) for b in BATCHES}
    for threads in ("default", "1 thread"):
        options = ort.SessionOptions()
        if threads == "1 thread":
            options.intra_op_num_threads = options.inter_op_num_threads = 1
        for box in BOXES:
            kept = (box[1] - box[0]) * (box[3] - box[2]) / 784
            sessions = {k: ort.InferenceSession(graph(box, a.units, k), options) for k in KINDS}
            want = sessions["no crop"].run(None, {"input": inputs[64]})[0]
            for s in sessions.values():  # every variant computes the same function
                got = s.run(None, {"input": inputs[64]})[0]
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
            cells: dict[str, dict[int, list[float]]] = {k: {b: [] for b in BATCHES} for k in KINDS}
            for _ in range(a.rounds):
                for kind, s in sessions.items():
                    for b in BATCHES:
                        cells[kind][b].append(_median_us(s, inputs[b], a.runs))
            text = "; ".join(
                f"{kind} " + " / ".join(f"{np.median(cells[kind][b]):.1f}" for b in BATCHES)
                for kind in KINDS
            )
            print(f"{threads}, box keeps {kept:.0%} of the pixels (us, batch 1/64/256): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
