"""Tests for keras_ssm.data: every local layout, the tfds fallback, validation and the pipeline.

All fixtures are tiny files written to tmp_path; one test reads the real shared MNIST copy.
"""

from __future__ import annotations

import doctest
import gzip
import importlib
import importlib.util
import io
import itertools
import os
import pickle
import pkgutil
import struct
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from keras_ssm import data

REAL_DATA = Path(os.environ.get("KERAS_SSM_DATA_DIR", "/work/shared/datasets"))
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient data dir, an empty tfds dir, no download attempts, a fresh cache."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds-empty"))
    data.formats.read_cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Fixture writers
# --------------------------------------------------------------------------------------------


def _images(count: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def _labels(count: int, num_classes: int = 10, offset: int = 0) -> np.ndarray:
    return ((np.arange(count) + offset) % num_classes).astype(np.uint8)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def _mnist_arrays(n_train: int = 30, n_test: int = 12, seed: int = 0) -> tuple:
    return (
        (_images(n_train, (28, 28), seed), _labels(n_train)),
        (_images(n_test, (28, 28), seed + 1), _labels(n_test, offset=3)),
    )


def _write_idx_dir(folder: Path, arrays: tuple, gz: bool = True, dot_names: bool = False) -> None:
    (x_train, y_train), (x_test, y_test) = arrays
    for name, array in zip(IDX_NAMES, (x_train, y_train, x_test, y_test), strict=True):
        if dot_names:
            name = name.replace("-idx", ".idx")
        _write(folder / (name + (".gz" if gz else "")), _idx_bytes(array), gz=gz)


def _cifar_arrays(n_train: int, n_test: int, num_classes: int = 10, seed: int = 0) -> tuple:
    return (
        (_images(n_train, (32, 32, 3), seed), _labels(n_train, num_classes)),
        (_images(n_test, (32, 32, 3), seed + 1), _labels(n_test, num_classes, offset=1)),
    )


def _write_npz_dir(folder: Path, arrays: tuple, parts: int = 2) -> None:
    (x_train, y_train), (x_test, y_test) = arrays
    folder.mkdir(parents=True, exist_ok=True)
    chunks = zip(np.array_split(x_train, parts), np.array_split(y_train, parts), strict=True)
    for i, (x, y) in enumerate(chunks, start=1):
        np.savez_compressed(folder / f"train_part{i}.npz", x_train=x, y_train=y)
    np.savez_compressed(folder / "test.npz", x_test=x_test, y_test=y_test)


def _to_rows(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> CIFAR python rows (N, 3072): all R, then all G, then all B."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _py2_str(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if value < 256 else b"J" + struct.pack("<i", value)


def _py2_array(array: np.ndarray) -> bytes:
    """A uint8 ndarray as Python 2 numpy pickled it (as in the official CIFAR files)."""
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    dtype_state = b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + b"K\x00\x85"
        + _py2_str(b"b")
        + b"\x87R("
        + b"K\x01"
        + shape
        + b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R"
        + dtype_state
        + b"\x89"
        + _py2_str(array.tobytes())
        + b"tb"
    )


def _py2_pickle(batch: dict[str, object]) -> bytes:
    """A protocol-2 pickle of a CIFAR batch dict, byte-compatible with Python 2 cPickle."""
    out = bytearray(b"\x80\x02}(")
    for key, value in batch.items():
        out += _py2_str(key.encode())
        if isinstance(value, np.ndarray):
            out += _py2_array(value)
        elif isinstance(value, list):
            out += b"](" + b"".join(_py2_int(int(v)) for v in value) + b"e"
        else:
            out += _py2_str(str(value).encode())
    return bytes(out + b"u.")


def _cifar_batches(spec_name: str, arrays: tuple) -> dict[str, dict[str, object]]:
    (x_train, y_train), (x_test, y_test) = arrays
    if spec_name == "cifar100":

        def batch(x: np.ndarray, y: np.ndarray) -> dict[str, object]:
            coarse = [int(v) // 5 for v in y]
            return {"data": _to_rows(x), "fine_labels": y.tolist(), "coarse_labels": coarse}

        return {"train": batch(x_train, y_train), "test": batch(x_test, y_test)}
    batches = {}
    splits = zip(np.array_split(x_train, 5), np.array_split(y_train, 5), strict=True)
    for i, (x, y) in enumerate(splits, start=1):
        batches[f"data_batch_{i}"] = {
            "batch_label": f"b{i}",
            "labels": y.tolist(),
            "data": _to_rows(x),
        }
    batches["test_batch"] = {
        "batch_label": "t",
        "labels": y_test.tolist(),
        "data": _to_rows(x_test),
    }
    return batches


def _write_cifar_tar(path: Path, spec_name: str, arrays: tuple) -> Path:
    folder = "cifar-100-python" if spec_name == "cifar100" else "cifar-10-batches-py"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, batch in _cifar_batches(spec_name, arrays).items():
            blob = _py2_pickle(batch)
            member = tarfile.TarInfo(f"{folder}/{name}")
            member.size = len(blob)
            archive.addfile(member, io.BytesIO(blob))
    return path


def _write_cifar_py_dir(folder: Path, arrays: tuple, protocol: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in _cifar_batches("cifar10", arrays).items():
        py3 = {k.encode(): v for k, v in batch.items()}  # the originals have byte-string keys
        (folder / name).write_bytes(pickle.dumps(py3, protocol=protocol))


def _assert_arrays(actual: tuple, expected: tuple, channels: int) -> None:
    for (x, y), (ex, ey) in zip(actual, expected, strict=True):
        assert x.dtype == np.uint8 and y.dtype == np.int32
        assert x.shape == (*ex.shape[:3], channels)
        np.testing.assert_array_equal(x.reshape(ex.shape), ex)
        np.testing.assert_array_equal(y, ey)


# --------------------------------------------------------------------------------------------
# Names, info, arguments
# --------------------------------------------------------------------------------------------


def test_info_and_names() -> None:
    assert data.DATASETS == ("mnist", "fashion_mnist", "cifar10", "cifar100")
    assert data.info("mnist") == {
        "name": "mnist",
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        "train_size": 60000,
        "test_size": 10000,
    }
    assert data.info("Fashion-MNIST")["name"] == "fashion_mnist"
    assert data.info("cifar100")["num_classes"] == 100


@pytest.mark.parametrize("call", [data.info, data.load_arrays, data.load])
def test_unknown_name_lists_allowed(call) -> None:
    with pytest.raises(ValueError, match=r"'imagenet'.*mnist, fashion_mnist, cifar10, cifar100"):
        call("imagenet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "validation"}, "'validation'.*train, test"),
        ({"batch_size": 0}, "batch_size"),
        ({"limit": -1}, "limit"),
        ({"limit": 0}, r"limit must be None \(the whole split\) or an integer >= 1, got 0\."),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        data.load("mnist", **kwargs)


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "10"])
def test_load_and_load_epochs_refuse_the_same_limits(limit: object) -> None:
    """One limit check for both entry points: same ValueError, raised before any file is read
    (no data dir is set here, so a later check would surface as DataNotFoundError)."""
    with pytest.raises(ValueError) as from_load:
        data.load("mnist", limit=limit)
    with pytest.raises(ValueError) as from_epochs:
        data.load_epochs("mnist", seed=0, limit=limit)
    message = str(from_load.value)
    assert message == str(from_epochs.value)
    assert message == f"limit must be None (the whole split) or an integer >= 1, got {limit!r}."


# --------------------------------------------------------------------------------------------
# Local layouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subfolder", "gz", "dot_names"),
    [
        ("mnist", "mnist", True, False),
        ("mnist", "mnist", False, False),
        ("mnist", "", True, False),  # data_dir is the dataset folder itself
        ("mnist", "mnist", False, True),  # train-images.idx3-ubyte naming
        ("fashion_mnist", "fashion-mnist", True, False),
        ("fashion_mnist", "fashion_mnist", False, False),
    ],
)
def test_idx_layouts(tmp_path: Path, name: str, subfolder: str, gz: bool, dot_names: bool) -> None:
    arrays = _mnist_arrays()
    _write_idx_dir(tmp_path / "root" / subfolder, arrays, gz=gz, dot_names=dot_names)
    _assert_arrays(data.load_arrays(name, data_dir=tmp_path / "root"), arrays, channels=1)


def test_cifar10_npz_parts(tmp_path: Path) -> None:
    arrays = _cifar_arrays(20, 8)
    _write_npz_dir(tmp_path / "cifar10", arrays, parts=3)
    _assert_arrays(data.load_arrays("cifar10", data_dir=tmp_path), arrays, channels=3)


def test_cifar10_python_tarball(tmp_path: Path) -> None:
    arrays = _cifar_arrays(20, 8)
    _write_cifar_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "cifar10", arrays)
    _assert_arrays(data.load_arrays("cifar10", data_dir=tmp_path), arrays, channels=3)


def test_py2_pickle_fixture_matches_real_pickle(tmp_path: Path) -> None:
    """The hand-written Python 2 pickle loads with the real unpickler into the same data."""
    rows = _to_rows(_images(3, (32, 32, 3)))
    blob = _py2_pickle({"data": rows, "labels": [1, 2, 3]})
    with warnings.catch_warnings():  # numpy.core may warn: deprecated in numpy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = pickle.loads(blob, encoding="bytes")
    np.testing.assert_array_equal(loaded[b"data"], rows)
    assert loaded[b"labels"] == [1, 2, 3]


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_extracted_folder(tmp_path: Path, protocol: int, point_at_folder: bool) -> None:
    arrays = _cifar_arrays(15, 6)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    _write_cifar_py_dir(folder, arrays, protocol)
    root = folder if point_at_folder else tmp_path
    _assert_arrays(data.load_arrays("cifar10", data_dir=root), arrays, channels=3)


def test_cifar100_tarball_uses_fine_labels(tmp_path: Path) -> None:
    arrays = _cifar_arrays(12, 5, num_classes=100)
    (x_train, _), (x_test, _) = arrays
    arrays = ((x_train, np.arange(12) * 8), (x_test, np.arange(5) * 20 + 1))  # up to 99
    _write_cifar_tar(tmp_path / "cifar100" / "cifar-100-python.tar.gz", "cifar100", arrays)
    _assert_arrays(data.load_arrays("cifar100", data_dir=tmp_path), arrays, channels=3)
    ds = data.load("cifar100", "test", data_dir=tmp_path, batch_size=5)
    assert next(iter(ds))[1].numpy().tolist() == [1, 21, 41, 61, 81]


def test_env_var_and_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_arrays, arg_arrays = _mnist_arrays(seed=1), _mnist_arrays(seed=2)
    _write_idx_dir(tmp_path / "env" / "mnist", env_arrays)
    _write_idx_dir(tmp_path / "arg" / "mnist", arg_arrays)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    _assert_arrays(data.load_arrays("mnist"), env_arrays, channels=1)
    _assert_arrays(data.load_arrays("mnist", data_dir=tmp_path / "arg"), arg_arrays, channels=1)


def test_cache_returns_read_only_shared_arrays(tmp_path: Path) -> None:
    _write_idx_dir(tmp_path / "mnist", _mnist_arrays(seed=0))
    first = data.load_arrays("mnist", data_dir=tmp_path)
    assert data.load_arrays("mnist", data_dir=str(tmp_path))[0][0] is first[0][0]
    assert not first[0][0].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0][0][0, 0, 0, 0] = 1
    _write_idx_dir(tmp_path / "mnist", _mnist_arrays(n_train=7, seed=3))  # new size: reparsed
    assert len(data.load_arrays("mnist", data_dir=tmp_path)[0][0]) == 7


# --------------------------------------------------------------------------------------------
# Corrupt and inconsistent files
# --------------------------------------------------------------------------------------------


def _corrupt_idx(folder: Path, how: str) -> Path:
    """Write a valid MNIST fixture (raw idx unless noted) and spoil one file; return it."""
    arrays = _mnist_arrays()
    gz = how in ("truncated-gz", "trailing-gz", "not-gzip")
    _write_idx_dir(folder, arrays, gz=gz)
    target = folder / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    payload = _idx_bytes(arrays[0][0])
    if how == "magic":
        target.write_bytes(b"\x00\x00\x08\x01" + payload[4:])
    elif how == "truncated":
        target.write_bytes(payload[:-100])
    elif how == "trailing":
        target.write_bytes(payload + b"\x00")
    elif how == "short-header":
        target.write_bytes(payload[:6])
    elif how == "huge-count":
        target.write_bytes(payload[:4] + struct.pack(">I", 4_000_000_000) + payload[8:])
    elif how == "wrong-item-shape":
        target.write_bytes(payload[:8] + struct.pack(">II", 32, 32) + payload[16:])
    elif how == "truncated-gz":
        target.write_bytes(target.read_bytes()[:-50])
    elif how == "trailing-gz":
        target.write_bytes(gzip.compress(payload + b"\x01\x02"))
    elif how == "not-gzip":
        target.write_bytes(b"this is not gzip data at all")
    elif how == "label-count":
        target = folder / "train-labels-idx1-ubyte"
        target.write_bytes(_idx_bytes(arrays[0][1][:-1]))
    elif how == "label-range":
        target = folder / "train-labels-idx1-ubyte"
        target.write_bytes(_idx_bytes(np.full(len(arrays[0][1]), 10, dtype=np.uint8)))
    return target


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("magic", "bad idx magic number 0x00000801"),
        ("truncated", "truncated"),
        ("trailing", "longer than its header declares"),
        ("short-header", "truncated idx header"),
        ("huge-count", "implausible"),
        ("wrong-item-shape", r"items of shape \(32, 32\)"),
        ("truncated-gz", "unreadable or corrupt|truncated"),
        ("trailing-gz", "longer than its header declares"),
        ("not-gzip", "unreadable or corrupt"),
        ("label-count", "30 images but 29 labels"),
        ("label-range", r"labels must lie in \[0, 10\)"),
    ],
)
def test_corrupt_idx_files(tmp_path: Path, how: str, message: str) -> None:
    bad = _corrupt_idx(tmp_path / "mnist", how)
    with pytest.raises(data.DataFormatError, match=message) as caught:
        data.load_arrays("mnist", data_dir=tmp_path)
    assert isinstance(caught.value, ValueError)
    assert str(bad) in str(caught.value)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("garbage", "unreadable or corrupt"),
        ("truncated", "unreadable or corrupt"),
        ("missing-key", r"no array 'y_train'"),
        ("float-images", "expected uint8"),
        ("wrong-shape", "expected uint8"),
    ],
)
def test_corrupt_npz_files(tmp_path: Path, how: str, message: str) -> None:
    folder = tmp_path / "cifar10"
    _write_npz_dir(folder, _cifar_arrays(10, 4))
    bad = folder / "train_part2.npz"
    x = _images(5, (32, 32, 3))
    if how == "garbage":
        bad.write_bytes(b"PK\x03\x04 definitely not a zip file")
    elif how == "truncated":
        bad.write_bytes(bad.read_bytes()[:-200])
    elif how == "missing-key":
        np.savez(bad, x_train=x)
    elif how == "float-images":
        np.savez(bad, x_train=x.astype(np.float32), y_train=_labels(5))
    elif how == "wrong-shape":
        np.savez(bad, x_train=x[:, :16], y_train=_labels(5))
    with pytest.raises(data.DataFormatError, match=message) as caught:
        data.load_arrays("cifar10", data_dir=tmp_path)
    assert str(bad) in str(caught.value)


def test_npz_part_gap_is_reported(tmp_path: Path) -> None:
    _write_npz_dir(tmp_path / "cifar10", _cifar_arrays(12, 4), parts=3)
    (tmp_path / "cifar10" / "train_part2.npz").unlink()
    with pytest.raises(data.DataNotFoundError, match=r"missing train_part2\.npz"):
        data.load_arrays("cifar10", data_dir=tmp_path)


def test_truncated_tarball(tmp_path: Path) -> None:
    path = _write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", "cifar10", _cifar_arrays(10, 4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(data.DataFormatError, match="unreadable or corrupt") as caught:
        data.load_arrays("cifar10", data_dir=tmp_path)
    assert str(path) in str(caught.value)


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_py_dir(folder, _cifar_arrays(10, 4), protocol=2)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.DataFormatError, match=r"refusing to load global .*system"):
        data.load_arrays("cifar10", data_dir=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_pickle_with_wrong_sizes_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_py_dir(folder, _cifar_arrays(10, 4), protocol=2)
    rows = np.zeros((2, 100), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": rows, b"labels": [0, 1]}))
    with pytest.raises(data.DataFormatError, match=r"test_batch: data has shape \(2, 100\)"):
        data.load_arrays("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Missing data and the tfds fallback
# --------------------------------------------------------------------------------------------


def test_missing_data_lists_every_place(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    (root / "cifar10").mkdir(parents=True)
    (root / "cifar10" / "test.npz").write_bytes(b"")  # incomplete layout
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_arrays("cifar10", data_dir=root)
    error = caught.value
    assert isinstance(error, FileNotFoundError)
    message = str(error)
    for expected in (
        str(root / "cifar10"),
        str(root / "cifar-10"),
        f"{root}: no npz files",
        "incomplete npz layout",
        "KERAS_SSM_DATA_DIR",
        f"tensorflow-datasets 'cifar10' in {tmp_path / 'tfds-empty'}: not prepared",
        "download: skipped (KERAS_SSM_OFFLINE=1)",
        "cifar-10-python.tar.gz",
        "--data-dir",
    ):
        assert expected in message, expected
    assert len(error.searched) == 6  # env var, 3 folders, tfds, download


def test_missing_data_without_any_dir_mentions_env_var(tmp_path: Path) -> None:
    with pytest.raises(data.DataNotFoundError, match=r"KERAS_SSM_DATA_DIR: not set") as caught:
        data.load_arrays("mnist")
    assert "train-images-idx3-ubyte.gz" in str(caught.value)


def test_download_failure_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_tfds_arrays(tfds, spec, data_dir: str, *, download: bool):
        raise RuntimeError("download exploded" if download else "not prepared here")

    monkeypatch.setattr(data.tfds, "tfds_arrays", fake_tfds_arrays)
    monkeypatch.setattr(data.tfds, "network_available", lambda: (True, "reachable"))
    with pytest.raises(data.DataNotFoundError, match="failed \\(RuntimeError: download exploded"):
        data.load_arrays("mnist", data_dir=tmp_path)


def test_network_probe_is_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.tfds.network_available() == (False, "KERAS_SSM_OFFLINE=1")
    monkeypatch.delenv(data.OFFLINE_ENV)
    monkeypatch.setattr(data.tfds, "PROBE_HOST", ("127.0.0.1", 9))  # closed port: refused
    start = time.monotonic()
    online, why = data.tfds.network_available()
    assert not online and "unreachable" in why
    assert time.monotonic() - start < data.PROBE_TIMEOUT_S + 0.5


def test_tfds_prepared_data_is_used(tmp_path: Path) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        (x, y), (x_test, y_test) = data.load_arrays("mnist", data_dir=tmp_path)
        ds = data.load("mnist", "test", data_dir=tmp_path, batch_size=5)
        sizes = [int(labels.shape[0]) for _, labels in ds]
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    assert x_test.shape == (12, 28, 28, 1) and ((y_test >= 0) & (y_test < 10)).all()
    assert sizes == [5, 5, 2]


# --------------------------------------------------------------------------------------------
# The tf.data pipeline
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    _write_idx_dir(tmp_path / "mnist", _mnist_arrays(n_train=30, n_test=12))
    return tmp_path


@pytest.fixture(params=["tf.data", "numpy"])
def batches_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each pipeline test runs on both builders: ``tf.data`` and, as on a machine without
    TensorFlow, :class:`keras_ssm.data.NumpyBatches`."""
    if request.param == "numpy":
        monkeypatch.setattr(data.pipeline, "tensorflow_available", lambda: False)
    elif not data.pipeline.tensorflow_available():
        pytest.skip("TensorFlow is not installed")
    return request.param


def _epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    batches = [(np.asarray(x), np.asarray(y)) for x, y in ds]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _take(ds, count: int) -> list:
    """The first ``count`` batches of a (possibly endless) dataset of either kind."""
    return list(itertools.islice(iter(ds), count))


def _check_kind(ds, kind: str) -> None:
    assert isinstance(ds, data.NumpyBatches) == (kind == "numpy")


def test_pipeline_shapes_batches_and_standardization(mnist_dir: Path, batches_kind: str) -> None:
    ds = data.load("mnist", "test", data_dir=mnist_dir, batch_size=5)
    _check_kind(ds, batches_kind)
    assert [tuple(x.shape) for x, _ in ds] == [(5, 28, 28, 1)] * 2 + [(2, 28, 28, 1)]
    x, y = _epoch(ds)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, _labels(12, offset=3))  # test split: not shuffled
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-4)
    (_, _), (x_test, _) = data.load_arrays("mnist", data_dir=mnist_dir)
    np.testing.assert_allclose(x, data.standardize_images(x_test), atol=1e-5)

    raw, _ = _epoch(data.load("mnist", "test", data_dir=mnist_dir, standardize=False))
    np.testing.assert_allclose(raw, x_test / 255.0, atol=1e-6)


def test_limit_and_drop_remainder(mnist_dir: Path, batches_kind: str) -> None:
    ds = data.load("mnist", data_dir=mnist_dir, batch_size=4, limit=10, drop_remainder=True)
    assert [int(y.shape[0]) for _, y in ds] == [4, 4]
    if batches_kind == "tf.data":
        assert ds.element_spec[0].shape.as_list() == [4, 28, 28, 1]
    else:
        assert len(ds) == ds.num_batches == 2
    _, labels = _epoch(data.load("mnist", data_dir=mnist_dir, limit=10, seed=1))
    assert sorted(labels.tolist()) == list(range(10))  # the first 10 examples, shuffled


@pytest.mark.parametrize("limit", [None, 1, 7, 1000])
def test_load_and_load_epochs_take_the_same_examples(
    mnist_dir: Path, limit: int | None, batches_kind: str
) -> None:
    plain, plain_labels = _epoch(
        data.load("mnist", data_dir=mnist_dir, shuffle=False, standardize=False, limit=limit)
    )
    ds, steps = data.load_epochs(
        "mnist", seed=0, data_dir=mnist_dir, batch_size=4, standardize=False, limit=limit
    )
    _check_kind(ds, batches_kind)
    keyed, keyed_labels = _epoch(_take(ds, steps))
    count = min(30, limit or 30)
    assert steps == -(-count // 4) and len(keyed) == len(plain) == count
    np.testing.assert_array_equal(plain_labels, _labels(30)[:count])
    assert {x.tobytes() for x in keyed} == {x.tobytes() for x in plain}  # same images, shuffled
    assert sorted(keyed_labels.tolist()) == sorted(plain_labels.tolist())


def test_epoch_stream_restarts_exactly(tmp_path: Path, batches_kind: str) -> None:
    """Epoch e depends on (seed, e) alone: a stream started at epoch 2 equals the tail of an
    uninterrupted one, augmentation included (what ``ssm train --resume`` relies on)."""
    _write_npz_dir(tmp_path / "cifar10", _cifar_arrays(20, 4))
    kwargs = {"seed": 3, "data_dir": tmp_path, "batch_size": 8, "augment": True}
    ds, steps = data.load_epochs("cifar10", **kwargs)
    full = [np.asarray(x) for x, _ in _take(ds, 3 * steps)]
    resumed, _ = data.load_epochs("cifar10", first_epoch=2, **kwargs)
    again = [np.asarray(x) for x, _ in _take(resumed, steps)]
    assert steps == 3 and [len(x) for x in full[:steps]] == [8, 8, 4]
    for expected, actual in zip(full[2 * steps :], again, strict=True):
        np.testing.assert_array_equal(expected, actual)
    assert not np.array_equal(full[0], full[steps])  # a new order each epoch
    other, _ = data.load_epochs("cifar10", **{**kwargs, "seed": 4})
    assert not np.array_equal(full[0], np.asarray(_take(other, 1)[0][0]))


def test_shuffle_is_seeded_and_reshuffles(mnist_dir: Path, batches_kind: str) -> None:
    ds = data.load("mnist", data_dir=mnist_dir, batch_size=8, seed=7)
    first, second = _epoch(ds)[1], _epoch(ds)[1]
    again = _epoch(data.load("mnist", data_dir=mnist_dir, batch_size=8, seed=7))[1]
    assert sorted(first.tolist()) == sorted(_labels(30).tolist())
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    unshuffled = _epoch(data.load("mnist", data_dir=mnist_dir, shuffle=False))[1]
    np.testing.assert_array_equal(unshuffled, _labels(30))


def _crops_and_flips(image: np.ndarray, pad: int = 4) -> list[np.ndarray]:
    height, width = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    crops = [
        padded[dy : dy + height, dx : dx + width]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    ]
    return crops + [c[:, ::-1] for c in crops]


def test_augmentation(tmp_path: Path, batches_kind: str) -> None:
    arrays = _cifar_arrays(16, 4)
    _write_npz_dir(tmp_path / "cifar10", arrays)
    kwargs = {"data_dir": tmp_path, "batch_size": 16, "shuffle": False, "augment": True}
    ds = data.load("cifar10", seed=3, **kwargs)
    augmented, labels = _epoch(ds)
    plain, plain_labels = _epoch(data.load("cifar10", shuffle=False, data_dir=tmp_path))
    assert augmented.shape == plain.shape == (16, 32, 32, 3)
    np.testing.assert_array_equal(labels, plain_labels)
    assert not np.allclose(augmented, plain)
    for out, source in zip(augmented, plain, strict=True):  # each is a pad-4 crop, maybe flipped
        assert min(np.abs(out - c).max() for c in _crops_and_flips(source)) < 1e-6
    np.testing.assert_array_equal(augmented, _epoch(data.load("cifar10", seed=3, **kwargs))[0])
    assert not np.array_equal(augmented, _epoch(ds)[0])  # new randomness each epoch


def test_fit_on_numpy_batches(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.fit`` takes the endless numpy stream with ``steps_per_epoch`` (epoch by epoch,
    as the tf.data stream) and ``evaluate`` the one-pass batches, on any backend."""
    import keras

    monkeypatch.setattr(data.pipeline, "tensorflow_available", lambda: False)
    train, steps = data.load_epochs("mnist", seed=1, data_dir=mnist_dir, batch_size=8)
    test = data.load("mnist", "test", data_dir=mnist_dir, batch_size=5)
    seen: list[int] = []
    original = data.NumpyBatches.__getitem__
    monkeypatch.setattr(
        data.NumpyBatches,
        "__getitem__",
        lambda self, i: (self is train and seen.append(i)) or original(self, i),
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(
        train, steps_per_epoch=steps, epochs=3, validation_data=test, shuffle=False, verbose=0
    )
    assert len(history.history["val_loss"]) == 3
    # one stream, epoch after epoch, not epoch 0 again each time (TensorFlow's adapter peeks
    # at the first batches and reads a few ahead)
    assert set(range(3 * steps)) <= set(seen) and max(seen) < 4 * steps
    assert np.isfinite(model.evaluate(test, verbose=0))


def test_train_runs_without_tensorflow(tmp_path: Path) -> None:
    """On a machine with Keras and JAX but no TensorFlow (this project's GPU machines),
    ``keras_ssm.train`` reads, batches, trains and writes its run folder."""
    pytest.importorskip("jax")
    folder = tmp_path / "data"
    _write_idx_dir(folder / "mnist", _mnist_arrays(n_train=64, n_test=16))
    code = f"""
import importlib.abc, os, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras", "tf2onnx"):
            raise ImportError("no " + name + " on this machine")
sys.meta_path.insert(0, NoTensorFlow())
os.environ["KERAS_BACKEND"] = "jax"
import keras_ssm
result = keras_ssm.train("fcn", "mnist", epochs=2, data_dir={str(folder)!r},
                         out={str(tmp_path / "run")!r}, verbose=0, record_masks=False)
assert "tensorflow" not in sys.modules
print(result.metrics["backend"], result.metrics["epochs"], result.metrics["test_images"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["jax", "2", "16"]
    assert (tmp_path / "run" / "model.keras").is_file()


def test_standardize_images_matches_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    images = _images(5, (6, 7, 3))
    images[0] = 17  # constant image: std is clamped to 1/sqrt(N)
    expected = tf.image.per_image_standardization(images).numpy()
    actual = data.standardize_images(images, chunk=2)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_array_equal(actual[0], 0)


def test_docstring_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_idx_dir(tmp_path / "mnist", _mnist_arrays(n_train=256, n_test=250))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    results = doctest.testmod(data, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 8 and results.failed == 0
    locations = importlib.util.find_spec("keras_ssm.data").submodule_search_locations
    names = [m.name for m in pkgutil.iter_modules(locations, prefix="keras_ssm.data.")]
    assert len(names) >= 7, names  # errors, formats, locate, pipeline, safe_pickle, specs, tfds
    for name in names:
        results = doctest.testmod(importlib.import_module(name))
        assert results.failed == 0, name


# --------------------------------------------------------------------------------------------
# The real shared copy (skipped where absent)
# --------------------------------------------------------------------------------------------

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not (REAL_DATA / "mnist").is_dir(), reason="no shared MNIST copy")
def test_real_mnist() -> None:
    start = time.monotonic()
    (x, y), (x_test, y_test) = data.load_arrays("mnist", data_dir=REAL_DATA)
    assert time.monotonic() - start < 10
    assert x.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_import_does_not_load_tfds() -> None:
    code = "import sys, keras_ssm.data; print('tensorflow_datasets' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
