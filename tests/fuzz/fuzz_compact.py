"""Fuzz the compact ``.ssm`` loader at its bytes-level entry point.

    python tests/fuzz/fuzz_compact.py -n 100000                   # atheris (coverage-guided)
    python tests/fuzz/fuzz_compact.py -n 5000 --engine random     # no atheris needed

Target: ``keras_ssm.export.compact.model_from_compact_bytes(blob, max_elements=65536)``; the
only documented exception is ``CompactFormatError``. The first input byte picks how the rest
becomes ``blob``, so mutations get past the container's checks (a byte-level mutator rarely
writes valid zlib, JSON and CRC-32 at once):

* ``0``: the bytes as they are (magic, header and CRC checks);
* ``1``: the bytes with their last four replaced by the right CRC-32 (manifest, payload);
* ``2``: ``metadata JSON + NUL + payload``: the harness zlib-compresses the JSON and writes
  header and CRC, so the fuzzer edits the manifest and architecture as plain text;
* ``3``: a script of edits to a seed's weight manifest and payload (field values from a pool
  of hostile ones: negative, huge, NaN, wrong types; entries dropped, duplicated, swapped);
* ``4``: a script of edits to a seed's architecture (any leaf of the model config: huge
  ``units``/``filters``, foreign ``class_name``/``module`` such as ``Lambda``/``os``).

Seeds: real ``.ssm`` files of tiny models (ternary, sparse and raw encodings, Dense and Conv2D,
with and without bias, Sequential and functional), in all five forms.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import sys
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402,F401  (imported before instrumentation: only keras_ssm is instrumented)
import numpy as np  # noqa: E402

MAX_ELEMENTS = 1 << 16


def seed_models() -> list[keras.Model]:
    import keras_ssm

    keras.utils.set_random_seed(0)
    masked = keras.Sequential(
        [
            keras.Input((6,)),
            keras_ssm.layers.MaskedDense(5, activation="elu", use_bias=True),
            keras_ssm.layers.MaskedDense(3, activation="softmax", use_bias=False),
        ]
    )
    conv = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras_ssm.layers.MaskedConv2D(3, 3, use_bias=False),
            keras.layers.Flatten(),
            keras_ssm.layers.MaskedDense(2, use_bias=False),
        ]
    )
    raw = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    sparse = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, use_bias=False)])
    kernel = np.zeros((20, 8), "float32")
    kernel[np.random.default_rng(0).random((20, 8)) < 0.05] = 0.37
    kernel[3, 4], kernel[7, 1] = -1.25, 2.5
    sparse.set_weights([kernel])
    inp = keras.Input((4,))
    hidden = keras_ssm.layers.MaskedDense(3, activation="elu")(inp)
    merged = keras.layers.Add()([hidden, keras_ssm.layers.MaskedDense(3)(hidden)])
    functional = keras.Model(inp, keras_ssm.layers.MaskedDense(2, use_bias=False)(merged))
    return [keras_ssm.fold(masked), keras_ssm.fold(conv), raw, sparse, keras_ssm.fold(functional)]


def split_blob(blob: bytes) -> tuple[dict, bytes]:
    """``(metadata, payload)`` of a real ``.ssm`` blob."""
    from keras_ssm.export import compact

    meta_z = compact._HEAD.unpack_from(blob, 0)[4]
    meta = json.loads(zlib.decompress(blob[compact._HEAD.size : compact._HEAD.size + meta_z]))
    return meta, blob[compact._HEAD.size + meta_z : -4]


def pack(meta_raw: bytes, payload: bytes) -> bytes:
    """A well-formed container (header, zlib metadata, payload, CRC) around anything."""
    from keras_ssm.export import compact

    meta_z = zlib.compress(meta_raw, 1)
    out = compact._HEAD.pack(compact.MAGIC, compact.FORMAT_VERSION, 0, len(meta_raw), len(meta_z))
    out += meta_z + payload
    return out + struct.pack("<I", zlib.crc32(out))


POOL: tuple = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    31,
    32,
    33,
    64,
    255,
    256,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32,
    2**53,
    10**7,
    10**12,
    -(2**31),
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    None,
    True,
    False,
    "",
    "x",
    "float32",
    "float64",
    "int8",
    "bool",
    "complex64",
    "raw",
    "sparse",
    "ternary",
    [],
    {},
    [1],
    [[1]],
    {"a": 1},
    [1] * 17,
    [2**31, 2**31],
    [-1, 3],
    "Lambda",
    "os",
    "builtins",
    "eval",
    "keras.layers",
    "Dense",
    "Conv2D",
    "MaskedDense",
    "keras_ssm",
    "Functional",
    "TFSMLayer",
    "Embedding",
    "system",
)
FIELDS = ("path", "shape", "dtype", "enc", "nbytes", "n", "k", "unary", "scale_bits")


class Script:
    """Reads small integers from the fuzz input (a minimal FuzzedDataProvider)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def more(self) -> bool:
        return self.i < len(self.data)

    def byte(self) -> int:
        self.i += 1
        return self.data[self.i - 1] if self.i <= len(self.data) else 0

    def pick(self, seq):  # noqa: ANN001, ANN201
        return seq[(self.byte() << 8 | self.byte()) % len(seq)]

    def value(self):  # noqa: ANN201
        if self.byte() % 4 == 0:
            return int.from_bytes(bytes(self.byte() for _ in range(4)), "little", signed=True)
        return copy.deepcopy(self.pick(POOL))  # never share a list between two places


def leaves(node, path=()):  # noqa: ANN001, ANN201
    """Every (container, key) of a JSON tree, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield node, key
        if isinstance(value, dict | list) and value:
            yield from leaves(value, (*path, key))


def edit_manifest(meta: dict, payload: bytes, script: Script) -> tuple[dict, bytes]:
    weights = meta["weights"]
    buf = bytearray(payload)
    for _ in range(8):
        if not script.more():
            break
        op = script.byte() % 8
        if op <= 2 and weights:  # set a field of an entry
            entry = script.pick(weights)
            if isinstance(entry, dict):
                entry[script.pick(FIELDS)] = script.value()
        elif op == 3 and weights and isinstance(weights[0], dict):  # one shape dimension
            entry = script.pick(weights)
            if isinstance(entry, dict) and isinstance(entry.get("shape"), list):
                shape = entry["shape"]
                shape[script.byte() % (len(shape) + 1) if shape else 0 :] = [script.value()]
        elif op == 4 and weights:  # drop, duplicate or swap entries
            i, j = script.byte() % len(weights), script.byte() % len(weights)
            kind = script.byte() % 3
            if kind == 0:
                del weights[i]
            elif kind == 1:
                weights.insert(j, json.loads(json.dumps(weights[i])))
            else:
                weights[i], weights[j] = weights[j], weights[i]
        elif op == 5 and buf:  # a payload byte
            buf[(script.byte() << 8 | script.byte()) % len(buf)] = script.byte()
        elif op == 6:  # payload length
            if script.byte() % 2:
                del buf[(script.byte() << 8 | script.byte()) % (len(buf) + 1) :]
            else:
                buf += bytes(script.byte() % 16)
        else:  # a top-level key
            meta[script.pick(("format", "weights", "model", "keras_version"))] = script.value()
            return meta, bytes(buf)
    return meta, bytes(buf)


def edit_architecture(meta: dict, script: Script) -> dict:
    for _ in range(8):
        if not script.more():
            break
        spots = list(leaves(meta["model"]))
        if not spots:
            break
        container, key = script.pick(spots)
        container[key] = script.value()
    return meta


def assemble(data: bytes, bases: list[tuple[dict, bytes]] | None = None) -> bytes:
    """The ``.ssm`` blob a fuzz input stands for (see the module docstring)."""
    if not data:
        return b""
    form, body = data[0] % 5, data[1:]
    if form == 0:
        return body
    if form == 1:
        head = body[:-4]
        return head + struct.pack("<I", zlib.crc32(head)) if len(body) >= 4 else body
    if form == 2:
        meta, _, payload = body.partition(b"\x00")
        return pack(meta, payload)
    script = Script(body)
    meta, payload = script.pick(bases or [({}, b"")])
    meta = json.loads(json.dumps(meta))  # a private copy to edit
    if form == 3:
        meta, payload = edit_manifest(meta, payload, script)
    else:
        meta = edit_architecture(meta, script)
    return pack(json.dumps(meta).encode(), payload)


def load() -> tuple[_common.Target, list[bytes], tuple[type, ...]]:
    from keras_ssm.export import compact

    blobs = [compact.compact_bytes(m) for m in seed_models()]
    bases = [split_blob(blob) for blob in blobs]
    seeds = []
    for i, (blob, (meta, payload)) in enumerate(zip(blobs, bases, strict=True)):
        seeds += [
            b"\x00" + blob,
            b"\x01" + blob,
            b"\x02" + json.dumps(meta).encode() + b"\x00" + payload,
            b"\x03\x00" + bytes([i]),
            b"\x04\x00" + bytes([i]),
        ]
    for seed in seeds:  # every seed must load
        compact.model_from_compact_bytes(assemble(seed, bases))

    def target(data: bytes) -> str:
        blob = assemble(data, bases)
        model = compact.model_from_compact_bytes(blob, max_elements=MAX_ELEMENTS)
        assert isinstance(model, keras.Model)
        return "loaded"

    return target, seeds, (compact.CompactFormatError,)


if __name__ == "__main__":
    sys.exit(_common.main("compact", load))
