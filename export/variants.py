"""ONNX graph rewrites the benchmark measures next to the plain exports.

* :func:`gather_inputs`: the first ``MatMul`` of an MLP reads every input pixel, but a sparse
  kernel often has whole rows of zeros (pixels no kept weight reads). The rewrite inserts
  ``Gather(x, used_pixels, axis=1)`` and keeps only the used rows of the kernel: same outputs,
  a smaller dense ``MatMul``.
* :func:`sparse_matmul`: every ``MatMul(x, W)`` with a constant 2-D ``W`` becomes
  ``Transpose(SparseToDenseMatMul(W^T as a COO sparse initializer, Transpose(x)))`` using
  onnxruntime's contrib operator ``com.microsoft::SparseToDenseMatMul``, the one CPU operator
  of onnxruntime that really consumes sparse weights (only the nonzeros are stored and
  multiplied). The sparse weights are fed as ``sparse_tensor(float)`` inputs (see
  :func:`sparse_matmul`).

Both take and return ``onnx.ModelProto`` and leave the input untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gather_inputs", "sparse_feeds", "sparse_matmul"]


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def gather_inputs(model: Any) -> tuple[Any, dict[str, int]]:
    """Drop input features no weight of the first ``MatMul`` reads (see the module doc).

    Returns ``(new_model, {"features_before": K, "features_after": k})``; the model is returned
    unchanged (a copy) when the first MatMul has no constant 2-D weight or no all-zero row.
    """
    import onnx
    from onnx import helper, numpy_helper

    new = onnx.ModelProto()
    new.CopyFrom(model)
    graph = new.graph
    inits = {t.name: t for t in graph.initializer}
    first = next((n for n in graph.node if n.op_type == "MatMul"), None)
    if first is None or first.input[1] not in inits:
        return new, {}
    w = numpy_helper.to_array(inits[first.input[1]])
    if w.ndim != 2 or len(_consumers(graph, first.input[1])) != 1:
        return new, {}
    used = np.flatnonzero(np.any(w != 0, axis=1))
    if used.size == w.shape[0] or used.size == 0:
        return new, {"features_before": int(w.shape[0]), "features_after": int(w.shape[0])}
    x_name = first.input[0]
    idx_name, gathered = first.name + "_used_features", first.name + "_gathered"
    graph.initializer.remove(inits[first.input[1]])
    graph.initializer.extend(
        [
            numpy_helper.from_array(used.astype(np.int64), idx_name),
            numpy_helper.from_array(np.ascontiguousarray(w[used]), first.input[1]),
        ]
    )
    gather = helper.make_node(
        "Gather", [x_name, idx_name], [gathered], axis=1, name=first.name + "_gather"
    )
    first.input[0] = gathered
    nodes = list(graph.node)
    at = nodes.index(first)
    del graph.node[:]
    graph.node.extend(nodes[:at] + [gather] + nodes[at:])
    onnx.checker.check_model(new)
    return new, {"features_before": int(w.shape[0]), "features_after": int(used.size)}


def sparse_matmul(model: Any) -> tuple[Any, dict[str, tuple[list[int], np.ndarray, np.ndarray]]]:
    """Replace constant-weight 2-D ``MatMul`` s with ``com.microsoft::SparseToDenseMatMul``.

    onnxruntime 1.32 rejects a ``sparse_initializer`` as this operator's input (it types it
    as a dense tensor), so each sparse weight becomes a graph input of type
    ``sparse_tensor(float)``; feed it once per run with :func:`sparse_feeds` (the COO values
    and indices are built once, the kernel multiplies only the nonzeros).

    Returns ``(new_model, {input_name: (dense_shape, values, indices [nnz, 2])})``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    new = onnx.ModelProto()
    new.CopyFrom(model)
    graph = new.graph
    inits = {t.name: t for t in graph.initializer}
    weights: dict[str, tuple[list[int], np.ndarray, np.ndarray]] = {}
    nodes = []
    for node in graph.node:
        wname = node.input[1] if node.op_type == "MatMul" else None
        t = inits.get(wname) if wname else None
        if t is None or t.data_type != TensorProto.FLOAT or len(t.dims) != 2:
            nodes.append(node)
            continue
        wt = np.ascontiguousarray(numpy_helper.to_array(t).T)  # (out, in): Y^T = W^T @ X^T
        rows, cols = np.nonzero(wt)
        sname = wname + "_sparseT"
        weights[sname] = (
            list(wt.shape),
            wt[rows, cols].astype(np.float32),
            np.stack([rows, cols], 1).astype(np.int64),
        )
        graph.input.append(
            helper.make_sparse_tensor_value_info(sname, TensorProto.FLOAT, list(wt.shape))
        )
        if len(_consumers(graph, wname)) == 1:
            graph.initializer.remove(t)
        x, y = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Transpose", [x], [y + "_xT"], perm=[1, 0], name=y + "_xT"),
            helper.make_node(
                "SparseToDenseMatMul",
                [sname, y + "_xT"],
                [y + "_yT"],
                domain="com.microsoft",
                name=y + "_spmm",
            ),
            helper.make_node("Transpose", [y + "_yT"], [y], perm=[1, 0], name=y + "_yT"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    if weights and not any(o.domain == "com.microsoft" for o in new.opset_import):
        new.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return new, weights


def sparse_feeds(weights: dict[str, tuple[list[int], np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """onnxruntime ``OrtValue`` s (COO sparse tensors) for :func:`sparse_matmul` 's inputs."""
    import onnxruntime as ort

    device = ort.OrtDevice.make("cpu", 0)
    feeds = {}
    for name, (shape, values, indices) in weights.items():
        sparse = ort.SparseTensor.sparse_coo_from_numpy(
            np.array(shape, np.int64), values, indices, device
        )
        feeds[name] = ort.OrtValue.ort_value_from_sparse_tensor(sparse)
    return feeds
