"""Readers for the local file formats: MNIST idx, CIFAR npz parts, CIFAR python pickles/tarball.

Every reader checks what a header declares (idx dimensions, .npy shape and dtype, tar member
size) before allocating memory, never evaluates or unpickles file contents with code-running
loaders (CIFAR pickles go through :mod:`keras_ssm.data.safe_pickle`), and reports any damage as
a :class:`~keras_ssm.data.DataFormatError` naming the file. :func:`read_source` parses a found
:class:`~keras_ssm.data.locate.Source` once (cached) and validates it with :func:`finish`.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssm.data import safe_pickle
from keras_ssm.data.errors import DataFormatError, reading
from keras_ssm.data.locate import Source
from keras_ssm.data.specs import MAX_EXAMPLES, SPECS, Array, Arrays, Spec, Split

__all__ = [
    "MAX_MEMBER_BYTES",
    "READERS",
    "finish",
    "parse_cifar_batch",
    "read_cached",
    "read_cifar_py_source",
    "read_cifar_tar_source",
    "read_idx",
    "read_idx_source",
    "read_npz_source",
    "read_npz_split",
    "read_source",
]

MAX_MEMBER_BYTES = 1 << 30  # sanity bound on a single tar member


# -- a found source, parsed once ---------------------------------------------------------------


def read_source(spec: Spec, source: Source) -> Arrays:
    """Both splits of ``source``, parsed and validated (cached on paths, sizes and mtimes)."""
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, source.files))
    return read_cached(spec.name, source, stamps)


@functools.lru_cache(maxsize=8)
def read_cached(name: str, source: Source, stamps: tuple[tuple[int, int], ...]) -> Arrays:
    """Parse a source once per (dataset, resolved files, sizes and mtimes)."""
    del stamps  # part of the cache key only
    spec = SPECS[name]
    reader = READERS[source.layout]
    train, test = reader(spec, source.files)
    train_files, test_files = source.split_files()
    return finish(spec, train, train_files), finish(spec, test, test_files)


def finish(spec: Spec, split: Split, where: str) -> Split:
    """Validate images against labels and the spec; labels become int32; both read-only."""
    images, labels = split
    if images.shape[1:] != spec.input_shape or images.dtype != np.uint8:
        raise DataFormatError(
            f"{where}: images have shape {images.shape} and dtype {images.dtype}, "
            f"expected (N, {', '.join(map(str, spec.input_shape))}) uint8"
        )
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise DataFormatError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFormatError(
            f"{where}: labels must lie in [0, {spec.num_classes}), "
            f"found [{labels.min()}, {labels.max()}]"
        )
    labels = labels.astype(np.int32)
    for array in (images, labels):
        array.flags.writeable = False
    return images, labels


# -- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def read_idx_source(spec: Spec, files: tuple[str, ...]) -> Arrays:
    """The four idx files (train x, train y, test x, test y); images get a channel axis."""
    train_x, train_y, test_x, test_y = files
    item = spec.input_shape[:2]
    return (
        (read_idx(train_x, item)[..., None], read_idx(train_y, ())),
        (read_idx(test_x, item)[..., None], read_idx(test_y, ())),
    )


def read_idx(path: str, item_shape: tuple[int, ...]) -> Array:
    """Read an unsigned-byte idx file whose items have ``item_shape`` (``()`` for labels)."""
    ndim = 1 + len(item_shape)
    magic = 0x0800 + ndim
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    with reading(path), opener(path, "rb") as stream:
        header = stream.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise DataFormatError(f"{path}: truncated idx header ({len(header)} bytes)")
        found = int.from_bytes(header[:4], "big")
        if found != magic:
            raise DataFormatError(
                f"{path}: bad idx magic number {found:#010x} (expected {magic:#010x}, "
                f"an unsigned-byte idx file with {ndim} dimension(s))"
            )
        dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        _check_idx_dims(path, dims, item_shape)
        nbytes = math.prod(dims)
        if not path.endswith(".gz"):
            _check_file_size(path, len(header) + nbytes)
        payload = stream.read(nbytes + 1)
    if len(payload) != nbytes:
        problem = "truncated" if len(payload) < nbytes else "longer than its header declares"
        raise DataFormatError(f"{path}: {problem} (header declares {nbytes} data bytes)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _check_idx_dims(path: str, dims: tuple[int, ...], item_shape: tuple[int, ...]) -> None:
    if dims[1:] != item_shape:
        raise DataFormatError(
            f"{path}: idx header declares items of shape {dims[1:]}, expected {item_shape}"
        )
    if dims[0] > MAX_EXAMPLES:
        raise DataFormatError(f"{path}: idx header declares an implausible {dims[0]} items")


def _check_file_size(path: str, expected: int) -> None:
    actual = os.path.getsize(path)
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header declares"
        raise DataFormatError(f"{path}: {problem} ({actual} bytes, header implies {expected})")


# -- npz (CIFAR parts) ------------------------------------------------------------------------


def read_npz_source(spec: Spec, files: tuple[str, ...]) -> Arrays:
    """Training parts (``x_train``, ``y_train``) in order, then ``test.npz``."""
    *train_files, test_file = files
    parts = [read_npz_split(spec, path, "train") for path in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, read_npz_split(spec, test_file, "test")


def read_npz_split(spec: Spec, path: str, split: str) -> Split:
    """``(x_<split>, y_<split>)`` of one npz file, read without pickle."""
    with reading(path), zipfile.ZipFile(path) as archive:
        images = _read_npy_member(archive, path, f"x_{split}", spec.input_shape, images=True)
        labels = _read_npy_member(archive, path, f"y_{split}", None, images=False)
    return images, labels


def _read_npy_member(
    archive: zipfile.ZipFile,
    path: str,
    key: str,
    item_shape: tuple[int, ...] | None,
    *,
    images: bool,
) -> Array:
    """Read one array of an npz without pickle, validating its header before allocating."""
    try:
        member = archive.getinfo(key + ".npy")
    except KeyError:
        keys = sorted(n.removesuffix(".npy") for n in archive.namelist())
        raise DataFormatError(f"{path}: no array {key!r} (found {keys})") from None
    with archive.open(member) as stream:
        shape, fortran, dtype = _read_npy_header(stream, path, key)
        _check_npy_header(path, key, shape, dtype, item_shape, images=images)
        nbytes = math.prod(shape) * dtype.itemsize
        payload = stream.read(nbytes + 1)
    if len(payload) != nbytes:
        raise DataFormatError(f"{path}: {key} has {len(payload)} data bytes, expected {nbytes}")
    array = np.frombuffer(payload, dtype=dtype)
    order = "F" if fortran else "C"
    return np.ascontiguousarray(array.reshape(shape, order=order))


def _read_npy_header(stream: Any, path: str, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an .npy stream; any parse failure of the header
    (numpy tokenizes and literal-evals its text) is a :class:`DataFormatError`."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise DataFormatError(f"{path}: {key}: unsupported .npy format version {version}")
        return read_header(stream)
    except DataFormatError:
        raise
    except Exception as exc:  # ValueError, tokenize.TokenError, RecursionError, ...
        raise DataFormatError(
            f"{path}: {key}: corrupt .npy header ({type(exc).__name__}: {exc})"
        ) from exc


def _check_npy_header(
    path: str,
    key: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    item_shape: tuple[int, ...] | None,
    *,
    images: bool,
) -> None:
    if images and (dtype != np.uint8 or tuple(shape[1:]) != item_shape):
        raise DataFormatError(f"{path}: {key} is {dtype} {shape}, expected uint8 (N, {item_shape})")
    if not images and (dtype.kind not in "iu" or len(shape) not in (1, 2)):
        raise DataFormatError(f"{path}: {key} is {dtype} {shape}, expected integer labels (N,)")
    if not shape or shape[0] > MAX_EXAMPLES:
        raise DataFormatError(f"{path}: {key} has an implausible shape {shape}")


# -- CIFAR python pickles (tarball or extracted folder) ---------------------------------------


def read_cifar_py_source(spec: Spec, files: tuple[str, ...]) -> Arrays:
    """The extracted ``cifar-*-python`` batches (training batches, then the test batch)."""
    blobs, where = {}, {}
    for path in files:
        name = Path(path).name
        with reading(path), open(path, "rb") as stream:
            blobs[name] = stream.read()
        where[name] = path
    return _cifar_from_blobs(spec, blobs, where)


def read_cifar_tar_source(spec: Spec, files: tuple[str, ...]) -> Arrays:
    """The official tarball, streamed once; only the batches the spec names are read."""
    (path,) = files
    wanted = {*spec.py_train, spec.py_test}
    blobs: dict[str, bytes] = {}
    with reading(path), tarfile.open(path, mode="r|*") as archive:
        for member in archive:  # streaming: one pass over the compressed file
            base = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or base not in wanted or base in blobs:
                continue
            if member.size > MAX_MEMBER_BYTES:
                raise DataFormatError(f"{path}: member {member.name} is implausibly large")
            extracted = archive.extractfile(member)
            blobs[base] = extracted.read() if extracted is not None else b""
    missing = sorted(wanted - set(blobs))
    if missing:
        raise DataFormatError(f"{path}: archive lacks {', '.join(missing)}")
    return _cifar_from_blobs(spec, blobs, where={n: f"{path}!{n}" for n in blobs})


def _cifar_from_blobs(spec: Spec, blobs: dict[str, bytes], where: dict[str, str]) -> Arrays:
    parts = [parse_cifar_batch(spec, blobs[n], where[n]) for n in spec.py_train]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, parse_cifar_batch(spec, blobs[spec.py_test], where[spec.py_test])


def parse_cifar_batch(spec: Spec, blob: bytes, where: str) -> Split:
    """Decode one pickled CIFAR batch (dict with ``data`` (N, 3072) and a label list)."""
    with reading(where):
        raw = safe_pickle.load_restricted(blob, where)
        if not isinstance(raw, dict):
            raise DataFormatError(f"{where}: expected a pickled dict, got {type(raw).__name__}")
        batch = {safe_pickle.text(k): v for k, v in raw.items()}
        if "data" not in batch or spec.label_key not in batch:
            raise DataFormatError(
                f"{where}: expected keys 'data' and {spec.label_key!r}, found {sorted(batch)}"
            )
        data = safe_pickle.uint8_array(batch["data"], where)
        labels = _label_list(batch[spec.label_key], where, spec.label_key)
    height, width, channels = spec.input_shape
    if data.ndim != 2 or data.shape[1] != height * width * channels:
        raise DataFormatError(f"{where}: data has shape {data.shape}, expected (N, 3072)")
    images = data.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _label_list(value: object, where: str, key: str) -> Array:
    """Labels as the CIFAR python batches hold them: a flat list of ints."""
    if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
        raise DataFormatError(f"{where}: {key!r} must be a list of integers")
    if value and not (-(2**63) <= min(value) and max(value) < 2**63):
        raise DataFormatError(f"{where}: {key!r} holds an out-of-range label")
    return np.asarray(value, dtype=np.int64)


READERS: dict[str, Callable[[Spec, tuple[str, ...]], Arrays]] = {
    "idx": read_idx_source,
    "npz": read_npz_source,
    "cifar-py": read_cifar_py_source,
    "cifar-tar": read_cifar_tar_source,
}
"""The reader of each :attr:`Source.layout <keras_ssm.data.locate.Source.layout>`."""
