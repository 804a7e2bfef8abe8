"""Fuzz the dataset readers of ``keras_ssm.data``: idx (plain and gzip), npz, CIFAR pickles, tar.

    python tests/fuzz/fuzz_data.py -n 100000                   # atheris (coverage-guided)
    python tests/fuzz/fuzz_data.py -n 5000 --engine random     # no atheris needed

The only documented exception is ``keras_ssm.data.DataFormatError``. The first input byte
picks the reader; the rest is the file (written to a scratch folder, ``/dev/shm`` if present):

* ``0`` idx labels, ``1`` idx images (28x28): ``_read_idx`` on a plain file;
* ``2``: idx images gzip-compressed by the harness (``_read_idx`` on a ``.gz``: header and size
  checks behind a valid gzip stream); ``3``: the bytes as a ``.gz`` (corrupt gzip streams);
* ``4``: the bytes as an npz (``_read_npz_split``, CIFAR-10 test split);
* ``5``: ``x_test.npy + SEP + y_test.npy`` zipped by the harness (npy headers and payloads
  behind a valid zip);
* ``6``: a pickled CIFAR-10 batch, ``7`` a CIFAR-100 batch (``_parse_cifar_batch``, the
  restricted unpickler);
* ``8``: the bytes as ``cifar-100-python.tar.gz`` (``_read_cifar_tar_source``; seeds are a
  plain and a gzipped tar).

Every array read goes through ``_finish`` (the shape, dtype and label-range validation the
loaders apply). Seeds: valid files of each kind (Python 2 and 3 pickles of every protocol).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import sys
import tarfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import numpy as np  # noqa: E402

SEP = b"--next-npy--"
FORMS = 9


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return out.getvalue()


def _py2_str(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<i", len(raw)) + raw


def py2_pickle(rows: np.ndarray, labels: list[int], label_key: str) -> bytes:
    """A CIFAR batch as Python 2's cPickle wrote the official files (protocol 2)."""
    shape = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in rows.shape) + b"t"
    dtype_state = b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R(K\x01"
        + shape
        + b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R"
        + dtype_state
        + b"\x89"
        + _py2_str(rows.tobytes())
        + b"tb"
    )
    items = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (
        b"\x80\x02}("
        + _py2_str(b"data")
        + array
        + _py2_str(label_key.encode())
        + items
        + _py2_str(b"batch_label")
        + _py2_str(b"fuzz")
        + b"u."
    )


def cifar_pickles(label_key: str, rows: np.ndarray, labels: list[int]) -> list[bytes]:
    py3 = {b"data": rows, label_key.encode(): labels, b"batch_label": b"fuzz"}
    return [py2_pickle(rows, labels, label_key)] + [
        pickle.dumps(py3, protocol=p) for p in (2, 3, 4, 5)
    ]


def tar_of(members: dict[str, bytes], mode: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return out.getvalue()


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 3).astype(np.uint8)
    images = rng.integers(0, 256, (1, 28, 28)).astype(np.uint8)
    idx_images = idx_bytes(images)
    cifar = rng.integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    rows = cifar.transpose(0, 3, 1, 2).reshape(1, -1)
    out = [
        b"\x00" + idx_bytes(labels),
        b"\x01" + idx_images,
        b"\x02" + idx_images,
        b"\x03" + gzip.compress(idx_images, mtime=0),
    ]
    x_npy, y_npy = npy_bytes(cifar), npy_bytes(np.array([3], np.int64))
    members = {"x_test.npy": x_npy, "y_test.npy": y_npy}
    out += [
        b"\x04" + zip_of(members),
        b"\x04" + zip_of(members, zipfile.ZIP_DEFLATED),
        b"\x05" + x_npy + SEP + y_npy,
        b"\x05"
        + npy_bytes(np.asfortranarray(np.zeros((1, 32, 32, 3), np.uint8)))
        + SEP
        + npy_bytes(np.array([[1]], np.uint8)),
    ]
    out += [b"\x06" + p for p in cifar_pickles("labels", rows, [3])]
    out += [b"\x07" + p for p in cifar_pickles("fine_labels", rows, [42])]
    tar_members = {
        "cifar-100-python/train": py2_pickle(rows, [7], "fine_labels"),
        "cifar-100-python/test": py2_pickle(rows, [9], "fine_labels"),
    }
    out += [b"\x08" + tar_of(tar_members, "w"), b"\x08" + tar_of(tar_members, "w:gz")]
    return out


def load() -> tuple[_common.Target, list[bytes], tuple[type, ...]]:
    from keras_ssm import data

    cifar10, cifar100, mnist = (data.specs.SPECS[n] for n in ("cifar10", "cifar100", "mnist"))
    scratch = _common.make_temp_dir("fuzz-data-", in_memory=True)

    def write(name: str, blob: bytes) -> str:
        path = os.path.join(scratch, name)
        with open(path, "wb") as f:
            f.write(blob)
        return path

    def target(blob: bytes) -> str:
        if not blob:
            return "empty"
        form, body = blob[0] % FORMS, blob[1:]
        if form == 0:
            data.formats.read_idx(write("labels-idx1-ubyte", body), ())
        elif form == 1:
            data.formats.read_idx(write("images-idx3-ubyte", body), (28, 28))
        elif form in (2, 3):
            raw = gzip.compress(body, compresslevel=1, mtime=0) if form == 2 else body
            images = data.formats.read_idx(write("images-idx3-ubyte.gz", raw), (28, 28))[..., None]
            data.formats.finish(mnist, (images, np.zeros(len(images), np.uint8)), "fuzz")
        elif form in (4, 5):
            if form == 5:
                x, _, y = body.partition(SEP)
                body = zip_of({"x_test.npy": x, "y_test.npy": y})
            split = data.formats.read_npz_split(cifar10, write("test.npz", body), "test")
            data.formats.finish(cifar10, split, "fuzz")
        elif form in (6, 7):
            spec = cifar10 if form == 6 else cifar100
            data.formats.finish(spec, data.formats.parse_cifar_batch(spec, body, "fuzz"), "fuzz")
        else:
            train, test = data.formats.read_cifar_tar_source(
                cifar100, (write("cifar-100-python.tar.gz", body),)
            )
            data.formats.finish(cifar100, train, "fuzz")
            data.formats.finish(cifar100, test, "fuzz")
        return f"read form {form}"

    for seed in seeds():
        assert target(seed).startswith("read"), seed[:1]
    return target, seeds(), (data.DataFormatError,)


if __name__ == "__main__":
    sys.exit(_common.main("data", load))
