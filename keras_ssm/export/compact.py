"""The compact ``.ssm`` format: a folded signed-supermask model near its information limit.

Layout (all integers little-endian)::

    magic    8 bytes  b"\\x89KSSM\\r\\n\\x1a"
    version  u16      FORMAT_VERSION
    flags    u16      0 (reserved)
    meta_len u32      length of the JSON metadata once decompressed
    meta_z   u32      length of the zlib-compressed JSON that follows
    meta     meta_z bytes: zlib(JSON) with the architecture (``model.to_json()``) and a
             manifest of every variable of ``model.weights``: path, shape, dtype, encoding, size
    payload  the variables' encodings, back to back, in manifest order
    crc32    u32      CRC-32 of everything before it

Encodings: ``ternary`` (values in {-c, 0, +c}: float32 scale + Rice-coded zero runs + one
sign bit per nonzero), ``sparse`` (Rice-coded zero runs + float32 nonzero values) and
``raw`` (little-endian array). The smallest is chosen per variable. Loading never uses
pickle or eval, validates every declared length against the bytes that remain before
allocating anything, and reports any damage as :class:`CompactFormatError`.

Zeros are stored as ``+0.0``: a ``-0.0`` weight (``w0 * 0`` with negative ``w0``) loads as
``+0.0``, which compares equal and gives the same outputs.

Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False)])
    >>> save_compact(m, "/tmp/m.ssm", overwrite=True)          # doctest: +SKIP
    >>> load_compact("/tmp/m.ssm").count_params()              # doctest: +SKIP
    8
"""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from typing import Any

import keras
import numpy as np

from keras_ssm.atomic import atomic_write_bytes
from keras_ssm.export import _rice
from keras_ssm.export.int8 import is_ternary

__all__ = [
    "CompactFormatError",
    "save_compact",
    "load_compact",
    "compact_bytes",
    "model_from_compact_bytes",
    "FORMAT_VERSION",
    "MAGIC",
]

MAGIC = b"\x89KSSM\r\n\x1a"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<8sHHII")
_CRC = struct.Struct("<I")
MAX_META_BYTES = 64 << 20
DEFAULT_MAX_ELEMENTS = 1 << 31
_DTYPES = (
    "float32",
    "float16",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


class CompactFormatError(ValueError):
    """A ``.ssm`` file is corrupt, truncated, of another version, or not an ``.ssm`` file."""


# ----------------------------------------------------------------------------- encoding


def _encode_array(a: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """Smallest encoding of one variable: ``(manifest fields, payload)``."""
    dtype = a.dtype.name
    if dtype not in _DTYPES:
        raise ValueError(f"cannot store a variable of dtype {dtype}")
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    best: tuple[dict[str, Any], bytes] = ({"enc": "raw"}, raw)
    if dtype != "float32" or a.size == 0:
        return best
    flat = a.ravel()
    pos = np.flatnonzero(flat != 0)
    if pos.size * 4 >= len(raw):  # sparse/ternary cannot win by much; keep it simple
        return best
    k, unary, rem = _rice.encode_positions(pos)
    fields: dict[str, Any] = {"n": int(pos.size), "k": k, "unary": len(unary)}
    c = is_ternary(flat)
    if c is not None:
        scale_bits = int(np.array([c], dtype="<f4").view("<u4")[0])
        signs = np.packbits(flat[pos] < 0).tobytes()
        cand = ({"enc": "ternary", "scale_bits": scale_bits, **fields}, unary + rem + signs)
    else:
        values = flat[pos].astype("<f4").tobytes()
        cand = ({"enc": "sparse", **fields}, unary + rem + values)
    return cand if len(cand[1]) < len(raw) else best


def compact_bytes(model: keras.Model) -> bytes:
    """Serialize a built Keras model (stock layers) to the compact ``.ssm`` byte format."""
    if not model.built:
        raise ValueError("the model must be built before it can be saved")
    manifest = []
    payload = []
    for v in model.weights:
        a = np.asarray(keras.ops.convert_to_numpy(v))
        fields, blob = _encode_array(a)
        manifest.append(
            {
                "path": v.path,
                "shape": list(a.shape),
                "dtype": a.dtype.name,
                "nbytes": len(blob),
                **fields,
            }
        )
        payload.append(blob)
    meta = {
        "format": "keras_ssm.compact",
        "keras_version": keras.__version__,
        "model": json.loads(model.to_json()),
        "weights": manifest,
    }
    meta_raw = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")
    meta_z = zlib.compress(meta_raw, 9)
    body = _HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(meta_raw), len(meta_z)) + meta_z
    body += b"".join(payload)
    return body + _CRC.pack(zlib.crc32(body))


def save_compact(model: keras.Model, path: str | os.PathLike[str], overwrite: bool = False) -> int:
    """Write ``model`` to ``path`` in the compact format (atomically); return the file size.

    Example:
        >>> n = save_compact(folded_model, "fcn.ssm")             # doctest: +SKIP
    """
    data = compact_bytes(model)
    atomic_write_bytes(path, data, overwrite=overwrite)
    return len(data)


# ----------------------------------------------------------------------------- decoding


def _fail(msg: str) -> CompactFormatError:
    return CompactFormatError(f"invalid .ssm data: {msg}")


def _int(entry: dict, key: str, lo: int = 0, hi: int | None = None) -> int:
    v = entry.get(key)
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        raise _fail(f"field {key!r} of a weight entry is missing or out of range")
    return v


def _check_entry(e: Any, max_elements: int) -> tuple[tuple[int, ...], int]:
    """Validate one manifest entry; return ``(shape, element count)``."""
    if not isinstance(e, dict):
        raise _fail("weight entry is not an object")
    shape = e.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > 16
        or any(type(d) is not int or d < 0 for d in shape)
    ):
        raise _fail("weight entry has an invalid shape")
    count = 1
    for d in shape:
        count *= d
    if count > max_elements:
        raise _fail(f"a weight declares {count} elements (limit {max_elements})")
    if e.get("dtype") not in _DTYPES:
        raise _fail(f"unsupported dtype {e.get('dtype')!r}")
    enc = e.get("enc")
    nbytes = _int(e, "nbytes")
    if enc == "raw":
        if nbytes != count * np.dtype(e["dtype"]).itemsize:
            raise _fail("raw weight size does not match its shape")
    elif enc in ("ternary", "sparse"):
        if e["dtype"] != "float32":
            raise _fail(f"{enc} encoding requires float32")
        n = _int(e, "n", 0, count)
        k = _int(e, "k", 0, _rice.MAX_K)
        unary = _int(e, "unary", 0, nbytes)
        tail = -(-n // 8) if enc == "ternary" else 4 * n
        if unary + _rice.remainder_nbytes(n, k) + tail != nbytes:
            raise _fail(f"{enc} weight size does not add up")
        if enc == "ternary":
            _int(e, "scale_bits", 0, 0xFFFFFFFF)
    else:
        raise _fail(f"unknown encoding {enc!r}")
    return tuple(shape), count


def _decode_array(e: dict, blob: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    if e["enc"] == "raw":
        dt = np.dtype(e["dtype"]).newbyteorder("<")
        return np.frombuffer(blob, dtype=dt, count=count).astype(e["dtype"]).reshape(shape)
    n, k, lu = e["n"], e["k"], e["unary"]
    lr = _rice.remainder_nbytes(n, k)
    try:
        pos = _rice.decode_positions(blob[:lu], blob[lu : lu + lr], n, k, count)
    except _rice.RiceError as err:
        raise _fail(str(err)) from None
    out = np.zeros(count, dtype=np.float32)
    tail = blob[lu + lr :]
    if e["enc"] == "ternary":
        c = np.array([e["scale_bits"]], dtype="<u4").view("<f4")[0]
        bits = np.unpackbits(np.frombuffer(tail, dtype=np.uint8))
        if np.any(bits[n:]):
            raise _fail("nonzero padding after the sign bits")
        if n and (not np.isfinite(c) or c <= 0):
            raise _fail("ternary scale must be positive and finite")
        out[pos] = np.where(bits[:n].astype(bool), -c, c)
    else:
        vals = np.frombuffer(tail, dtype="<f4", count=n)
        if np.any(vals == 0):
            raise _fail("sparse encoding holds an explicit zero")
        out[pos] = vals
    return out.reshape(shape)


def _parse(data: bytes, max_elements: int) -> tuple[dict, list[tuple[dict, bytes, tuple, int]]]:
    """Check the container and manifest; return the metadata and per-weight payloads."""
    if len(data) < _HEAD.size + _CRC.size:
        raise _fail(f"file is truncated ({len(data)} bytes)")
    magic, version, flags, meta_len, meta_z = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise _fail("bad magic bytes (not a keras_ssm compact file)")
    if version != FORMAT_VERSION:
        raise CompactFormatError(
            f"unsupported .ssm format version {version} (this reader supports {FORMAT_VERSION})"
        )
    if flags != 0:
        raise _fail(f"unknown flags 0x{flags:04x}")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise _fail("checksum mismatch (file corrupt or truncated)")
    end = len(data) - _CRC.size
    if meta_z > end - _HEAD.size:
        raise _fail("metadata length exceeds the file")
    if meta_len > MAX_META_BYTES:
        raise _fail(f"metadata declares {meta_len} bytes (limit {MAX_META_BYTES})")
    d = zlib.decompressobj()
    try:
        meta_raw = d.decompress(data[_HEAD.size : _HEAD.size + meta_z], meta_len + 1)
    except zlib.error:
        raise _fail("metadata is not valid zlib data") from None
    if len(meta_raw) != meta_len or not d.eof or d.unused_data:
        raise _fail("metadata length does not match")
    try:
        meta = json.loads(meta_raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != "keras_ssm.compact":
        raise _fail("metadata is not a keras_ssm.compact manifest")
    entries = meta.get("weights")
    if not isinstance(entries, list) or not isinstance(meta.get("model"), dict):
        raise _fail("metadata lacks the model or its weights")
    offset, total = _HEAD.size + meta_z, 0
    parts = []
    for e in entries:
        shape, count = _check_entry(e, max_elements)
        total += count
        if total > max_elements:
            raise _fail(f"weights declare more than {max_elements} elements in all")
        if e["nbytes"] > end - offset:
            raise _fail("a weight's payload runs past the end of the file")
        parts.append((e, data[offset : offset + e["nbytes"]], shape, count))
        offset += e["nbytes"]
    if offset != end:
        raise _fail(f"{end - offset} unexpected bytes after the payload")
    return meta, parts


def _deserialize(config: dict, custom_objects: dict | None) -> keras.Model:
    try:  # on a copy: Keras pops entries of the config it is given
        model = keras.saving.deserialize_keras_object(
            copy.deepcopy(config), custom_objects=custom_objects, safe_mode=True
        )
    except Exception as err:  # any failure to rebuild the architecture is a format error
        raise CompactFormatError(f"cannot rebuild the architecture: {err}") from err
    if not isinstance(model, keras.Model):
        raise _fail("the architecture is not a Keras model")
    return model


def _check_variables(model: keras.Model, parts: list[tuple[dict, bytes, tuple, int]]) -> None:
    variables = model.weights
    if len(variables) != len(parts):
        raise _fail(f"the architecture has {len(variables)} variables, the file {len(parts)}")
    for v, (e, _, shape, _) in zip(variables, parts, strict=True):
        if tuple(v.shape) != shape or np.dtype(v.dtype).name != e["dtype"]:
            raise _fail(
                f"variable {v.path!r} is {tuple(v.shape)} {v.dtype}, the file has "
                f"{shape} {e['dtype']}"
            )


def _probe_architecture(
    config: dict, custom_objects: dict | None, parts: list[tuple[dict, bytes, tuple, int]]
) -> None:
    """Check the architecture's variables against the manifest without allocating them.

    Building the architecture allocates (and initializes) every variable it declares, so a
    few edited bytes (``"units": 20000000``) would cost gigabytes before the shape check.
    Inside a ``keras.StatelessScope`` Keras defers that allocation; the deferred variables
    are dropped from Keras' pending list afterwards so they are never initialized. Any other
    failure to build is the file's error; only a layer that cannot be built in a stateless
    scope (a stateful RNN) skips the probe, and the check after the real build still applies.
    """
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    before = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            probe = _deserialize(config, custom_objects)
    except CompactFormatError as err:
        if "stateless scope" in str(err.__cause__):
            return  # the architecture needs eager variables: build it for real
        raise
    finally:
        del pending[before:]
    _check_variables(probe, parts)


def model_from_compact_bytes(
    data: bytes, custom_objects: dict | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> keras.Model:
    """Rebuild a model from ``.ssm`` bytes (see :func:`load_compact`)."""
    meta, parts = _parse(bytes(data), max_elements)
    arrays = [_decode_array(e, blob, shape, count) for e, blob, shape, count in parts]
    _probe_architecture(meta["model"], custom_objects, parts)
    model = _deserialize(meta["model"], custom_objects)
    variables = model.weights
    _check_variables(model, parts)
    for v, a in zip(variables, arrays, strict=True):
        v.assign(a)
    return model


def load_compact(
    path: str | os.PathLike[str],
    custom_objects: dict | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> keras.Model:
    """Load a ``.ssm`` file written by :func:`save_compact`.

    Args:
        path: the file.
        custom_objects: extra classes for the architecture (``safe_mode`` stays on).
        max_elements: refuse files declaring more weight elements than this in all.

    Raises:
        CompactFormatError: the file is corrupt, truncated, of another format version or
            otherwise invalid.

    Example:
        >>> model = load_compact("fcn.ssm")                         # doctest: +SKIP
    """
    with open(path, "rb") as f:
        data = f.read()
    return model_from_compact_bytes(data, custom_objects=custom_objects, max_elements=max_elements)
