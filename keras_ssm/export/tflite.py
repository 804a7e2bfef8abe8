"""Export a (folded) Keras 3 model to TFLite / LiteRT, verified before it is kept.

Uses ``tf.lite.TFLiteConverter.from_keras_model`` (never ``from_concrete_functions``,
which silently produces NaN outputs for Keras 3 models) and checks the result with the
``ai_edge_litert`` interpreter.

Sparse storage (``sparse=True``, ``Optimize.EXPERIMENTAL_SPARSITY``) and the converter's
block-sparsity bug. The converter stores a weight sparse when at least 30% of it is zero,
either in "random" sparsity (CSR over the last axis; the operator reads it through a
``DENSIFY`` op) or, for ``FULLY_CONNECTED`` weights ``(units, inputs)``, in blocks of
``1 x b`` along the input axis (``b = 4`` for float32 weights, ``16`` for int8 ones), read
directly by LiteRT's sparse kernel. It picks the blocks when the share of zeros left after
dropping the all-zero blocks is over 0.9 (int8: 0.8) times the share of zeros. Its encoder
cuts the input axis into ``inputs // b`` whole blocks (a floor: TensorFlow's
``FormatConverter``), so **when ``inputs % b != 0`` the last ``inputs % b`` inputs are never
stored**; the block-sparsity estimate counts their weights as zeros, which makes the blocks
*more* likely to be chosen. A float Dense layer with fewer than 4 inputs loses its whole
kernel (``inputs // 4 == 0`` blocks), one with 22 inputs loses the weights of inputs 20 and
21. The file then computes without those weights (or reads garbage where no block is left).
Shrinking makes such layers common (a shrunk ``Dense 22 -> 3 -> 6``: the second kernel has 3
inputs).

The rule applied here: every sparse tensor of the converted file is checked; one stored in
blocks along an axis whose length is not a multiple of its block size is re-encoded from the
model's dense weights (a second, dense conversion; operators are matched one to one) in random
sparsity read through a ``DENSIFY`` op, exactly as the converter stores its other sparse
weights, or dense when that is smaller (tiny tensors). While the dense weights are at hand,
every other sparse tensor is decoded and compared with them too (any difference: re-encoded).
Every other tensor keeps the converter's encoding, block-sparse ones included (whole blocks
lose nothing), so the file stays as small as before; models without such a tensor convert
once, as before. If the check or the repair fails (say the two conversions cannot be
matched), the whole model is stored dense, with a warning. The result is then verified
against Keras as always.

Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> to_tflite(m, "/tmp/m.tflite", overwrite=True).max_rel_error < 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from typing import Any

import keras
import numpy as np

from keras_ssm.atomic import atomic_path
from keras_ssm.export._verify import (
    ExportResult,
    Inputs,
    InputSpec,
    input_specs,
    verify_file,
)

__all__ = ["to_tflite", "tflite_bytes", "run_tflite"]


def _convert(model: keras.Model, sparse: bool, int8: bool) -> bytes:
    """The converter's flatbuffer for ``model`` (no repair, no verification)."""
    import tensorflow as tf

    specs = input_specs(model)  # validates: built, known inputs
    with contextlib.ExitStack() as stack:
        if len(specs) == 1:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        else:
            converter = _saved_model_converter(model, specs, stack)
        return _run_converter(converter, sparse, int8)


def _saved_model_converter(
    model: keras.Model, specs: list[InputSpec], stack: contextlib.ExitStack
) -> Any:
    """A converter for a multi-input model, from a SavedModel whose ``serve`` signature takes
    the inputs by name (what ``from_keras_model`` does for one input; for several it passes a
    list, which a model taking a dict of inputs refuses)."""
    import tempfile

    import tensorflow as tf

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="keras_ssm_tflite_"))
    signature = {
        spec.name: tf.TensorSpec((None,) + tuple(spec.shape[1:]), spec.dtype, name=spec.name)
        for spec in specs
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), [signature])
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(folder, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(folder)


def _run_converter(converter, sparse: bool, int8: bool) -> bytes:
    import tensorflow as tf

    opts = []
    if int8:
        opts.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = opts
    # The converter saves the model first and prints one line per captured variable
    # ("Saved artifact at ...", hundreds for a convnet): keep the user's output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def tflite_bytes(model: keras.Model, sparse: bool = True, int8: bool = False) -> bytes:
    """Convert ``model`` to a TFLite flatbuffer (no file written, no verification).

    ``sparse`` adds ``Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight storage); tensors the
    converter would store wrongly (block-sparse along an axis that is not a multiple of the
    block size, see the module docstring) are re-encoded. ``int8`` adds ``Optimize.DEFAULT``
    (dynamic-range quantization: int8 weights, float activations).
    """
    return _tflite_bytes(model, sparse, int8)[0]


def _tflite_bytes(model: keras.Model, sparse: bool, int8: bool) -> tuple[bytes, dict]:
    """``tflite_bytes`` and what was done to the converter's sparse tensors."""
    data = _convert(model, sparse, int8)
    if not sparse:
        return data, {}
    try:
        fb = _read(data)
        if not _truncated_sparse_tensors(fb):
            return data, {}
        dense_data = _convert(model, False, int8)
        fixed = _reencode(fb, _read(dense_data))
        return _write(fb), {"sparse_reencoded": fixed}
    except Exception as e:  # noqa: BLE001 - a correct dense file beats no file
        warnings.warn(
            f"TFLite export of {model.name!r}: the converter's sparse weights could not be "
            f"checked or repaired ({type(e).__name__}: {e}); the model is stored dense",
            UserWarning,
            stacklevel=3,
        )
        return _convert(model, False, int8), {"sparse_fallback": "dense model"}


# ----------------------------------------------------------------------------- sparse tensors
# The flatbuffer is edited through TensorFlow's object API of the TFLite schema.


class _MatchError(RuntimeError):
    """The sparse and dense conversions of a model do not correspond one to one."""


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _read(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _write(fb) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(fb))


_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8}


def _dtype(tensor) -> np.dtype:
    names = {v: k for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}
    name = names.get(tensor.type)
    if name not in _NUMPY_TYPES:
        raise _MatchError(f"sparse tensor of unsupported type {name}")
    return np.dtype(_NUMPY_TYPES[name]).newbyteorder("<")


def _vector(v) -> np.ndarray:
    return np.zeros(0, np.int64) if v is None else np.asarray(v.values, np.int64)


def _block_sizes(tensor) -> list[tuple[int, int]]:
    """``(axis, block size)`` of each blocked axis of a sparse tensor."""
    sp = tensor.sparsity
    rank = len(tensor.shape)
    order = [int(d) for d in sp.traversalOrder]
    blocks = [] if sp.blockMap is None else [int(d) for d in sp.blockMap]
    return [(d, int(sp.dimMetadata[order.index(rank + i)].denseSize)) for i, d in enumerate(blocks)]


def _is_truncated(tensor) -> bool:
    """Stored in blocks along an axis its block size does not divide (the tail is lost)."""
    return any(int(tensor.shape[d]) % size for d, size in _block_sizes(tensor))


def _truncated_sparse_tensors(fb) -> list[tuple[int, int]]:
    """``(subgraph, tensor)`` indices of the sparse tensors whose encoding drops entries."""
    return [
        (g, i)
        for g, graph in enumerate(fb.subgraphs)
        for i, t in enumerate(graph.tensors)
        if t.sparsity is not None and _is_truncated(t)
    ]


def _densify(tensor, data: np.ndarray | None) -> np.ndarray:
    """The dense array a sparse tensor's encoding describes (TFLite sparsity format: one
    ``dim_metadata`` per stored axis in traversal order, the block axes numbered after the
    original ones). Entries it does not reach are zero; entries it addresses outside the
    tensor's shape (a truncated encoding may) are dropped."""
    sp = tensor.sparsity
    shape = [int(d) for d in tensor.shape]
    rank = len(shape)
    dt = _dtype(tensor)
    values = np.frombuffer(b"" if data is None else np.asarray(data).tobytes(), dt)
    order = [int(d) for d in sp.traversalOrder]
    coords: list[np.ndarray | None] = [None] * len(order)
    pos = np.zeros(1, np.int64)  # per partial coordinate: its position on the current level
    for level, axis in enumerate(order):
        meta = sp.dimMetadata[level]
        if meta.format == _schema().DimensionType.DENSE:
            size = int(meta.denseSize)
            parent = np.repeat(np.arange(pos.size), size)
            here = np.tile(np.arange(size, dtype=np.int64), pos.size)
            pos = pos[parent] * size + here
        else:
            seg, idx = _vector(meta.arraySegments), _vector(meta.arrayIndices)
            if pos.size and (pos.max() + 1 >= seg.size or seg[-1] > idx.size):
                raise _MatchError("sparse tensor with inconsistent index arrays")
            starts, counts = seg[pos], seg[pos + 1] - seg[pos]
            parent = np.repeat(np.arange(pos.size), counts)
            offsets = np.arange(parent.size) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(starts, counts) + offsets
            here = idx[pos]
        coords = [None if c is None else c[parent] for c in coords]
        coords[axis] = here
    if pos.size and pos.max() >= values.size:
        raise _MatchError("sparse tensor holds fewer values than its index arrays address")
    full = list(coords[:rank])
    for i, (axis, size) in enumerate(_block_sizes(tensor)):
        full[axis] = full[axis] * size + coords[rank + i]
    inside = np.ones(pos.size, bool)
    for d in range(rank):
        inside &= full[d] < shape[d]
    out = np.zeros(shape, dt)
    out[tuple(c[inside] for c in full)] = values[pos[inside]]
    return out


def _covered(tensor) -> tuple[slice, ...]:
    """The part of a (possibly truncated) block-sparse tensor its blocks cover."""
    cover = [slice(None)] * len(tensor.shape)
    for axis, size in _block_sizes(tensor):
        n = int(tensor.shape[axis])
        cover[axis] = slice(0, n - n % size)
    return tuple(cover)


def _opcode(fb, op) -> int:
    code = fb.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def _buffer_data(fb, tensor) -> np.ndarray | None:
    buf = fb.buffers[tensor.buffer]
    if getattr(buf, "offset", 0):  # stored outside the flatbuffer (models over 2 GB)
        raise _MatchError("weights stored at buffer offsets")
    return None if buf.data is None or len(buf.data) == 0 else np.asarray(buf.data, np.uint8)


def _raw(fb, tensor) -> bytes | None:
    """The bytes of a constant tensor, or ``None`` for a computed one."""
    data = _buffer_data(fb, tensor)
    return None if data is None else data.tobytes()


def _references(fb, graph, dense, dgraph) -> dict[int, np.ndarray]:
    """The dense values of each sparse tensor of ``graph``, from the dense conversion.

    The sparse conversion is the dense one plus ``DENSIFY`` ops: without those the operators
    must correspond one to one (same ops, same input shapes, same dense constants)."""
    densify = _schema().BuiltinOperator.DENSIFY
    ops = [op for op in graph.operators if _opcode(fb, op) != densify]
    dops = list(dgraph.operators)
    if len(ops) != len(dops):
        raise _MatchError(f"{len(ops)} operators against {len(dops)}")
    made_by = {
        int(o): int(op.inputs[0])
        for op in graph.operators
        if _opcode(fb, op) == densify
        for o in op.outputs
    }
    refs: dict[int, np.ndarray] = {}
    for op, dop in zip(ops, dops, strict=True):
        ins, dins = [int(i) for i in op.inputs], [int(i) for i in dop.inputs]
        if _opcode(fb, op) != _opcode(dense, dop) or len(ins) != len(dins):
            raise _MatchError("operators differ")
        for i, j in zip(ins, dins, strict=True):
            if (i < 0) != (j < 0):
                raise _MatchError("optional inputs differ")
            if i < 0:
                continue
            src = made_by.get(i, i)
            t, dt = graph.tensors[src], dgraph.tensors[j]
            if list(t.shape) != list(dt.shape) or t.type != dt.type:
                raise _MatchError("input shapes differ")
            raw = _raw(dense, dt)
            if t.sparsity is None:
                if _raw(fb, t) != raw:
                    raise _MatchError("constant inputs differ")
                continue
            if raw is None:
                raise _MatchError("a sparse weight has no dense counterpart")
            want = np.frombuffer(raw, _dtype(dt)).reshape([int(d) for d in dt.shape])
            if src in refs and not np.array_equal(refs[src], want):
                raise _MatchError("a sparse weight has two dense counterparts")
            refs[src] = want
    return refs


def _index_vector(values: np.ndarray):
    """The smallest ``SparseIndexVector`` holding ``values``: ``(type, vector)``."""
    s = _schema()
    top = int(values.max()) if values.size else 0
    for limit, kind, cls, dt in (
        (2**8, s.SparseIndexVector.Uint8Vector, s.Uint8VectorT, np.uint8),
        (2**16, s.SparseIndexVector.Uint16Vector, s.Uint16VectorT, np.uint16),
        (2**31, s.SparseIndexVector.Int32Vector, s.Int32VectorT, np.int32),
    ):
        if top < limit:
            vec = cls()
            vec.values = values.astype(dt)
            return kind, vec
    raise _MatchError("sparse index out of int32 range")


def _random_sparsity(dense: np.ndarray):
    """The converter's random sparsity for ``dense``: every axis dense but the last, which is
    CSR; no blocks. Returns ``(SparsityParametersT, values, index bytes)``."""
    s = _schema()
    shape = dense.shape
    rows = dense.reshape(-1, shape[-1])
    nonzero = rows != 0
    segments = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(nonzero)[1].astype(np.int64)
    metas = []
    for size in shape[:-1]:
        meta = s.DimensionMetadataT()
        meta.format, meta.denseSize = s.DimensionType.DENSE, int(size)
        metas.append(meta)
    meta = s.DimensionMetadataT()
    meta.format = s.DimensionType.SPARSE_CSR
    meta.arraySegmentsType, meta.arraySegments = _index_vector(segments)
    meta.arrayIndicesType, meta.arrayIndices = _index_vector(indices)
    metas.append(meta)
    sp = s.SparsityParametersT()
    sp.traversalOrder = np.arange(len(shape), dtype=np.int32)
    sp.blockMap = np.zeros(0, np.int32)
    sp.dimMetadata = metas
    index_bytes = meta.arraySegments.values.nbytes + meta.arrayIndices.values.nbytes
    return sp, rows[nonzero], index_bytes


# A DENSIFY operator, its output tensor and the sparsity tables cost about this much.
_DENSIFY_OVERHEAD_BYTES = 256


def _set_data(fb, tensor, values: np.ndarray) -> None:
    """Store ``values`` as the tensor's data (in a buffer of its own)."""
    s = _schema()
    shared = sum(t.buffer == tensor.buffer for g in fb.subgraphs for t in g.tensors) > 1
    if shared or tensor.buffer == 0:
        fb.buffers.append(s.BufferT())
        tensor.buffer = len(fb.buffers) - 1
    raw = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
    fb.buffers[tensor.buffer].data = np.frombuffer(raw, np.uint8).copy()


def _densify_opcode(fb) -> int:
    s = _schema()
    densify = s.BuiltinOperator.DENSIFY
    for i, code in enumerate(fb.operatorCodes):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == densify:
            return i
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = densify
    code.version = 1
    fb.operatorCodes.append(code)
    return len(fb.operatorCodes) - 1


def _read_through_densify(fb, graph, index: int, readers: list) -> None:
    """Insert a ``DENSIFY`` of tensor ``index`` before its first reader; readers use its
    output (the converter's layout for random-sparse weights)."""
    s = _schema()
    src = graph.tensors[index]
    out = s.TensorT()
    out.shape = np.array(src.shape, np.int32)
    out.type = src.type
    out.quantization = copy.deepcopy(src.quantization)
    out.hasRank = True
    name = src.name if isinstance(src.name, bytes) else str(src.name or "").encode()
    out.name = name + b"_densified"
    fb.buffers.append(s.BufferT())
    out.buffer = len(fb.buffers) - 1
    graph.tensors.append(out)
    out_index = len(graph.tensors) - 1
    op = s.OperatorT()
    op.opcodeIndex = _densify_opcode(fb)
    op.inputs = np.array([index], np.int32)
    op.outputs = np.array([out_index], np.int32)
    op.builtinOptionsType = s.BuiltinOptions.NONE
    first = min(graph.operators.index(r) for r in readers)
    for reader in readers:
        reader.inputs = np.array(
            [out_index if int(i) == index else int(i) for i in reader.inputs], np.int32
        )
    graph.operators.insert(first, op)


def _reencode(fb, dense) -> list[str]:
    """Re-encode, from the dense conversion ``dense``, every sparse tensor of ``fb`` that is
    truncated or does not decode to the dense weights; returns their names.

    Raises:
        _MatchError: the two conversions do not correspond; ``fb`` may be partly edited.
    """
    densify = _schema().BuiltinOperator.DENSIFY
    if len(fb.subgraphs) != len(dense.subgraphs):
        raise _MatchError("different subgraphs")
    fixed = []
    for graph, dgraph in zip(fb.subgraphs, dense.subgraphs, strict=True):
        refs = _references(fb, graph, dense, dgraph)
        for index, tensor in enumerate(list(graph.tensors)):
            if tensor.sparsity is None:
                continue
            if index not in refs:
                raise _MatchError("a sparse tensor no operator reads")
            want, truncated = refs[index], _is_truncated(tensor)
            got = _densify(tensor, _buffer_data(fb, tensor))
            cover = _covered(tensor)
            if not np.array_equal(got[cover], want[cover]):
                if truncated:  # what the blocks do hold must be the dense weights
                    raise _MatchError("a block-sparse tensor differs from its dense weights")
            elif not truncated and np.array_equal(got, want):
                continue  # stored right: keep the converter's encoding
            readers = [op for op in graph.operators if index in [int(i) for i in op.inputs]]
            direct = [op for op in readers if _opcode(fb, op) != densify]
            sparsity, values, index_bytes = _random_sparsity(want)
            sparse_bytes = values.nbytes + index_bytes + _DENSIFY_OVERHEAD_BYTES
            if len(direct) == len(readers) and want.nbytes <= sparse_bytes:
                tensor.sparsity = None  # dense is smaller: the readers take it as it is
                _set_data(fb, tensor, want)
            else:
                tensor.sparsity = sparsity
                _set_data(fb, tensor, values)
                if direct:
                    _read_through_densify(fb, graph, index, direct)
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            fixed.append(name)
            if tensor.sparsity is not None:
                check = _densify(tensor, _buffer_data(fb, tensor))
                if not np.array_equal(check, want):  # pragma: no cover - an encoder bug here
                    raise _MatchError("re-encoded tensor does not decode to its weights")
    return fixed


def run_tflite(
    model_path_or_bytes: str | bytes, x: Inputs, default_delegates: bool = True
) -> list[np.ndarray]:
    """Run a TFLite model on ``x`` (any batch size) with the LiteRT interpreter: an array for a
    single-input model, a dict of named arrays (its signature's inputs) for several inputs,
    whose outputs come back in the order of their names (a dict of outputs: sorted keys).

    ``default_delegates=False`` runs LiteRT's builtin kernels without the XNNPACK delegate
    (needed for sparse int8 models, whose sparse hybrid FULLY_CONNECTED XNNPACK rejects).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = (
        {}
        if default_delegates
        else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    )
    if isinstance(model_path_or_bytes, bytes):
        interp = Interpreter(model_content=model_path_or_bytes, **kw)
    else:
        interp = Interpreter(model_path=os.fspath(model_path_or_bytes), **kw)
    if isinstance(x, dict):
        outputs = interp.get_signature_runner()(**x)
        return [np.array(outputs[name]) for name in sorted(outputs, key=_natural)]
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return [np.array(interp.get_tensor(o["index"])) for o in interp.get_output_details()]


def _natural(name: str) -> tuple:
    """Sort key that puts ``output_10`` after ``output_9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike[str],
    sparse: bool = True,
    int8: bool = False,
    check: bool = True,
    rtol: float | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``model`` to a ``.tflite`` file, verified with LiteRT before it is kept.

    The flatbuffer is written to a temporary file in the destination directory, run with
    ``ai_edge_litert.interpreter.Interpreter`` on random inputs (batch 3 and 1) and compared
    with Keras; only then is it renamed to ``path``. On failure nothing is left on disk.

    Args:
        model: a built Keras 3 model (e.g. ``keras_ssm.fold(m)``); a multi-input model is
            converted through a SavedModel whose signature takes its inputs by name.
        path: destination file.
        sparse: store weights sparse (``Optimize.EXPERIMENTAL_SPARSITY``); weights the
            converter would store block-sparse with entries lost are re-encoded (see the
            module docstring) and listed in ``details["sparse_reencoded"]``.
        int8: dynamic-range quantization (``Optimize.DEFAULT``). For ternary kernels the
            stored int8 codes are ``{-127, 0, 127}`` with scale ``c/127`` (see
            :func:`keras_ssm.export.int8.tflite_int8_weights`); LiteRT's hybrid kernels also
            quantize activations on the fly, so outputs are close but not exact.
        check: verify before keeping the file.
        rtol: tolerance on ``max|tflite - keras| / max|keras|`` for a model whose outputs
            move no more than its inputs; default ``1e-4`` for float and ``5e-2`` for
            ``int8``, scaled up by the model's sensitivity (see
            :func:`keras_ssm.export._verify.check_tolerance`); ``details["check_tolerance"]``
            records the one applied.
        overwrite: replace an existing file.

    Raises:
        ExportVerificationError: outputs differ from Keras beyond ``rtol``.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    final = os.fspath(path)
    if not overwrite and os.path.lexists(final):
        raise FileExistsError(f"{final!r} already exists (pass overwrite=True to replace it)")
    base = rtol if rtol is not None else (5e-2 if int8 else 1e-4)
    data, repair = _tflite_bytes(model, sparse, int8)
    delegates = not (int8 and sparse)
    if not delegates:
        warnings.warn(
            "a sparse int8 TFLite model does not run with LiteRT's default XNNPACK "
            "delegate; run it without default delegates or export with sparse=False",
            UserWarning,
            stacklevel=2,
        )
    err = None
    checked: dict[str, float] = {}
    with atomic_path(final, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            err, checked = verify_file(
                model,
                lambda x: run_tflite(tmp, x, default_delegates=delegates),
                "TFLite export",
                base,
                final,
            )
    details = {
        "sparse": sparse,
        "int8": int8,
        "default_delegates_ok": delegates,
        **repair,
        **checked,
    }
    return ExportResult(final, len(data), err, details)
