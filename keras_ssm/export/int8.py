"""Exact low-bit weights for ternary (ELUS) kernels.

A folded signed-supermask layer has kernel ``w0 * M`` with ``|w0| = c`` constant per layer
(ELUS init), so every weight is one of ``{-c, 0, +c}``. Stored as int8 values in
``{-1, 0, 1}`` with one float32 scale ``c`` per tensor, the weights are *exact*:
``int8 * c`` reproduces ``+-c`` and ``0`` bit for bit.

Example:
    >>> import numpy as np
    >>> k = np.float32(0.5) * np.array([[1, 0], [0, -1]], dtype=np.float32)
    >>> is_ternary(k)
    0.5
    >>> is_ternary(np.array([0.5, 0.25], dtype=np.float32)) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "is_ternary",
    "ternary_codes",
    "QuantizedInitializer",
    "quantize_onnx_ternary",
    "onnx_dequantized_weights",
    "tflite_int8_weights",
]

_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}


def is_ternary(kernel: np.ndarray) -> float | None:
    """Return ``c`` if every entry of ``kernel`` is one of ``{-c, 0, +c}``, else ``None``.

    ``c`` is returned as a Python float that converts back to the array's dtype exactly.
    An all-zero array returns ``0.0`` (ternary for any scale); non-float or non-finite
    arrays return ``None``.

    Example:
        >>> import numpy as np
        >>> is_ternary(np.array([0.0, -2.0, 2.0], dtype=np.float32))
        2.0
        >>> is_ternary(np.zeros(3, dtype=np.float32))
        0.0
    """
    a = np.asarray(kernel)
    if a.dtype.kind != "f" or a.size == 0:
        return None
    if not np.all(np.isfinite(a)):
        return None
    nz = np.abs(a[a != 0])
    if nz.size == 0:
        return 0.0
    c = nz[0]
    if not np.all(nz == c):
        return None
    return float(c)


def ternary_codes(kernel: np.ndarray) -> tuple[np.ndarray, float]:
    """Split a ternary array into int8 codes in ``{-1, 0, 1}`` and its scale ``c``.

    Raises:
        ValueError: if ``kernel`` is not ternary.

    Example:
        >>> import numpy as np
        >>> q, c = ternary_codes(np.array([0.0, -3.0, 3.0], dtype=np.float32))
        >>> q.tolist(), c
        ([0, -1, 1], 3.0)
    """
    c = is_ternary(kernel)
    if c is None:
        raise ValueError("array is not ternary ({-c, 0, +c})")
    a = np.asarray(kernel)
    return np.sign(a).astype(np.int8), c


@dataclass(frozen=True)
class QuantizedInitializer:
    """One ONNX weight replaced by int8 codes + ``DequantizeLinear`` (per-tensor scale)."""

    name: str
    shape: tuple[int, ...]
    scale: float
    nonzero: int


FORMS = ("cast", "dequantize")


def quantize_onnx_ternary(model_proto, min_size: int = 16, form: str = "cast"):
    """Store every ternary MatMul/Gemm/Conv weight of an ONNX model as exact int8.

    Each ternary float initializer ``W`` used as the weight input of a MatMul, Gemm,
    Conv or ConvTranspose node becomes an int8 initializer ``W_int8`` (values -1/0/1) and one
    float32 scale ``c``, rebuilt in the graph as ``W``:

    * ``form="cast"`` (default): ``Mul(Cast(W_int8, to=FLOAT), c) -> W``.  ``c * {-1, 0, 1}``
      is exact in float32, so ``W`` equals the original weights bit for bit, and onnxruntime
      folds the two constant nodes into a float initializer when it loads the model: the same
      graph, outputs and speed as the fp32 file under *default* session options.
    * ``form="dequantize"``: ``DequantizeLinear(W_int8, c, 0) -> W``, the QDQ convention.
      Exact only when onnxruntime is told not to fuse it into quantized kernels
      (``session.disable_quant_qdq=1``; :func:`keras_ssm.export.runtime.ort_session`), which
      would quantize the activations too.

    The graph's arithmetic stays float32.

    Args:
        model_proto: an ``onnx.ModelProto`` (modified copy is returned; input untouched).
        min_size: leave smaller initializers (e.g. biases that happen to be ternary) alone.
        form: ``"cast"`` or ``"dequantize"``.

    Returns:
        ``(new_model_proto, [QuantizedInitializer, ...])``.
    """
    if form not in FORMS:
        raise ValueError(f"Unknown int8 form {form!r}; allowed: {', '.join(FORMS)}.")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets: list[str] = []
    for node in graph.node:
        idx = _WEIGHT_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        if name in inits and name not in targets:
            targets.append(name)
    done: list[QuantizedInitializer] = []
    new_nodes = []
    for name in targets:
        tensor = inits[name]
        if tensor.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(tensor)
        if arr.size < min_size:
            continue
        c = is_ternary(arr)
        if not c:  # None (not ternary) or 0.0 (all zero: nothing to gain)
            continue
        codes = np.sign(arr).astype(np.int8)
        q_name, s_name, z_name = name + "_int8", name + "_scale", name + "_zero_point"
        graph.initializer.remove(tensor)
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, q_name),
                numpy_helper.from_array(np.array(c, dtype=np.float32), s_name),
            ]
        )
        if form == "cast":
            codes_f = name + "_codes"
            new_nodes += [
                helper.make_node(
                    "Cast", [q_name], [codes_f], to=TensorProto.FLOAT, name=name + "_cast"
                ),
                helper.make_node("Mul", [codes_f, s_name], [name], name=name + "_scale_mul"),
            ]
        else:
            graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int8), z_name))
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [q_name, s_name, z_name], [name], name=name + "_dequantize"
                )
            )
        done.append(QuantizedInitializer(name, tuple(arr.shape), c, int(np.count_nonzero(codes))))
    if new_nodes:
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + old)
    return model, done


def onnx_dequantized_weights(model_proto) -> dict[str, np.ndarray]:
    """Evaluate, in numpy (float32), every weight rebuilt from int8 initializers: both
    ``Mul(Cast(q), scale)`` and ``DequantizeLinear(q, scale, zero_point)``.

    Returns a mapping from the rebuilt tensor's name to its float32 value, computed as the
    ONNX operators define it (``q * scale``; ``(q - zero_point) * scale``).
    """
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    casts: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for node in model_proto.graph.node:
        if node.op_type == "Cast" and node.input[0] in inits:
            if inits[node.input[0]].dtype == np.int8:
                casts[node.output[0]] = inits[node.input[0]].astype(np.float32)
        elif node.op_type == "Mul" and node.input[0] in casts and node.input[1] in inits:
            out[node.output[0]] = casts[node.input[0]] * np.float32(inits[node.input[1]])
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = inits[node.input[0]].astype(np.int32)
            scale = np.float32(inits[node.input[1]])
            zp = inits[node.input[2]].astype(np.int32) if len(node.input) > 2 else 0
            out[node.output[0]] = (q - zp).astype(np.float32) * scale
    return out


def tflite_int8_weights(model_content: bytes) -> list[dict]:
    """List the int8 constant tensors of a ``.tflite`` flatbuffer with their scales.

    Each entry has ``name``, ``values`` (int8 array), ``scales`` (float32 array) and ``axis``
    (the quantized dimension). Useful to check that a dynamic-range quantized ternary model
    stores ``{-q, 0, +q}`` codes whose ``q * scale`` equals ``c``.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content)
    interp.allocate_tensors()
    out = []
    for d in interp.get_tensor_details():
        if d["dtype"] != np.int8:
            continue
        qp = d["quantization_parameters"]
        if len(qp["scales"]) == 0:
            continue
        try:
            values = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # not a constant tensor
            continue
        out.append(
            {
                "name": d["name"],
                "values": values,
                "scales": np.array(qp["scales"]),
                "axis": int(qp["quantized_dimension"]),
            }
        )
    return out
