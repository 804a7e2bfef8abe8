"""Sparse weights in a TFLite flatbuffer: checking and repairing what the converter wrote.

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

The flatbuffer is edited through TensorFlow's object API of the TFLite schema; used by
:func:`keras_ssm.export.tflite.tflite_bytes`.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = [
    "MatchError",
    "opcode",
    "read",
    "reencode",
    "schema",
    "truncated_sparse_tensors",
    "write",
]


class MatchError(RuntimeError):
    """The sparse and dense conversions of a model do not correspond one to one."""


def schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def write(fb) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(fb))


_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8}


def _dtype(tensor) -> np.dtype:
    names = {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_")}
    name = names.get(tensor.type)
    if name not in _NUMPY_TYPES:
        raise MatchError(f"sparse tensor of unsupported type {name}")
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


def truncated_sparse_tensors(fb) -> list[tuple[int, int]]:
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
        if meta.format == schema().DimensionType.DENSE:
            size = int(meta.denseSize)
            parent = np.repeat(np.arange(pos.size), size)
            here = np.tile(np.arange(size, dtype=np.int64), pos.size)
            pos = pos[parent] * size + here
        else:
            seg, idx = _vector(meta.arraySegments), _vector(meta.arrayIndices)
            if pos.size and (pos.max() + 1 >= seg.size or seg[-1] > idx.size):
                raise MatchError("sparse tensor with inconsistent index arrays")
            starts, counts = seg[pos], seg[pos + 1] - seg[pos]
            parent = np.repeat(np.arange(pos.size), counts)
            offsets = np.arange(parent.size) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(starts, counts) + offsets
            here = idx[pos]
        coords = [None if c is None else c[parent] for c in coords]
        coords[axis] = here
    if pos.size and pos.max() >= values.size:
        raise MatchError("sparse tensor holds fewer values than its index arrays address")
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


def opcode(fb, op) -> int:
    code = fb.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def _buffer_data(fb, tensor) -> np.ndarray | None:
    buf = fb.buffers[tensor.buffer]
    if getattr(buf, "offset", 0):  # stored outside the flatbuffer (models over 2 GB)
        raise MatchError("weights stored at buffer offsets")
    return None if buf.data is None or len(buf.data) == 0 else np.asarray(buf.data, np.uint8)


def _raw(fb, tensor) -> bytes | None:
    """The bytes of a constant tensor, or ``None`` for a computed one."""
    data = _buffer_data(fb, tensor)
    return None if data is None else data.tobytes()


def _references(fb, graph, dense, dgraph) -> dict[int, np.ndarray]:
    """The dense values of each sparse tensor of ``graph``, from the dense conversion.

    The sparse conversion is the dense one plus ``DENSIFY`` ops: without those the operators
    must correspond one to one (same ops, same input shapes, same dense constants)."""
    densify = schema().BuiltinOperator.DENSIFY
    ops = [op for op in graph.operators if opcode(fb, op) != densify]
    dops = list(dgraph.operators)
    if len(ops) != len(dops):
        raise MatchError(f"{len(ops)} operators against {len(dops)}")
    made_by = {
        int(o): int(op.inputs[0])
        for op in graph.operators
        if opcode(fb, op) == densify
        for o in op.outputs
    }
    refs: dict[int, np.ndarray] = {}
    for op, dop in zip(ops, dops, strict=True):
        ins, dins = [int(i) for i in op.inputs], [int(i) for i in dop.inputs]
        if opcode(fb, op) != opcode(dense, dop) or len(ins) != len(dins):
            raise MatchError("operators differ")
        for i, j in zip(ins, dins, strict=True):
            if (i < 0) != (j < 0):
                raise MatchError("optional inputs differ")
            if i < 0:
                continue
            src = made_by.get(i, i)
            t, dt = graph.tensors[src], dgraph.tensors[j]
            if list(t.shape) != list(dt.shape) or t.type != dt.type:
                raise MatchError("input shapes differ")
            raw = _raw(dense, dt)
            if t.sparsity is None:
                if _raw(fb, t) != raw:
                    raise MatchError("constant inputs differ")
                continue
            if raw is None:
                raise MatchError("a sparse weight has no dense counterpart")
            want = np.frombuffer(raw, _dtype(dt)).reshape([int(d) for d in dt.shape])
            if src in refs and not np.array_equal(refs[src], want):
                raise MatchError("a sparse weight has two dense counterparts")
            refs[src] = want
    return refs


def _index_vector(values: np.ndarray):
    """The smallest ``SparseIndexVector`` holding ``values``: ``(type, vector)``."""
    s = schema()
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
    raise MatchError("sparse index out of int32 range")


def _random_sparsity(dense: np.ndarray):
    """The converter's random sparsity for ``dense``: every axis dense but the last, which is
    CSR; no blocks. Returns ``(SparsityParametersT, values, index bytes)``."""
    s = schema()
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
    s = schema()
    shared = sum(t.buffer == tensor.buffer for g in fb.subgraphs for t in g.tensors) > 1
    if shared or tensor.buffer == 0:
        fb.buffers.append(s.BufferT())
        tensor.buffer = len(fb.buffers) - 1
    raw = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
    fb.buffers[tensor.buffer].data = np.frombuffer(raw, np.uint8).copy()


def _densify_opcode(fb) -> int:
    s = schema()
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
    s = schema()
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


def reencode(fb, dense) -> list[str]:
    """Re-encode, from the dense conversion ``dense``, every sparse tensor of ``fb`` that is
    truncated or does not decode to the dense weights; returns their names.

    Raises:
        MatchError: the two conversions do not correspond; ``fb`` may be partly edited.
    """
    densify = schema().BuiltinOperator.DENSIFY
    if len(fb.subgraphs) != len(dense.subgraphs):
        raise MatchError("different subgraphs")
    fixed = []
    for graph, dgraph in zip(fb.subgraphs, dense.subgraphs, strict=True):
        refs = _references(fb, graph, dense, dgraph)
        for index, tensor in enumerate(list(graph.tensors)):
            if tensor.sparsity is None:
                continue
            if index not in refs:
                raise MatchError("a sparse tensor no operator reads")
            want, truncated = refs[index], _is_truncated(tensor)
            got = _densify(tensor, _buffer_data(fb, tensor))
            cover = _covered(tensor)
            if not np.array_equal(got[cover], want[cover]):
                if truncated:  # what the blocks do hold must be the dense weights
                    raise MatchError("a block-sparse tensor differs from its dense weights")
            elif not truncated and np.array_equal(got, want):
                continue  # stored right: keep the converter's encoding
            readers = [op for op in graph.operators if index in [int(i) for i in op.inputs]]
            direct = [op for op in readers if opcode(fb, op) != densify]
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
                    raise MatchError("re-encoded tensor does not decode to its weights")
    return fixed
